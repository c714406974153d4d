"""What the emulator works on: the guest's general-purpose registers and a linear-memory interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Architectural register numbering (SDM Vol. 2A §2.1.5, Table 2-2), which is also the order of the
# Microsoft hypervisor's register ids 0x20000-0x2000F and of iced-x86's Register.RAX..R15.
GPR_NAMES = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)

# RFLAGS bits (SDM Vol. 1 §3.4.3).
CF = 1 << 0
PF = 1 << 2
AF = 1 << 4
ZF = 1 << 6
SF = 1 << 7
DF = 1 << 10
OF = 1 << 11
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF


class Memory(Protocol):
    """Guest memory as the instruction sees it: by *linear* address, little-endian, 1/2/4/8 bytes.

    The backend translates the address (guest page tables) and routes it to RAM or to an MMIO device.  It
    raises :class:`~aovisor.hypervisor.x86_emulator.errors.GuestFault` when the address does not translate.
    """

    def read(self, address: int, size: int) -> int: ...

    def write(self, address: int, size: int, value: int) -> None: ...


def _no_segment_base(segment: str) -> int:
    return 0


@dataclass
class CpuState:
    """The registers an instruction can read or write; ``emulate`` updates them in place.

    ``bitness`` is the code segment's default size: 64 (long mode, CS.L=1), 32 or 16.  ``segment_base``
    returns the base of "es", "cs", "ss", "ds", "fs" or "gs"; it is called only when an address needs it (in
    64-bit mode only for FS/GS overrides), so a backend can fetch bases lazily.
    """

    gprs: list[int] = field(default_factory=lambda: [0] * 16)
    rip: int = 0
    rflags: int = 0x2
    bitness: int = 64
    segment_base: Callable[[str], int] = _no_segment_base

    def __post_init__(self) -> None:
        if len(self.gprs) != 16:
            raise ValueError("CpuState needs 16 general-purpose registers")
        if self.bitness not in (16, 32, 64):
            raise ValueError(f"bad bitness {self.bitness}")

    def get(self, name: str) -> int:
        """A 64-bit register by name ("rax".."r15", "rip", "rflags")."""
        if name == "rip":
            return self.rip
        if name == "rflags":
            return self.rflags
        return self.gprs[GPR_NAMES.index(name)]
