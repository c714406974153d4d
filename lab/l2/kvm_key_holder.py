"""Runs in L2 for its whole life: one idle KVM VM with one vCPU, so that KVM's static keys stay on.

The first VM created and the last one destroyed flip static keys (the preempt notifiers ``__schedule``
tests, the LAPIC's "software-disabled" count in KVM's run loop), and Linux flips a static key by patching
kernel text while other CPUs may be executing it, with an int3 guarding the site during the patch.  Under
QEMU's multi-threaded TCG a CPU now and then executes that int3 after the patch is complete, and L2 dies
with "Oops: int3" (seen in ``__schedule`` and in ``kvm_arch_vcpu_ioctl_run``, as a VMM started or ended).
With this VM alive -- its vCPU's LAPIC never software-enabled -- those keys never return to zero, and VMMs
come and go without patching text.  Prints ``ready`` once it holds them.  Standard library only.
"""

import fcntl
import os
import signal

# include/uapi/linux/kvm.h: _IO(KVMIO, n) with KVMIO = 0xAE
KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_CREATE_IRQCHIP = 0xAE60


def main() -> None:
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)  # before the vCPU, so that it gets an in-kernel LAPIC
    fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    print("ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
