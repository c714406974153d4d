"""Pick a hypervisor backend: the one asked for, else KVM if /dev/kvm exists, else MSHV (as CH probes)."""

from __future__ import annotations

import os

from aovisor.errors import HypervisorError
from aovisor.lean_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aovisor.hypervisor.base import Hypervisor


def open_hypervisor(name: str | None = None) -> Hypervisor:
    if name is None:
        if os.path.exists("/dev/kvm"):
            name = "kvm"
        elif os.path.exists("/dev/mshv"):
            name = "mshv"
        else:
            raise HypervisorError("no hypervisor found: neither /dev/kvm nor /dev/mshv exists")
    if name == "kvm":
        from aovisor.hypervisor.kvm.system import Kvm

        return Kvm()
    if name == "mshv":
        from aovisor.hypervisor.mshv.system import Mshv

        return Mshv()
    raise HypervisorError(f"unknown hypervisor {name!r} (kvm or mshv)")
