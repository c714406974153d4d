"""The hardware-reduced ACPI power-management registers: sleep control, sleep status and reset.

Hardware-reduced ACPI replaces the PM1 register blocks with two byte-wide registers the FADT points at
(ACPI 6.5 §4.8.3.7 Sleep Control Register, §4.8.3.8 Sleep Status Register); like Cloud Hypervisor we put
them at offsets 0 and 1 of one port range and make offset 0 the FADT's RESET_REG too:

* offset 0, sleep control (write): ``SLP_TYP`` in bits 4:2, ``SLP_EN`` bit 5.  ``SLP_EN`` with the S5
  sleep type (the first element of the DSDT's ``\\_S5_`` package, :data:`S5_SLEEP_TYPE`) powers off.
  Bits 0-1 are reserved in this register, so the reset value 1 cannot be mistaken for a sleep request.
* offset 1, sleep status: ``WAK_STS`` in bit 7, write 1 to clear.
* offsets 2-7: reserved (room for a Generic Event Device's event register, for the power button).

Sleep states other than S5 are not offered in the DSDT.  If a guest requests one anyway we wake it at once
by setting ``WAK_STS``: ACPICA's ``acpi_hw_extended_sleep`` spins on that bit after writing ``SLP_EN``, so
ignoring the request would hang the vCPU.
"""

from __future__ import annotations

from collections.abc import Callable

from aovisor.arch.x86_64 import layout
from aovisor.logs import get_logger

log = get_logger(__name__)

SLEEP_CONTROL = 0  # register offsets
SLEEP_STATUS = 1

SLP_TYP_SHIFT = 2
SLP_TYP_MASK = 0x1C
SLP_EN = 0x20
WAK_STS = 0x80
S5_SLEEP_TYPE = layout.ACPI_S5_SLEEP_TYPE
POWEROFF_VALUE = (S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN  # 0x34
RESET_VALUE = 1  # the FADT's RESET_VALUE; RESET_REG is SLEEP_CONTROL


class AcpiPmDevice:
    """Calls ``poweroff()`` on an S5 request and ``reset()`` on a write of :data:`RESET_VALUE`."""

    def __init__(self, poweroff: Callable[[], None], reset: Callable[[], None]) -> None:
        self._poweroff = poweroff
        self._reset = reset
        self._sleep_status = 0

    def read(self, offset: int, size: int) -> int:
        if size == 1 and offset == SLEEP_STATUS:
            return self._sleep_status
        return 0  # sleep control reads as 0 (SLP_EN is write-only); reserved offsets too

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 1:
            return  # the FADT describes byte-wide registers; ACPICA accesses them with 1-byte I/O
        value &= 0xFF
        if offset == SLEEP_CONTROL:
            if value == RESET_VALUE:
                log.info("guest reset through the ACPI reset register")
                self._reset()
            elif value & SLP_EN:
                sleep_type = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT
                if sleep_type == S5_SLEEP_TYPE:
                    log.info("guest powered off through ACPI S5")
                    self._poweroff()
                else:
                    log.debug("unsupported sleep type %d: waking at once", sleep_type)
                    self._sleep_status |= WAK_STS
        elif offset == SLEEP_STATUS:
            self._sleep_status &= ~(value & WAK_STS) & 0xFF  # write-1-to-clear
