"""Interrupt lines injected into devices, so a device never knows how its interrupt reaches the guest."""

from __future__ import annotations

from aovisor.lean_typing import Protocol


class IrqLine(Protocol):
    """A wired interrupt line (an IOAPIC pin).

    Devices drive it like the hardware pin: ``set_level(True)`` while an interrupt condition is pending,
    ``set_level(False)`` when it clears.  Implementations only act on changes.
    """

    def set_level(self, level: bool) -> None: ...


class NullIrq:
    """A line connected to nothing (for unit tests and devices with interrupts disabled)."""

    def __init__(self) -> None:
        self.level = False
        self.raised = 0  # rising edges seen

    def set_level(self, level: bool) -> None:
        if level and not self.level:
            self.raised += 1
        self.level = level
