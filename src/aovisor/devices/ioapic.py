"""A user-space I/O APIC (82093AA): wired interrupt pins turned into MSIs.

For hypervisors without an in-kernel IOAPIC (MSHV; mshv.md §8): like Cloud Hypervisor, the VMM emulates the
IOAPIC's registers on the MMIO bus at ``layout.IOAPIC_START`` and delivers each pin's interrupt as the MSI its
redirection-table entry describes, through an injected ``send_msi(address, data)``.

Registers (82093AA datasheet §3.1; the EOI register is the version 0x20 addition Linux uses when present):
IOREGSEL at offset 0x00 selects an indirect register, IOWIN at 0x10 reads/writes it, EOI at 0x40.  Indirect
registers: 0x00 ID, 0x01 version, 0x02 arbitration, 0x10 + 2n / 0x11 + 2n the low/high halves of
redirection entry n.

Level-triggered pins follow the remote-IRR protocol: a delivered interrupt sets remote IRR, and the next one
is only sent after the guest's EOI for that vector clears it (reported by the backend: MSHV's APIC_EOI
intercept) — so a device that keeps its line asserted interrupts again, and one that deasserted does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

IOREGSEL = 0x00
IOWIN = 0x10
IOEOI = 0x40

REG_ID = 0x00
REG_VERSION = 0x01
REG_ARBITRATION = 0x02
REG_REDIRECTION_BASE = 0x10
IOAPIC_VERSION = 0x11  # what KVM's and QEMU's IOAPICs report; Linux then broadcasts EOIs via the LAPIC

# Redirection-table entry fields (82093AA §3.2.4)
RTE_VECTOR = 0xFF
RTE_DELIVERY_MODE_SHIFT = 8
RTE_DEST_LOGICAL = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12  # read-only
RTE_POLARITY_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14  # read-only
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
RTE_DEST_SHIFT = 56
RTE_WRITABLE = 0xFF00_0000_0001_AFFF  # everything but delivery status, remote IRR and reserved bits

MSI_ADDRESS_BASE = 0xFEE0_0000
MSI_ADDRESS_DEST_SHIFT = 12
MSI_ADDRESS_LOGICAL = 1 << 2
MSI_DATA_LEVEL_ASSERT = 1 << 14
MSI_DATA_LEVEL_TRIGGER = 1 << 15

SendMsi = Callable[[int, int], None]


def rte_to_msi(entry: int) -> tuple[int, int]:
    """The MSI (address, data) that delivers redirection entry ``entry`` (Intel SDM Vol. 3A §11.11)."""
    dest = entry >> RTE_DEST_SHIFT & 0xFF
    address = MSI_ADDRESS_BASE | dest << MSI_ADDRESS_DEST_SHIFT
    if entry & RTE_DEST_LOGICAL:
        address |= MSI_ADDRESS_LOGICAL
    data = entry & RTE_VECTOR | (entry >> RTE_DELIVERY_MODE_SHIFT & 7) << 8
    if entry & RTE_LEVEL:
        data |= MSI_DATA_LEVEL_TRIGGER | MSI_DATA_LEVEL_ASSERT
    return address, data


class IoApic:
    """A ``BusDevice`` (4 KiB of MMIO) plus the pin inputs ``set_irq`` and the EOI input."""

    def __init__(self, send_msi: SendMsi, *, pins: int = 24, apic_id: int = 0) -> None:
        if not 1 <= pins <= 240:
            raise ValueError(f"bad IOAPIC pin count {pins}")
        self._send_msi = send_msi
        self.pins = pins
        self._id = apic_id & 0xF
        self._select = 0
        self._entries = [RTE_MASKED] * pins  # reset: every pin masked
        self._levels = [False] * pins
        self._lock = threading.Lock()
        self.delivered = 0  # MSIs sent, for tests and statistics

    # --- MMIO ----------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        base, shift = offset & ~3, (offset & 3) * 8
        with self._lock:
            if base == IOREGSEL:
                value = self._select
            elif base == IOWIN:
                value = self._read_indirect(self._select)
            else:
                value = 0
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        base, shift = offset & ~3, (offset & 3) * 8
        mask = ((1 << (8 * size)) - 1) << shift
        value = (value << shift) & mask & 0xFFFF_FFFF
        if base == IOEOI:
            self.end_of_interrupt(value & 0xFF)
            return
        with self._lock:
            if base == IOREGSEL:
                self._select = ((self._select & ~mask) | value) & 0xFF
                return
            if base != IOWIN:
                return
            old = self._read_indirect(self._select)
            pending = self._write_indirect(self._select, (old & ~mask) | value)
        self._deliver(pending)

    def _read_indirect(self, reg: int) -> int:
        if reg in (REG_ID, REG_ARBITRATION):
            return self._id << 24
        if reg == REG_VERSION:
            return IOAPIC_VERSION | (self.pins - 1) << 16
        pin, high = divmod(reg - REG_REDIRECTION_BASE, 2)
        if reg >= REG_REDIRECTION_BASE and pin < self.pins:
            return (self._entries[pin] >> (32 if high else 0)) & 0xFFFF_FFFF
        return 0

    def _write_indirect(self, reg: int, value: int) -> list[tuple[int, int]]:
        if reg == REG_ID:
            self._id = value >> 24 & 0xF
            return []
        pin, high = divmod(reg - REG_REDIRECTION_BASE, 2)
        if reg < REG_REDIRECTION_BASE or pin >= self.pins:
            return []  # version/arbitration are read-only; unknown registers ignore writes
        old = self._entries[pin]
        new = (old & 0xFFFF_FFFF) | value << 32 if high else (old & ~0xFFFF_FFFF) | value
        entry = (old & ~RTE_WRITABLE) | (new & RTE_WRITABLE)
        if not entry & RTE_LEVEL:
            # Switching to edge clears remote IRR: Linux's EOI for IOAPICs without an EOI register masks
            # the pin and toggles it edge→level (arch/x86/kernel/apic/io_apic.c, __eoi_ioapic_pin).
            entry &= ~RTE_REMOTE_IRR
        self._entries[pin] = entry
        return self._service_level(pin)

    # --- pins and EOI --------------------------------------------------------------------------------
    def set_irq(self, pin: int, level: bool) -> None:
        """Drive input ``pin``: edge-triggered entries fire on a rising edge, level-triggered ones while
        high.  The level is the logical assertion (the polarity bit is the guest's description of the
        wire and needs no inversion here, as in KVM's IOAPIC)."""
        if not 0 <= pin < self.pins:
            raise ValueError(f"IOAPIC pin {pin} out of range")
        with self._lock:
            rising = level and not self._levels[pin]
            self._levels[pin] = level
            entry = self._entries[pin]
            if entry & RTE_LEVEL:
                pending = self._service_level(pin)
            elif rising and not entry & RTE_MASKED:
                pending = [rte_to_msi(entry)]
            else:
                pending = []
        self._deliver(pending)

    def line(self, pin: int) -> Callable[[bool], None]:
        """A callable that sets the level of ``pin`` (what ``Vm.irq_line`` hands to devices)."""
        if not 0 <= pin < self.pins:
            raise ValueError(f"IOAPIC pin {pin} out of range")

        def set_level(level: bool) -> None:
            self.set_irq(pin, level)

        return set_level

    def end_of_interrupt(self, vector: int) -> None:
        """The guest finished servicing ``vector``: clear remote IRR of the level-triggered pins using it
        and re-deliver those whose line is still asserted."""
        pending: list[tuple[int, int]] = []
        with self._lock:
            for pin, entry in enumerate(self._entries):
                if entry & RTE_LEVEL and entry & RTE_REMOTE_IRR and entry & RTE_VECTOR == vector:
                    self._entries[pin] = entry & ~RTE_REMOTE_IRR
                    pending += self._service_level(pin)
        self._deliver(pending)

    def _service_level(self, pin: int) -> list[tuple[int, int]]:
        """Deliver a level-triggered pin if it is asserted, unmasked and not awaiting EOI (lock held)."""
        entry = self._entries[pin]
        if entry & RTE_LEVEL and self._levels[pin] and not entry & (RTE_MASKED | RTE_REMOTE_IRR):
            self._entries[pin] = entry | RTE_REMOTE_IRR
            return [rte_to_msi(entry)]
        return []

    def _deliver(self, messages: list[tuple[int, int]]) -> None:
        # Outside the lock: send_msi enters the hypervisor and may take its own locks.
        for address, data in messages:
            self.delivered += 1
            self._send_msi(address, data)

    # --- inspection ----------------------------------------------------------------------------------
    def entry(self, pin: int) -> int:
        """Redirection entry ``pin`` as the guest would read it (64 bits)."""
        with self._lock:
            return self._entries[pin]
