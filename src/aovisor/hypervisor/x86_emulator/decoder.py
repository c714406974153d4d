"""Instruction decoding with iced-x86 (the decoder Cloud Hypervisor's MSHV emulator uses).

iced-x86 takes ~50 ms to import, so it is imported on the first decode: a KVM run, where the kernel decodes
MMIO instructions itself, never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from aovisor.hypervisor.x86_emulator.errors import InvalidInstruction, TruncatedInstruction

if TYPE_CHECKING:
    import iced_x86

MAX_INSTRUCTION_LENGTH = 15  # SDM Vol. 2A §2.3.11


@dataclass(frozen=True)
class RegisterSlot:
    """Where an iced register lives in ``CpuState.gprs``: index, bit shift (8 for AH..BH) and size."""

    index: int
    shift: int
    size: int


@cache
def iced() -> Any:
    """The iced_x86 module, imported on first use."""
    import iced_x86

    return iced_x86


@cache
def register_slots() -> dict[int, RegisterSlot]:
    """Every general-purpose register iced can name (AL..R15, AH..BH), mapped to its slot."""
    ix = iced()
    reg = ix.Register
    high_bytes = {reg.AH, reg.CH, reg.DH, reg.BH}
    slots: dict[int, RegisterSlot] = {}
    for value in range(reg.AL, reg.R15 + 1):
        info = ix.RegisterExt.info(value)
        index = info.full_register - reg.RAX
        slots[value] = RegisterSlot(index, 8 if value in high_bytes else 0, info.size)
    return slots


@cache
def segment_names() -> dict[int, str]:
    reg = iced().Register
    return {reg.ES: "es", reg.CS: "cs", reg.SS: "ss", reg.DS: "ds", reg.FS: "fs", reg.GS: "gs"}


def decode(code: bytes, bitness: int, rip: int) -> iced_x86.Instruction:
    """Decode the first instruction of ``code``; raise if it is cut short or not an instruction."""
    ix = iced()
    decoder = ix.Decoder(bitness, code, ip=rip)
    instr: iced_x86.Instruction = decoder.decode()
    if instr.is_invalid:
        if decoder.last_error == ix.DecoderError.NO_MORE_BYTES and len(code) < MAX_INSTRUCTION_LENGTH:
            raise TruncatedInstruction(f"instruction at {rip:#x} is longer than the {len(code)} bytes given")
        raise InvalidInstruction(f"invalid instruction at {rip:#x}: {code[:MAX_INSTRUCTION_LENGTH].hex()}")
    return instr


def describe(instr: iced_x86.Instruction) -> str:
    """The instruction in Intel syntax, for log messages."""
    return str(iced().Formatter(iced().FormatterSyntax.INTEL).format(instr))
