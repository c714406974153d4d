r"""The Differentiated System Description Table: the AML namespace the guest's ACPI interpreter loads.

Ours holds the ``\_S5_`` sleep-type package, and under ``\_SB_`` one Device per vCPU plus the legacy
devices, described with PNP ids so Linux binds its drivers through ACPI instead of probing ports blindly.
Each builder here returns one AML term; :func:`build_dsdt` takes any further ``\_SB_`` devices (a PCI root
bridge, virtio-mmio devices, a GED power button) from its callers, so adding a device is adding a term.
"""

from __future__ import annotations

from collections.abc import Sequence

from aovisor.arch.x86_64 import layout
from aovisor.arch.x86_64.acpi import aml
from aovisor.arch.x86_64.acpi.tables import sdt

DSDT_REVISION = 2  # revision >= 2: AML integers are 64 bits wide (§5.2.11.1)

S5_SLEEP_TYPE = layout.ACPI_S5_SLEEP_TYPE


def s5_package() -> bytes:
    r"""``Name(\_S5_, Package() {5, 0, 0, 0})``.

    In hardware-reduced ACPI the OS takes SLP_TYP for "soft off" from the first element of ``\_S5_`` and
    writes ``SLP_TYP << 2 | SLP_EN`` to the FADT's SLEEP_CONTROL_REG (§7.4.2, §4.8.3.7).  Without this
    object Linux does not offer ACPI power-off at all.  Elements 1-3 (SLP_TYPb, reserved) are unused.
    """
    return aml.name("\\_S5_", aml.package(S5_SLEEP_TYPE, 0, 0, 0))


def processor_device(uid: int) -> bytes:
    """``Device(Cxxx) {_HID "ACPI0007", _UID uid}``: a processor whose _UID matches its MADT entry."""
    return aml.device(
        f"C{uid:03X}",
        aml.name("_HID", aml.string("ACPI0007")),
        aml.name("_UID", aml.integer(uid)),
    )


def com1_device() -> bytes:
    """The 16550 UART at 0x3F8, IRQ 4 (``PNP0501``)."""
    return aml.device(
        "COM1",
        aml.name("_HID", aml.eisa_id("PNP0501")),
        aml.name("_UID", aml.integer(1)),
        aml.name(
            "_CRS", aml.resource_template(aml.io(layout.PORT_COM1, 8), aml.irq_no_flags(layout.IRQ_COM1))
        ),
    )


def i8042_device() -> bytes:
    """The i8042 keyboard controller (``PNP0303``): data port 0x60, command/status port 0x64, IRQ 1.

    Linux's i8042 driver takes the data port from the first IO resource and the command port from the
    second.  There is no PS/2 mouse (``PNP0F13``) device, so the driver does not probe the AUX port.
    """
    return aml.device(
        "KBD_",
        aml.name("_HID", aml.eisa_id("PNP0303")),
        aml.name(
            "_CRS",
            aml.resource_template(
                aml.io(layout.PORT_I8042_DATA, 1),
                aml.io(layout.PORT_I8042_COMMAND, 1),
                aml.irq_no_flags(layout.IRQ_I8042_KBD),
            ),
        ),
    )


def rtc_device() -> bytes:
    """The CMOS RTC (``PNP0B00``): index/data ports 0x70-0x71.

    No IRQ is listed: our CMOS raises none.  (Linux's rtc-cmos still assumes IRQ 8 for a PNP RTC at 0x70
    without one; it then simply never fires, so alarms do not work, which we do not offer.)
    """
    return aml.device(
        "RTC_",
        aml.name("_HID", aml.eisa_id("PNP0B00")),
        aml.name("_CRS", aml.resource_template(aml.io(layout.PORT_CMOS, 2))),
    )


def build_dsdt(root_terms: Sequence[bytes], sb_devices: Sequence[bytes]) -> bytes:
    r"""A DSDT with ``root_terms`` at the namespace root and ``sb_devices`` inside ``Scope(\_SB_)``."""
    return sdt(b"DSDT", DSDT_REVISION, b"".join(root_terms) + aml.scope("\\_SB_", *sb_devices))
