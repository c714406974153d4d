"""The command-line options of the virtio devices: --net, --vsock, --console, --virtio-transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from aovisor.cli.main import parse_args
from aovisor.config import NetConfig, OutputConfig, OutputMode, VirtioTransport, VsockConfig
from aovisor.errors import ConfigError


def test_net_option_becomes_a_net_config(kernel: str) -> None:
    net = "tap=tap7,mac=52:54:00:AB:cd:01,ip=192.168.9.1,mask=255.255.255.0,id=n0"
    config = parse_args(["--kernel", kernel, "--net", net])
    assert config.nets == (
        NetConfig(tap="tap7", mac="52:54:00:ab:cd:01", ip="192.168.9.1", mask="255.255.255.0", id="n0"),
    )


def test_net_without_mac_gets_a_random_local_unicast_one(kernel: str) -> None:
    a, b = (parse_args(["--kernel", kernel, "--net", "tap=t0"]).nets[0].mac for _ in range(2))
    assert a is not None and b is not None and a != b
    first = int(a.split(":")[0], 16)
    assert first & 2 and not first & 1  # locally administered, unicast


def test_net_fd_forms_and_offloads(kernel: str) -> None:
    net = parse_args(["--kernel", kernel, "--net", "fd=[3,4],offload_tso=off"]).nets[0]
    assert (net.tap, net.fds, net.offload_csum, net.offload_tso) == (None, (3, 4), True, False)
    assert parse_args(["--kernel", kernel, "--net", "fd=5"]).nets[0].fds == (5,)
    assert not parse_args(["--kernel", kernel, "--net", "tap=t,offload_csum=off"]).nets[0].offload_tso
    with pytest.raises(ConfigError, match="--net: fd: give either tap= or fd="):
        parse_args(["--kernel", kernel, "--net", "tap=t,fd=3"])
    with pytest.raises(ConfigError, match="--net: offload_tso: needs offload_csum=on"):
        parse_args(["--kernel", kernel, "--net", "tap=t,offload_csum=off,offload_tso=on"])


def test_two_nets_and_ids(kernel: str) -> None:
    config = parse_args(["--kernel", kernel, "--net", "tap=a,id=x", "tap=b,id=y"])
    assert [n.tap for n in config.nets] == ["a", "b"]
    with pytest.raises(ConfigError, match="same id"):
        parse_args(["--kernel", kernel, "--net", "tap=a,id=x", "tap=b,id=x"])


def test_vsock_option(kernel: str, tmp_path: Path) -> None:
    sock = tmp_path / "v.sock"
    config = parse_args(["--kernel", kernel, "--vsock", f"cid=42,socket={sock}"])
    assert config.vsock == VsockConfig(cid=42, socket=str(sock))
    with pytest.raises(ConfigError, match="--vsock: cid: 4294967295 is reserved or too large"):
        parse_args(["--kernel", kernel, "--vsock", f"cid=4294967295,socket={sock}"])


def test_console_tty_takes_the_terminal_from_the_serial_port(kernel: str, tmp_path: Path) -> None:
    config = parse_args(["--kernel", kernel, "--console", "tty"])
    assert (config.console.mode, config.serial.mode) == (OutputMode.TTY, OutputMode.NULL)
    log = tmp_path / "serial.log"
    config = parse_args(["--kernel", kernel, "--console", "tty", "--serial", f"file={log}"])
    assert config.serial == OutputConfig(OutputMode.FILE, str(log))
    config = parse_args(["--kernel", kernel, "--console", f"file={log}"])
    assert (config.console, config.serial.mode) == (OutputConfig(OutputMode.FILE, str(log)), OutputMode.TTY)


def test_virtio_transport(kernel: str) -> None:
    assert parse_args(["--kernel", kernel]).virtio_transport is VirtioTransport.PCI
    config = parse_args(["--kernel", kernel, "--virtio-transport", "mmio"])
    assert config.virtio_transport is VirtioTransport.MMIO
