"""CMOS/RTC: the clock registers in BCD/binary and 12/24-hour modes, and the memory-size bytes."""

from __future__ import annotations

import calendar

import pytest

from aovisor.devices.legacy.cmos import Cmos

MiB = 1 << 20
GiB = 1 << 30

# Sunday 2024-03-17 21:05:09 UTC, plus half a second.
SUNDAY_EVENING = calendar.timegm((2024, 3, 17, 21, 5, 9, 0, 0, 0)) + 0.5


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reg(cmos: Cmos, index: int) -> int:
    cmos.write(0, 1, index)
    return cmos.read(1, 1)


def set_reg(cmos: Cmos, index: int, value: int) -> None:
    cmos.write(0, 1, index)
    cmos.write(1, 1, value)


def make(now: float = SUNDAY_EVENING, below: int = 512 * MiB, above: int = 0) -> Cmos:
    return Cmos(mem_below_4g=below, mem_above_4g=above, clock=FakeClock(now))


def test_default_mode_is_bcd_24_hour() -> None:
    cmos = make()
    assert reg(cmos, 0x0B) == 0x02
    fields = [reg(cmos, i) for i in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)]
    assert fields == [0x09, 0x05, 0x21, 0x01, 0x17, 0x03, 0x24, 0x20]  # Sunday is day 1


def test_binary_mode() -> None:
    cmos = make()
    set_reg(cmos, 0x0B, 0x06)
    fields = [reg(cmos, i) for i in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)]
    assert fields == [9, 5, 21, 1, 17, 3, 24, 20]


@pytest.mark.parametrize(
    ("hour", "bcd", "binary"),
    [(0, 0x12, 12), (1, 0x01, 1), (11, 0x11, 11), (12, 0x92, 0x80 | 12), (13, 0x81, 0x81), (23, 0x91, 0x8B)],
)
def test_twelve_hour_mode(hour: int, bcd: int, binary: int) -> None:
    now = calendar.timegm((2024, 3, 18, hour, 0, 0, 0, 0, 0))
    cmos = make(now)
    set_reg(cmos, 0x0B, 0x00)
    assert reg(cmos, 0x04) == bcd
    set_reg(cmos, 0x0B, 0x04)
    assert reg(cmos, 0x04) == binary


def test_the_clock_follows_the_host() -> None:
    clock = FakeClock(SUNDAY_EVENING)
    cmos = Cmos(mem_below_4g=0, mem_above_4g=0, clock=clock)
    clock.now += 60
    assert reg(cmos, 0x02) == 0x06
    clock.now = calendar.timegm((2099, 12, 31, 23, 59, 59, 0, 0, 0))
    fields = [reg(cmos, i) for i in (0x09, 0x32, 0x08, 0x07, 0x06)]
    assert fields == [0x99, 0x20, 0x12, 0x31, 0x05]  # a Thursday


def test_guest_writes_do_not_change_the_clock() -> None:
    cmos = make()
    set_reg(cmos, 0x00, 0x45)
    set_reg(cmos, 0x09, 0x99)
    assert reg(cmos, 0x00) == 0x09
    assert reg(cmos, 0x09) == 0x24


def test_update_in_progress_only_just_before_the_second_ends() -> None:
    clock = FakeClock(SUNDAY_EVENING)
    cmos = Cmos(mem_below_4g=0, mem_above_4g=0, clock=clock)
    assert reg(cmos, 0x0A) == 0x26  # UIP clear, 32.768 kHz divider, 1024 Hz rate
    clock.now = SUNDAY_EVENING + 0.4999
    assert reg(cmos, 0x0A) & 0x80
    set_reg(cmos, 0x0B, 0x82)  # SET halts updates: no UIP
    assert not reg(cmos, 0x0A) & 0x80


def test_status_registers() -> None:
    cmos = make()
    assert reg(cmos, 0x0D) == 0x80  # valid RAM and time
    assert reg(cmos, 0x0C) == 0x00  # no interrupt flags
    set_reg(cmos, 0x0A, 0xFF)
    assert reg(cmos, 0x0A) & 0x7F == 0x7F  # writable bits stick; UIP stays hardware-owned


def test_nvram_reads_back_and_nmi_bit_selects_the_same_byte() -> None:
    cmos = make()
    set_reg(cmos, 0x40, 0xAB)
    assert reg(cmos, 0x40) == 0xAB
    assert reg(cmos, 0x80 | 0x40) == 0xAB  # bit 7 of the index is the NMI gate
    set_reg(cmos, 0xFF, 0x11)
    assert reg(cmos, 0x7F) == 0x11


def word(cmos: Cmos, index: int) -> int:
    return reg(cmos, index) | reg(cmos, index + 1) << 8


def test_memory_size_registers_for_a_small_guest() -> None:
    cmos = make(below=512 * MiB)
    assert word(cmos, 0x15) == 640
    assert word(cmos, 0x17) == 0xFFFF  # 511 MiB of KiB does not fit
    assert word(cmos, 0x30) == 0xFFFF
    assert word(cmos, 0x34) == (512 - 16) * MiB // 0x10000
    assert [reg(cmos, i) for i in (0x5B, 0x5C, 0x5D)] == [0, 0, 0]


def test_memory_size_registers_for_a_large_guest() -> None:
    cmos = make(below=3 * GiB, above=5 * GiB)
    assert word(cmos, 0x34) == (3 * GiB - 16 * MiB) // 0x10000
    high = reg(cmos, 0x5B) | reg(cmos, 0x5C) << 8 | reg(cmos, 0x5D) << 16
    assert high * 0x10000 == 5 * GiB


def test_memory_size_registers_for_a_tiny_guest() -> None:
    cmos = make(below=8 * MiB)
    assert word(cmos, 0x17) == 7 * 1024
    assert word(cmos, 0x34) == 0


def test_checksum_covers_bytes_0x10_to_0x2d() -> None:
    cmos = make(below=2 * GiB)
    total = sum(reg(cmos, i) for i in range(0x10, 0x2E))
    assert reg(cmos, 0x2E) << 8 | reg(cmos, 0x2F) == total


def test_wide_accesses_are_ignored() -> None:
    cmos = make()
    cmos.write(0, 2, 0x4040)
    assert cmos.read(0, 2) == 0xFFFF
    cmos.write(0, 1, 0x40)
    cmos.write(1, 4, 0x12345678)
    assert cmos.read(1, 1) == 0
