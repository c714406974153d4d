"""RFLAGS results of the arithmetic and logic the emulator executes (SDM Vol. 1 §3.4.3.1, Appendix A).

Each function returns ``(result, flags)`` where ``flags`` holds only the bits in ``ARITH_FLAGS`` that the
operation defines; the caller merges them into RFLAGS.
"""

from __future__ import annotations

from aovisor.hypervisor.x86_emulator.state import AF, CF, OF, PF, SF, ZF

# PF is set when the low byte of the result has an even number of 1 bits.
_PARITY = bytes(PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256))


def szp(result: int, size: int) -> int:
    """SF, ZF and PF of a ``size``-byte result (already masked)."""
    flags = _PARITY[result & 0xFF]
    if result == 0:
        flags |= ZF
    if result >> (size * 8 - 1):
        flags |= SF
    return flags


def add(a: int, b: int, carry: int, size: int) -> tuple[int, int]:
    """``a + b + carry`` (ADD, ADC, XADD, INC without its CF)."""
    bits = size * 8
    mask = (1 << bits) - 1
    total = a + b + carry
    r = total & mask
    flags = szp(r, size)
    if total > mask:
        flags |= CF
    if ((a ^ r) & (b ^ r)) >> (bits - 1) & 1:
        flags |= OF
    if (a ^ b ^ r) & 0x10:
        flags |= AF
    return r, flags


def sub(a: int, b: int, borrow: int, size: int) -> tuple[int, int]:
    """``a - b - borrow`` (SUB, SBB, CMP, NEG as ``0 - b``, DEC without its CF)."""
    bits = size * 8
    mask = (1 << bits) - 1
    r = (a - b - borrow) & mask
    flags = szp(r, size)
    if a < b + borrow:
        flags |= CF
    if ((a ^ b) & (a ^ r)) >> (bits - 1) & 1:
        flags |= OF
    if (a ^ b ^ r) & 0x10:
        flags |= AF
    return r, flags


def logic(r: int, size: int) -> int:
    """AND, OR, XOR, TEST: OF = CF = 0, SF/ZF/PF from the result.  AF is undefined; like current Intel
    and AMD processors (and KVM's emulator, which runs the real instruction) we clear it."""
    return szp(r, size)
