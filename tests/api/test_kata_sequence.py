"""The sequence Kata Containers' clh driver runs, as one test: ping -> create -> info "Created" ->
add-net with a TAP fd passed over SCM_RIGHTS -> boot -> ... -> shutdown -> delete -> vmm.shutdown.

virtio-net does not exist yet, so vm.boot with the net device is refused (400, naming it) — the honest
answer, instead of a guest silently missing its NIC.  The test then does what a client can: delete, create
again without the NIC, boot, and finish the sequence.  When virtio-net lands, the refusal assertion fails
and this test becomes the straight Kata sequence.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from api.helpers import (
    ApiVmm,
    api_vmm_fixture,  # noqa: F401  (the api_vmm fixture)
)

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def _open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _fds_of(pid: int) -> set[str]:
    base = Path(f"/proc/{pid}/fd")
    targets = set()
    for entry in base.iterdir():
        with contextlib.suppress(OSError):
            targets.add(os.readlink(entry))
    return targets


def test_kata_like_sequence(api_vmm: ApiVmm, guest: Callable[[str], Path]) -> None:
    try:
        tap = _open_tap("aovtap0")
    except OSError as e:
        pytest.fail(f"cannot create a TAP device (needs /dev/net/tun and CAP_NET_ADMIN): {e}")
    config = {
        "payload": {"kernel": str(guest("ticker")), "cmdline": "period_ms=20"},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "kvm_hyperv": False, "nested": True},  # a generated
        "memory": {"size": 64 << 20, "mergeable": False, "shared": False, "thp": True},  # client's defaults
        "serial": {"mode": "Tty"},
        "console": {"mode": "Off"},
        "platform": {"num_pci_segments": 1, "iommufd": False},
    }
    try:
        assert api_vmm.call("GET", "vmm.ping").status == 200
        assert api_vmm.call("PUT", "vm.create", config).status == 204
        assert api_vmm.call("GET", "vm.info").json()["state"] == "Created"
        assert "/dev/net/tun" not in _fds_of(api_vmm.proc.pid)
        net = {"mac": "52:54:00:12:34:56", "num_queues": 2, "queue_size": 256, "id": "net0"}
        assert api_vmm.call("PUT", "vm.add-net", net, fds=[tap]).status == 204
    finally:
        os.close(tap)  # ours; the VMM holds its own copy now
    assert "/dev/net/tun" in _fds_of(api_vmm.proc.pid), "the TAP fd did not reach the VMM"
    info = api_vmm.call("GET", "vm.info").json()
    assert info["config"]["net"][0]["mac"] == "52:54:00:12:34:56"

    refused = api_vmm.call("PUT", "vm.boot")
    assert refused.status == 400
    assert "net[0] (id 'net0')" in refused.json()[-1] and "virtio-net" in refused.json()[-1]

    assert api_vmm.call("PUT", "vm.delete").status == 204
    assert "/dev/net/tun" not in _fds_of(api_vmm.proc.pid), "vm.delete must close the TAP fd"
    assert api_vmm.call("PUT", "vm.create", config).status == 204
    assert api_vmm.call("PUT", "vm.boot").status == 204
    assert api_vmm.call("GET", "vm.info").json()["state"] == "Running"
    assert api_vmm.call("PUT", "vm.shutdown").status == 204
    assert api_vmm.call("PUT", "vm.delete").status == 204
    assert api_vmm.call("PUT", "vmm.shutdown").status == 204
    assert api_vmm.wait_exit() == 0
