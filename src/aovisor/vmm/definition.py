"""What the VMM is asked to run: the :class:`~aovisor.config.VmConfig` plus the devices the configuration
model cannot express yet.

``vm.create`` and the cold-plug calls (``vm.add-net``, ``vm.add-vsock``) may name devices aovisor does not
implement yet (virtio-net, virtio-vsock).
They are accepted and kept, as Cloud Hypervisor keeps them, with the file descriptors that came with them
(TAP fds received by SCM_RIGHTS), so ``vm.info`` shows them; ``vm.boot`` then refuses, naming the device,
instead of booting a guest silently missing its NIC or disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aovisor.errors import ConfigError

if TYPE_CHECKING:
    from aovisor.config import VmConfig


@dataclass(frozen=True)
class DeviceSpec:
    """One device as Cloud Hypervisor's JSON describes it (validated, defaults filled in)."""

    kind: str  # "net" | "vsock": the VmConfig JSON field it belongs to
    json: Mapping[str, Any]
    fds: tuple[int, ...] = ()  # owned by the VMM: closed when the VM is deleted

    @property
    def id(self) -> str | None:
        value = self.json.get("id")
        return value if isinstance(value, str) else None

    def describe(self, index: int) -> str:
        return f"{self.kind}[{index}]" + (f" (id {self.id!r})" if self.id else "")

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


# What each kept device kind is, for the boot-time refusal.
DEVICE_KINDS = {"net": "virtio-net devices", "vsock": "virtio-vsock devices"}


class UnsupportedDeviceError(ConfigError):
    """The definition names a device kind aovisor cannot create yet (``vm.boot`` is refused: 400)."""


@dataclass(frozen=True)
class VmDefinition:
    config: VmConfig
    devices: tuple[DeviceSpec, ...] = field(default=())

    def of_kind(self, kind: str) -> list[DeviceSpec]:
        return [d for d in self.devices if d.kind == kind]

    def with_device(self, device: DeviceSpec) -> VmDefinition:
        return replace(self, devices=(*self.devices, device))

    def check_bootable(self) -> None:
        """Raise :class:`UnsupportedDeviceError` naming the first device that cannot be created."""
        for kind, what in DEVICE_KINDS.items():
            kept = self.of_kind(kind)
            if kept:
                names = ", ".join(d.describe(i) for i, d in enumerate(kept))
                raise UnsupportedDeviceError(
                    f"{names}: {what} are not yet implemented in aovisor; the configuration is kept "
                    "(see vm.info) but the VM cannot boot with it (vm.delete, then vm.create without it)"
                )

    def close(self) -> None:
        for device in self.devices:
            device.close_fds()
