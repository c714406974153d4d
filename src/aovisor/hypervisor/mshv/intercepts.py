"""Intercept handling: turn an ``hv_message`` plus register state into device accesses and register updates.

Unlike KVM, the Microsoft hypervisor completes nothing itself (§4.3): for port I/O the VMM performs the
access, merges the result into RAX and advances RIP; for MMIO it gets only the guest-physical address and
the instruction bytes, so it decodes and executes the instruction (:mod:`aovisor.hypervisor.x86_emulator`).
The handlers here are pure functions of the message, the :class:`VmOps` and a :class:`VpAccess` (address
translation and RAM), returning an :class:`InterceptResult`; the VP writes the result back.  That keeps
every rule testable with hand-built messages and no /dev/mshv.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from aovisor.hypervisor.base import Segment, VmOps
from aovisor.hypervisor.mshv import abi
from aovisor.hypervisor.mshv.registers import GPR_NAMES, decode_segment
from aovisor.hypervisor.x86_emulator.errors import PF_VECTOR, EmulatorError, GuestFault

MAX_STRING_REPEATS = 1024  # REP INS/OUTS iterations per intercept; the guest re-executes for the rest
PAGE_SIZE = 4096
_U64 = (1 << 64) - 1
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: _U64}

Message = bytes | bytearray | memoryview  # a 256-byte hv_message (§4.2)


class VpAccess(Protocol):
    """What a handler needs from the VP beyond the message: address translation, RAM, segment bases."""

    def translate(self, gva: int, write: bool) -> int:
        """GPA of linear address ``gva``; raises :class:`GuestFault` (#PF) if the guest has no mapping."""
        ...

    def read_ram(self, gpa: int, length: int) -> bytes | None:
        """Guest RAM at ``gpa`` or None when ``[gpa, +length)`` is not (entirely) RAM."""
        ...

    def write_ram(self, gpa: int, data: bytes) -> bool:
        """Store into writable guest RAM; False when the range is not writable RAM (e.g. a device)."""
        ...

    def segment_base(self, name: str) -> int: ...


@dataclass
class InterceptResult:
    """Registers to write back (``Regs`` field names) and the fault to inject if the instruction faulted."""

    registers: dict[str, int] = field(default_factory=dict)
    fault: EmulatorError | None = None


# --- message parsing (§4.2) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class InterceptHeader:
    vp_index: int
    instruction_length: int
    access_type: int
    execution_state: int
    cs: Segment
    rip: int
    rflags: int

    @property
    def bitness(self) -> int:
        """The code size: 64 in long mode with CS.L, else 32 with CS.D, else 16 (SDM Vol. 3A §5.2.1)."""
        if self.execution_state & abi.EXECUTION_STATE_EFER_LMA and self.cs.l:
            return 64
        if self.execution_state & abi.EXECUTION_STATE_CR0_PE and self.cs.db:
            return 32
        return 16

    @property
    def cpl(self) -> int:
        return self.execution_state & abi.EXECUTION_STATE_CPL_MASK


def message_type(msg: Message) -> int:
    return int(struct.unpack_from("<I", msg, abi.MSG_TYPE_OFFSET)[0])


def _segment(msg: Message, offset: int) -> Segment:
    return decode_segment(int.from_bytes(msg[offset : offset + 16], "little"))


def parse_header(msg: Message) -> InterceptHeader:
    vp_index, length_cr8, access, state = struct.unpack_from("<IBBH", msg, abi.MSG_VP_INDEX_OFFSET)
    rip, rflags = struct.unpack_from("<QQ", msg, abi.MSG_RIP_OFFSET)
    return InterceptHeader(
        vp_index, length_cr8 & 0xF, access, state, _segment(msg, abi.MSG_CS_OFFSET), rip, rflags
    )


@dataclass(frozen=True)
class IoPortIntercept:
    header: InterceptHeader
    port: int
    size: int
    string: bool
    rep: bool
    rax: int
    instruction_bytes: bytes
    ds: Segment
    es: Segment
    rcx: int
    rsi: int
    rdi: int

    @property
    def is_write(self) -> bool:
        return self.header.access_type == abi.INTERCEPT_ACCESS_WRITE


def parse_io_port(msg: Message) -> IoPortIntercept:
    port, info, byte_count = struct.unpack_from("<HBB", msg, abi.IO_PORT_NUMBER_OFFSET)
    (rax,) = struct.unpack_from("<Q", msg, abi.IO_RAX_OFFSET)
    rcx, rsi, rdi = struct.unpack_from("<QQQ", msg, abi.IO_RCX_OFFSET)
    count = min(byte_count, abi.INSTRUCTION_BYTES_MAX)
    return IoPortIntercept(
        header=parse_header(msg),
        port=port,
        size=info & abi.IO_ACCESS_SIZE_MASK,
        string=bool(info & abi.IO_ACCESS_STRING),
        rep=bool(info & abi.IO_ACCESS_REP),
        rax=rax,
        instruction_bytes=bytes(
            msg[abi.IO_INSTRUCTION_BYTES_OFFSET : abi.IO_INSTRUCTION_BYTES_OFFSET + count]
        ),
        ds=_segment(msg, abi.IO_DS_OFFSET),
        es=_segment(msg, abi.IO_ES_OFFSET),
        rcx=rcx,
        rsi=rsi,
        rdi=rdi,
    )


@dataclass(frozen=True)
class MemoryIntercept:
    header: InterceptHeader
    gpa: int
    gva: int
    gva_valid: bool
    gva_gpa_valid: bool
    instruction_bytes: bytes

    @property
    def is_write(self) -> bool:
        return self.header.access_type == abi.INTERCEPT_ACCESS_WRITE


def parse_memory(msg: Message) -> MemoryIntercept:
    byte_count, access_info = struct.unpack_from("<BB", msg, abi.MEM_INSTRUCTION_BYTE_COUNT_OFFSET)
    gva, gpa = struct.unpack_from("<QQ", msg, abi.MEM_GVA_OFFSET)
    count = min(byte_count, abi.INSTRUCTION_BYTES_MAX)
    return MemoryIntercept(
        header=parse_header(msg),
        gpa=gpa,
        gva=gva,
        gva_valid=bool(access_info & abi.MEM_ACCESS_GVA_VALID),
        gva_gpa_valid=bool(access_info & abi.MEM_ACCESS_GVA_GPA_VALID),
        instruction_bytes=bytes(
            msg[abi.MEM_INSTRUCTION_BYTES_OFFSET : abi.MEM_INSTRUCTION_BYTES_OFFSET + count]
        ),
    )


def parse_apic_eoi(msg: Message) -> tuple[int, int]:
    """(vp_index, interrupt vector) of an X64_APIC_EOI message."""
    vp_index, vector = struct.unpack_from("<II", msg, abi.EOI_VP_INDEX_OFFSET)
    return vp_index, vector


# --- guest memory by linear address ------------------------------------------------------------------
class LinearMemory:
    """The emulator's :class:`~aovisor.hypervisor.x86_emulator.Memory` on an MSHV VP.

    A linear address is translated to a GPA (the intercept's own GVA→GPA pair is trusted for its page, as
    CH does when ``gva_gpa_valid``; other pages go to TRANSLATE_VIRTUAL_ADDRESS), then served from RAM or
    sent to the MMIO bus.  Accesses that cross a page are split, each part routed on its own.
    """

    def __init__(self, vp: VpAccess, ops: VmOps, hint: tuple[int, int] | None = None) -> None:
        self._vp = vp
        self._ops = ops
        self._pages: dict[tuple[int, bool], int] = {}
        if hint is not None:
            gva_page, gpa_page = hint
            self._pages[(gva_page, False)] = self._pages[(gva_page, True)] = gpa_page

    def _gpa(self, address: int, write: bool) -> int:
        page = address & ~(PAGE_SIZE - 1)
        gpa_page = self._pages.get((page, write))
        if gpa_page is None:
            gpa_page = self._vp.translate(page, write) & ~(PAGE_SIZE - 1)
            self._pages[(page, write)] = gpa_page
        return gpa_page | (address & (PAGE_SIZE - 1))

    @staticmethod
    def _chunks(address: int, size: int) -> list[tuple[int, int, int]]:
        """(linear address, length, byte offset into the value) per page touched."""
        first = min(size, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
        chunks = [(address, first, 0)]
        if first < size:
            chunks.append(((address + first) & _U64, size - first, first))
        return chunks

    def read(self, address: int, size: int) -> int:
        value = 0
        for linear, length, shift in self._chunks(address, size):
            gpa = self._gpa(linear, False)
            data = self._vp.read_ram(gpa, length)
            if data is not None:
                part = int.from_bytes(data, "little")
            elif length in (1, 2, 4, 8):
                part = self._ops.mmio_read(gpa, length) & _MASK[length]
            else:  # an odd-sized piece of a page-crossing device access: byte by byte
                part = sum((self._ops.mmio_read(gpa + i, 1) & 0xFF) << (8 * i) for i in range(length))
            value |= part << (8 * shift)
        return value

    def write(self, address: int, size: int, value: int) -> None:
        for linear, length, shift in self._chunks(address, size):
            gpa = self._gpa(linear, True)
            part = value >> (8 * shift) & ((1 << (8 * length)) - 1)
            if self._vp.write_ram(gpa, part.to_bytes(length, "little")):
                continue
            if length in (1, 2, 4, 8):
                self._ops.mmio_write(gpa, length, part)
            else:
                for i in range(length):
                    self._ops.mmio_write(gpa + i, 1, part >> (8 * i) & 0xFF)

    def fetch(self, address: int, length: int) -> bytes:
        """Instruction bytes at a linear address (RAM only; code never runs from a device here)."""
        out = b""
        for linear, part, _ in self._chunks(address, length):
            data = self._vp.read_ram(self._gpa(linear, False), part)
            if data is None:
                break
            out += data
        return out


# --- port I/O (§6) ---------------------------------------------------------------------------------------
_SEGMENT_PREFIXES = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}
_LEGACY_PREFIXES = {0xF0, 0xF2, 0xF3, 0x66, 0x67, *_SEGMENT_PREFIXES}


def _string_prefixes(code: bytes) -> tuple[bool, str | None]:
    """(address-size override present, segment override) from an INS/OUTS instruction's prefixes."""
    address_override, segment = False, None
    for byte in code:
        if byte not in _LEGACY_PREFIXES:
            break
        if byte == 0x67:
            address_override = True
        segment = _SEGMENT_PREFIXES.get(byte, segment)
    return address_override, segment


def handle_io_port(msg: Message, ops: VmOps, vp: VpAccess) -> InterceptResult:
    """Complete an X64_IO_PORT_INTERCEPT: do the access(es) and compute RAX/RSI/RDI/RCX/RIP."""
    io = parse_io_port(msg)
    if io.size not in (1, 2, 4):
        # Not something the hypervisor sends; treat as a broken message rather than guess.
        return InterceptResult(fault=GuestFault(6, message=f"I/O intercept with access size {io.size}"))
    if io.string:
        return _string_io(io, ops, vp)
    mask = _MASK[io.size]
    next_rip = (io.header.rip + io.header.instruction_length) & _U64
    if io.is_write:
        ops.pio_write(io.port, io.size, io.rax & mask)
        return InterceptResult({"rip": next_rip})
    value = ops.pio_read(io.port, io.size) & mask
    # IN EAX zero-extends into RAX; IN AL/AX keep the rest of RAX (SDM Vol. 1 §3.4.1.1).  CH and QEMU
    # zero-extend all three (§6); the architectural rule is what KVM, and therefore our KVM backend, does.
    rax = value if io.size == 4 else (io.rax & ~mask) | value
    return InterceptResult({"rax": rax, "rip": next_rip})


def _string_io(io: IoPortIntercept, ops: VmOps, vp: VpAccess) -> InterceptResult:
    """INS/OUTS, with REP: OUTS reads seg:rSI (DS unless overridden), INS writes ES:rDI; rSI/rDI step by the
    access size, backwards when RFLAGS.DF; rCX counts down (SDM Vol. 2A "INS", "OUTS", "REP")."""
    header = io.header
    bitness = header.bitness
    address_override, segment = _string_prefixes(io.instruction_bytes)
    address_size = {64: 4 if address_override else 8, 32: 2 if address_override else 4}.get(
        bitness, 4 if address_override else 2
    )
    amask = _MASK[address_size]
    step = -io.size if header.rflags & (1 << 10) else io.size
    memory = LinearMemory(vp, ops)

    def linear(name: str, offset: int) -> int:
        if bitness == 64:
            return (vp.segment_base(name) + offset) & _U64 if name in ("fs", "gs") else offset
        base = io.es.base if name == "es" else io.ds.base if name == "ds" else vp.segment_base(name)
        return (base + offset) & 0xFFFF_FFFF

    def merge(old: int, new: int) -> int:  # a 32-bit register write zero-extends; 16-bit keeps the rest
        return new & amask if address_size >= 4 else (old & ~amask) | (new & amask)

    rsi, rdi, rcx = io.rsi, io.rdi, io.rcx
    count = rcx & amask if io.rep else 1
    done = min(count, MAX_STRING_REPEATS)
    registers: dict[str, int] = {}
    fault: EmulatorError | None = None
    completed = 0
    try:
        for _ in range(done):
            if io.is_write:
                ops.pio_write(io.port, io.size, memory.read(linear(segment or "ds", rsi & amask), io.size))
                rsi = merge(rsi, (rsi & amask) + step)
            else:
                value = ops.pio_read(io.port, io.size) & _MASK[io.size]
                memory.write(linear("es", rdi & amask), io.size, value)
                rdi = merge(rdi, (rdi & amask) + step)
            if io.rep:
                rcx = merge(rcx, (rcx & amask) - 1)
            completed += 1
    except GuestFault as e:
        fault = e
    if completed:
        registers["rsi" if io.is_write else "rdi"] = rsi if io.is_write else rdi
        if io.rep:
            registers["rcx"] = rcx
    if fault is None and completed == count:
        registers["rip"] = (header.rip + header.instruction_length) & _U64
    return InterceptResult(registers, fault)


# --- MMIO (§6) -------------------------------------------------------------------------------------------
def handle_memory(msg: Message, ops: VmOps, gprs: list[int], vp: VpAccess) -> InterceptResult:
    """Complete an UNMAPPED_GPA/GPA_INTERCEPT by emulating the instruction at RIP.

    ``gprs`` are the VP's 16 general-purpose registers (architectural order); RIP and RFLAGS come from the
    message.  The result holds every register the instruction changed, RIP included.
    """
    from aovisor.hypervisor.x86_emulator import CpuState, TruncatedInstruction, emulate
    from aovisor.hypervisor.x86_emulator.decoder import MAX_INSTRUCTION_LENGTH

    m = parse_memory(msg)
    header = m.header
    hint = (m.gva & ~(PAGE_SIZE - 1), m.gpa & ~(PAGE_SIZE - 1)) if m.gva_gpa_valid else None
    memory = LinearMemory(vp, ops, hint)
    cpu = CpuState(list(gprs), header.rip, header.rflags, header.bitness, vp.segment_base)
    result = InterceptResult()
    try:
        try:
            emulate(m.instruction_bytes, cpu, memory)
        except TruncatedInstruction:
            # The message carries a fetch window, not the instruction length (§6): read the rest.
            pc = header.rip if header.bitness == 64 else (header.cs.base + header.rip) & 0xFFFF_FFFF
            emulate(memory.fetch(pc, MAX_INSTRUCTION_LENGTH), cpu, memory)
    except EmulatorError as e:
        result.fault = e
    for i, name in enumerate(GPR_NAMES):
        if cpu.gprs[i] != gprs[i]:
            result.registers[name] = cpu.gprs[i]
    if cpu.rip != header.rip:
        result.registers["rip"] = cpu.rip
    if cpu.rflags != header.rflags:
        result.registers["rflags"] = cpu.rflags
    return result


def page_fault(gva: int, write: bool, user: bool, present: bool) -> GuestFault:
    """The #PF a failed translation becomes: error code P/W/U bits (SDM Vol. 3A §4.7), CR2 = address."""
    code = (1 if present else 0) | (2 if write else 0) | (4 if user else 0)
    return GuestFault(PF_VECTOR, code, gva, f"page fault at {gva:#x}")
