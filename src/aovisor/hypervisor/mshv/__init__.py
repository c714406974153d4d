"""The Microsoft Hypervisor backend: child partitions from a Linux root partition through ``/dev/mshv``.

``system.Mshv`` (the device) -> ``vm.MshvVm`` (a partition) -> ``vcpu.MshvVcpu`` (a VP), the same shape as
the KVM backend.  ``abi`` holds the kernel interface (mshv.md), ``dialect`` the mainline/legacy kernel ABIs,
``hvcall`` the hypercall pass-through, ``intercepts`` the pure intercept handlers.
"""
