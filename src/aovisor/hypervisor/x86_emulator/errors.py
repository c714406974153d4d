"""Why an instruction could not be emulated, and the fault the guest should see instead.

The emulator runs on instruction bytes and register values the guest controls; none of them may crash the
VMM.  Every failure is one of these exceptions, and each maps to an architectural fault the backend injects
(SDM Vol. 3A §6.15): an instruction we cannot decode or do not implement is a #UD, a memory operand whose
linear address does not translate is a #PF.
"""

from __future__ import annotations

UD_VECTOR = 6  # invalid opcode
GP_VECTOR = 13  # general protection
PF_VECTOR = 14  # page fault


class EmulatorError(Exception):
    """The instruction was not executed; the guest should receive ``fault`` instead."""

    vector = UD_VECTOR
    error_code: int | None = None


class TruncatedInstruction(EmulatorError):
    """The bytes given end inside the instruction: fetch more (up to 15) from guest memory and retry."""


class InvalidInstruction(EmulatorError):
    """The bytes do not decode to an x86 instruction."""


class UnsupportedInstruction(EmulatorError):
    """A valid instruction the emulator does not execute (e.g. SSE stores to MMIO)."""


class GuestFault(EmulatorError):
    """An exception the guest takes while the instruction executes (raised by memory callbacks).

    ``cr2`` is the faulting linear address for a page fault.
    """

    def __init__(
        self, vector: int, error_code: int | None = None, cr2: int | None = None, message: str = ""
    ) -> None:
        super().__init__(message or f"guest fault {vector}")
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2
