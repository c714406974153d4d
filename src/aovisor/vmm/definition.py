"""What the VMM is asked to run: the :class:`~aovisor.config.VmConfig` plus the net and vsock devices as the
API gave them.

``vm.create`` and the cold-plug calls (``vm.add-net``, ``vm.add-vsock``) describe net and vsock devices in
Cloud Hypervisor's JSON, net ones with TAP file descriptors received by SCM_RIGHTS.  They are kept as given
(:class:`DeviceSpec`: the JSON with CH's defaults filled in, which ``vm.info`` shows back, and the fds, which
the definition owns and closes on ``vm.delete``) and become :class:`~aovisor.config.NetConfig` /
:class:`~aovisor.config.VsockConfig` records in :meth:`VmDefinition.boot_config` each time the VM is built.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from aovisor.lean_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import Any

    from aovisor.config import NetConfig, VmConfig, VsockConfig


class DeviceSpec(NamedTuple):
    """One device as Cloud Hypervisor's JSON describes it (validated, defaults filled in)."""

    kind: str  # "net" | "vsock": the VmConfig JSON field it belongs to
    json: Mapping[str, Any]
    fds: tuple[int, ...] = ()  # owned by the VMM: closed when the VM is deleted

    @property
    def id(self) -> str | None:
        value = self.json.get("id")
        return value if isinstance(value, str) else None

    def net_config(self) -> NetConfig:
        from aovisor.config import NetConfig

        j = self.json
        by_fd = bool(self.fds)  # as CH: a TAP passed by fd is used as it is, its addresses untouched
        return NetConfig(
            tap=j.get("tap"),
            fds=self.fds,
            mac=j["mac"],
            ip=None if by_fd else j["ip"],
            mask=None if by_fd else j["mask"],
            id=self.id,
            offload_csum=j["offload_csum"],
            offload_tso=j["offload_tso"] and j["offload_csum"],
        )

    def vsock_config(self) -> VsockConfig:
        from aovisor.config import VsockConfig

        return VsockConfig(cid=self.json["cid"], socket=self.json["socket"], id=self.id)

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class VmDefinition(NamedTuple):
    config: VmConfig
    devices: tuple[DeviceSpec, ...] = ()

    def of_kind(self, kind: str) -> list[DeviceSpec]:
        return [d for d in self.devices if d.kind == kind]

    def with_device(self, device: DeviceSpec) -> VmDefinition:
        return self._replace(devices=(*self.devices, device))

    def boot_config(self) -> VmConfig:
        """The configuration the VM is built from: :attr:`config` with the kept devices added."""
        nets = tuple(d.net_config() for d in self.of_kind("net"))
        vsocks = [d.vsock_config() for d in self.of_kind("vsock")]
        config = self.config
        if nets:
            config = config._replace(nets=(*config.nets, *nets))
        if vsocks:
            config = config._replace(vsock=vsocks[0])
        return config

    def close(self) -> None:
        for device in self.devices:
            device.close_fds()
