"""The Python API: a guest test in a few lines, in this process."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import aovisor
from aovisor.config import NetConfig
from aovisor.errors import ConfigError
from aovisor.vmm.lifecycle import InvalidStateError
from netns import NetNamespace, Wire, open_tap

Guest = Callable[[str], Path]


def test_guest_test_in_ten_lines(guest: Guest) -> None:
    with aovisor.VM(kernel=guest("ticker"), cmdline="period_ms=20", memory="64M") as vm:
        vm.serial.expect(r"tick 3\n")
        vm.pause()
        assert vm.info()["state"] == "Paused"
        time.sleep(0.1)
        last = max(int(n) for n in re.findall(r"tick (\d+)", vm.serial.text))
        time.sleep(0.4)
        assert max(int(n) for n in re.findall(r"tick (\d+)", vm.serial.text)) == last  # stopped
        vm.resume()
        vm.serial.expect(rf"tick {last + 1}\n")  # continues where it paused
        assert vm.counters()["com1"]["tx_bytes"] == len(vm.serial.text.encode())
        vm.power_button()
        assert vm.wait(timeout=10) == 0
    assert vm.serial.text.endswith("ticker: power button\n")
    assert vm.state is None


def test_a_nic_on_a_tap_passed_by_fd(guest: Guest, netns: NetNamespace) -> None:
    """``nets=[NetConfig(fds=...)]``: the guest answers a frame sent on the TAP's far side."""
    tap = netns.call(lambda: open_tap("aovtap1"))
    netns.run("ip", "link", "set", "aovtap1", "up")
    wire = Wire(netns, "aovtap1")
    try:
        nic = NetConfig(fds=(tap,), mac="52:54:00:aa:bb:02")
        with aovisor.VM(kernel=guest("virtio_net"), memory="64M", nets=[nic]) as vm:
            vm.serial.expect(r"virtio-net: mac 52:54:00:aa:bb:02")
            vm.serial.expect(r"virtio-net: ready")
            wire.send(b"PING from the Python API")
            assert wire.receive()[14:] == b"PONG from the Python API"
            vm.shutdown()
    finally:
        wire.close()
        os.close(tap)
    with pytest.raises(ConfigError, match="--net: mac"):
        aovisor.VM(kernel=guest("virtio_net"), nets=["tap=x,mac=nope"])


def test_wrong_state_and_bad_config_raise(guest: Guest) -> None:
    with pytest.raises(ConfigError, match="kernel"):
        aovisor.VM(kernel="/nonexistent")
    vm = aovisor.VM(kernel=guest("ticker"), cmdline="count=2 period_ms=10", memory=64 << 20)
    with vm:
        with pytest.raises(InvalidStateError, match="cannot resume: the VM is Running"):
            vm.resume()
        assert vm.wait(timeout=10) == 0  # the guest powers off by itself after 2 ticks
    assert vm.serial.text.endswith("ticker: done 2\n")


def test_expect_timeout_shows_the_output(guest: Guest) -> None:
    with aovisor.VM(kernel=guest("hello"), memory="64M") as vm:
        with pytest.raises(TimeoutError, match="Hello, world"):
            vm.serial.expect("never printed", timeout=1)
        assert vm.wait(timeout=10) == 0
