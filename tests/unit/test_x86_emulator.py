"""The MMIO instruction emulator against x86 semantics (SDM Vol. 2), written here independently.

Two layers:
* hand-written encodings with literal expected results, covering the rules that are easy to get wrong
  (high-byte registers, zero- vs sign-extension, moffs, RIP-relative and segment-relative addresses, REP and
  DF, read-modify-write order, faults leaving registers untouched);
* a generated corpus of several hundred distinct encodings (built with iced-x86's *encoder* from a table of
  forms x sizes x registers x addressing modes), each run under hypothesis with random register, memory and
  flag values and checked against a small reference model that computes flags from signed/unsigned
  arithmetic rather than from bit tricks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import iced_x86 as ix
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aovisor.hypervisor.x86_emulator import (
    GPR_NAMES,
    CpuState,
    GuestFault,
    InvalidInstruction,
    TruncatedInstruction,
    UnsupportedInstruction,
    emulate,
)

U64 = (1 << 64) - 1
RIP = 0x40_1000
CF, PF, AF, ZF, SF, DF, OF = 1, 4, 0x10, 0x40, 0x80, 0x400, 0x800
ARITH = CF | PF | AF | ZF | SF | OF


class FakeMemory:
    """Linear memory that records every access; reads return ``values[address]`` or ``default``."""

    def __init__(self, default: int = 0, values: dict[int, int] | None = None, fault_at: int | None = None):
        self.default = default
        self.values = dict(values or {})
        self.fault_at = fault_at
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, address: int, size: int) -> int:
        if address == self.fault_at:
            raise GuestFault(14, 0, address)
        value = self.values.get(address, self.default) & ((1 << (8 * size)) - 1)
        self.log.append(("r", address, size, value))
        return value

    def write(self, address: int, size: int, value: int) -> None:
        if address == self.fault_at:
            raise GuestFault(14, 2, address)
        self.log.append(("w", address, size, value))
        self.values[address] = value


def cpu_with(bitness: int = 64, rflags: int = 0x2, **regs: int) -> CpuState:
    cpu = CpuState(rip=RIP, rflags=rflags, bitness=bitness)
    for name, value in regs.items():
        cpu.gprs[GPR_NAMES.index(name)] = value
    return cpu


def reg(cpu: CpuState, name: str) -> int:
    return cpu.gprs[GPR_NAMES.index(name)]


# --- hand-written encodings -----------------------------------------------------------------------------
def test_mov_load_32_zero_extends_into_64() -> None:
    cpu = cpu_with(rax=0xFFFF_FFFF_0000_0000, rbx=0xD000_0000)
    mem = FakeMemory(default=0x8899_AABB)
    emulate(bytes.fromhex("8b03"), cpu, mem)  # mov eax, [rbx]
    assert mem.log == [("r", 0xD000_0000, 4, 0x8899_AABB)]
    assert reg(cpu, "rax") == 0x8899_AABB
    assert cpu.rip == RIP + 2


def test_mov_load_8_and_16_keep_the_rest_of_the_register() -> None:
    cpu = cpu_with(rcx=0x1111_2222_3333_4444, rbx=0xD000_0000)
    emulate(bytes.fromhex("8a0b"), cpu, FakeMemory(default=0xEE))  # mov cl, [rbx]
    assert reg(cpu, "rcx") == 0x1111_2222_3333_44EE
    emulate(bytes.fromhex("668b0b"), cpu, FakeMemory(default=0xBEEF))  # mov cx, [rbx]
    assert reg(cpu, "rcx") == 0x1111_2222_3333_BEEF


def test_high_byte_register_ah_is_bits_15_to_8() -> None:
    cpu = cpu_with(rax=0x1234_5678, rbx=0xD000_0000)
    emulate(bytes.fromhex("8a23"), cpu, FakeMemory(default=0x9A))  # mov ah, [rbx]
    assert reg(cpu, "rax") == 0x1234_9A78
    mem = FakeMemory()
    emulate(bytes.fromhex("883b"), cpu, mem)  # mov [rbx], bh  (BH = bits 15:8 of RBX = 0x00)
    cpu.gprs[GPR_NAMES.index("rbx")] = 0xD000_AB00
    emulate(bytes.fromhex("883b"), cpu, mem)
    assert mem.log == [("w", 0xD000_0000, 1, 0x00), ("w", 0xD000_AB00, 1, 0xAB)]


def test_rex_prefix_makes_byte_register_4_spl_not_ah() -> None:
    cpu = cpu_with(rsp=0x7000_0000_0000_1234, rbx=0xD000_0000)
    emulate(bytes.fromhex("408a23"), cpu, FakeMemory(default=0x55))  # mov spl, [rbx]
    assert reg(cpu, "rsp") == 0x7000_0000_0000_1255


def test_movzx_and_movsx_extend_to_the_destination_size() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rdx=U64)
    emulate(bytes.fromhex("0fb613"), cpu, FakeMemory(default=0x80))  # movzx edx, byte [rbx]
    assert reg(cpu, "rdx") == 0x80
    emulate(bytes.fromhex("480fbf13"), cpu, FakeMemory(default=0x8001))  # movsx rdx, word [rbx]
    assert reg(cpu, "rdx") == 0xFFFF_FFFF_FFFF_8001
    emulate(bytes.fromhex("0fbe13"), cpu, FakeMemory(default=0x80))  # movsx edx, byte [rbx]
    assert reg(cpu, "rdx") == 0xFFFF_FF80
    emulate(bytes.fromhex("486313"), cpu, FakeMemory(default=0x8000_0000))  # movsxd rdx, dword [rbx]
    assert reg(cpu, "rdx") == 0xFFFF_FFFF_8000_0000


def test_mov_store_immediate_sign_extends_imm32_to_64() -> None:
    cpu = cpu_with(rdi=0xFEE0_00B0)
    mem = FakeMemory()
    emulate(bytes.fromhex("48c707f0ffffff"), cpu, mem)  # mov qword [rdi], -16
    emulate(bytes.fromhex("c707efbeadde"), cpu, mem)  # mov dword [rdi], 0xdeadbeef
    emulate(bytes.fromhex("66c7073412"), cpu, mem)  # mov word [rdi], 0x1234
    assert mem.log == [
        ("w", 0xFEE0_00B0, 8, 0xFFFF_FFFF_FFFF_FFF0),
        ("w", 0xFEE0_00B0, 4, 0xDEAD_BEEF),
        ("w", 0xFEE0_00B0, 2, 0x1234),
    ]
    assert cpu.rip == RIP + 7 + 6 + 5


def test_moffs64_absolute_address() -> None:
    cpu = cpu_with()
    mem = FakeMemory(default=0xCAFE_F00D_1234_5678)
    emulate(bytes.fromhex("48a1080000d000000000"), cpu, mem)  # mov rax, [0xd0000008]
    emulate(bytes.fromhex("a2100000d000000000"), cpu, mem)  # mov [0xd0000010], al
    assert mem.log == [("r", 0xD000_0008, 8, 0xCAFE_F00D_1234_5678), ("w", 0xD000_0010, 1, 0x78)]
    assert cpu.rip == RIP + 10 + 9


def test_disp32_without_base_is_sign_extended_unless_addr32() -> None:
    cpu = cpu_with()
    mem = FakeMemory()
    emulate(bytes.fromhex("890425000000d0"), cpu, mem)  # mov [0xffffffffd0000000], eax
    emulate(bytes.fromhex("67890425000000d0"), cpu, mem)  # addr32 mov [0xd0000000], eax
    assert [a for _, a, _, _ in mem.log] == [0xFFFF_FFFF_D000_0000, 0xD000_0000]


def test_rip_relative_address_is_from_the_next_instruction() -> None:
    cpu = cpu_with()
    mem = FakeMemory(default=7)
    emulate(bytes.fromhex("8b0d00100000"), cpu, mem)  # mov ecx, [rip+0x1000]
    assert mem.log == [("r", RIP + 6 + 0x1000, 4, 7)]
    assert reg(cpu, "rcx") == 7


def test_sib_with_scaled_index_and_negative_displacement() -> None:
    cpu = cpu_with(rsi=0xD000_1000, r9=0x10)
    mem = FakeMemory()
    emulate(bytes.fromhex("4289448ef0"), cpu, mem)  # mov [rsi+r9*4-0x10], eax
    assert mem.log[0][1] == 0xD000_1000 + 0x40 - 0x10


def test_fs_and_gs_overrides_add_the_segment_base_in_64_bit_mode() -> None:
    bases = {"fs": 0x1000_0000, "gs": 0x2000_0000, "ds": 0xDEAD_0000}
    cpu = CpuState(rip=RIP, segment_base=bases.__getitem__)
    cpu.gprs[GPR_NAMES.index("rbx")] = 0x40
    mem = FakeMemory()
    emulate(bytes.fromhex("64890b"), cpu, mem)  # mov fs:[rbx], ecx
    emulate(bytes.fromhex("65890b"), cpu, mem)  # mov gs:[rbx], ecx
    emulate(bytes.fromhex("3e890b"), cpu, mem)  # mov ds:[rbx], ecx: DS base ignored in 64-bit mode
    assert [a for _, a, _, _ in mem.log] == [0x1000_0040, 0x2000_0040, 0x40]


def test_32_bit_code_uses_segment_bases_and_wraps_at_4g() -> None:
    cpu = CpuState(rip=0x1000, bitness=32, segment_base={"ds": 0x1_0000, "es": 0}.__getitem__)
    cpu.gprs[GPR_NAMES.index("rbx")] = 0xFFFF_FFF0
    mem = FakeMemory(default=0x42)
    emulate(bytes.fromhex("8b03"), cpu, mem)  # mov eax, [ebx] (32-bit code: no REX, EBX base)
    assert mem.log == [("r", (0x1_0000 + 0xFFFF_FFF0) & 0xFFFF_FFFF, 4, 0x42)]
    assert cpu.rip == 0x1002


def test_16_bit_code_bx_si_addressing() -> None:
    cpu = CpuState(rip=0x100, bitness=16, segment_base={"ds": 0xF000 << 4}.__getitem__)
    cpu.gprs[GPR_NAMES.index("rbx")] = 0xFFF0
    cpu.gprs[GPR_NAMES.index("rsi")] = 0x20
    mem = FakeMemory(default=0x1234)
    emulate(bytes.fromhex("8b00"), cpu, mem)  # mov ax, [bx+si]: the offset wraps at 64 KiB
    assert mem.log == [("r", 0xF0000 + 0x10, 2, 0x1234)]
    assert reg(cpu, "rax") == 0x1234


def test_read_modify_write_reads_then_writes_and_sets_flags() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rflags=0x2)
    mem = FakeMemory(default=0xFFFF_FFFF)
    emulate(bytes.fromhex("830301"), cpu, mem)  # add dword [rbx], 1
    assert mem.log == [("r", 0xD000_0000, 4, 0xFFFF_FFFF), ("w", 0xD000_0000, 4, 0)]
    assert cpu.rflags & ARITH == CF | ZF | PF | AF


def test_or_and_test_and_cmp_on_mmio() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rflags=0x2 | CF | OF)
    mem = FakeMemory(default=0x0F)
    emulate(bytes.fromhex("800b80"), cpu, mem)  # or byte [rbx], 0x80
    assert mem.log[-1] == ("w", 0xD000_0000, 1, 0x8F)
    assert cpu.rflags & (CF | OF | SF | ZF) == SF  # OR clears CF and OF
    mem = FakeMemory(default=0x10)
    emulate(bytes.fromhex("f60310"), cpu, mem)  # test byte [rbx], 0x10: read only
    assert [op for op, *_ in mem.log] == ["r"]
    assert not cpu.rflags & ZF
    emulate(bytes.fromhex("833b11"), cpu, mem)  # cmp dword [rbx], 0x11: 0x10 < 0x11
    assert cpu.rflags & (CF | SF | ZF) == CF | SF
    assert [op for op, *_ in mem.log] == ["r", "r"]


def test_inc_keeps_cf_and_neg_sets_cf_for_nonzero() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rflags=0x2 | CF)
    emulate(bytes.fromhex("fe03"), cpu, FakeMemory(default=0x7F))  # inc byte [rbx] -> 0x80: OF, CF kept
    assert cpu.rflags & (CF | OF | SF) == CF | OF | SF
    cpu.rflags = 0x2
    emulate(bytes.fromhex("f71b"), cpu, FakeMemory(default=5))  # neg dword [rbx]
    assert cpu.rflags & CF
    emulate(bytes.fromhex("f71b"), cpu, FakeMemory(default=0))
    assert not cpu.rflags & CF and cpu.rflags & ZF


def test_xchg_with_memory_swaps() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rcx=0xAAAA_BBBB_CCCC_DDDD)
    mem = FakeMemory(default=0x1122)
    emulate(bytes.fromhex("66870b"), cpu, mem)  # xchg [rbx], cx
    assert mem.log == [("r", 0xD000_0000, 2, 0x1122), ("w", 0xD000_0000, 2, 0xDDDD)]
    assert reg(cpu, "rcx") == 0xAAAA_BBBB_CCCC_1122


def test_cmpxchg_success_stores_source_failure_loads_accumulator() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rax=0x10, rcx=0x99)
    mem = FakeMemory(default=0x10)
    emulate(bytes.fromhex("0fb10b"), cpu, mem)  # cmpxchg [rbx], ecx
    assert mem.log[-1] == ("w", 0xD000_0000, 4, 0x99)
    assert cpu.rflags & ZF and reg(cpu, "rax") == 0x10
    mem = FakeMemory(default=0x20)
    emulate(bytes.fromhex("0fb10b"), cpu, mem)
    assert mem.log[-1] == ("w", 0xD000_0000, 4, 0x20)  # the old value is written back
    assert not cpu.rflags & ZF and reg(cpu, "rax") == 0x20


def test_xadd_exchanges_and_adds() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rcx=3)
    mem = FakeMemory(default=5)
    emulate(bytes.fromhex("0fc10b"), cpu, mem)  # xadd [rbx], ecx
    assert mem.log[-1] == ("w", 0xD000_0000, 4, 8)
    assert reg(cpu, "rcx") == 5


def test_bt_with_register_offset_addresses_outside_the_operand() -> None:
    cpu = cpu_with(rbx=0xD000_0100, rcx=(-33) & U64)
    mem = FakeMemory(default=1 << 31)
    emulate(bytes.fromhex("480fa30b"), cpu, mem)  # bt [rbx], rcx with rcx = -33: qword at rbx-8, bit 31
    assert mem.log == [("r", 0xD000_0100 - 8, 8, 1 << 31)]
    assert cpu.rflags & CF
    cpu.gprs[GPR_NAMES.index("rcx")] = 100
    mem = FakeMemory(default=0)
    emulate(bytes.fromhex("0fab0b"), cpu, mem)  # bts [rbx], ecx: dword at rbx+12, bit 4
    assert mem.log == [("r", 0xD000_010C, 4, 0), ("w", 0xD000_010C, 4, 1 << 4)]
    emulate(bytes.fromhex("0fba3302"), cpu, FakeMemory(default=0xFF))  # btr dword [rbx], 2
    assert cpu.rflags & CF


def test_rep_stos_writes_every_element_and_updates_rdi_rcx() -> None:
    cpu = cpu_with(rdi=0xD000_0000, rcx=3, rax=0x1122_3344)
    mem = FakeMemory()
    emulate(bytes.fromhex("f3ab"), cpu, mem)  # rep stosd
    assert mem.log == [("w", 0xD000_0000 + 4 * i, 4, 0x1122_3344) for i in range(3)]
    assert reg(cpu, "rdi") == 0xD000_000C and reg(cpu, "rcx") == 0
    assert cpu.rip == RIP + 2


def test_rep_movs_with_df_set_goes_backwards() -> None:
    cpu = cpu_with(rsi=0x2000, rdi=0xD000_0010, rcx=2, rflags=0x2 | DF)
    mem = FakeMemory(values={0x2000: 0xAA, 0x1FFF: 0xBB})
    emulate(bytes.fromhex("f3a4"), cpu, mem)  # rep movsb
    assert mem.log == [
        ("r", 0x2000, 1, 0xAA),
        ("w", 0xD000_0010, 1, 0xAA),
        ("r", 0x1FFF, 1, 0xBB),
        ("w", 0xD000_000F, 1, 0xBB),
    ]
    assert (reg(cpu, "rsi"), reg(cpu, "rdi"), reg(cpu, "rcx")) == (0x1FFE, 0xD000_000E, 0)


def test_rep_with_zero_count_does_nothing_but_advance_rip() -> None:
    cpu = cpu_with(rdi=0xD000_0000, rcx=0)
    mem = FakeMemory()
    emulate(bytes.fromhex("f348ab"), cpu, mem)  # rep stosq
    assert mem.log == [] and cpu.rip == RIP + 3 and reg(cpu, "rdi") == 0xD000_0000


def test_rep_addr32_uses_ecx_and_zero_extends_edi() -> None:
    cpu = cpu_with(rdi=0xFFFF_FFFF_0000_0000 | 0xFFFF_FFFE, rcx=0xFFFF_FFFF_0000_0001)
    mem = FakeMemory()
    emulate(bytes.fromhex("67f3aa"), cpu, mem)  # addr32 rep stosb: one iteration (ECX = 1)
    assert mem.log == [("w", 0xFFFF_FFFE, 1, 0)]
    assert reg(cpu, "rdi") == 0xFFFF_FFFF and reg(cpu, "rcx") == 0


def test_long_rep_stops_after_max_repeats_without_advancing_rip() -> None:
    cpu = cpu_with(rdi=0xD000_0000, rcx=10)
    result = emulate(bytes.fromhex("f3aa"), cpu, FakeMemory(), max_repeats=4)
    assert not result.completed and result.repeats == 4
    assert cpu.rip == RIP and reg(cpu, "rcx") == 6 and reg(cpu, "rdi") == 0xD000_0004
    result = emulate(bytes.fromhex("f3aa"), cpu, FakeMemory(), max_repeats=100)
    assert result.completed and cpu.rip == RIP + 2 and reg(cpu, "rcx") == 0


def test_lods_loads_the_accumulator_and_repe_cmps_stops_on_difference() -> None:
    cpu = cpu_with(rsi=0xD000_0000, rax=U64)
    emulate(bytes.fromhex("66ad"), cpu, FakeMemory(default=0x1234))  # lodsw
    assert reg(cpu, "rax") == 0xFFFF_FFFF_FFFF_1234 and reg(cpu, "rsi") == 0xD000_0002
    cpu = cpu_with(rsi=0x1000, rdi=0xD000_0000, rcx=5)
    mem = FakeMemory(values={0x1000: 1, 0x1001: 2, 0xD000_0000: 1, 0xD000_0001: 3})
    emulate(bytes.fromhex("f3a6"), cpu, mem)  # repe cmpsb
    assert reg(cpu, "rcx") == 3 and not cpu.rflags & ZF


def test_scas_compares_accumulator_with_es_rdi() -> None:
    cpu = cpu_with(rdi=0xD000_0000, rax=0x41)
    emulate(bytes.fromhex("ae"), cpu, FakeMemory(default=0x41))  # scasb
    assert cpu.rflags & ZF and reg(cpu, "rdi") == 0xD000_0001


@pytest.mark.parametrize(
    "code",
    [
        "0f2900",  # movaps [rax], xmm0
        "660fd600",  # movq [rax], xmm0
        "0f0b",  # ud2
        "ff20",  # jmp [rax]
        "8e18",  # mov ds, [rax]
        "d120",  # shl dword [rax], 1
        "f20f1100",  # movsd [rax], xmm0 (the SSE one, not the string instruction)
    ],
)
def test_unsupported_instruction_raises_and_leaves_registers(code: str) -> None:
    cpu = cpu_with(rax=0xD000_0000, rbx=5)
    before = (list(cpu.gprs), cpu.rip, cpu.rflags)
    mem = FakeMemory()
    with pytest.raises(UnsupportedInstruction) as info:
        emulate(bytes.fromhex(code), cpu, mem)
    assert info.value.vector == 6  # #UD for the guest
    assert (cpu.gprs, cpu.rip, cpu.rflags) == before
    assert mem.log == []


def test_invalid_and_truncated_bytes() -> None:
    cpu = cpu_with()
    with pytest.raises(TruncatedInstruction):
        emulate(bytes.fromhex("48c707"), cpu, FakeMemory())  # mov qword [rdi], imm32 cut short
    with pytest.raises(InvalidInstruction):
        emulate(bytes.fromhex("06") + bytes(14), cpu, FakeMemory())  # push es: invalid in 64-bit mode
    with pytest.raises(InvalidInstruction):
        emulate(bytes([0x66] * 15) + b"\x90", cpu, FakeMemory())  # longer than 15 bytes
    assert cpu.rip == RIP


def test_memory_fault_leaves_registers_untouched() -> None:
    cpu = cpu_with(rbx=0xD000_0000, rcx=1)
    with pytest.raises(GuestFault):
        emulate(bytes.fromhex("870b"), cpu, FakeMemory(fault_at=0xD000_0000))  # xchg [rbx], ecx
    assert reg(cpu, "rcx") == 1 and cpu.rip == RIP


@given(st.binary(min_size=0, max_size=16), st.lists(st.integers(0, U64), min_size=16, max_size=16))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_never_escape_as_anything_but_emulator_errors(code: bytes, gprs: list[int]) -> None:
    """Hostile instruction bytes: the emulator either executes or raises an EmulatorError subclass."""
    from aovisor.hypervisor.x86_emulator import EmulatorError

    cpu = CpuState(gprs=gprs, rip=RIP)
    try:
        emulate(code, cpu, FakeMemory())
    except EmulatorError:
        return
    assert all(0 <= g <= U64 for g in cpu.gprs)


# --- generated corpus ----------------------------------------------------------------------------------
R = ix.Register
SIZES = {1: 8, 2: 16, 4: 32, 8: 64}
DATA_REGS = {
    1: [R.AL, R.CL, R.DL, R.BH, R.SIL, R.R9L, R.R15L],
    2: [R.AX, R.DX, R.SI, R.R8W, R.R14W],
    4: [R.EAX, R.EBX, R.EDI, R.R10D, R.R13D],
    8: [R.RAX, R.RCX, R.RBP, R.R11, R.R12],
}
# (memory operand, address registers it reads); the base/index values are fixed per test below.
ADDRESS_REGS = {R.RBX: 0xD000_0000, R.RSI: 0xD000_0100, R.R13: 0xFEC0_0000, R.R8: 0x20, R.RSP: 0xD000_0800}
MEMORY_OPERANDS = [
    ix.MemoryOperand(R.RBX),
    ix.MemoryOperand(R.RSI, displ=0x40, displ_size=1),
    ix.MemoryOperand(R.R13, displ=0x10, displ_size=1),  # r13 as base needs a displacement byte
    ix.MemoryOperand(R.RBX, R.R8, 4, displ=-0x10, displ_size=1),
    ix.MemoryOperand(R.RSP, displ=0x1234, displ_size=4),  # rsp as base needs a SIB byte
]
ALU = ["ADD", "OR", "ADC", "SBB", "AND", "SUB", "XOR", "CMP"]


@dataclass(frozen=True)
class Form:
    kind: str  # store, load, store_imm, movzx, movsx, alu_mr, alu_rm, alu_mi, test_mr, unary, xchg, bt_imm
    op: str
    size: int  # memory operand size
    reg: int = R.NONE  # data register (iced Register)
    reg_size: int = 0
    imm: int = 0
    mem: int = 0  # index into MEMORY_OPERANDS


@dataclass
class Case:
    form: Form
    code: bytes = field(default=b"")


def _encode(instr: ix.Instruction) -> bytes:
    encoder = ix.Encoder(64)
    encoder.encode(instr, RIP)
    return bytes(encoder.take_buffer())


def _build(form: Form) -> bytes:
    code = ix.Code
    bits = SIZES[form.size]
    mem = MEMORY_OPERANDS[form.mem]
    c = ix.Instruction
    if form.kind == "store":
        return _encode(c.create_mem_reg(getattr(code, f"MOV_RM{bits}_R{bits}"), mem, form.reg))
    if form.kind == "load":
        return _encode(c.create_reg_mem(getattr(code, f"MOV_R{bits}_RM{bits}"), form.reg, mem))
    if form.kind == "store_imm":
        imm_bits = min(bits, 32)
        return _encode(c.create_mem_i32(getattr(code, f"MOV_RM{bits}_IMM{imm_bits}"), mem, form.imm))
    if form.kind in ("movzx", "movsx"):
        dst_bits = SIZES[form.reg_size]
        name = "MOVSXD" if form.kind == "movsx" and form.size == 4 else form.kind.upper()
        return _encode(c.create_reg_mem(getattr(code, f"{name}_R{dst_bits}_RM{bits}"), form.reg, mem))
    if form.kind in ("alu_mr", "test_mr", "xchg"):
        return _encode(c.create_mem_reg(getattr(code, f"{form.op}_RM{bits}_R{bits}"), mem, form.reg))
    if form.kind == "alu_rm":
        return _encode(c.create_reg_mem(getattr(code, f"{form.op}_R{bits}_RM{bits}"), form.reg, mem))
    if form.kind == "alu_mi":
        imm_name = "IMM8" if form.size == 1 or -128 <= form.imm < 128 else f"IMM{min(bits, 32)}"
        return _encode(c.create_mem_i32(getattr(code, f"{form.op}_RM{bits}_{imm_name}"), mem, form.imm))
    if form.kind == "unary":
        return _encode(c.create_mem(getattr(code, f"{form.op}_RM{bits}"), mem))
    if form.kind == "bt_imm":
        return _encode(c.create_mem_i32(getattr(code, f"{form.op}_RM{bits}_IMM8"), mem, form.imm))
    raise AssertionError(form)


def _forms() -> list[Form]:
    forms: list[Form] = []
    for size, regs in DATA_REGS.items():
        for m in range(len(MEMORY_OPERANDS)):
            for r in regs:
                forms.append(Form("store", "MOV", size, r, size, mem=m))
                forms.append(Form("load", "MOV", size, r, size, mem=m))
            forms.append(Form("store_imm", "MOV", size, imm=-2 if size == 8 else 0x5A, mem=m))
            forms.append(Form("xchg", "XCHG", size, regs[m % len(regs)], size, mem=m))
            forms.append(Form("test_mr", "TEST", size, regs[(m + 1) % len(regs)], size, mem=m))
            for i, op in enumerate(ALU):
                r = regs[(m + i) % len(regs)]
                forms.append(Form("alu_mr", op, size, r, size, mem=m))
                forms.append(Form("alu_rm", op, size, r, size, mem=m))
                forms.append(
                    Form("alu_mi", op, size, imm=(0x7F, -3, 0x1234, 0x81)[i % 4] if size > 1 else 0x81, mem=m)
                )
            for op in ("INC", "DEC", "NOT", "NEG"):
                forms.append(Form("unary", op, size, mem=m))
            if size > 1:
                for op in ("BT", "BTS", "BTR", "BTC"):
                    forms.append(Form("bt_imm", op, size, imm=(m * 7 + 3) % (size * 8), mem=m))
        for dst_size, dst in ((2, R.CX), (4, R.R9D), (8, R.RDI)):
            for src_size in (1, 2):
                if src_size < dst_size:
                    forms.append(Form("movzx", "MOVZX", src_size, dst, dst_size, mem=size % 5))
                    forms.append(Form("movsx", "MOVSX", src_size, dst, dst_size, mem=(size + 1) % 5))
    forms.append(Form("movsx", "MOVSXD", 4, R.RDX, 8, mem=2))
    forms.append(Form("movsx", "MOVSXD", 4, R.R14, 8, mem=3))
    return forms


def _cases() -> list[Case]:
    cases = []
    for form in _forms():
        try:
            cases.append(Case(form, _build(form)))
        except ValueError:  # e.g. BH with an R8-R15 address register: no such encoding (needs REX)
            continue
    return cases


CASES = _cases()


def test_the_generated_corpus_has_hundreds_of_distinct_encodings() -> None:
    encodings = {case.code for case in CASES}
    assert len(encodings) >= 200, len(encodings)
    # and each decodes back to one instruction of exactly its own length
    for case in CASES:
        instr = ix.Decoder(64, case.code, ip=RIP).decode()
        assert not instr.is_invalid and instr.len == len(case.code)


# Reference semantics ------------------------------------------------------------------------------------
def _slot(register: int) -> tuple[int, int, int]:
    """(gpr index, shift, size) computed from the register's name, not from the emulator's table."""
    info = ix.RegisterExt.info(register)
    index = info.full_register - R.RAX
    return index, 8 if register in (R.AH, R.CH, R.DH, R.BH) else 0, info.size


def _read_reg(gprs: list[int], register: int) -> int:
    index, shift, size = _slot(register)
    return (gprs[index] >> shift) & ((1 << (8 * size)) - 1)


def _write_reg(gprs: list[int], register: int, value: int) -> None:
    index, shift, size = _slot(register)
    mask = (1 << (8 * size)) - 1
    if size == 4:
        gprs[index] = value & mask  # 32-bit destinations zero-extend
    elif size == 8:
        gprs[index] = value & mask
    else:
        gprs[index] = (gprs[index] & ~(mask << shift)) | ((value & mask) << shift)


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v & (1 << (bits - 1)) else v


def _szp(r: int, bits: int) -> int:
    return (
        (SF if r >> (bits - 1) else 0)
        | (ZF if r == 0 else 0)
        | (PF if bin(r & 0xFF).count("1") % 2 == 0 else 0)
    )


def _arith(op: str, a: int, b: int, carry: int, bits: int) -> tuple[int, int, int]:
    """(result, flags, mask of the flags the SDM defines for ``op``)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    m = (1 << bits) - 1
    c = carry if op in ("ADC", "SBB") else 0
    if op in ("ADD", "ADC"):
        full = a + b + c
        sfull = _signed(a, bits) + _signed(b, bits) + c
        aux = (a & 15) + (b & 15) + c > 15
        r = full & m
        return (
            r,
            (CF if full > m else 0)
            | (OF if not lo <= sfull <= hi else 0)
            | (AF if aux else 0)
            | _szp(r, bits),
            ARITH,
        )
    if op in ("SUB", "SBB", "CMP"):
        full = a - b - c
        sfull = _signed(a, bits) - _signed(b, bits) - c
        aux = (a & 15) - (b & 15) - c < 0
        r = full & m
        return (
            r,
            (CF if full < 0 else 0)
            | (OF if not lo <= sfull <= hi else 0)
            | (AF if aux else 0)
            | _szp(r, bits),
            ARITH,
        )
    r = {"AND": a & b, "OR": a | b, "XOR": a ^ b, "TEST": a & b}[op]
    return r, _szp(r, bits), ARITH & ~AF  # AF is undefined after logic operations


def _address(form: Form) -> int:
    base = {0: R.RBX, 1: R.RSI, 2: R.R13, 3: R.RBX, 4: R.RSP}[form.mem]
    index, scale, disp = (
        (R.R8, 4, -0x10) if form.mem == 3 else (R.NONE, 1, (0, 0x40, 0x10, 0, 0x1234)[form.mem])
    )
    ea = ADDRESS_REGS[base] + (ADDRESS_REGS[index] * scale if index != R.NONE else 0) + disp
    return ea & U64


def _expected(
    form: Form, gprs: list[int], rflags: int, value: int
) -> tuple[list[tuple], list[int], int, int]:
    """(accesses, registers after, rflags after, mask of flags to compare)."""
    gprs = list(gprs)
    bits = form.size * 8
    m = (1 << bits) - 1
    ea = _address(form)
    value &= m
    if form.kind == "store":
        return [("w", ea, form.size, _read_reg(gprs, form.reg))], gprs, rflags, ARITH
    if form.kind == "store_imm":
        return [("w", ea, form.size, form.imm & m)], gprs, rflags, ARITH
    if form.kind == "load":
        _write_reg(gprs, form.reg, value)
        return [("r", ea, form.size, value)], gprs, rflags, ARITH
    if form.kind == "movzx":
        _write_reg(gprs, form.reg, value)
        return [("r", ea, form.size, value)], gprs, rflags, ARITH
    if form.kind == "movsx":
        _write_reg(gprs, form.reg, _signed(value, bits))
        return [("r", ea, form.size, value)], gprs, rflags, ARITH
    if form.kind == "xchg":
        old = _read_reg(gprs, form.reg)
        _write_reg(gprs, form.reg, value)
        return [("r", ea, form.size, value), ("w", ea, form.size, old)], gprs, rflags, ARITH
    if form.kind in ("alu_mr", "alu_rm", "alu_mi", "test_mr"):
        other = form.imm & m if form.kind == "alu_mi" else _read_reg(gprs, form.reg)
        a, b = (other, value) if form.kind == "alu_rm" else (value, other)
        r, flags, defined = _arith(form.op, a, b, rflags & CF, bits)
        accesses: list[tuple] = [("r", ea, form.size, value)]
        if form.op not in ("CMP", "TEST"):
            if form.kind == "alu_rm":
                _write_reg(gprs, form.reg, r)
            else:
                accesses.append(("w", ea, form.size, r))
        return accesses, gprs, (rflags & ~defined) | flags, defined
    if form.kind == "unary":
        if form.op == "NOT":
            return [("r", ea, form.size, value), ("w", ea, form.size, ~value & m)], gprs, rflags, ARITH
        if form.op == "NEG":
            r, flags, _ = _arith("SUB", 0, value, 0, bits)
            return (
                [("r", ea, form.size, value), ("w", ea, form.size, r)],
                gprs,
                (rflags & ~ARITH) | flags,
                ARITH,
            )
        r, flags, _ = _arith("ADD" if form.op == "INC" else "SUB", value, 1, 0, bits)
        defined = ARITH & ~CF  # INC/DEC leave CF alone: CF must stay as it was
        return (
            [("r", ea, form.size, value), ("w", ea, form.size, r)],
            gprs,
            (rflags & ~defined) | (flags & defined),
            ARITH,
        )
    if form.kind == "bt_imm":
        bit = form.imm % bits
        accesses = [("r", ea, form.size, value)]
        new = {"BT": None, "BTS": value | 1 << bit, "BTR": value & ~(1 << bit), "BTC": value ^ 1 << bit}[
            form.op
        ]
        if new is not None:
            accesses.append(("w", ea, form.size, new))
        return accesses, gprs, (rflags & ~CF) | (CF if value >> bit & 1 else 0), CF | ZF
    raise AssertionError(form)


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c.form.kind}-{c.form.op}-{c.form.size}-{c.code.hex()}"
)
@given(
    data_regs=st.lists(st.integers(0, U64), min_size=16, max_size=16),
    value=st.integers(0, U64),
    flags=st.sampled_from([0x2, 0x2 | CF, 0x2 | ARITH, 0x2 | ZF | OF]),
)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_encoding_matches_reference(
    case: Case, data_regs: list[int], value: int, flags: int
) -> None:
    # Address registers hold fixed values; a data register may be one of them (e.g. ``mov [rbx], bh``),
    # which the reference handles by computing the address from the registers before the instruction.
    gprs = list(data_regs)
    for register, address_value in ADDRESS_REGS.items():
        gprs[ix.RegisterExt.info(register).number] = address_value
    form = case.form
    cpu = CpuState(gprs=list(gprs), rip=RIP, rflags=flags)
    mem = FakeMemory(default=value)
    result = emulate(case.code, cpu, mem)
    accesses, regs_after, flags_after, compare = _expected(form, gprs, flags, value)
    assert mem.log == accesses
    assert cpu.gprs == regs_after
    assert cpu.rflags & compare == flags_after & compare
    assert cpu.rflags & ~ARITH == flags & ~ARITH  # nothing outside the arithmetic flags changes
    assert cpu.rip == RIP + len(case.code) and result.length == len(case.code)
