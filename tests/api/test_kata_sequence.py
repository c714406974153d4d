"""The sequence Kata Containers' clh driver runs, as one test: ping -> create -> info "Created" ->
add-net with a TAP fd passed over SCM_RIGHTS -> boot -> info "Running" -> shutdown -> delete -> vmm.shutdown.

The TAP is made by the test (as Kata makes it, in the sandbox's network namespace: here a namespace of the
test's own) and reaches the VMM only as a file descriptor; the guest is the virtio_net program, which
answers a PING frame sent on the TAP's far side, so the test sees the device the API created working.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from api.helpers import (
    ApiVmm,
    api_vmm_fixture,  # noqa: F401  (the api_vmm fixture)
    wait_for,
)
from netns import NetNamespace, Wire, open_tap


def _fds_of(pid: int) -> set[str]:
    base = Path(f"/proc/{pid}/fd")
    targets = set()
    for entry in base.iterdir():
        with contextlib.suppress(OSError):
            targets.add(os.readlink(entry))
    return targets


def test_kata_like_sequence(api_vmm: ApiVmm, guest: Callable[[str], Path], netns: NetNamespace) -> None:
    try:
        tap = netns.call(lambda: open_tap("aovtap0"))
    except OSError as e:
        pytest.fail(f"cannot create a TAP device (needs /dev/net/tun and CAP_NET_ADMIN): {e}")
    netns.run("ip", "link", "set", "aovtap0", "up")
    log = api_vmm.workdir / "guest.log"
    config = {
        "payload": {"kernel": str(guest("virtio_net")), "cmdline": "timeout_ms=60000"},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "kvm_hyperv": False, "nested": True},  # a generated
        "memory": {"size": 64 << 20, "mergeable": False, "shared": False, "thp": True},  # client's defaults
        "serial": {"mode": "File", "file": str(log)},
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

    assert api_vmm.call("PUT", "vm.boot").status == 204
    assert api_vmm.call("GET", "vm.info").json()["state"] == "Running"
    wait_for(lambda: "virtio-net: ready" in log.read_text(), timeout=30, what="the guest's virtio-net")
    assert "virtio-net: mac 52:54:00:12:34:56" in log.read_text()
    wire = Wire(netns, "aovtap0")
    try:
        wire.send(b"PING through the TAP fd Kata passed")
        pong = wire.receive()
    finally:
        wire.close()
    assert pong[6:12] == bytes.fromhex("525400123456") and pong[14:] == b"PONG through the TAP fd Kata passed"
    counters = api_vmm.call("GET", "vm.counters").json()
    assert counters["net0"]["rx_frames"] >= 1 and counters["net0"]["tx_frames"] >= 1, counters

    assert api_vmm.call("PUT", "vm.shutdown").status == 204
    assert api_vmm.call("PUT", "vm.delete").status == 204
    assert "/dev/net/tun" not in _fds_of(api_vmm.proc.pid), "vm.delete must close the TAP fd"
    assert api_vmm.call("PUT", "vmm.shutdown").status == 204
    assert api_vmm.wait_exit() == 0
