"""Execute one decoded instruction against :class:`CpuState` and :class:`Memory`.

The instruction set is what MMIO code really runs (SDM Vol. 2 for each): MOV in all its forms (r/m<->reg,
immediates, moffs), MOVZX/MOVSX/MOVSXD, the ALU group (ADD/ADC/SUB/SBB/CMP/AND/OR/XOR/TEST), INC/DEC/NOT/
NEG, XCHG/XADD/CMPXCHG, BT/BTS/BTR/BTC, and the string instructions MOVS/STOS/LODS/CMPS/SCAS with REP
prefixes.  Anything else raises :class:`UnsupportedInstruction`, which the backend turns into a #UD for the
guest.

Memory is touched in the order the processor does (read, then write for read-modify-write), because each
access may be a device register with side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from aovisor.hypervisor.x86_emulator import flags as fl
from aovisor.hypervisor.x86_emulator.decoder import decode, describe, iced, register_slots, segment_names
from aovisor.hypervisor.x86_emulator.errors import UnsupportedInstruction
from aovisor.hypervisor.x86_emulator.state import (
    ARITH_FLAGS,
    CF,
    DF,
    RAX,
    RCX,
    RDI,
    RSI,
    ZF,
    CpuState,
    Memory,
)

if TYPE_CHECKING:
    import iced_x86

DEFAULT_MAX_REPEATS = 1024  # REP iterations per call; the rest run when the guest re-executes the instruction


@dataclass(frozen=True)
class Emulated:
    """What ran: the instruction's length and mnemonic, and whether it finished (a long REP may not)."""

    length: int
    mnemonic: str
    completed: bool
    repeats: int = 0


def emulate(
    code: bytes, cpu: CpuState, memory: Memory, *, max_repeats: int = DEFAULT_MAX_REPEATS
) -> Emulated:
    """Decode the instruction at the start of ``code`` (located at ``cpu.rip``) and execute it.

    On success the registers, RFLAGS and RIP in ``cpu`` hold the result.  On any exception ``cpu`` is left
    as the instruction found it, except for REP iterations already completed (which, as on hardware, are
    architecturally done: RSI/RDI/RCX reflect them and RIP still points at the instruction).
    """
    instr = decode(code, cpu.bitness, cpu.rip)
    handler = _handlers().get(instr.mnemonic)
    if handler is None:
        raise UnsupportedInstruction(
            f"cannot emulate {describe(instr)!r} at {cpu.rip:#x} ({code[: instr.len].hex()})"
        )
    ex = _Execution(instr, cpu, memory, max_repeats)
    saved = (list(cpu.gprs), cpu.rflags)
    try:
        completed = handler(ex)
    except Exception:
        if ex.repeats == 0:  # nothing architecturally done yet: leave the registers untouched
            cpu.gprs[:], cpu.rflags = saved
        raise
    if completed:
        cpu.rip = (cpu.rip + instr.len) & _IP_MASK[cpu.bitness]
    return Emulated(instr.len, _mnemonic_name(instr.mnemonic), completed, ex.repeats)


_IP_MASK = {16: 0xFFFF, 32: 0xFFFF_FFFF, 64: (1 << 64) - 1}
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: (1 << 64) - 1}


def _sign_extend(value: int, size: int) -> int:
    bits = size * 8
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class _Execution:
    """One instruction being executed: operand access helpers shared by the handlers."""

    def __init__(self, instr: iced_x86.Instruction, cpu: CpuState, memory: Memory, max_repeats: int) -> None:
        self.instr = instr
        self.cpu = cpu
        self.memory = memory
        self.max_repeats = max_repeats
        self.repeats = 0
        self._address: int | None = None
        self._ix = iced()

    # --- registers ---------------------------------------------------------------------------------
    def reg_read(self, register: int) -> int:
        slot = self._slot(register)
        return int(self.cpu.gprs[slot.index] >> slot.shift) & _MASK[slot.size]

    def reg_write(self, register: int, value: int) -> None:
        slot = self._slot(register)
        self.gpr_write(slot.index, slot.size, value, slot.shift)

    def gpr_write(self, index: int, size: int, value: int, shift: int = 0) -> None:
        """Write ``size`` bytes of register ``index``: 32-bit writes zero-extend to 64 bits, 8- and 16-bit
        writes keep the other bits (SDM Vol. 1 §3.4.1.1)."""
        gprs = self.cpu.gprs
        value &= _MASK[size]
        if size == 8 or size == 4:
            gprs[index] = value
        else:
            field = _MASK[size] << shift
            gprs[index] = (gprs[index] & ~field) | (value << shift)

    def _slot(self, register: int) -> Any:
        slot = register_slots().get(register)
        if slot is None:
            raise UnsupportedInstruction(
                f"{describe(self.instr)!r}: register operand is not a general-purpose register"
            )
        return slot

    # --- operands ----------------------------------------------------------------------------------
    def size(self, op: int) -> int:
        kind = self.instr.op_kind(op)
        if kind == self._ix.OpKind.REGISTER:
            return int(self._slot(self.instr.op_register(op)).size)
        return self.memory_size()

    def memory_size(self) -> int:
        size = int(self._ix.MemorySizeExt.size(self.instr.memory_size))
        if size not in (1, 2, 4, 8):
            raise UnsupportedInstruction(f"{describe(self.instr)!r}: {size}-byte memory operand")
        return size

    def read(self, op: int, size: int) -> int:
        kind = self.instr.op_kind(op)
        ok = self._ix.OpKind
        if kind == ok.REGISTER:
            return self.reg_read(self.instr.op_register(op))
        if kind == ok.MEMORY:
            return self.memory.read(self.address(), size) & _MASK[size]
        if ok.IMMEDIATE8 <= kind <= ok.IMMEDIATE32TO64 and kind != ok.IMMEDIATE8_2ND:
            return int(self.instr.immediate(op)) & _MASK[size]
        raise UnsupportedInstruction(f"{describe(self.instr)!r}: operand kind {kind}")

    def write(self, op: int, size: int, value: int) -> None:
        kind = self.instr.op_kind(op)
        if kind == self._ix.OpKind.REGISTER:
            self.reg_write(self.instr.op_register(op), value)
        elif kind == self._ix.OpKind.MEMORY:
            self.memory.write(self.address(), size, value & _MASK[size])
        else:
            raise UnsupportedInstruction(f"{describe(self.instr)!r}: cannot write operand kind {kind}")

    def is_memory(self, op: int) -> bool:
        return bool(self.instr.op_kind(op) == self._ix.OpKind.MEMORY)

    def address(self) -> int:
        """Linear address of the (single) general memory operand, computed once."""
        if self._address is None:
            self._address = self._effective_to_linear(self.instr.memory_segment, self._effective_address())
        return self._address

    def displace(self, delta: int) -> None:
        """Move the memory operand by ``delta`` bytes (BT with a register bit offset, SDM "BT")."""
        self._address = None
        ea = (self._effective_address() + delta) & _MASK[self._address_size()]
        self._address = self._effective_to_linear(self.instr.memory_segment, ea)

    def _address_size(self) -> int:
        """Address size in bytes: that of the base/index register; else the displacement's (iced reports 8
        for a 64-bit-mode disp32 without 0x67); else the code size (as iced's own virtual_address)."""
        instr, reg = self.instr, self._ix.Register
        for r in (instr.memory_base, instr.memory_index):
            if r in (reg.RIP,):
                return 8
            if r == reg.EIP:
                return 4
            if r != reg.NONE:
                return int(self._slot(r).size)
        if instr.memory_displ_size in (2, 4, 8):
            return int(instr.memory_displ_size)
        return self.cpu.bitness // 8

    def _effective_address(self) -> int:
        instr, reg = self.instr, self._ix.Register
        size = self._address_size()
        base, index = instr.memory_base, instr.memory_index
        ea = int(instr.memory_displacement)  # for RIP/EIP-relative operands iced gives the absolute target
        if base not in (reg.NONE, reg.RIP, reg.EIP):
            ea += self.reg_read(base)
        if index != reg.NONE:
            ea += self.reg_read(index) * instr.memory_index_scale
        return ea & _MASK[size]

    def _effective_to_linear(self, segment: int, offset: int) -> int:
        """Add the segment base: in 64-bit mode only FS and GS have one (SDM Vol. 3A §3.2.4)."""
        name = segment_names().get(segment, "ds")
        if self.cpu.bitness == 64:
            if name in ("fs", "gs"):
                return (self.cpu.segment_base(name) + offset) & _MASK[8]
            return offset
        return (self.cpu.segment_base(name) + offset) & _MASK[4]

    # --- flags -------------------------------------------------------------------------------------
    def set_flags(self, flags: int, mask: int = ARITH_FLAGS) -> None:
        self.cpu.rflags = (self.cpu.rflags & ~mask) | (flags & mask)


# --- handlers: return True when the instruction completed (RIP advances) --------------------------------
Handler = Callable[[_Execution], bool]


def _mov(x: _Execution) -> bool:
    size = x.size(0)
    x.write(0, size, x.read(1, size))
    return True


def _movzx(x: _Execution) -> bool:
    x.write(0, x.size(0), x.read(1, x.size(1)))
    return True


def _movsx(x: _Execution) -> bool:
    src_size = x.size(1)
    x.write(0, x.size(0), _sign_extend(x.read(1, src_size), src_size))
    return True


def _alu(compute: Callable[[int, int, int, int], tuple[int, int]], *, store: bool = True) -> Handler:
    def handler(x: _Execution) -> bool:
        size = x.size(0)
        a = x.read(0, size)
        b = x.read(1, size)
        result, flags = compute(a, b, x.cpu.rflags & CF, size)
        if store:
            x.write(0, size, result)
        x.set_flags(flags)
        return True

    return handler


def _add(a: int, b: int, cf: int, size: int) -> tuple[int, int]:
    return fl.add(a, b, 0, size)


def _adc(a: int, b: int, cf: int, size: int) -> tuple[int, int]:
    return fl.add(a, b, cf, size)


def _sub(a: int, b: int, cf: int, size: int) -> tuple[int, int]:
    return fl.sub(a, b, 0, size)


def _sbb(a: int, b: int, cf: int, size: int) -> tuple[int, int]:
    return fl.sub(a, b, cf, size)


def _logic(op: Callable[[int, int], int]) -> Callable[[int, int, int, int], tuple[int, int]]:
    def compute(a: int, b: int, cf: int, size: int) -> tuple[int, int]:
        r = op(a, b)
        return r, fl.logic(r, size)

    return compute


def _inc_dec(delta: int) -> Handler:
    def handler(x: _Execution) -> bool:
        size = x.size(0)
        a = x.read(0, size)
        result, flags = fl.add(a, 1, 0, size) if delta > 0 else fl.sub(a, 1, 0, size)
        x.write(0, size, result)
        x.set_flags(flags, ARITH_FLAGS & ~CF)  # INC/DEC leave CF alone
        return True

    return handler


def _not(x: _Execution) -> bool:
    size = x.size(0)
    x.write(0, size, ~x.read(0, size))
    return True


def _neg(x: _Execution) -> bool:
    size = x.size(0)
    result, flags = fl.sub(0, x.read(0, size), 0, size)
    x.write(0, size, result)
    x.set_flags(flags)
    return True


def _xchg(x: _Execution) -> bool:
    size = x.size(0)
    a, b = x.read(0, size), x.read(1, size)
    # Write the memory operand first: if the device faults, no register has changed yet.
    first, second = (0, 1) if x.is_memory(0) else (1, 0)
    x.write(first, size, b if first == 0 else a)
    x.write(second, size, b if second == 0 else a)
    return True


def _xadd(x: _Execution) -> bool:
    size = x.size(0)
    dst, src = x.read(0, size), x.read(1, size)
    result, flags = fl.add(dst, src, 0, size)
    x.write(0, size, result)
    x.write(1, size, dst)
    x.set_flags(flags)
    return True


def _cmpxchg(x: _Execution) -> bool:
    """Compare the accumulator with the destination; the destination is written either way (SDM
    "CMPXCHG": with its old value when the comparison fails), then the accumulator on failure."""
    size = x.size(0)
    dst = x.read(0, size)
    src = x.read(1, size)
    acc = x.cpu.gprs[RAX] & fl_mask(size)
    _, flags = fl.sub(acc, dst, 0, size)
    if acc == dst:
        x.write(0, size, src)
    else:
        x.write(0, size, dst)
        x.gpr_write(RAX, size, dst)
    x.set_flags(flags)
    return True


def fl_mask(size: int) -> int:
    return _MASK[size]


def _bit_op(kind: str) -> Handler:
    """BT/BTS/BTR/BTC: CF = the selected bit; OF/SF/AF/PF are undefined and left as they were, ZF kept."""

    def handler(x: _Execution) -> bool:
        size = x.size(0)
        bits = size * 8
        offset = x.read(1, x.size(1) if x.instr.op_kind(1) == x._ix.OpKind.REGISTER else 1)
        if x.is_memory(0) and x.instr.op_kind(1) == x._ix.OpKind.REGISTER:
            # A register bit offset is signed and may select a bit outside the operand: the access moves
            # by whole operands (what KVM's fetch_bit_operand does, one of the forms the SDM allows).
            signed = _sign_extend(offset, x.size(1))
            x.displace((signed & ~(bits - 1)) >> 3)
        bit = offset & (bits - 1)
        value = x.read(0, size)
        x.set_flags(CF if value >> bit & 1 else 0, CF)
        if kind == "bts":
            x.write(0, size, value | (1 << bit))
        elif kind == "btr":
            x.write(0, size, value & ~(1 << bit))
        elif kind == "btc":
            x.write(0, size, value ^ (1 << bit))
        return True

    return handler


# --- string instructions ---------------------------------------------------------------------------------
def _string(kind: str) -> Handler:
    def handler(x: _Execution) -> bool:
        return _run_string(x, kind)

    return handler


def _run_string(x: _Execution, kind: str) -> bool:
    """One MOVS/STOS/LODS/CMPS/SCAS, or all its REP iterations (up to ``max_repeats`` per call).

    RSI/RDI/RCX are updated at the address size, with 32-bit results zero-extended (SDM Vol. 2B "REP").
    REPE/REPNE end CMPS/SCAS on ZF; for the others any REP prefix repeats.
    """
    instr, ok, cpu = x.instr, x._ix.OpKind, x.cpu
    string_kinds = {
        ok.MEMORY_SEG_SI: 2, ok.MEMORY_SEG_ESI: 4, ok.MEMORY_SEG_RSI: 8,
        ok.MEMORY_ESDI: 2, ok.MEMORY_ESEDI: 4, ok.MEMORY_ESRDI: 8,
    }  # fmt: skip
    address_size = 0
    for op in range(instr.op_count):
        address_size = string_kinds.get(instr.op_kind(op), address_size)
    if not address_size:
        raise UnsupportedInstruction(f"{describe(instr)!r} is not a string instruction")
    size = x.memory_size()
    amask = _MASK[address_size]
    step = -size if cpu.rflags & DF else size
    rep = instr.has_rep_prefix or instr.has_repne_prefix
    source_segment = instr.memory_segment  # DS unless overridden; the destination is always ES
    es = x._ix.Register.ES
    while True:
        if rep:
            count = cpu.gprs[RCX] & amask
            if count == 0:
                return True
            if x.repeats >= x.max_repeats:
                return False
        rsi, rdi = cpu.gprs[RSI] & amask, cpu.gprs[RDI] & amask
        if kind == "movs":
            value = x.memory.read(x._effective_to_linear(source_segment, rsi), size)
            x.memory.write(x._effective_to_linear(es, rdi), size, value & _MASK[size])
        elif kind == "stos":
            x.memory.write(x._effective_to_linear(es, rdi), size, cpu.gprs[RAX] & _MASK[size])
        elif kind == "lods":
            x.gpr_write(RAX, size, x.memory.read(x._effective_to_linear(source_segment, rsi), size))
        elif kind == "cmps":
            a = x.memory.read(x._effective_to_linear(source_segment, rsi), size) & _MASK[size]
            b = x.memory.read(x._effective_to_linear(es, rdi), size) & _MASK[size]
            x.set_flags(fl.sub(a, b, 0, size)[1])
        else:  # scas
            b = x.memory.read(x._effective_to_linear(es, rdi), size) & _MASK[size]
            x.set_flags(fl.sub(cpu.gprs[RAX] & _MASK[size], b, 0, size)[1])
        if kind in ("movs", "lods", "cmps"):
            x.gpr_write(RSI, address_size, rsi + step)
        if kind in ("movs", "stos", "cmps", "scas"):
            x.gpr_write(RDI, address_size, rdi + step)
        if not rep:
            return True
        x.gpr_write(RCX, address_size, count - 1)
        x.repeats += 1
        if kind in ("cmps", "scas"):
            zf = bool(cpu.rflags & ZF)
            if (instr.has_repe_prefix and not zf) or (instr.has_repne_prefix and zf):
                return True


@cache
def _handlers() -> dict[int, Handler]:
    m = iced().Mnemonic
    table: dict[int, Handler] = {
        m.MOV: _mov,
        m.MOVZX: _movzx,
        m.MOVSX: _movsx,
        m.MOVSXD: _movsx,
        m.ADD: _alu(_add),
        m.ADC: _alu(_adc),
        m.SUB: _alu(_sub),
        m.SBB: _alu(_sbb),
        m.CMP: _alu(_sub, store=False),
        m.AND: _alu(_logic(lambda a, b: a & b)),
        m.OR: _alu(_logic(lambda a, b: a | b)),
        m.XOR: _alu(_logic(lambda a, b: a ^ b)),
        m.TEST: _alu(_logic(lambda a, b: a & b), store=False),
        m.INC: _inc_dec(+1),
        m.DEC: _inc_dec(-1),
        m.NOT: _not,
        m.NEG: _neg,
        m.XCHG: _xchg,
        m.XADD: _xadd,
        m.CMPXCHG: _cmpxchg,
        m.BT: _bit_op("bt"),
        m.BTS: _bit_op("bts"),
        m.BTR: _bit_op("btr"),
        m.BTC: _bit_op("btc"),
    }
    for kind, names in {
        "movs": ("MOVSB", "MOVSW", "MOVSD", "MOVSQ"),
        "stos": ("STOSB", "STOSW", "STOSD", "STOSQ"),
        "lods": ("LODSB", "LODSW", "LODSD", "LODSQ"),
        "cmps": ("CMPSB", "CMPSW", "CMPSD", "CMPSQ"),
        "scas": ("SCASB", "SCASW", "SCASD", "SCASQ"),
    }.items():
        for name in names:
            # MOVSD/CMPSD are also SSE mnemonics; _run_string rejects those (no string operand).
            table[getattr(m, name)] = _string(kind)
    return table


@cache
def _mnemonic_names() -> dict[int, str]:
    m = iced().Mnemonic
    return {getattr(m, n): n.lower() for n in dir(m) if n.isupper()}


def _mnemonic_name(mnemonic: int) -> str:
    return _mnemonic_names().get(mnemonic, str(mnemonic))
