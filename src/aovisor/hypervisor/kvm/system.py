"""``/dev/kvm``: the system fd — capability checks, supported CPUID, and VM creation."""

from __future__ import annotations

import ctypes
import errno
import os

from aovisor.errors import HypervisorError
from aovisor.hypervisor.base import CpuidEntry
from aovisor.hypervisor.kvm import abi
from aovisor.hypervisor.syscalls import ioctl
from aovisor.lean_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aovisor.hypervisor.kvm.vm import KvmVm

KVM_DEVICE = "/dev/kvm"

# What the VMM cannot run without: in-kernel irqchip + PIT, irqfd/ioeventfd, and immediate_exit for kicks.
REQUIRED_CAPS = {
    "KVM_CAP_IRQCHIP": abi.KVM_CAP_IRQCHIP,
    "KVM_CAP_USER_MEMORY": abi.KVM_CAP_USER_MEMORY,
    "KVM_CAP_EXT_CPUID": abi.KVM_CAP_EXT_CPUID,
    "KVM_CAP_IRQ_ROUTING": abi.KVM_CAP_IRQ_ROUTING,
    "KVM_CAP_IRQFD": abi.KVM_CAP_IRQFD,
    "KVM_CAP_PIT2": abi.KVM_CAP_PIT2,
    "KVM_CAP_REINJECT_CONTROL": abi.KVM_CAP_REINJECT_CONTROL,
    "KVM_CAP_IOEVENTFD": abi.KVM_CAP_IOEVENTFD,
    "KVM_CAP_IMMEDIATE_EXIT": abi.KVM_CAP_IMMEDIATE_EXIT,
}


class Kvm:
    """An open ``/dev/kvm``."""

    name = "kvm"

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HypervisorError(f"{path} does not exist: KVM is not available on this host") from None
        except PermissionError:
            raise HypervisorError(
                f"no permission to open {path} (run as root or add yourself to the 'kvm' group)"
            ) from None
        version = ioctl(self.fd, abi.KVM_GET_API_VERSION)
        if version != abi.KVM_API_VERSION:
            raise HypervisorError(f"{path}: KVM API version {version}, expected {abi.KVM_API_VERSION}")
        missing = [name for name, cap in REQUIRED_CAPS.items() if not self.check_extension(cap)]
        if missing:
            raise HypervisorError(f"{path}: missing KVM capabilities: {', '.join(missing)}")
        self.vcpu_mmap_size = ioctl(self.fd, abi.KVM_GET_VCPU_MMAP_SIZE)
        self._cpuid: list[CpuidEntry] | None = None

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, abi.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer until the kernel stops answering E2BIG."""
        if self._cpuid is None:
            nent = 128
            while True:
                header, entries = _cpuid_buffer(nent)
                try:
                    ioctl(self.fd, abi.KVM_GET_SUPPORTED_CPUID, header)
                    break
                except OSError as e:
                    if e.errno != errno.E2BIG or nent > 4096:
                        raise
                    nent *= 2
            self._cpuid = [
                CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                for e in entries[: header.nent]
            ]
        return [e.copy() for e in self._cpuid]

    def create_vm(self) -> KvmVm:
        from aovisor.hypervisor.kvm.vm import KvmVm

        return KvmVm(self)

    def close(self) -> None:
        os.close(self.fd)


def _cpuid_buffer(nent: int) -> tuple[abi.kvm_cpuid2, ctypes.Array[abi.kvm_cpuid_entry2]]:
    """A kvm_cpuid2 header followed by ``nent`` entries in one buffer, as the ioctl expects."""

    class Buffer(ctypes.Structure):
        _fields_ = [("header", abi.kvm_cpuid2), ("entries", abi.kvm_cpuid_entry2 * nent)]

    buf = Buffer()
    buf.header.nent = nent
    return buf.header, buf.entries
