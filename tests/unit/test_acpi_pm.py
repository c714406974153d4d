"""The ACPI sleep control/status and reset registers, and the POST code sink next to them in spirit."""

from __future__ import annotations

import pytest

from aovisor.devices.legacy.acpi_pm import AcpiPmDevice
from aovisor.devices.legacy.post import PostCode


class Pm:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.dev = AcpiPmDevice(
            poweroff=lambda: self.events.append("off"), reset=lambda: self.events.append("reset")
        )


def test_s5_request_powers_off() -> None:
    pm = Pm()
    pm.dev.write(0, 1, (5 << 2) | 0x20)  # what Linux writes with \_S5_ = 5
    assert pm.events == ["off"]


def test_reset_value_resets() -> None:
    pm = Pm()
    pm.dev.write(0, 1, 1)
    assert pm.events == ["reset"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0x00, []),
        (0x02, []),  # a reserved bit alone
        (5 << 2, []),  # S5's sleep type without SLP_EN
        ((5 << 2) | 0x20 | 0x01, ["off"]),  # SLP_EN decides; reserved bits do not turn it into a reset
        ((5 << 2) | 0x20 | 0x40, ["off"]),
        ((1 << 2) | 0x20, []),  # S1: not offered, wakes at once instead
        ((7 << 2) | 0x20, []),
    ],
)
def test_sleep_control_values(value: int, expected: list[str]) -> None:
    pm = Pm()
    pm.dev.write(0, 1, value)
    assert pm.events == expected


def test_wider_writes_and_other_offsets_are_ignored() -> None:
    pm = Pm()
    pm.dev.write(0, 2, 0x34)
    pm.dev.write(0, 4, 1)
    for offset in range(2, 8):
        pm.dev.write(offset, 1, 0x34)
        pm.dev.write(offset, 1, 1)
    assert pm.events == []


def test_unsupported_sleep_states_wake_at_once() -> None:
    # ACPICA spins on WAK_STS after SLP_EN; a state we do not offer must not hang the vCPU.
    pm = Pm()
    pm.dev.write(1, 1, 0x80)  # the OS clears WAK_STS first
    assert pm.dev.read(1, 1) & 0x80 == 0
    pm.dev.write(0, 1, (3 << 2) | 0x20)  # S3
    assert pm.events == []
    assert pm.dev.read(1, 1) & 0x80
    pm.dev.write(1, 1, 0x80)  # write 1 to clear
    assert pm.dev.read(1, 1) == 0


def test_sleep_control_reads_zero() -> None:
    pm = Pm()
    assert pm.dev.read(0, 1) == 0


def test_post_code_keeps_the_last_byte() -> None:
    post = PostCode()
    post.write(0, 1, 0x12)
    post.write(0, 1, 0x1FF)
    assert post.read(0, 1) == 0xFF
