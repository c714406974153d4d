"""The Fixed ACPI Description Table ("FACP"), revision 6, for a hardware-reduced ACPI platform.

Hardware-reduced ACPI (ACPI 6.5 §4.1) drops the PM1/GPE register blocks, the PM timer, SMI_CMD and the FACS;
what remains is two byte-wide I/O registers (the layout Cloud Hypervisor uses, at the same port):

* SLEEP_CONTROL_REG at ``pm_port``: to power off, Linux writes ``SLP_TYP << 2 | SLP_EN`` (bit 5), with
  SLP_TYP taken from the DSDT's ``\\_S5_`` package — 5, so the byte is 0x34 (§4.8.3.7).
* SLEEP_STATUS_REG at ``pm_port + 1`` (WAK_STS, bit 7; only read when resuming from sleep states, which
  we do not offer).
* RESET_REG = the same port as sleep control, RESET_VALUE 1.  Linux's ``acpi_reboot()`` accepts only an
  8-bit register at bit offset 0 with the RESET_REG_SUP flag set.  The device behind the port tells a
  reset (1: SLP_EN clear) from a power-off (SLP_EN set) by bit 5.
"""

from __future__ import annotations

import struct

from aovisor.arch.x86_64.acpi.tables import SDT_HEADER_SIZE, io_port_register, sdt

FADT_REVISION = 6
FADT_MINOR_REVISION = 5  # ACPI 6.5
FADT_LENGTH = 276  # the full revision-6 table, through the Hypervisor Vendor Identity

# Field offsets from the start of the table (ACPI 6.5 Table 5.9).
OFFSET_SCI_INT = 46
OFFSET_IAPC_BOOT_ARCH = 109
OFFSET_FLAGS = 112
OFFSET_RESET_REG = 116
OFFSET_RESET_VALUE = 128
OFFSET_MINOR_REVISION = 131
OFFSET_X_DSDT = 140
OFFSET_SLEEP_CONTROL_REG = 244
OFFSET_SLEEP_STATUS_REG = 256
OFFSET_HYPERVISOR_VENDOR_ID = 268

# IA-PC boot architecture flags (Table 5.10).
IAPC_8042 = 1 << 1
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5

# Fixed feature flags (Table 5.11).
FLAG_WBINVD = 1 << 0
FLAG_PWR_BUTTON = 1 << 4  # set: no fixed-feature power button (a control-method one may be in the DSDT)
FLAG_SLP_BUTTON = 1 << 5  # set: no fixed-feature sleep button
FLAG_RESET_REG_SUP = 1 << 10
FLAG_HW_REDUCED_ACPI = 1 << 20

HYPERVISOR_VENDOR_ID = b"AOVISOR "
RESET_VALUE = 1


def build_fadt(
    dsdt_gpa: int, *, pm_port: int, sci_irq: int | None, i8042_present: bool, rtc_present: bool
) -> bytes:
    """The FADT for our hardware-reduced platform, pointing at the DSDT through X_DSDT."""
    table = bytearray(FADT_LENGTH)

    # SCI_INT sits in the range OSPM ignores when HW_REDUCED_ACPI is set (§5.2.9), but Linux's x86 MADT
    # code still reads it to program the SCI line's polarity; the MADT carries a matching override.
    struct.pack_into("<H", table, OFFSET_SCI_INT, sci_irq or 0)

    # 8042: Linux (acpi_parse_fadt) marks the i8042 "firmware absent" when this bit is clear on a FADT
    # of revision >= 2, and the i8042 driver then gives up unless the DSDT has a PNP0303 device.  We set
    # it with the i8042 present so the driver probes even if it finds no PNP device.  There is no VGA;
    # saying so keeps vgacon from poking at legacy VGA ports.
    boot_arch = IAPC_VGA_NOT_PRESENT
    if i8042_present:
        boot_arch |= IAPC_8042
    if not rtc_present:
        boot_arch |= IAPC_CMOS_RTC_NOT_PRESENT
    struct.pack_into("<H", table, OFFSET_IAPC_BOOT_ARCH, boot_arch)

    flags = FLAG_WBINVD | FLAG_PWR_BUTTON | FLAG_SLP_BUTTON | FLAG_RESET_REG_SUP | FLAG_HW_REDUCED_ACPI
    struct.pack_into("<I", table, OFFSET_FLAGS, flags)

    table[OFFSET_RESET_REG : OFFSET_RESET_REG + 12] = io_port_register(pm_port)
    table[OFFSET_RESET_VALUE] = RESET_VALUE
    table[OFFSET_MINOR_REVISION] = FADT_MINOR_REVISION
    # Only the 64-bit X_DSDT is set: the 32-bit DSDT field stays 0 so the two cannot disagree.
    struct.pack_into("<Q", table, OFFSET_X_DSDT, dsdt_gpa)
    table[OFFSET_SLEEP_CONTROL_REG : OFFSET_SLEEP_CONTROL_REG + 12] = io_port_register(pm_port)
    table[OFFSET_SLEEP_STATUS_REG : OFFSET_SLEEP_STATUS_REG + 12] = io_port_register(pm_port + 1)
    table[OFFSET_HYPERVISOR_VENDOR_ID : OFFSET_HYPERVISOR_VENDOR_ID + 8] = HYPERVISOR_VENDOR_ID

    return sdt(b"FACP", FADT_REVISION, table[SDT_HEADER_SIZE:])
