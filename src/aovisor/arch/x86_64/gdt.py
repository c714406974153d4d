"""Boot GDT entries (SDM Vol. 3A §3.4.5) for the two entry modes the loaders use."""

from __future__ import annotations


def gdt_entry(flags: int, base: int, limit: int) -> int:
    """Pack a segment descriptor from ``flags`` (the 12 attribute bits: type..G), base and 20-bit limit."""
    return (
        ((base & 0xFF000000) << (56 - 24))
        | ((flags & 0x0000F0FF) << 40)
        | ((limit & 0x000F0000) << (48 - 16))
        | ((base & 0x00FFFFFF) << 16)
        | (limit & 0x0000FFFF)
    )


# Selectors index these tables (selector = index * 8).
CODE_SELECTOR = 0x08
DATA_SELECTOR = 0x10
TSS_SELECTOR = 0x18

# 64-bit entry (Linux boot protocol): L=1 code, flat data, a placeholder TSS.
GDT_64 = [
    0,
    gdt_entry(0xA09B, 0, 0xFFFFF),  # code: P, DPL0, S, execute/read accessed, L, G
    gdt_entry(0xC093, 0, 0xFFFFF),  # data: P, DPL0, S, read/write accessed, D/B, G
    gdt_entry(0x808B, 0, 0xFFFFF),  # TSS: busy 32/64-bit TSS
]

# 32-bit protected-mode entry (PVH): flat 4 GiB code and data (D/B=1).
GDT_32 = [
    0,
    gdt_entry(0xC09B, 0, 0xFFFFF),
    gdt_entry(0xC093, 0, 0xFFFFF),
    gdt_entry(0x008B, 0, 0x67),
]
