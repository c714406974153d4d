"""The user-space IOAPIC: registers (82093AA §3), edge and level delivery as MSIs, remote IRR and EOI."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aovisor.devices.ioapic import IoApic

IOREGSEL, IOWIN, IOEOI = 0x00, 0x10, 0x40
MASKED, LEVEL, REMOTE_IRR, LOGICAL = 1 << 16, 1 << 15, 1 << 14, 1 << 11


class Guest:
    """Drives the IOAPIC the way a guest kernel does: 32-bit MMIO writes to IOREGSEL then IOWIN."""

    def __init__(self) -> None:
        self.msis: list[tuple[int, int]] = []
        self.ioapic = IoApic(lambda address, data: self.msis.append((address, data)))

    def write_reg(self, reg: int, value: int) -> None:
        self.ioapic.write(IOREGSEL, 4, reg)
        self.ioapic.write(IOWIN, 4, value)

    def read_reg(self, reg: int) -> int:
        self.ioapic.write(IOREGSEL, 4, reg)
        return self.ioapic.read(IOWIN, 4)

    def program(self, pin: int, low: int, dest: int = 0) -> None:
        self.write_reg(0x10 + 2 * pin + 1, dest << 24)
        self.write_reg(0x10 + 2 * pin, low)

    def entry(self, pin: int) -> int:
        return self.read_reg(0x10 + 2 * pin) | self.read_reg(0x11 + 2 * pin) << 32


def test_identification_registers() -> None:
    g = Guest()
    assert g.read_reg(0x01) == 0x0017_0011  # version 0x11, 24 entries (max redirection entry 23)
    g.write_reg(0x00, 0x0A00_0000)
    assert g.read_reg(0x00) == 0x0A00_0000
    g.write_reg(0x01, 0)  # read-only
    assert g.read_reg(0x01) == 0x0017_0011
    assert g.ioapic.read(IOREGSEL, 4) == 0x01


def test_every_pin_starts_masked() -> None:
    g = Guest()
    assert all(g.entry(pin) == MASKED for pin in range(24))
    g.ioapic.set_irq(4, True)
    assert g.msis == []


def test_edge_pin_sends_one_msi_per_rising_edge() -> None:
    g = Guest()
    g.program(4, 0x24, dest=1)  # edge, active high, fixed, physical destination 1, vector 0x24
    g.ioapic.set_irq(4, True)
    g.ioapic.set_irq(4, True)  # still high: no new edge
    g.ioapic.set_irq(4, False)
    g.ioapic.set_irq(4, True)
    assert g.msis == [(0xFEE0_1000, 0x24), (0xFEE0_1000, 0x24)]


def test_edge_while_masked_is_lost() -> None:
    g = Guest()
    g.program(4, 0x24 | MASKED)
    g.ioapic.set_irq(4, True)
    g.program(4, 0x24)  # unmask while the line is high: an edge pin has nothing latched
    assert g.msis == []


def test_level_pin_waits_for_eoi_and_redelivers_while_asserted() -> None:
    g = Guest()
    g.program(9, 0x39 | LEVEL)
    g.ioapic.set_irq(9, True)
    assert g.msis == [(0xFEE0_0000, 0x39 | 1 << 15 | 1 << 14)]
    assert g.entry(9) & REMOTE_IRR
    g.ioapic.set_irq(9, True)  # remote IRR set: nothing new until EOI
    assert len(g.msis) == 1
    g.ioapic.end_of_interrupt(0x39)  # still asserted: delivered again
    assert len(g.msis) == 2
    g.ioapic.set_irq(9, False)
    g.ioapic.end_of_interrupt(0x39)  # deasserted: remote IRR clears, nothing sent
    assert len(g.msis) == 2 and not g.entry(9) & REMOTE_IRR


def test_eoi_for_another_vector_does_nothing() -> None:
    g = Guest()
    g.program(9, 0x39 | LEVEL)
    g.ioapic.set_irq(9, True)
    g.ioapic.end_of_interrupt(0x40)
    assert g.entry(9) & REMOTE_IRR and len(g.msis) == 1


def test_unmasking_an_asserted_level_pin_delivers() -> None:
    g = Guest()
    g.program(10, 0x3A | LEVEL | MASKED)
    g.ioapic.set_irq(10, True)
    assert g.msis == []
    g.program(10, 0x3A | LEVEL)
    assert len(g.msis) == 1


def test_eoi_register_and_edge_toggle_clear_remote_irr() -> None:
    g = Guest()
    g.program(9, 0x39 | LEVEL)
    g.ioapic.set_irq(9, True)
    g.ioapic.write(IOEOI, 4, 0x39)  # directed EOI (IOAPIC version 0x20 register)
    assert len(g.msis) == 2
    # Linux's EOI for version 0x11: mask and switch to edge, then back to level (io_apic.c).
    g.program(9, 0x39 | MASKED)
    assert not g.entry(9) & REMOTE_IRR
    g.ioapic.set_irq(9, False)
    g.program(9, 0x39 | LEVEL)
    assert len(g.msis) == 2


def test_read_only_bits_ignore_guest_writes() -> None:
    g = Guest()
    g.program(3, 0x33 | REMOTE_IRR | 1 << 12 | LEVEL | MASKED)
    assert g.entry(3) == 0x33 | LEVEL | MASKED


def test_msi_encodes_destination_mode_and_delivery_mode() -> None:
    g = Guest()
    g.program(5, 0x00 | 4 << 8 | LOGICAL, dest=0x0F)  # NMI, logical destination 0x0F
    g.ioapic.set_irq(5, True)
    assert g.msis == [(0xFEE0_0000 | 0x0F << 12 | 1 << 2, 4 << 8)]


def test_writing_the_high_half_changes_only_the_destination() -> None:
    g = Guest()
    g.program(4, 0x24, dest=2)
    g.write_reg(0x11 + 8, 7 << 24)
    assert g.entry(4) == 0x24 | 7 << 56


def test_byte_accesses_and_unknown_offsets() -> None:
    g = Guest()
    g.ioapic.write(IOREGSEL, 1, 0x01)
    assert g.ioapic.read(IOWIN, 1) == 0x11
    assert g.ioapic.read(IOWIN + 2, 1) == 0x17
    assert g.ioapic.read(0x20, 4) == 0
    g.ioapic.write(0x20, 4, 0xFFFF_FFFF)  # ignored
    g.write_reg(0x10 + 2 * 30, 0x55)  # beyond the last pin: ignored
    assert g.read_reg(0x10 + 2 * 30) == 0


def test_pin_out_of_range_is_a_vmm_error() -> None:
    g = Guest()
    with pytest.raises(ValueError):
        g.ioapic.set_irq(24, True)
    with pytest.raises(ValueError):
        g.ioapic.line(-1)


def test_line_is_a_level_setter_for_one_pin() -> None:
    g = Guest()
    g.program(4, 0x24)
    line = g.ioapic.line(4)
    line(True)
    line(False)
    line(True)
    assert len(g.msis) == 2


@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 0x10, 0x11, 0x40, 0x44]), st.integers(0, 2**32 - 1))))
@settings(max_examples=300)
def test_any_guest_write_sequence_is_safe(writes: list[tuple[int, int]]) -> None:
    """A hostile guest cannot crash the device or set the read-only bits of any entry."""
    g = Guest()
    for offset, value in writes:
        g.ioapic.write(offset & ~3, 4 if offset % 4 == 0 else 1, value)
        g.ioapic.read(offset & ~3, 4)
    for pin in range(24):
        g.ioapic.set_irq(pin, True)
        assert not g.ioapic.entry(pin) & (1 << 12)
        assert g.ioapic.entry(pin) & 0x00FF_FFFF_FFFE_0000 == 0  # reserved bits stay zero
