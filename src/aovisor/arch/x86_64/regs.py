"""Initial vCPU state for each boot protocol.

* PVH (Xen's ``hvm_start_info`` ABI, also Linux ``arch/x86/platform/pvh/head.S``): 32-bit protected mode,
  paging off, flat CS/DS, EBX = physical address of the start info.
* Linux 64-bit boot protocol (``Documentation/arch/x86/boot.rst`` "64-bit BOOT PROTOCOL"): long mode with an
  identity map, CS 64-bit flat, RSI = physical address of ``boot_params``, interrupts off.
"""

from __future__ import annotations

import struct

from aovisor.arch.x86_64 import gdt, layout, paging
from aovisor.hypervisor.base import DescriptorTable, Regs, Segment, SpecialRegs
from aovisor.memory import GuestMemory

X86_CR0_PE = 1 << 0
X86_CR0_ET = 1 << 4
X86_CR0_PG = 1 << 31
X86_CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10


def _write_gdt(mem: GuestMemory, entries: list[int], sregs: SpecialRegs) -> SpecialRegs:
    mem.write(layout.BOOT_GDT_START, struct.pack(f"<{len(entries)}Q", *entries))
    mem.write_u64(layout.BOOT_IDT_START, 0)
    sregs = sregs.copy()
    sregs.gdt = DescriptorTable(layout.BOOT_GDT_START, len(entries) * 8 - 1)
    sregs.idt = DescriptorTable(layout.BOOT_IDT_START, 7)
    code = Segment.from_gdt_entry(gdt.CODE_SELECTOR, entries[1])
    data = Segment.from_gdt_entry(gdt.DATA_SELECTOR, entries[2])
    sregs.cs = code
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.tr = Segment.from_gdt_entry(gdt.TSS_SELECTOR, entries[3])
    return sregs


def pvh_boot_state(
    mem: GuestMemory, entry: int, start_info: int, current: SpecialRegs
) -> tuple[Regs, SpecialRegs]:
    """Registers for a PVH entry; ``current`` supplies what we keep (APIC base, interrupt state)."""
    sregs = _write_gdt(mem, gdt.GDT_32, current)
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET
    sregs.cr4 = 0
    sregs.efer = 0
    regs = Regs(rip=entry, rbx=start_info, rflags=0x2)
    return regs, sregs


def linux64_boot_state(
    mem: GuestMemory, entry: int, boot_params: int, current: SpecialRegs
) -> tuple[Regs, SpecialRegs]:
    """Registers for the 64-bit Linux entry; ``current`` supplies what we keep (APIC base...)."""
    sregs = _write_gdt(mem, gdt.GDT_64, current)
    sregs.cr3 = paging.write_identity_page_tables(mem)
    sregs.cr4 = X86_CR4_PAE
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG
    sregs.efer = EFER_LME | EFER_LMA
    regs = Regs(
        rip=entry,
        rsi=boot_params,
        rsp=layout.BOOT_STACK_POINTER,
        rbp=layout.BOOT_STACK_POINTER,
        rflags=0x2,
    )
    return regs, sregs
