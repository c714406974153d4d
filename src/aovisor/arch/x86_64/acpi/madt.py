"""The Multiple APIC Description Table ("APIC"): the guest's local APICs and IOAPIC (ACPI 6.5 §5.2.12)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aovisor.arch.x86_64.acpi.tables import sdt

MADT_REVISION = 5  # ACPI 6.3+: LAPIC flags carry "Online Capable" (bit 1)

# Interrupt controller structure types (Table 5.21).
TYPE_LOCAL_APIC = 0
TYPE_IO_APIC = 1
TYPE_INTERRUPT_SOURCE_OVERRIDE = 2
TYPE_LOCAL_APIC_NMI = 4

LAPIC_ENABLED = 1 << 0

# MPS INTI flags (Table 5.26): polarity in bits 1:0, trigger mode in bits 3:2.
INTI_CONFORMS = 0x0000  # "conforms to the bus": ISA is edge-triggered, active-high
INTI_ACTIVE_HIGH = 0x0001
INTI_LEVEL = 0x000C

ALL_PROCESSORS = 0xFF  # ACPI Processor UID meaning "every processor" in a Local APIC NMI structure
_ISA_BUS = 0
_PIT_IRQ = 0
_PIT_GSI = 2  # on a PC the 8254's output reaches IOAPIC pin 2 (pin 0 is the 8259's INTR)
_LINT1 = 1

# xAPIC ids are 8 bits and 0xFF is the broadcast id, so 255 processors (ids 0-254) is the most the
# Processor Local APIC structure can describe; more would need Local x2APIC structures.
MAX_XAPIC_CPUS = 255


def build_madt(
    apic_ids: Sequence[int],
    *,
    lapic_address: int,
    ioapic_id: int,
    ioapic_address: int,
    ioapic_gsi_base: int,
    sci_irq: int | None,
) -> bytes:
    """A MADT with one enabled local APIC per vCPU (ACPI processor UID n, APIC id ``apic_ids[n]``) and one
    IOAPIC.

    The interrupt source overrides name GSIs assuming ISA IRQ n is GSI n apart from the PIT, i.e. an
    IOAPIC whose GSI base is 0 (the default).
    """
    if not 1 <= len(apic_ids) <= MAX_XAPIC_CPUS or not all(0 <= a < MAX_XAPIC_CPUS for a in apic_ids):
        raise ValueError(f"APIC ids {apic_ids}: the MADT describes 1 to {MAX_XAPIC_CPUS} xAPIC ids 0-254")
    # Flags: PCAT_COMPAT (bit 0) is clear.  Nothing guarantees a dual 8259 (MSHV has none, and Linux in
    # hardware-reduced mode installs its null legacy PIC anyway); the IOAPIC routes every legacy IRQ.
    body = bytearray(struct.pack("<II", lapic_address, 0))
    for uid, apic_id in enumerate(apic_ids):
        body += struct.pack("<BBBBI", TYPE_LOCAL_APIC, 8, uid, apic_id, LAPIC_ENABLED)
    body += struct.pack("<BBBBII", TYPE_IO_APIC, 12, ioapic_id, 0, ioapic_address, ioapic_gsi_base)
    # IRQ0 -> GSI 2, as on every PC (and as QEMU describes it), for the 8254 PIT.
    body += struct.pack(
        "<BBBBIH", TYPE_INTERRUPT_SOURCE_OVERRIDE, 10, _ISA_BUS, _PIT_IRQ, _PIT_GSI, INTI_CONFORMS
    )
    if sci_irq is not None:
        # The SCI is level-triggered; without an override Linux assumes active-low for it.  Active-high
        # matches what the VMM drives (QEMU describes IRQ 9 the same way).
        body += struct.pack(
            "<BBBBIH",
            TYPE_INTERRUPT_SOURCE_OVERRIDE,
            10,
            _ISA_BUS,
            sci_irq,
            sci_irq,
            INTI_ACTIVE_HIGH | INTI_LEVEL,
        )
    # NMI arrives on LINT1 of every local APIC, as the PC wiring (and KVM's LAPIC model) has it.
    body += struct.pack("<BBBHB", TYPE_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, INTI_CONFORMS, _LINT1)
    return sdt(b"APIC", MADT_REVISION, body)
