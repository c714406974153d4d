r"""The ACPI Generic Event Device (GED) that delivers the power button to a hardware-reduced ACPI guest.

Hardware-reduced ACPI has no fixed-feature power button and no GPE blocks: platform events reach the OS as
an interrupt on a GED (``ACPI0013``, ACPI 6.5 §5.6.9), whose ``_EVT`` method the OS runs with the GSI
number.  Our ``_EVT`` reads one byte-wide event register (read-to-clear, like Cloud Hypervisor's GED) and,
when the power-button bit is set, does ``Notify(\_SB_.PWRB, 0x80)`` on a control-method power button
(``PNP0C0C``, §4.8.2.2.1.2).  Linux's ``button`` driver turns that notification into ``KEY_POWER``, which
systemd-logind or acpid turn into a clean power-off.

Registers (port I/O, ``layout.PORT_ACPI_GED``):

* offset 0, events (read): the pending :class:`GedEvent` bits; the read clears them.  Writes are ignored.

The interrupt is edge-triggered and active high (the ``_CRS`` says so, and that is how the IOAPIC pin is
programmed by the OS), so each :meth:`AcpiGedDevice.notify` is one pulse on the line; events raised before
the OS reads the register accumulate in it and are handled by one ``_EVT`` run.
"""

from __future__ import annotations

import enum
import threading

from aovisor.arch.x86_64 import layout
from aovisor.arch.x86_64.acpi import aml
from aovisor.devices.irq import IrqLine
from aovisor.logs import get_logger

log = get_logger(__name__)

EVENTS = 0  # register offset


class GedEvent(enum.IntFlag):
    """Bits of the event register; the values are Cloud Hypervisor's ``AcpiNotificationFlags``."""

    CPU_DEVICES_CHANGED = 0x1
    MEMORY_DEVICES_CHANGED = 0x2
    PCI_DEVICES_CHANGED = 0x4
    POWER_BUTTON = 0x8


POWER_BUTTON_NOTIFY = 0x80  # "button pressed" notification value for a PNP0C0C device (ACPI 6.5 §5.6.6)


class AcpiGedDevice:
    """A one-byte event register plus an edge-triggered interrupt line.

    :meth:`notify` may be called from any thread (the VMM's control thread presses the button while vCPU
    threads read the register), so the pending bits are guarded by a lock.
    """

    def __init__(self, irq: IrqLine) -> None:
        self._irq = irq
        self._pending = 0
        self._lock = threading.Lock()
        self.events_raised = 0

    def notify(self, event: GedEvent) -> None:
        """Latch ``event`` and pulse the interrupt line so the guest runs ``_EVT``."""
        with self._lock:
            self._pending |= int(event)
            self.events_raised += 1
        log.info("GED event %s", event.name)
        self._irq.set_level(True)
        self._irq.set_level(False)

    def read(self, offset: int, size: int) -> int:
        if offset != EVENTS or size != 1:
            return 0  # the AML field is byte-wide; anything else is a guest bug and reads as "no event"
        with self._lock:
            value, self._pending = self._pending, 0
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        return  # read-only register

    def counters(self) -> dict[str, int]:
        return {"events": self.events_raised}


def ged_aml(port: int = layout.PORT_ACPI_GED, gsi: int = layout.IRQ_ACPI_GED) -> tuple[bytes, ...]:
    r"""The ``\_SB_`` devices: the power button ``PWRB`` and the ``GED_`` that notifies it.

    ::

        Device (PWRB) { Name (_HID, EisaId ("PNP0C0C"))  Name (_UID, 0) }
        Device (GED_) {
            Name (_HID, "ACPI0013")  Name (_UID, 0)
            Name (_CRS, ResourceTemplate () {
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi} })
            OperationRegion (GDST, SystemIO, port, 1)
            Field (GDST, ByteAcc, NoLock, Preserve) { GDAT, 8 }
            Method (_EVT, 1, Serialized) {
                Local0 = GDAT                                   // one read: it clears the register
                If ((Local0 & 0x08) == 0x08) { Notify (\_SB_.PWRB, 0x80) }
            }
        }
    """
    power_button = aml.device(
        "PWRB",
        aml.name("_HID", aml.eisa_id("PNP0C0C")),
        aml.name("_UID", aml.integer(0)),
    )
    button_bit = aml.integer(int(GedEvent.POWER_BUTTON))
    ged = aml.device(
        "GED_",
        aml.name("_HID", aml.string("ACPI0013")),
        aml.name("_UID", aml.integer(0)),
        aml.name("_CRS", aml.resource_template(aml.interrupt(gsi))),
        aml.operation_region("GDST", aml.RegionSpace.SYSTEM_IO, port, layout.ACPI_GED_SIZE),
        aml.field("GDST", aml.FieldAccess.BYTE, [("GDAT", 8)]),
        aml.method(
            "_EVT",
            1,
            aml.store(aml.path_ref("GDAT"), aml.local(0)),
            aml.if_(
                aml.lequal(aml.and_(aml.local(0), button_bit), button_bit),
                aml.notify(aml.path_ref("\\_SB_.PWRB"), aml.integer(POWER_BUTTON_NOTIFY)),
            ),
            serialized=True,
        ),
    )
    return power_button, ged
