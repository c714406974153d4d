"""Assemble the guest's ACPI tables into one blob to copy into guest RAM.

Layout, each piece 16-byte aligned, at ``base_gpa`` (``layout.ACPI_START``)::

    RSDP -> XSDT -> FADT -> DSDT (through X_DSDT)
                 -> MADT
                 -> extra tables (e.g. MCFG)

The RSDP comes first so it lies on a 16-byte boundary inside the BIOS area Linux scans (0xE0000-0xFFFFF).
There is no RSDT (ACPI 2.0+ guests use the XSDT) and no FACS (hardware-reduced ACPI has no firmware
waking vector or global lock).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from aovisor.arch.x86_64 import layout
from aovisor.arch.x86_64.acpi import dsdt
from aovisor.arch.x86_64.acpi.fadt import FADT_LENGTH, build_fadt
from aovisor.arch.x86_64.acpi.madt import MAX_XAPIC_CPUS, build_madt
from aovisor.arch.x86_64.acpi.rsdp import RSDP_ALIGNMENT, RSDP_SIZE, build_rsdp
from aovisor.arch.x86_64.acpi.tables import SDT_HEADER_SIZE, checksum
from aovisor.arch.x86_64.acpi.xsdt import build_xsdt
from aovisor.lean_typing import NamedTuple

_TABLE_ALIGNMENT = 16


class AcpiConfig(NamedTuple):
    """What the ACPI tables describe.  Defaults are the platform in :mod:`aovisor.arch.x86_64.layout`.

    :func:`build_acpi` checks it with :meth:`validate` first."""

    n_cpus: int
    """vCPUs, with ACPI processor UIDs 0..n_cpus-1."""
    apic_ids: tuple[int, ...] | None = None
    """The APIC id of each vCPU, in UID order (a CPU topology leaves gaps); None: the same as the UIDs."""
    ioapic_address: int = layout.IOAPIC_START
    ioapic_id: int = 0
    """0, as in Cloud Hypervisor and QEMU: it is the reset value of KVM's in-kernel IOAPIC ID register, and
    x86-64 Linux only needs IOAPIC ids to be unique among IOAPICs (they no longer share a bus with the
    local APIC ids), so the table agrees with the hardware and nothing gets renumbered."""
    ioapic_gsi_base: int = 0
    lapic_address: int = layout.APIC_START
    pm_port: int = layout.PORT_ACPI_PM
    """Sleep control and reset register; sleep status is at ``pm_port + 1``."""
    sci_irq: int | None = layout.IRQ_ACPI_SCI
    """ISA IRQ of the SCI (FADT SCI_INT + a level/active-high MADT override), or None for no SCI."""
    serial: bool = True
    """COM1 (PNP0501) at 0x3F8, IRQ 4."""
    i8042: bool = True
    """i8042 keyboard controller (PNP0303) at 0x60/0x64, IRQ 1, and the FADT 8042 boot flag."""
    rtc: bool = True
    """CMOS RTC (PNP0B00) at 0x70; without it the FADT says "CMOS RTC not present"."""
    sb_devices: tuple[bytes, ...] = ()
    r"""Extra AML Device terms (see :mod:`.aml`) for ``Scope(\_SB_)``: PCI root bridge, virtio-mmio..."""
    dsdt_terms: tuple[bytes, ...] = ()
    """Extra AML terms at the DSDT's namespace root."""
    extra_tables: tuple[bytes, ...] = ()
    """Complete tables (built with :func:`.tables.sdt`) to list in the XSDT after the FADT and MADT."""

    def validate(self) -> None:
        """Raise :class:`ValueError` if the values cannot describe a platform."""
        if not 1 <= self.n_cpus <= MAX_XAPIC_CPUS:
            raise ValueError(f"ACPI: {self.n_cpus} vCPUs, expected 1 to {MAX_XAPIC_CPUS}")
        if self.apic_ids is not None and (
            len(self.apic_ids) != self.n_cpus or len(set(self.apic_ids)) != self.n_cpus
        ):
            raise ValueError(
                f"ACPI: {self.n_cpus} vCPUs need {self.n_cpus} distinct APIC ids: {self.apic_ids}"
            )
        if not 0 <= self.ioapic_id <= 0xFE:
            raise ValueError(f"ACPI: IOAPIC id {self.ioapic_id} is not 0-254")
        if not 0 <= self.pm_port <= 0xFFFE:
            raise ValueError(f"ACPI: PM port {self.pm_port:#x} leaves no room for the status register")
        if self.sci_irq is not None and not 1 <= self.sci_irq <= 15:
            raise ValueError(f"ACPI: SCI IRQ {self.sci_irq} is not an ISA IRQ 1-15")
        for address in (self.ioapic_address, self.lapic_address):
            if not 0 <= address <= 0xFFFF_FFFF:
                raise ValueError(f"ACPI: interrupt controller address {address:#x} is above 4 GiB")
        for table in self.extra_tables:
            _check_table(table)


class AcpiBlob(NamedTuple):
    """The tables, laid out for guest-physical address ``rsdp_gpa`` (the start of ``data``)."""

    data: bytes
    rsdp_gpa: int
    table_gpas: Mapping[str, int]
    """Signature -> guest-physical address of each table, for logs and tests."""


def _check_table(table: bytes) -> None:
    if len(table) < SDT_HEADER_SIZE:
        raise ValueError(f"ACPI: a {len(table)}-byte extra table is shorter than its header")
    (length,) = struct.unpack_from("<I", table, 4)
    if length != len(table) or checksum(table) != 0:
        raise ValueError(f"ACPI: extra table {table[:4]!r} has a wrong length field or checksum")


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def build_acpi(cfg: AcpiConfig, base_gpa: int, *, end_gpa: int = layout.ACPI_END) -> AcpiBlob:
    """Build every table for ``cfg``, placed at ``base_gpa``; the blob must end at or below ``end_gpa``."""
    if base_gpa % RSDP_ALIGNMENT:
        raise ValueError(f"ACPI: base {base_gpa:#x} is not {RSDP_ALIGNMENT}-byte aligned")
    cfg.validate()

    root_terms = [dsdt.s5_package(), *cfg.dsdt_terms]
    sb_devices = [dsdt.processor_device(uid) for uid in range(cfg.n_cpus)]
    if cfg.serial:
        sb_devices.append(dsdt.com1_device())
    if cfg.i8042:
        sb_devices.append(dsdt.i8042_device())
    if cfg.rtc:
        sb_devices.append(dsdt.rtc_device())
    sb_devices += cfg.sb_devices
    dsdt_table = dsdt.build_dsdt(root_terms, sb_devices)
    madt = build_madt(
        cfg.apic_ids if cfg.apic_ids is not None else tuple(range(cfg.n_cpus)),
        lapic_address=cfg.lapic_address,
        ioapic_id=cfg.ioapic_id,
        ioapic_address=cfg.ioapic_address,
        ioapic_gsi_base=cfg.ioapic_gsi_base,
        sci_irq=cfg.sci_irq,
    )
    # Sizes never depend on addresses, so offsets are known before the pointing tables are built.
    n_listed = 2 + len(cfg.extra_tables)  # FADT, MADT, extras
    sizes = {
        "RSDP": RSDP_SIZE,
        "XSDT": SDT_HEADER_SIZE + 8 * n_listed,
        "FACP": FADT_LENGTH,
        "DSDT": len(dsdt_table),
        "APIC": len(madt),
    }
    extra_names = [f"{t[:4].decode('ascii', 'replace')}#{i}" for i, t in enumerate(cfg.extra_tables)]
    sizes.update({n: len(t) for n, t in zip(extra_names, cfg.extra_tables, strict=True)})
    gpas: dict[str, int] = {}
    offset = 0
    for table_name, size in sizes.items():
        gpas[table_name] = base_gpa + offset
        offset = _align(offset + size, _TABLE_ALIGNMENT)
    if base_gpa + offset > end_gpa:
        raise ValueError(f"ACPI: {offset} bytes of tables at {base_gpa:#x} pass the {end_gpa:#x} limit")

    fadt = build_fadt(
        gpas["DSDT"],
        pm_port=cfg.pm_port,
        sci_irq=cfg.sci_irq,
        i8042_present=cfg.i8042,
        rtc_present=cfg.rtc,
    )
    xsdt = build_xsdt([gpas["FACP"], gpas["APIC"], *(gpas[n] for n in extra_names)])
    contents = {
        "RSDP": build_rsdp(gpas["XSDT"]),
        "XSDT": xsdt,
        "FACP": fadt,
        "DSDT": dsdt_table,
        "APIC": madt,
        **dict(zip(extra_names, cfg.extra_tables, strict=True)),
    }
    data = bytearray(offset)
    for table_name, table in contents.items():
        assert len(table) == sizes[table_name], table_name
        start = gpas[table_name] - base_gpa
        data[start : start + len(table)] = table
    return AcpiBlob(data=bytes(data), rsdp_gpa=base_gpa, table_gpas=gpas)
