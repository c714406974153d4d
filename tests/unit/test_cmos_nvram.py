"""CMOS RAM survives a guest reset: what the guest wrote is in the next boot's CMOS, the rest is reset."""

from __future__ import annotations

import pytest

from aovisor.devices.legacy.cmos import NVRAM_SIZE, USER_RAM_START, Cmos

MiB = 1 << 20


def reg(cmos: Cmos, index: int) -> int:
    cmos.write(0, 1, index)
    return cmos.read(1, 1)


def set_reg(cmos: Cmos, index: int, value: int) -> None:
    cmos.write(0, 1, index)
    cmos.write(1, 1, value)


def test_guest_bytes_survive_into_the_next_boot() -> None:
    first = Cmos(mem_below_4g=256 * MiB, mem_above_4g=0)
    set_reg(first, 0x50, 0x5A)  # Linux's /dev/nvram offset 0x42
    set_reg(first, 0x7F, 0x01)
    second = Cmos(mem_below_4g=256 * MiB, mem_above_4g=0)
    assert reg(second, 0x50) == 0  # a fresh machine: nothing carried over yet
    second.restore_nvram(first.nvram())
    assert (reg(second, 0x50), reg(second, 0x7F)) == (0x5A, 0x01)


def test_memory_size_bytes_are_rewritten_after_restoring() -> None:
    """Firmware rewrites the memory sizes at POST: a guest's scribbles over them do not survive."""
    first = Cmos(mem_below_4g=32 * MiB, mem_above_4g=0)
    extended = (reg(first, 0x17), reg(first, 0x18))
    set_reg(first, 0x17, 0x12)
    set_reg(first, 0x18, 0x34)
    second = Cmos(mem_below_4g=32 * MiB, mem_above_4g=0)
    second.restore_nvram(first.nvram())
    assert (reg(second, 0x17), reg(second, 0x18)) == extended == (0x00, 0x7C)  # 31 MiB in KiB = 0x7C00


def test_the_clock_registers_are_not_part_of_the_ram() -> None:
    cmos = Cmos(mem_below_4g=64 * MiB, mem_above_4g=0)
    assert len(cmos.nvram()) == NVRAM_SIZE - USER_RAM_START == 114  # what Linux's /dev/nvram exposes


def test_a_wrong_length_is_refused() -> None:
    cmos = Cmos(mem_below_4g=64 * MiB, mem_above_4g=0)
    with pytest.raises(ValueError):
        cmos.restore_nvram(b"\0" * 10)
