"""Conversions between the backend-neutral register types and the hypervisor's register ids and values.

A register value is the 16-byte ``hv_register_value`` union read as a little-endian 128-bit integer:
plain registers in the low 64 bits, segments as ``hv_x64_segment_register`` and descriptor tables as
``hv_x64_table_register`` (§4.1).
"""

from __future__ import annotations

from aovisor.arch.x86_64 import msrs
from aovisor.hypervisor.base import DescriptorTable, Regs, Segment, SpecialRegs
from aovisor.hypervisor.mshv import abi

GPR_NAMES = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
# Regs field -> hypervisor register id (§4.1)
REGS_IDS: dict[str, int] = {name: abi.HV_X64_REGISTER_RAX + i for i, name in enumerate(GPR_NAMES)}
REGS_IDS["rip"] = abi.HV_X64_REGISTER_RIP
REGS_IDS["rflags"] = abi.HV_X64_REGISTER_RFLAGS

SEGMENT_IDS = {
    "es": abi.HV_X64_REGISTER_ES,
    "cs": abi.HV_X64_REGISTER_CS,
    "ss": abi.HV_X64_REGISTER_SS,
    "ds": abi.HV_X64_REGISTER_DS,
    "fs": abi.HV_X64_REGISTER_FS,
    "gs": abi.HV_X64_REGISTER_GS,
    "ldt": abi.HV_X64_REGISTER_LDTR,
    "tr": abi.HV_X64_REGISTER_TR,
}
TABLE_IDS = {"idt": abi.HV_X64_REGISTER_IDTR, "gdt": abi.HV_X64_REGISTER_GDTR}
CONTROL_IDS = {
    "cr0": abi.HV_X64_REGISTER_CR0,
    "cr2": abi.HV_X64_REGISTER_CR2,
    "cr3": abi.HV_X64_REGISTER_CR3,
    "cr4": abi.HV_X64_REGISTER_CR4,
    "cr8": abi.HV_X64_REGISTER_CR8,
    "efer": abi.HV_X64_REGISTER_EFER,
    "apic_base": abi.HV_X64_REGISTER_APIC_BASE,
}
SREGS_IDS = [*SEGMENT_IDS.values(), *TABLE_IDS.values(), *CONTROL_IDS.values()]

# MSRs the hypervisor exposes as VP registers (§4.1).  IA32_MISC_ENABLE has none: the hypervisor owns it.
MSR_IDS = {
    msrs.MSR_IA32_TSC: abi.HV_X64_REGISTER_TSC,
    0xC0000080: abi.HV_X64_REGISTER_EFER,  # IA32_EFER
    msrs.MSR_KERNEL_GS_BASE: abi.HV_X64_REGISTER_KERNEL_GS_BASE,
    msrs.MSR_IA32_APICBASE: abi.HV_X64_REGISTER_APIC_BASE,
    0x277: abi.HV_X64_REGISTER_PAT,  # IA32_PAT
    msrs.MSR_IA32_SYSENTER_CS: abi.HV_X64_REGISTER_SYSENTER_CS,
    msrs.MSR_IA32_SYSENTER_EIP: abi.HV_X64_REGISTER_SYSENTER_EIP,
    msrs.MSR_IA32_SYSENTER_ESP: abi.HV_X64_REGISTER_SYSENTER_ESP,
    msrs.MSR_STAR: abi.HV_X64_REGISTER_STAR,
    msrs.MSR_LSTAR: abi.HV_X64_REGISTER_LSTAR,
    msrs.MSR_CSTAR: abi.HV_X64_REGISTER_CSTAR,
    msrs.MSR_SYSCALL_MASK: abi.HV_X64_REGISTER_SFMASK,
    msrs.MSR_MTRR_DEF_TYPE: abi.HV_X64_REGISTER_MTRR_DEF_TYPE,
}

_U64 = (1 << 64) - 1


def encode_segment(seg: Segment) -> int:
    """``hv_x64_segment_register``: base u64, limit u32, selector u16, attributes u16 (§4.1)."""
    present = seg.present and not seg.unusable
    attributes = (
        (seg.type & abi.HV_SEGMENT_TYPE_MASK)
        | (abi.HV_SEGMENT_S if seg.s else 0)
        | ((seg.dpl & 3) << abi.HV_SEGMENT_DPL_SHIFT)
        | (abi.HV_SEGMENT_P if present else 0)
        | (abi.HV_SEGMENT_AVL if seg.avl else 0)
        | (abi.HV_SEGMENT_L if seg.l else 0)
        | (abi.HV_SEGMENT_DB if seg.db else 0)
        | (abi.HV_SEGMENT_G if seg.g else 0)
    )
    return (
        (seg.base & _U64)
        | (seg.limit & 0xFFFF_FFFF) << 64
        | (seg.selector & 0xFFFF) << 96
        | attributes << 112
    )


def decode_segment(value: int) -> Segment:
    attributes = value >> 112 & 0xFFFF
    present = bool(attributes & abi.HV_SEGMENT_P)
    return Segment(
        base=value & _U64,
        limit=value >> 64 & 0xFFFF_FFFF,
        selector=value >> 96 & 0xFFFF,
        type=attributes & abi.HV_SEGMENT_TYPE_MASK,
        present=present,
        dpl=attributes >> abi.HV_SEGMENT_DPL_SHIFT & 3,
        db=bool(attributes & abi.HV_SEGMENT_DB),
        s=bool(attributes & abi.HV_SEGMENT_S),
        l=bool(attributes & abi.HV_SEGMENT_L),
        g=bool(attributes & abi.HV_SEGMENT_G),
        avl=bool(attributes & abi.HV_SEGMENT_AVL),
        unusable=not present,
    )


def encode_table(table: DescriptorTable) -> int:
    """``hv_x64_table_register``: pad u16[3], limit u16 at byte 6, base u64 at byte 8 (§4.1)."""
    return (table.limit & 0xFFFF) << 48 | (table.base & _U64) << 64


def decode_table(value: int) -> DescriptorTable:
    return DescriptorTable(base=value >> 64 & _U64, limit=value >> 48 & 0xFFFF)


def regs_to_values(regs: Regs) -> list[tuple[int, int]]:
    return [(reg_id, getattr(regs, name) & _U64) for name, reg_id in REGS_IDS.items()]


def regs_from_values(values: list[int]) -> Regs:
    return Regs(**{name: v & _U64 for name, v in zip(REGS_IDS, values, strict=True)})


def sregs_to_values(sregs: SpecialRegs) -> list[tuple[int, int]]:
    out = [(reg_id, encode_segment(getattr(sregs, name))) for name, reg_id in SEGMENT_IDS.items()]
    out += [(reg_id, encode_table(getattr(sregs, name))) for name, reg_id in TABLE_IDS.items()]
    out += [(reg_id, getattr(sregs, name) & _U64) for name, reg_id in CONTROL_IDS.items()]
    return out


def sregs_from_values(values: list[int]) -> SpecialRegs:
    it = iter(values)
    sregs = SpecialRegs()
    for name in SEGMENT_IDS:
        setattr(sregs, name, decode_segment(next(it)))
    for name in TABLE_IDS:
        setattr(sregs, name, decode_table(next(it)))
    for name in CONTROL_IDS:
        setattr(sregs, name, next(it) & _U64)
    return sregs


def pending_exception(vector: int, error_code: int | None) -> int:
    """HV_REGISTER_PENDING_INTERRUPTION value that makes the VP take exception ``vector`` on entry."""
    value = (
        abi.HV_PENDING_INTERRUPTION_PENDING
        | abi.HV_PENDING_INTERRUPTION_TYPE_EXCEPTION << abi.HV_PENDING_INTERRUPTION_TYPE_SHIFT
        | (vector & 0xFF) << abi.HV_PENDING_INTERRUPTION_VECTOR_SHIFT
    )
    if error_code is not None:
        value |= abi.HV_PENDING_INTERRUPTION_DELIVER_ERROR_CODE
        value |= (error_code & 0xFFFF_FFFF) << abi.HV_PENDING_INTERRUPTION_ERROR_CODE_SHIFT
    return value
