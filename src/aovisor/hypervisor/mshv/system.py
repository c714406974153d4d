"""``/dev/mshv``: the Microsoft Hypervisor's root-partition device, and partition (VM) creation."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aovisor.errors import HypervisorError
from aovisor.hypervisor.mshv import dialect
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.hypervisor.mshv.vm import MshvVm

log = get_logger(__name__)

MSHV_DEVICE = "/dev/mshv"


class Mshv:
    """An open ``/dev/mshv`` and the kernel ABI generation it speaks (mainline or legacy, mshv.md §0)."""

    name = "mshv"

    def __init__(self, path: str = MSHV_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HypervisorError(
                f"{path} does not exist: the Microsoft Hypervisor is not available on this host "
                "(it needs Linux running as the root partition of an MSHV host, with the mshv_root module)"
            ) from None
        except PermissionError:
            raise HypervisorError(f"no permission to open {path} (it is mode 0600: run as root)") from None
        try:
            self.dialect = dialect.detect(self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        log.info("%s: the kernel speaks the %s ABI", path, self.dialect.name)

    def create_vm(self) -> MshvVm:
        from aovisor.hypervisor.mshv.vm import MshvVm

        return MshvVm(self)

    def close(self) -> None:
        os.close(self.fd)
