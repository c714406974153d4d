"""ioctl request numbers as the kernel's ``_IO``/``_IOW``/``_IOR``/``_IOWR`` macros build them.

``include/uapi/asm-generic/ioctl.h``: direction in bits 31-30, argument size 29-16, type 15-8, nr 7-0.
"""

from __future__ import annotations

IOC_NONE, IOC_WRITE, IOC_READ = 0, 1, 2


class IoctlNumbers:
    """The request-number macros for one ioctl type (KVMIO 0xAE, MSHV_IOCTL 0xB8, ...)."""

    def __init__(self, ioctl_type: int) -> None:
        self.type = ioctl_type

    def ioc(self, direction: int, nr: int, size: int) -> int:
        return (direction << 30) | (size << 16) | (self.type << 8) | nr

    def io(self, nr: int) -> int:
        return self.ioc(IOC_NONE, nr, 0)

    def iow(self, nr: int, size: int) -> int:
        return self.ioc(IOC_WRITE, nr, size)

    def ior(self, nr: int, size: int) -> int:
        return self.ioc(IOC_READ, nr, size)

    def iowr(self, nr: int, size: int) -> int:
        return self.ioc(IOC_READ | IOC_WRITE, nr, size)
