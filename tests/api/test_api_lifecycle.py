"""The VM lifecycle through the REST API of a real `aovisor --api-socket` process running the `ticker`
guest (it prints `tick N` every 50 ms and powers off on the ACPI power button); every response is checked
against our OpenAPI document."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

from api.helpers import (
    ApiVmm,
    api_vmm_fixture,  # noqa: F401  (the api_vmm fixture)
    wait_for,
)

Guest = Callable[[str], Path]


def _ticks(vmm: ApiVmm) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", (vmm.workdir / "stdout").read_text(), re.MULTILINE)]


def _vm_config(kernel: Path, **extra: object) -> dict[str, object]:
    return {
        "payload": {"kernel": str(kernel), "cmdline": "period_ms=20"},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 64 << 20},
        "serial": {"mode": "Tty"},
        **extra,
    }


def test_full_lifecycle_pause_stops_the_guest_and_resume_continues(api_vmm: ApiVmm, guest: Guest) -> None:
    ping = api_vmm.call("GET", "vmm.ping")
    assert ping.status == 200 and ping.json()["pid"] == api_vmm.proc.pid

    assert api_vmm.call("GET", "vm.info").status == 404  # no VM yet
    assert api_vmm.call("PUT", "vm.create", _vm_config(guest("ticker"))).status == 204
    info = api_vmm.call("GET", "vm.info").json()
    assert info["state"] == "Created" and info["memory_actual_size"] == 64 << 20
    assert info["config"]["payload"]["kernel"] == str(guest("ticker"))
    assert api_vmm.call("PUT", "vm.pause").status == 405  # not booted
    assert api_vmm.call("GET", "vm.counters").status == 405

    assert api_vmm.call("PUT", "vm.boot").status == 204
    assert api_vmm.call("GET", "vm.info").json()["state"] == "Running"
    assert api_vmm.call("PUT", "vm.boot").status == 405  # already running
    wait_for(lambda: len(_ticks(api_vmm)) >= 5, what="5 ticks")

    assert api_vmm.call("PUT", "vm.pause").status == 204
    assert api_vmm.call("GET", "vm.info").json()["state"] == "Paused"
    time.sleep(0.1)  # output already in the pipe may still arrive
    paused_at = _ticks(api_vmm)
    time.sleep(0.6)  # 30 periods: a running guest would print ~30 lines
    assert _ticks(api_vmm) == paused_at, "the guest made progress while paused"
    assert api_vmm.call("PUT", "vm.pause").status == 405  # already paused

    counters = api_vmm.call("GET", "vm.counters").json()  # readable while paused
    assert counters["com1"]["tx_bytes"] > 0 and counters["vcpu0"]["io_exits"] > 0

    assert api_vmm.call("PUT", "vm.resume").status == 204
    resumed = wait_for(lambda: (t := _ticks(api_vmm)) and len(t) >= len(paused_at) + 3 and t, what="ticks")
    # Resume continues where the guest stopped: the very next tick, and no tick is skipped or repeated.
    assert resumed[: len(paused_at) + 3] == list(range(1, len(paused_at) + 4))
    assert api_vmm.call("PUT", "vm.resume").status == 405  # not paused

    assert api_vmm.call("PUT", "vm.shutdown").status == 204
    assert api_vmm.call("GET", "vm.info").json()["state"] == "Shutdown"
    assert api_vmm.call("PUT", "vm.power-button").status == 405
    assert api_vmm.call("PUT", "vm.boot").status == 204  # a shut-down VM boots again, from tick 1
    wait_for(lambda: _ticks(api_vmm).count(1) == 2, what="the second boot's first tick")
    assert api_vmm.call("PUT", "vm.reboot").status == 204
    wait_for(lambda: _ticks(api_vmm).count(1) == 3, what="the reboot's first tick")
    assert api_vmm.call("PUT", "vm.delete").status == 204
    assert api_vmm.call("GET", "vm.info").status == 404
    assert api_vmm.call("PUT", "vm.delete").status == 204  # nothing to delete: still fine, as in CH
    assert api_vmm.call("PUT", "vmm.shutdown").status == 204
    assert api_vmm.wait_exit() == 0
    assert not api_vmm.socket.exists()
    assert api_vmm.event_names() == [
        "vmm:starting",
        "vm:booting", "vm:booted",
        "vm:pausing", "vm:paused", "vm:resuming", "vm:resumed",
        "vm:shutdown",
        "vm:booting", "vm:booted",
        "vm:rebooting", "vm:rebooted",
        "vm:shutdown", "vm:deleted",
        "vmm:shutdown",
    ]  # fmt: skip


def test_power_button_powers_the_guest_off_and_the_vmm_exits(api_vmm: ApiVmm, guest: Guest) -> None:
    assert api_vmm.call("PUT", "vm.create", _vm_config(guest("ticker"))).status == 204
    assert api_vmm.call("PUT", "vm.boot").status == 204
    wait_for(lambda: _ticks(api_vmm), what="a tick")
    assert api_vmm.call("PUT", "vm.power-button").status == 204
    # As Cloud Hypervisor: the guest powering off ends the VMM, with status 0.
    assert api_vmm.wait_exit() == 0
    assert (api_vmm.workdir / "stdout").read_text().endswith("ticker: power button\n")
    assert api_vmm.event_names()[-3:] == ["vm:shutdown", "vm:deleted", "vmm:shutdown"]


def test_cold_plugged_disk_shows_in_info_and_duplicate_ids_conflict(
    api_vmm: ApiVmm, guest: Guest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    vsock = tmp_path / "v.sock"
    assert api_vmm.call("PUT", "vm.add-disk", {"path": str(image)}).status == 404  # no VM yet
    assert api_vmm.call("PUT", "vm.create", _vm_config(guest("ticker"))).status == 204
    assert (
        api_vmm.call("PUT", "vm.add-disk", {"path": str(image), "id": "disk0", "readonly": True}).status
        == 204
    )
    assert api_vmm.call("PUT", "vm.add-disk", {"path": str(image), "id": "disk0"}).status == 409
    assert api_vmm.call("PUT", "vm.add-vsock", {"cid": 3, "socket": str(vsock), "id": "disk0"}).status == 409
    assert api_vmm.call("PUT", "vm.add-vsock", {"cid": 3, "socket": str(vsock)}).status == 204
    assert (
        api_vmm.call("PUT", "vm.add-vsock", {"cid": 4, "socket": str(tmp_path / "w.sock")}).status == 409
    )  # one only
    config = api_vmm.call("GET", "vm.info").json()["config"]
    assert [(d["path"], d["id"], d["readonly"]) for d in config["disks"]] == [(str(image), "disk0", True)]
    assert config["vsock"] == {"cid": 3, "socket": str(vsock)}
    assert api_vmm.call("PUT", "vm.boot").status == 204
    assert api_vmm.call("GET", "vm.info").json()["state"] == "Running"
    assert stat.S_ISSOCK(vsock.stat().st_mode)  # the hybrid vsock listens for the host's connections
    counters = api_vmm.call("GET", "vm.counters").json()
    assert counters["disk0"] == {"read_ops": 0, "read_bytes": 0, "write_ops": 0, "write_bytes": 0}
