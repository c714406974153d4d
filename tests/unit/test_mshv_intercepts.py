"""MSHV intercept handling with hv_message buffers built to mshv.md §4.2, without /dev/mshv.

The messages are packed here at the offsets the specification gives (literal numbers, not aovisor's
constants).  The handlers run against a recording ``VmOps`` and a fake VP (RAM + page tables), and the run
loop of ``MshvVcpu``/``MshvVm`` runs against a fake kernel that hands out these messages from MSHV_RUN_VP.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from aovisor.errors import HypervisorError
from aovisor.hypervisor.base import VcpuExit
from aovisor.hypervisor.mshv import abi, intercepts
from aovisor.hypervisor.mshv.vcpu import MshvVcpu, VcpuError
from aovisor.hypervisor.mshv.vm import MshvVm
from aovisor.hypervisor.x86_emulator import GuestFault

U64 = (1 << 64) - 1
RIP = 0xFFFF_FFFF_8100_0000
CODE64 = 0xA09B  # §4.1 attribute words
CODE32 = 0xC09B
CODE16 = 0x009B
LONG_MODE_STATE = 1 << 2 | 1 << 4  # cr0_pe, efer_lma (§4.2 execution_state)


def segment(base: int = 0, limit: int = 0xFFFF_FFFF, selector: int = 0, attributes: int = 0xC093) -> bytes:
    return struct.pack("<QIHH", base, limit, selector, attributes)


def header(
    msg: bytearray,
    kind: int,
    *,
    length: int,
    access: int,
    rip: int = RIP,
    rflags: int = 0x2,
    cs: int = CODE64,
    state: int = LONG_MODE_STATE,
    cpl: int = 0,
) -> None:
    struct.pack_into("<IB", msg, 0, kind, 0)
    struct.pack_into("<IBBH", msg, 16, 0, length & 0xF, access, state | cpl)  # vp_index, len|cr8, access
    msg[24:40] = segment(attributes=cs, selector=0x10)
    struct.pack_into("<QQ", msg, 40, rip, rflags)


def io_message(
    port: int,
    size: int,
    *,
    write: bool,
    rax: int = 0,
    length: int = 1,
    string: bool = False,
    rep: bool = False,
    code: bytes = b"",
    rcx: int = 0,
    rsi: int = 0,
    rdi: int = 0,
    ds_base: int = 0,
    es_base: int = 0,
    **hdr: Any,
) -> bytearray:
    msg = bytearray(256)
    header(msg, 0x80010000, length=length, access=1 if write else 0, **hdr)
    info = size | (1 << 3 if string else 0) | (1 << 4 if rep else 0)
    struct.pack_into("<HBB", msg, 56, port, info, len(code))
    struct.pack_into("<Q", msg, 64, rax)
    msg[72 : 72 + len(code)] = code
    msg[88:104] = segment(base=ds_base)
    msg[104:120] = segment(base=es_base)
    struct.pack_into("<QQQ", msg, 120, rcx, rsi, rdi)
    return msg


def memory_message(
    gpa: int,
    code: bytes,
    *,
    write: bool,
    gva: int | None = None,
    gva_gpa_valid: bool = True,
    kind: int = 0x80000000,
    **hdr: Any,
) -> bytearray:
    msg = bytearray(256)
    header(msg, kind, length=0, access=1 if write else 0, **hdr)
    window = code[:16]
    info = (1 | (2 if gva_gpa_valid else 0)) if gva is not None else 0
    struct.pack_into("<IBBB", msg, 56, 0, len(window), info, 0)
    struct.pack_into("<QQ", msg, 64, gva if gva is not None else 0, gpa)
    msg[80 : 80 + len(window)] = window
    return msg


class RecordingOps:
    def __init__(self, reads: dict[int, int] | None = None) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.reads = reads or {}

    def pio_read(self, port: int, size: int) -> int:
        value = self.reads.get(port, 0xFFFF_FFFF_FFFF_FFFF) & ((1 << (8 * size)) - 1)
        self.log.append(("pio_read", port, size, value))
        return value

    def pio_write(self, port: int, size: int, value: int) -> None:
        self.log.append(("pio_write", port, size, value))

    def mmio_read(self, addr: int, size: int) -> int:
        value = self.reads.get(addr, 0x8877_6655_4433_2211) & ((1 << (8 * size)) - 1)
        self.log.append(("mmio_read", addr, size, value))
        return value

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self.log.append(("mmio_write", addr, size, value))


class FakeVp:
    """RAM at GPA [0, 1 MiB) (read-only above 0xF0000), and page tables given as a dict of page maps."""

    def __init__(self, pages: dict[int, int] | None = None, unmapped: set[int] | None = None) -> None:
        self.ram = bytearray(1 << 20)
        self.pages = pages  # None: identity
        self.unmapped = unmapped or set()
        self.translations: list[int] = []
        self.bases = {"fs": 0x7000_0000, "gs": 0x7100_0000, "cs": 0, "ss": 0}

    def translate(self, gva: int, write: bool) -> int:
        self.translations.append(gva)
        page = gva & ~0xFFF
        if page in self.unmapped:
            raise intercepts.page_fault(gva, write, user=False, present=False)
        mapped = page if self.pages is None else self.pages[page]
        return mapped | (gva & 0xFFF)

    def read_ram(self, gpa: int, length: int) -> bytes | None:
        return bytes(self.ram[gpa : gpa + length]) if gpa + length <= len(self.ram) else None

    def write_ram(self, gpa: int, data: bytes) -> bool:
        if gpa + len(data) > 0xF0000:
            return False
        self.ram[gpa : gpa + len(data)] = data
        return True

    def segment_base(self, name: str) -> int:
        return self.bases[name]


# --- port I/O --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 4])
def test_out_sends_the_low_bytes_of_rax_and_advances_rip(size: int) -> None:
    ops = RecordingOps()
    msg = io_message(0x3F8, size, write=True, rax=0x1122_3344_5566_7788, length=2)
    result = intercepts.handle_io_port(msg, ops, FakeVp())
    assert ops.log == [("pio_write", 0x3F8, size, 0x1122_3344_5566_7788 & ((1 << (8 * size)) - 1))]
    assert result.registers == {"rip": RIP + 2} and result.fault is None


@pytest.mark.parametrize(
    ("size", "expected_rax"),
    [
        (1, 0xAAAA_BBBB_CCCC_DD5A),  # IN AL keeps RAX[63:8]
        (2, 0xAAAA_BBBB_CCCC_A55A),  # IN AX keeps RAX[63:16]
        (4, 0x0000_0000_C3C3_A55A),  # IN EAX zero-extends (a 32-bit register write)
    ],
)
def test_in_merges_the_data_into_rax(size: int, expected_rax: int) -> None:
    ops = RecordingOps(reads={0x71: 0xC3C3_A55A})
    msg = io_message(0x71, size, write=False, rax=0xAAAA_BBBB_CCCC_DDDD, length=1)
    result = intercepts.handle_io_port(msg, ops, FakeVp())
    assert ops.log == [("pio_read", 0x71, size, 0xC3C3_A55A & ((1 << (8 * size)) - 1))]
    assert result.registers == {"rax": expected_rax, "rip": RIP + 1}


def test_rip_advance_uses_the_instruction_length_nibble_only() -> None:
    msg = io_message(0x80, 1, write=True, length=2)
    msg[20] |= 0xA0  # CR8 in bits 7:4 (§4.2)
    assert intercepts.handle_io_port(msg, RecordingOps(), FakeVp()).registers["rip"] == RIP + 2


def test_rep_outsb_reads_ds_rsi_and_counts_rcx_down() -> None:
    vp = FakeVp()
    vp.ram[0x5000:0x5003] = b"abc"
    ops = RecordingOps()
    msg = io_message(
        0x3F8, 1, write=True, string=True, rep=True, code=b"\xf3\x6e", length=2, rcx=3, rsi=0x5000
    )
    result = intercepts.handle_io_port(msg, ops, vp)
    assert ops.log == [("pio_write", 0x3F8, 1, c) for c in b"abc"]
    assert result.registers == {"rsi": 0x5003, "rcx": 0, "rip": RIP + 2}


def test_rep_insw_with_df_writes_es_rdi_backwards() -> None:
    vp = FakeVp()
    ops = RecordingOps(reads={0x1F0: 0xBEEF})
    msg = io_message(
        0x1F0, 2, write=False, string=True, rep=True, code=b"\x66\xf3\x6d", length=3, rcx=2, rdi=0x6000,
        rflags=0x2 | 1 << 10,
    )  # fmt: skip
    result = intercepts.handle_io_port(msg, ops, vp)
    assert [op for op, *_ in ops.log] == ["pio_read", "pio_read"]
    assert vp.ram[0x5FFE:0x6002] == b"\xef\xbe\xef\xbe"
    assert result.registers == {"rdi": 0x5FFC, "rcx": 0, "rip": RIP + 3}


def test_single_outsd_without_rep_leaves_rcx() -> None:
    vp = FakeVp()
    vp.ram[0x100:0x104] = (0x12345678).to_bytes(4, "little")
    ops = RecordingOps()
    msg = io_message(0xCFC, 4, write=True, string=True, code=b"\x6f", length=1, rcx=99, rsi=0x100)
    result = intercepts.handle_io_port(msg, ops, vp)
    assert ops.log == [("pio_write", 0xCFC, 4, 0x12345678)]
    assert result.registers == {"rsi": 0x104, "rip": RIP + 1}


def test_rep_with_zero_count_only_advances_rip() -> None:
    ops = RecordingOps()
    msg = io_message(0x80, 1, write=True, string=True, rep=True, code=b"\xf3\x6e", length=2, rcx=0)
    assert intercepts.handle_io_port(msg, ops, FakeVp()).registers == {"rip": RIP + 2}
    assert ops.log == []


def test_addr32_string_io_uses_ecx_esi_and_zero_extends() -> None:
    vp = FakeVp()
    vp.ram[0x10:0x12] = b"xy"
    ops = RecordingOps()
    msg = io_message(
        0x80, 1, write=True, string=True, rep=True, code=b"\x67\xf3\x6e", length=3,
        rcx=0xFFFF_0000_0000_0002, rsi=0xFFFF_0000_0000_0010,
    )  # fmt: skip
    result = intercepts.handle_io_port(msg, ops, vp)
    assert [v for *_, v in ops.log] == [ord("x"), ord("y")]
    assert result.registers == {"rsi": 0x12, "rcx": 0, "rip": RIP + 3}


def test_outs_with_fs_override_adds_the_fs_base() -> None:
    vp = FakeVp(pages={0x7000_0000: 0x8000})
    vp.ram[0x8020] = 0x42
    ops = RecordingOps()
    msg = io_message(0x80, 1, write=True, string=True, code=b"\x64\x6e", length=2, rsi=0x20)
    intercepts.handle_io_port(msg, ops, vp)
    assert ops.log == [("pio_write", 0x80, 1, 0x42)]


def test_32_bit_string_io_adds_the_segment_bases_from_the_message() -> None:
    vp = FakeVp()
    ops = RecordingOps(reads={0x60: 0x99})
    msg = io_message(
        0x60, 1, write=False, string=True, code=b"\x6c", length=1, rdi=0x10, es_base=0x9000,
        cs=CODE32, state=1 << 2,
    )  # fmt: skip
    result = intercepts.handle_io_port(msg, ops, vp)
    assert vp.ram[0x9010] == 0x99
    assert result.registers["rdi"] == 0x11


def test_long_rep_is_split_and_rip_stays_until_done() -> None:
    ops = RecordingOps()
    count = intercepts.MAX_STRING_REPEATS + 5
    msg = io_message(0x80, 1, write=True, string=True, rep=True, code=b"\xf3\x6e", length=2, rcx=count, rsi=0)
    result = intercepts.handle_io_port(msg, ops, FakeVp())
    assert len(ops.log) == intercepts.MAX_STRING_REPEATS
    assert result.registers == {"rsi": intercepts.MAX_STRING_REPEATS, "rcx": 5}  # no "rip": re-executes


def test_string_io_translation_fault_keeps_progress_and_reports_page_fault() -> None:
    vp = FakeVp(unmapped={0x2000})
    ops = RecordingOps()
    msg = io_message(
        0x80, 1, write=True, string=True, rep=True, code=b"\xf3\x6e", length=2, rcx=4, rsi=0x1FFE
    )
    result = intercepts.handle_io_port(msg, ops, vp)
    assert len(ops.log) == 2
    assert result.registers == {"rsi": 0x2000, "rcx": 2}
    assert isinstance(result.fault, GuestFault) and result.fault.vector == 14 and result.fault.cr2 == 0x2000


# --- MMIO ------------------------------------------------------------------------------------------------
def gprs(**values: int) -> list[int]:
    order = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{i}" for i in range(8, 16))]
    return [values.get(name, 0) for name in order]


def test_mmio_write_reports_the_data_and_size_from_the_instruction() -> None:
    ops = RecordingOps()
    msg = memory_message(
        0xD000_0004, bytes.fromhex("894b04"), write=True, gva=0xD000_0004
    )  # mov [rbx+4], ecx
    result = intercepts.handle_memory(msg, ops, gprs(rbx=0xD000_0000, rcx=0xCAFE_BABE_1234_5678), FakeVp())
    assert ops.log == [("mmio_write", 0xD000_0004, 4, 0x1234_5678)]
    assert result.registers == {"rip": RIP + 3}


@pytest.mark.parametrize(
    ("code", "size", "register", "expected"),
    [
        ("8a03", 1, "rax", 0xFFFF_FFFF_FFFF_FF11),  # mov al, [rbx]
        ("668b03", 2, "rax", 0xFFFF_FFFF_FFFF_2211),  # mov ax, [rbx]
        ("8b03", 4, "rax", 0x4433_2211),  # mov eax, [rbx]
        ("488b03", 8, "rax", 0x8877_6655_4433_2211),  # mov rax, [rbx]
        ("440fb633", 1, "r14", 0x11),  # movzx r14d, byte [rbx]
    ],
)
def test_mmio_read_of_every_size_updates_the_destination(
    code: str, size: int, register: str, expected: int
) -> None:
    ops = RecordingOps()
    msg = memory_message(0xD000_0000, bytes.fromhex(code), write=False, gva=0xD000_0000)
    result = intercepts.handle_memory(msg, ops, gprs(rax=U64, r14=U64, rbx=0xD000_0000), FakeVp())
    assert ops.log == [("mmio_read", 0xD000_0000, size, 0x8877_6655_4433_2211 & ((1 << (8 * size)) - 1))]
    assert result.registers == {register: expected, "rip": RIP + len(bytes.fromhex(code))}


def test_mmio_uses_the_intercepts_gpa_for_a_virtual_address() -> None:
    """A kernel virtual address: the message's GVA->GPA pair is trusted, no translation hypercall."""
    vp = FakeVp(pages={})
    ops = RecordingOps()
    gva = 0xFFFF_C900_0000_0010
    msg = memory_message(0xFEB0_0010, bytes.fromhex("8907"), write=True, gva=gva)  # mov [rdi], eax
    intercepts.handle_memory(msg, ops, gprs(rdi=gva, rax=7), vp)
    assert ops.log == [("mmio_write", 0xFEB0_0010, 4, 7)] and vp.translations == []


def test_mmio_without_a_valid_gpa_translates_the_gva() -> None:
    vp = FakeVp(pages={0xFFFF_C900_0000_0000: 0xFEB0_0000})
    ops = RecordingOps()
    gva = 0xFFFF_C900_0000_0010
    msg = memory_message(0, bytes.fromhex("8907"), write=True, gva=gva, gva_gpa_valid=False)
    intercepts.handle_memory(msg, ops, gprs(rdi=gva, rax=7), vp)
    assert ops.log == [("mmio_write", 0xFEB0_0010, 4, 7)] and vp.translations == [0xFFFF_C900_0000_0000]


def test_mmio_instruction_longer_than_the_window_is_fetched_from_memory() -> None:
    code = bytes.fromhex("48c7842400100000efbeadde")  # mov qword [rsp+0x1000], 0xffffffffdeadbeef
    vp = FakeVp()
    vp.ram[0x4000 : 0x4000 + len(code)] = code
    ops = RecordingOps()
    msg = memory_message(0xD000_1000, code[:5], write=True, gva=0xD000_1000, rip=0x4000)
    result = intercepts.handle_memory(msg, ops, gprs(rsp=0xD000_0000), vp)
    assert ops.log == [("mmio_write", 0xD000_1000, 8, 0xFFFF_FFFF_DEAD_BEEF)]
    assert result.registers == {"rip": 0x4000 + len(code)}


def test_write_to_read_only_memory_goes_to_the_device() -> None:
    """GPA_INTERCEPT on a region mapped without WRITABLE (§6): the write is a device access."""
    ops = RecordingOps()
    msg = memory_message(0xF1000, bytes.fromhex("c60001"), write=True, gva=0xF1000, kind=0x80000001)
    intercepts.handle_memory(msg, ops, gprs(rax=0xF1000), FakeVp())  # mov byte [rax], 1
    assert ops.log == [("mmio_write", 0xF1000, 1, 1)]


def test_rep_movs_from_ram_to_mmio() -> None:
    vp = FakeVp()
    vp.ram[0x3000:0x3008] = bytes(range(1, 9))
    ops = RecordingOps()
    msg = memory_message(0xD000_0000, bytes.fromhex("f348a5"), write=True, gva=0xD000_0000)  # rep movsq
    result = intercepts.handle_memory(msg, ops, gprs(rsi=0x3000, rdi=0xD000_0000, rcx=1), vp)
    assert ops.log == [("mmio_write", 0xD000_0000, 8, 0x0807_0605_0403_0201)]
    assert result.registers == {"rsi": 0x3008, "rdi": 0xD000_0008, "rcx": 0, "rip": RIP + 3}


def test_page_crossing_access_is_split_per_page() -> None:
    ops = RecordingOps()
    msg = memory_message(0xD000_0FFE, bytes.fromhex("8903"), write=True, gva=0xD000_0FFE)  # mov [rbx], eax
    intercepts.handle_memory(msg, ops, gprs(rbx=0xD000_0FFE, rax=0xAABB_CCDD), FakeVp())
    assert ops.log == [("mmio_write", 0xD000_0FFE, 2, 0xCCDD), ("mmio_write", 0xD000_1000, 2, 0xAABB)]


def test_rmw_sets_flags_in_the_result() -> None:
    ops = RecordingOps(reads={0xD000_0000: 0})
    msg = memory_message(
        0xD000_0000, bytes.fromhex("8308ff"), write=True, gva=0xD000_0000
    )  # or dword [rax], -1
    result = intercepts.handle_memory(msg, ops, gprs(rax=0xD000_0000), FakeVp())
    assert ops.log[-1] == ("mmio_write", 0xD000_0000, 4, 0xFFFF_FFFF)
    assert result.registers["rflags"] == 0x2 | 0x80 | 0x4  # SF, PF


def test_unsupported_instruction_becomes_ud_with_no_access_and_no_rip_change() -> None:
    ops = RecordingOps()
    msg = memory_message(0xD000_0000, bytes.fromhex("0f2900"), write=True, gva=0xD000_0000)  # movaps
    result = intercepts.handle_memory(msg, ops, gprs(rax=0xD000_0000), FakeVp())
    assert ops.log == [] and result.registers == {}
    assert result.fault is not None and result.fault.vector == 6


def test_garbage_instruction_bytes_never_raise() -> None:
    for code in (b"", b"\x0f", b"\xff" * 16, bytes(range(16)), b"\xf0" * 16):
        msg = memory_message(0xD000_0000, code, write=False, gva=0xD000_0000)
        result = intercepts.handle_memory(msg, RecordingOps(), gprs(), FakeVp())
        assert result.fault is not None or "rip" in result.registers


def test_header_bitness_from_execution_state_and_cs() -> None:
    for cs, state, bits in (
        (CODE64, LONG_MODE_STATE, 64),
        (CODE32, 1 << 2, 32),
        (CODE16, 1 << 2, 16),
        (CODE16, 0, 16),
    ):
        msg = io_message(0x80, 1, write=True, cs=cs, state=state, cpl=3)
        h = intercepts.parse_header(msg)
        assert (h.bitness, h.cpl, h.rip) == (bits, 3, RIP)


def test_apic_eoi_message() -> None:
    msg = bytearray(256)
    struct.pack_into("<III", msg, 0, 0x80010004, 0, 0)
    struct.pack_into("<II", msg, 16, 2, 0x39)
    assert intercepts.parse_apic_eoi(msg) == (2, 0x39)


# --- the run loop and the partition, against a fake kernel ---------------------------------------------
class FakeDialect:
    """Stands in for the kernel ABI: records register writes, interrupts, properties and ioctls."""

    name = "fake"
    run_vp_request = abi.MSHV_RUN_VP
    irqfd_request = abi.MSHV_IRQFD
    ioeventfd_request = abi.MSHV_IOEVENTFD
    msi_routing_request = abi.MSHV_SET_MSI_ROUTING

    def __init__(self) -> None:
        self.set_calls: list[list[tuple[int, int]]] = []
        self.registers: dict[int, int] = {}
        self.interrupts: list[tuple[int, int, int, bool, bool]] = []
        self.properties: list[tuple[int, int]] = []
        self.ioctls: list[tuple[int, object]] = []
        self.mapped: list[tuple[int, int, int, bool]] = []
        self.fds: list[int] = []

    def _fd(self) -> int:
        fd = os.open("/dev/null", os.O_RDONLY)
        self.fds.append(fd)
        return fd

    def create_partition(self, mshv_fd: int, features: int) -> int:
        return self._fd()

    def create_vp(self, partition_fd: int, index: int) -> int:
        return self._fd()

    def set_property(self, fd: int, code: int, value: int) -> None:
        self.properties.append((code, value))

    def map_memory(self, fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None:
        self.mapped.append((gpa, size, host, writable))

    def get_registers(self, fd: int, vp_index: int, names: list[int]) -> list[int]:
        return [self.registers.get(n, 0) for n in names]

    def set_registers(self, fd: int, vp_index: int, values: list[tuple[int, int]]) -> None:
        self.set_calls.append(list(values))

    def assert_interrupt(
        self, fd: int, kind: int, vector: int, apic: int, level: bool, logical: bool
    ) -> None:
        self.interrupts.append((kind, vector, apic, level, logical))

    def translate_gva(self, fd: int, vp: int, gva: int, flags: int) -> tuple[int, int]:
        return 0, gva

    def get_lapic(self, fd: int) -> abi.hv_local_interrupt_controller_state:
        return abi.hv_local_interrupt_controller_state(apic_lvt_lint0=0x10000, apic_lvt_lint1=0x10700)

    def set_lapic(self, fd: int, state: abi.hv_local_interrupt_controller_state) -> None:
        self.lapic = state

    def ioctl(self, fd: int, request: int, arg: object = None) -> int:
        self.ioctls.append((request, arg))
        return 0


@pytest.fixture
def partition() -> Iterator[tuple[MshvVm, FakeDialect]]:
    fake = FakeDialect()
    vm = MshvVm(SimpleNamespace(dialect=fake, fd=-1))  # type: ignore[arg-type]
    yield vm, fake
    vm.close()


def feed(vcpu: MshvVcpu, messages: list[bytes]) -> list[int]:
    """Make the VP's MSHV_RUN_VP return ``messages`` one by one, then EINTR (a kick)."""
    requests: list[int] = []
    queue = list(messages)

    # Called as the real argtypes-free ioctl is: the request and the pointer as ctypes objects.
    def run_vp(fd: int, request: ctypes.c_ulong, address: ctypes.c_void_p) -> int:
        requests.append(request.value)
        if not queue:
            ctypes.set_errno(errno.EINTR)
            return -1
        ctypes.memmove(address, bytes(queue.pop(0)), 256)
        return 0

    vcpu._ioctl = run_vp
    return requests


def test_partition_is_created_frozen_and_the_first_run_starts_the_clock(
    partition: tuple[MshvVm, FakeDialect],
) -> None:
    vm, fake = partition
    assert fake.properties == [(0x50017, 1), (0x30003, 1)]  # ignore unknown MSRs; TIME_FREEZE=1 (§5)
    vcpu = vm.create_vcpu(0)
    feed(vcpu, [])
    assert vcpu.run(RecordingOps()) is VcpuExit.INTERRUPTED
    assert fake.properties[-1] == (0x30003, 0)
    vcpu.run(RecordingOps())
    assert fake.properties.count((0x30003, 0)) == 1
    vcpu.close()


def test_run_loop_completes_pio_and_mmio_then_returns_on_kick(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vcpu = vm.create_vcpu(0)
    fake.registers[0x20003] = 0xD000_0000  # RBX for the MMIO instruction
    out = io_message(0x3F8, 1, write=True, rax=ord("A"), length=2)
    read = memory_message(0xD000_0000, bytes.fromhex("8b03"), write=False, gva=0xD000_0000, rip=0x1000)
    ops = RecordingOps()
    requests = feed(vcpu, [out, read])
    assert vcpu.run(ops) is VcpuExit.INTERRUPTED
    assert requests == [abi.MSHV_RUN_VP] * 3
    assert ops.log == [("pio_write", 0x3F8, 1, 0x41), ("mmio_read", 0xD000_0000, 4, 0x4433_2211)]
    # One SET_VP_REGISTERS per intercept: RIP (+ RAX for the read), with the ids of §4.1.
    assert fake.set_calls == [[(0x20010, RIP + 2)], [(0x20000, 0x4433_2211), (0x20010, 0x1002)]]
    assert vcpu.exit_counts == {"io": 1, "mmio": 1, "other": 0}
    vcpu.close()


def test_immediate_exit_returns_before_entering(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, _ = partition
    vcpu = vm.create_vcpu(0)
    requests = feed(vcpu, [])
    vcpu.set_immediate_exit(True)
    assert vcpu.run(RecordingOps()) is VcpuExit.INTERRUPTED
    assert requests == []
    vcpu.close()


@pytest.mark.parametrize(("kind", "expected"), [(0x80010007, VcpuExit.HALT), (0x80000021, VcpuExit.RESET)])
def test_halt_and_triple_fault(partition: tuple[MshvVm, FakeDialect], kind: int, expected: VcpuExit) -> None:
    vm, _ = partition
    vcpu = vm.create_vcpu(0)
    msg = bytearray(256)
    header(msg, kind, length=0, access=0)
    feed(vcpu, [msg])
    assert vcpu.run(RecordingOps()) is expected
    vcpu.close()


def test_unknown_message_stops_the_vcpu_with_an_error(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, _ = partition
    vcpu = vm.create_vcpu(0)
    msg = bytearray(256)
    header(msg, 0x80010001, length=2, access=0)  # an MSR intercept we never installed
    feed(vcpu, [msg])
    with pytest.raises(VcpuError, match="0x80010001"):
        vcpu.run(RecordingOps())
    vcpu.close()


def test_unemulatable_mmio_injects_ud(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vcpu = vm.create_vcpu(0)
    feed(vcpu, [memory_message(0xD000_0000, bytes.fromhex("0f2900"), write=True, gva=0xD000_0000)])
    vcpu.run(RecordingOps())
    assert fake.set_calls == [[(0x10002, 1 | 3 << 1 | 6 << 16)]]  # PENDING_INTERRUPTION: #UD, RIP unchanged
    vcpu.close()


def test_mmio_page_fault_sets_cr2_and_error_code(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vcpu = vm.create_vcpu(0)
    fake.translate_gva = lambda fd, vp, gva, flags: (1, 0)  # type: ignore[method-assign]  # not present
    fake.registers[0x20006] = 0x7000  # RSI: movs source, not the intercepted page
    fake.registers[0x20007] = 0xD000_0000
    fake.registers[0x20001] = 1
    msg = memory_message(0xD000_0000, bytes.fromhex("f3a4"), write=True, gva=0xD000_0000, cpl=3)
    feed(vcpu, [msg])
    vcpu.run(RecordingOps())
    values = dict(fake.set_calls[0])
    assert (
        values[0x10002] == 1 | 3 << 1 | 1 << 4 | 14 << 16 | 4 << 32
    )  # #PF, error code U (not present, read)
    assert values[0x40001] == 0x7000
    vcpu.close()


def test_apic_eoi_reaches_the_ioapic(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vm.ioapic.write(0x00, 4, 0x10 + 2 * 9)
    vm.ioapic.write(0x10, 4, 0x39 | 1 << 15)  # pin 9 level-triggered, vector 0x39
    vm.irq_line(9)(True)
    assert fake.interrupts == [(0, 0x39, 0, True, False)]
    vcpu = vm.create_vcpu(0)
    eoi = bytearray(256)
    struct.pack_into("<I", eoi, 0, 0x80010004)
    struct.pack_into("<II", eoi, 16, 0, 0x39)
    feed(vcpu, [eoi])
    vcpu.run(RecordingOps())
    assert len(fake.interrupts) == 2  # still asserted after EOI: delivered again
    vcpu.close()


def test_wired_irq_is_delivered_as_an_msi_by_assert_virtual_interrupt(
    partition: tuple[MshvVm, FakeDialect],
) -> None:
    vm, fake = partition
    vm.ioapic.write(0x00, 4, 0x11 + 2 * 4)
    vm.ioapic.write(0x10, 4, 3 << 24)  # destination APIC id 3
    vm.ioapic.write(0x00, 4, 0x10 + 2 * 4)
    vm.ioapic.write(0x10, 4, 0x24)  # edge, fixed, vector 0x24
    line = vm.irq_line(4)
    line(True)
    line(False)
    assert fake.interrupts == [(0, 0x24, 3, False, False)]


def test_send_msi_decodes_like_the_kernel(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vm.send_msi(0xFEE0_5004, 0x8000 | 4 << 8 | 0x02)  # logical dest 5, NMI, level
    assert fake.interrupts == [(4, 0x02, 5, True, True)]


def test_guest_memory_read_write_and_read_only(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    buf = ctypes.create_string_buffer(3 * 4096)
    base = (ctypes.addressof(buf) + 4095) & ~4095
    vm.map_memory(0, 0x10_0000, 4096, base)
    vm.map_memory(1, 0xFFFF_F000, 4096, base + 4096, readonly=True)
    assert fake.mapped == [(0x10_0000, 4096, base, True), (0xFFFF_F000, 4096, base + 4096, False)]
    assert vm.write_ram(0x10_0010, b"hi")
    assert vm.read_ram(0x10_0010, 2) == b"hi"
    assert vm.read_ram(0x10_0FFF, 2) is None  # runs off the region
    assert not vm.write_ram(0xFFFF_F000, b"x")  # read-only: goes to the device bus instead
    assert vm.read_ram(0xFFFF_F000, 1) == b"\0"
    with pytest.raises(HypervisorError):
        vm.map_memory(2, 0x123, 4096, base)


def test_msi_routing_irqfd_and_ioeventfd_requests(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vm.set_msi_routes({5: (0xFEE0_1000, 0x41), 2: (0xFEE0_0000, 0x40)})
    request, table = fake.ioctls[-1]
    assert request == abi.MSHV_SET_MSI_ROUTING
    raw = bytes(memoryview(table).cast("B"))  # type: ignore[arg-type]
    assert raw == struct.pack("<II", 2, 0) + struct.pack("<4I", 2, 0xFEE0_0000, 0, 0x40) + struct.pack(
        "<4I", 5, 0xFEE0_1000, 0, 0x41
    )
    with pytest.raises(HypervisorError):
        vm.set_msi_routes({1: (1 << 32 | 0xFEE0_0000, 0)})  # address_hi must be 0 (§8)
    vm.register_irqfd(10, 5)
    vm.register_ioeventfd(11, 0xD000_0000, 4, datamatch=7)
    irqfd, ioeventfd = fake.ioctls[-2][1], fake.ioctls[-1][1]
    assert isinstance(irqfd, abi.mshv_user_irqfd) and (irqfd.fd, irqfd.gsi, irqfd.flags) == (10, 5, 0)
    assert isinstance(ioeventfd, abi.mshv_user_ioeventfd)
    assert (ioeventfd.addr, ioeventfd.len, ioeventfd.fd, ioeventfd.flags, ioeventfd.datamatch) == (
        0xD000_0000, 4, 11, 1, 7,
    )  # fmt: skip
    with pytest.raises(HypervisorError, match="port-I/O"):
        vm.register_ioeventfd(12, 0x3F8, 1, pio=True)


def test_vcpu_setup_lapic_and_msrs(partition: tuple[MshvVm, FakeDialect]) -> None:
    vm, fake = partition
    vcpu = vm.create_vcpu(1)
    vcpu.setup_lapic()
    assert fake.lapic.apic_lvt_lint0 == 0x10700 and fake.lapic.apic_lvt_lint1 == 0x10400
    vcpu.set_msrs({0x174: 8, 0xC0000082: 0xFFFF_FFFF_8100_0000, 0x1A0: 1})
    assert fake.set_calls[-1] == [(0x80005, 8), (0x80009, 0xFFFF_FFFF_8100_0000)]  # MISC_ENABLE skipped
    with pytest.raises(HypervisorError):
        vm.create_vcpu(256)
    vcpu.close()


def test_pause_freezes_the_partition_clock_and_resume_unfreezes_it(
    partition: tuple[MshvVm, FakeDialect],
) -> None:
    vm, fake = partition
    vm.start_time()
    clock = vm.get_clock()
    assert fake.properties[-1] == (0x30003, 1) and vm.time_frozen
    assert clock >= 0
    vm.set_clock(clock)
    assert fake.properties[-1] == (0x30003, 0) and not vm.time_frozen
    assert vm.get_clock() >= clock
