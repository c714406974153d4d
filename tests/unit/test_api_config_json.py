"""Cloud Hypervisor's VmConfig JSON <-> our definition: defaults, field-named errors, round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aovisor.api.vm_config import definition_from_json, definition_to_json, device_from_json, disk_from_json
from aovisor.errors import ConfigError


def _kernel(tmp_path: Path) -> str:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    return str(kernel)


def _topology(threads: int, cores: int, dies: int, packages: int) -> dict[str, int]:
    return {
        "threads_per_core": threads,
        "cores_per_die": cores,
        "dies_per_package": dies,
        "packages": packages,
    }


def test_cpu_affinity_is_read_and_written_back(tmp_path: Path) -> None:
    cpus = {"boot_vcpus": 2, "max_vcpus": 2, "affinity": [{"vcpu": 1, "host_cpus": [3, 0, 3]}]}
    definition = definition_from_json({"payload": {"kernel": _kernel(tmp_path)}, "cpus": cpus})
    assert [(a.vcpu, a.host_cpus) for a in definition.config.cpus.affinity] == [(1, (0, 3))]
    assert definition_to_json(definition)["cpus"]["affinity"] == [{"vcpu": 1, "host_cpus": [0, 3]}]


def test_cpu_topology_is_read_and_written_back(tmp_path: Path) -> None:
    cpus = {"boot_vcpus": 12, "max_vcpus": 12, "topology": _topology(2, 3, 1, 2)}
    definition = definition_from_json({"payload": {"kernel": _kernel(tmp_path)}, "cpus": cpus})
    assert tuple(definition.config.cpus.cpu_topology) == (2, 3, 1, 2)
    assert definition_to_json(definition)["cpus"]["topology"] == _topology(2, 3, 1, 2)


def test_generated_client_defaults_are_accepted_and_round_trip(tmp_path: Path) -> None:
    body: dict[str, Any] = {
        "payload": {"kernel": _kernel(tmp_path), "cmdline": "console=ttyS0"},
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_hyperv": False, "nested": True, "max_phys_bits": 46},
        "memory": {"size": 256 << 20, "mergeable": False, "hotplug_method": "Acpi", "shared": False,
                   "hugepages": False, "prefault": False, "thp": True},
        "serial": {"mode": "File", "file": str(tmp_path / "log")},
        "console": {"mode": "Off"},
        "disks": [{"path": _kernel(tmp_path), "readonly": True, "id": "d0", "num_queues": 1}],
        "net": [{"tap": "tap0", "mac": "AA:bb:cc:dd:ee:ff"}],
        "rng": {"src": "/dev/urandom"},
        "iommu": False,
        "pvpanic": False,
    }  # fmt: skip
    definition = definition_from_json(body)
    config = definition.config
    assert (config.cpus.boot_vcpus, config.memory.size, config.payload.cmdline) == (
        2,
        256 << 20,
        "console=ttyS0",
    )
    assert config.disks[0].readonly and config.disks[0].id == "d0"
    out = definition_to_json(definition)
    assert out["net"] == [{"tap": "tap0", "mac": "aa:bb:cc:dd:ee:ff", "ip": "192.168.249.1",
                           "mask": "255.255.255.0", "num_queues": 2, "queue_size": 256,
                           "offload_tso": True, "offload_ufo": True, "offload_csum": True}]  # fmt: skip
    assert out["cpus"]["nested"] is False  # what the guest gets, not what was asked
    again = definition_from_json(out)
    assert again.config == config and definition_to_json(again) == out


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"cpus": {"boot_vcpus": 0, "max_vcpus": 1}}, "cpus.boot_vcpus: 0 is out of range"),
        ({"cpus": {"boot_vcpus": 1}}, "cpus.max_vcpus: is required"),
        (
            {"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "topology": {"packages": 1}}},
            "cpus.topology.threads_per_core: is required",
        ),
        (
            {"cpus": {"boot_vcpus": 4, "max_vcpus": 4, "topology": _topology(2, 2, 1, 2)}},
            "cpus.topology: describes 8 vCPUs, not max_vcpus 4",
        ),
        (
            {"cpus": {"boot_vcpus": 4, "max_vcpus": 4, "topology": _topology(0, 2, 1, 2)}},
            "cpus.topology.threads_per_core: 0 is out of range",
        ),
        (
            {"cpus": {"boot_vcpus": 195, "max_vcpus": 195, "topology": _topology(1, 3, 1, 65)}},
            "cpus.topology: needs APIC ids up to 258",
        ),
        (
            {"cpus": {"boot_vcpus": 2, "max_vcpus": 2, "topology": {**_topology(1, 2, 1, 1), "x": 1}}},
            "cpus.topology.x: unknown field",
        ),
        (
            {"cpus": {"boot_vcpus": 2, "max_vcpus": 2, "affinity": [{"vcpu": 2, "host_cpus": [0]}]}},
            "cpus.affinity[0].vcpu: 2 is out of range (0 to 1)",
        ),
        (
            {"cpus": {"boot_vcpus": 2, "max_vcpus": 2, "affinity": [{"vcpu": 0, "host_cpus": []}]}},
            "cpus.affinity[0].host_cpus: expected a non-empty list of host CPU numbers",
        ),
        (
            {"cpus": {"boot_vcpus": 2, "max_vcpus": 2, "affinity": [{"vcpu": 0, "host_cpus": [-1]}]}},
            "cpus.affinity[0].host_cpus: expected a non-empty list of host CPU numbers",
        ),
        (
            {
                "cpus": {
                    "boot_vcpus": 2,
                    "max_vcpus": 2,
                    "affinity": [{"vcpu": 1, "host_cpus": [0]}, {"vcpu": 1, "host_cpus": [1]}],
                }
            },
            "cpus.affinity[1].vcpu: vCPU 1 is given twice",
        ),
        ({"memory": {"size": 1 << 20}}, "memory.size: 1048576 bytes is less than the minimum"),
        ({"memory": {"size": (64 << 20) + 1}}, "not a multiple of 4 KiB"),
        ({"memory": {"size": 64 << 20, "hugepages": True}}, "memory.hugepages: true is not yet supported"),
        ({"serial": {"mode": "Socket", "socket": "/s"}}, "serial.mode: Socket is not yet supported"),
        ({"serial": {"mode": "tty"}}, 'serial.mode: "tty" is not one of'),
        ({"serial": {"mode": "File"}}, "serial.file: is required"),
        ({"balloon": {"size": 1}}, "balloon: is not yet supported"),
        ({"iommu": True}, "iommu: true is not yet supported"),
        ({"net": [{"mac": "nope"}]}, "net[0].mac: 'nope' is not a MAC address"),
        ({"net": [{"mac": "+1:00:00:00:00:01"}]}, "net[0].mac: '+1:00:00:00:00:01' is not a MAC address"),
        ({"net": [{"mac": "01:00:5e:00:00:01"}]}, "net[0].mac: 01:00:5e:00:00:01 is a multicast address"),
        ({"net": [{"mac": "00:00:00:00:00:00"}]}, "net[0].mac: 00:00:00:00:00:00 is the null address"),
        ({"net": [{"num_queues": 3}]}, "net[0].num_queues: 3 is odd"),
        ({"net": [{"num_queues": 4}]}, "net[0].num_queues: 4 is not yet supported (one queue pair)"),
        ({"net": [{"mtu": 9000}]}, "net[0].mtu: is not yet supported"),
        ({"vsock": {"cid": 3, "socket": "/nonexistent/v.sock"}}, "vsock.socket: the directory"),
        ({"net": [{"id": "__x"}]}, "net[0].id"),
        ({"vsock": {"cid": 2, "socket": "/s"}}, "vsock.cid: 2 is out of range"),
        ({"disks": [{"path": "/nonexistent"}]}, "disks[0].path: cannot read"),
        ({"disks": [{"path": "/dev/null", "image_type": "Qcow2"}]}, "disks[0].image_type"),
        ({"payload": {"kernel": "/dev/null", "firmware": "/x"}}, "payload.firmware: is not yet supported"),
        ({"memory": {"size": 64 << 20, "sizee": 1}}, "memory.sizee: unknown field"),
    ],
)
def test_errors_name_the_json_field(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    body = {"payload": {"kernel": _kernel(tmp_path)}, **patch}
    with pytest.raises(ConfigError) as e:
        definition_from_json(body)
    assert message in str(e.value)


def test_devices_keep_their_fds_and_disks_need_a_path() -> None:
    device = device_from_json("net", {"tap": "t0"}, fds=[7, 8])
    assert device.fds == (7, 8) and device.kind == "net"
    with pytest.raises(ConfigError, match=r"disk\.path: is required"):
        disk_from_json({"readonly": True})


def test_console_file_and_serial_pty_are_accepted(tmp_path: Path) -> None:
    body = {
        "payload": {"kernel": _kernel(tmp_path)},
        "console": {"mode": "File", "file": str(tmp_path / "hvc0.log")},
        "serial": {"mode": "Pty"},
    }
    config = definition_from_json(body).config
    assert (config.console.mode.value, config.console.file) == ("file", str(tmp_path / "hvc0.log"))
    assert config.serial.mode.value == "pty"
