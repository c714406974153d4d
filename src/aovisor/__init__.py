"""aovisor: a virtual machine monitor in Python for KVM and the Microsoft Hypervisor (MSHV).

This package's import is kept empty on purpose: ``aovisor --version`` and the CLI's startup should not pay
for the VMM.  Import what you need from its modules (``aovisor.config``, ``aovisor.vmm``...).
"""

__version__ = "0.1.0"
