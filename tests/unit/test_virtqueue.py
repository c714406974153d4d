"""The split-virtqueue chain walker against hostile descriptor tables, and a hypothesis fuzz of it."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aovisor.memory import GuestMemory
from aovisor.virtio.queue import (
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    QueueError,
    SplitQueue,
)

MEM_SIZE = 0x10000  # 64 KiB of guest RAM at 0
SIZE = 8
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
DATA = 0x8000
NEXT, WRITE, INDIRECT = VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT


@pytest.fixture(scope="module")
def memory() -> GuestMemory:
    return GuestMemory([(0, MEM_SIZE)])


def reset(memory: GuestMemory) -> None:
    memory.write(0, bytes(MEM_SIZE))


def put_desc(memory: GuestMemory, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0,
             table: int = DESC) -> None:  # fmt: skip
    memory.write(table + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))


def make_available(memory: GuestMemory, *heads: int, start: int = 0) -> None:
    for i, head in enumerate(heads):
        memory.write_u16(AVAIL + 4 + 2 * ((start + i) % SIZE), head)
    memory.write_u16(AVAIL + 2, start + len(heads))


def queue(memory: GuestMemory, **kw: bool) -> SplitQueue:
    return SplitQueue(memory, SIZE, DESC, AVAIL, USED, **kw)


def test_a_valid_chain_gives_views_of_its_buffers(memory: GuestMemory) -> None:
    reset(memory)
    memory.write(DATA, b"request!")
    put_desc(memory, 3, DATA, 8, NEXT, 5)
    put_desc(memory, 5, DATA + 0x100, 16, NEXT | WRITE, 6)
    put_desc(memory, 6, DATA + 0x200, 1, WRITE)
    make_available(memory, 3)
    q = queue(memory)
    chain = q.pop()
    assert chain is not None and chain.head == 3
    assert [bytes(v) for v in chain.readable] == [b"request!"]
    assert [len(v) for v in chain.writable] == [16, 1]
    assert (chain.readable_len, chain.writable_len) == (8, 17)
    chain.writable[1][0] = 0x5A  # writes land in guest RAM
    assert memory.read_u8(DATA + 0x200) == 0x5A
    assert q.pop() is None
    q.add_used(chain, 1000)  # more than the chain can hold: clamped
    assert memory.read(USED + 4, 8) == struct.pack("<II", 3, 17)
    assert memory.read_u16(USED + 2) == 1


def test_used_ring_wraps_inside_the_queue(memory: GuestMemory) -> None:
    reset(memory)
    put_desc(memory, 0, DATA, 4, WRITE)
    q = queue(memory)
    for n in range(3 * SIZE):
        make_available(memory, 0, start=n)
        chain = q.pop()
        assert chain is not None
        q.add_used(chain, 4)
    assert memory.read_u16(USED + 2) == 3 * SIZE
    assert memory.read(USED + 4 + 8 * SIZE, 64) == bytes(64)  # nothing written past the ring


@pytest.mark.parametrize(
    ("descs", "message"),
    [
        ([(0, DATA, 4, NEXT, 1), (1, DATA, 4, NEXT, 0)], "loop"),
        ([(0, DATA, 4, NEXT, 0)], "loop"),
        ([(0, DATA, 4, NEXT, SIZE)], "outside its table"),
        ([(0, MEM_SIZE - 4, 8, 0, 0)], "outside guest RAM"),
        ([(0, 0xFFFF_FFFF_FFFF_FFF0, 0x20, 0, 0)], "outside guest RAM"),
        ([(0, DATA, 0xFFFF_FFFF, 0, 0)], "outside guest RAM"),
        ([(0, DATA, 4, NEXT | WRITE, 1), (1, DATA, 4, 0, 0)], "readable buffer after"),
        ([(0, DATA, 16, INDIRECT, 0)], "without VIRTIO_F_INDIRECT_DESC"),
    ],
)
def test_hostile_chains_are_refused(memory: GuestMemory, descs: list[tuple[int, ...]], message: str) -> None:
    reset(memory)
    for index, addr, length, flags, nxt in descs:
        put_desc(memory, index, addr, length, flags, nxt)
    make_available(memory, 0)
    with pytest.raises(QueueError, match=message):
        queue(memory).pop()


def test_head_outside_the_queue_is_refused(memory: GuestMemory) -> None:
    reset(memory)
    make_available(memory, SIZE)
    with pytest.raises(QueueError, match="head"):
        queue(memory).pop()


def test_available_index_jumping_past_the_queue_is_refused(memory: GuestMemory) -> None:
    reset(memory)
    memory.write_u16(AVAIL + 2, SIZE + 1)
    with pytest.raises(QueueError, match="ahead"):
        queue(memory).pop()


def test_chain_of_exactly_the_queue_size_is_accepted(memory: GuestMemory) -> None:
    reset(memory)
    for i in range(SIZE):
        put_desc(memory, i, DATA, 1, NEXT if i < SIZE - 1 else 0, i + 1)
    make_available(memory, 0)
    chain = queue(memory).pop()
    assert chain is not None and len(chain.readable) == SIZE


INDIRECT_TABLE = 0x4000


def test_indirect_table_is_walked(memory: GuestMemory) -> None:
    reset(memory)
    put_desc(memory, 0, DATA, 16, 0, 0, table=INDIRECT_TABLE)
    put_desc(memory, 1, DATA + 16, 32, WRITE, 0, table=INDIRECT_TABLE)
    memory.write_u16(INDIRECT_TABLE + 14, 1)  # entry 0's next
    memory.write_u16(INDIRECT_TABLE + 12, NEXT)  # entry 0's flags
    put_desc(memory, 2, DATA + 0x100, 8, NEXT, 4)
    put_desc(memory, 4, INDIRECT_TABLE, 32, INDIRECT | WRITE)  # WRITE on the pointer is ignored (§2.7.5.3.2)
    make_available(memory, 2)
    chain = queue(memory, indirect=True).pop()
    assert chain is not None
    assert [len(v) for v in chain.readable] == [8, 16]
    assert [len(v) for v in chain.writable] == [32]


@pytest.mark.parametrize(
    ("pointer", "table_entries", "message"),
    [
        ((INDIRECT_TABLE, 24, INDIRECT), [], "indirect table of 24 bytes"),
        ((INDIRECT_TABLE, 0, INDIRECT), [], "indirect table of 0 bytes"),
        ((INDIRECT_TABLE, 16 * 2048, INDIRECT), [], "indirect table"),
        ((MEM_SIZE - 16, 32, INDIRECT), [], "indirect table outside guest RAM"),
        ((INDIRECT_TABLE, 16, INDIRECT | NEXT), [], "NEXT"),
        ((INDIRECT_TABLE, 16, INDIRECT), [(0, INDIRECT_TABLE, 16, INDIRECT, 0)], "inside an indirect"),
        ((INDIRECT_TABLE, 32, INDIRECT), [(0, DATA, 4, NEXT, 1), (1, DATA, 4, NEXT, 0)], "loop"),
        ((INDIRECT_TABLE, 32, INDIRECT), [(0, DATA, 4, NEXT, 2)], "outside its table of 2"),
    ],
)
def test_hostile_indirect_tables_are_refused(
    memory: GuestMemory, pointer: tuple[int, int, int], table_entries: list[tuple[int, ...]], message: str
) -> None:
    reset(memory)
    addr, length, flags = pointer
    put_desc(memory, 0, addr, length, flags)
    for index, a, n, f, nxt in table_entries:
        put_desc(memory, index, a, n, f, nxt, table=INDIRECT_TABLE)
    make_available(memory, 0)
    with pytest.raises(QueueError, match=message):
        queue(memory, indirect=True).pop()


@pytest.mark.parametrize(
    ("size", "desc", "avail", "used", "message"),
    [
        (6, DESC, AVAIL, USED, "power of two"),
        (0, DESC, AVAIL, USED, "power of two"),
        (65536, DESC, AVAIL, USED, "power of two"),
        (SIZE, DESC + 8, AVAIL, USED, "misaligned"),
        (SIZE, DESC, AVAIL + 1, USED, "misaligned"),
        (SIZE, DESC, AVAIL, USED + 2, "misaligned"),
        (SIZE, MEM_SIZE - 16, AVAIL, USED, "outside guest RAM"),
        (SIZE, DESC, AVAIL, 0xC000_0000, "outside guest RAM"),
    ],
)
def test_misprogrammed_rings_are_refused(
    memory: GuestMemory, size: int, desc: int, avail: int, used: int, message: str
) -> None:
    with pytest.raises(QueueError, match=message):
        SplitQueue(memory, size, desc, avail, used)


def test_event_idx_interrupts_only_when_used_event_is_crossed(memory: GuestMemory) -> None:
    reset(memory)
    put_desc(memory, 0, DATA, 4, WRITE)
    q = queue(memory, event_idx=True)
    used_event_at = AVAIL + 4 + 2 * SIZE
    memory.write_u16(used_event_at, 2)  # "interrupt me when entry 2 is used"
    signalled = []
    for n in range(4):
        make_available(memory, 0, start=n)
        chain = q.pop()
        assert chain is not None
        q.add_used(chain, 0)
        signalled.append(q.needs_interrupt())
    assert signalled == [False, False, True, False]
    assert not q.arm_notification()  # nothing new: sleep
    assert memory.read_u16(USED + 4 + 8 * SIZE) == 4  # avail_event: kick me at entry 4


def test_without_event_idx_the_no_interrupt_flag_is_honoured(memory: GuestMemory) -> None:
    reset(memory)
    put_desc(memory, 0, DATA, 4, WRITE)
    q = queue(memory)
    make_available(memory, 0)
    chain = q.pop()
    assert chain is not None
    q.add_used(chain, 0)
    memory.write_u16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT)
    assert not q.needs_interrupt()
    make_available(memory, 0, start=1)
    assert q.arm_notification()  # a chain arrived: serve it before sleeping


# --- Fuzz: any table and ring contents either give a chain of views inside RAM or a QueueError --------------
FUZZ_MEM = 0x2000
FUZZ_SIZE = 4
F_DESC, F_AVAIL, F_USED, F_INDIRECT = 0x0, 0x100, 0x200, 0x300

_DESCRIPTORS = FUZZ_SIZE + 4  # the queue's table, then a 4-entry table indirect descriptors may point at
_BYTES_PER_DESCRIPTOR = 5


def _decode(raw: bytes, i: int) -> tuple[int, int, int, int]:
    """A descriptor from 5 fuzz bytes, biased towards the interesting cases: addresses in and around RAM
    (and the indirect table), lengths around the table sizes, every flag combination, next indices just
    inside and outside the table."""
    a, b, c, d, e = raw[i : i + 5]
    kind = a >> 6
    if kind == 0:
        addr = F_INDIRECT
    elif kind == 3:
        addr = (2**64 - 1) - (b << 8 | c)  # far outside RAM (and wrapping past 2**64)
    else:
        addr = (a & 0x1F) << 8 | b  # 0..0x1FFF: inside RAM, or just past its end with the length
    length = (c, 16 * (c & 7), 0xFFFF_FFFF, 0x1000 + c)[d >> 6]
    return addr, length, d & 7, e & 7


_FUZZ_BYTES = 1 + _DESCRIPTORS * _BYTES_PER_DESCRIPTOR  # head byte, then the descriptors
_fuzz_memory = GuestMemory([(0, FUZZ_MEM)])
_fuzz_mirror = bytearray(i * 7 & 0xFF for i in range(FUZZ_MEM))  # what guest RAM holds, for the reference
_fuzz_memory.write(0, _fuzz_mirror)
_TABLES_END = F_INDIRECT + 16 * 4


def _reference_walk(mem: bytes, head: int, indirect: bool) -> list[tuple[int, int, bool]] | None:
    """An independent, obviously-correct walker: the buffers of the chain, or None for an invalid one."""
    table, size, budget, nested, out = F_DESC, FUZZ_SIZE, FUZZ_SIZE, False, []
    if head >= size:
        return None
    index, seen_write = head, False
    while True:
        if budget == 0:
            return None
        budget -= 1
        addr, length, flags, nxt = struct.unpack_from("<QIHH", mem, table + 16 * index)
        if flags & INDIRECT:
            if not indirect or nested or flags & NEXT or length % 16 or not 1 <= length // 16 <= 1024:
                return None
            if addr + length > FUZZ_MEM:
                return None
            table, size, budget, nested, index = addr, length // 16, length // 16, True, 0
            continue
        if addr + length > FUZZ_MEM:
            return None
        writable = bool(flags & WRITE)
        if seen_write and not writable:
            return None
        seen_write |= writable
        out.append((addr, length, writable))
        if not flags & NEXT:
            return out
        if nxt >= size:
            return None
        index = nxt


@settings(
    max_examples=int(os.environ.get("AOVISOR_FUZZ_EXAMPLES", "100000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(st.binary(min_size=_FUZZ_BYTES, max_size=_FUZZ_BYTES))
def test_fuzz_chain_walker(raw: bytes) -> None:
    head, indirect = raw[0] % (FUZZ_SIZE + 1), bool(raw[0] & 0x80)
    mem = _fuzz_mirror
    for i in range(_DESCRIPTORS):
        table = F_DESC + 16 * i if i < FUZZ_SIZE else F_INDIRECT + 16 * (i - FUZZ_SIZE)
        struct.pack_into("<QIHH", mem, table, *_decode(raw, 1 + _BYTES_PER_DESCRIPTOR * i))
    struct.pack_into("<HHH", mem, F_AVAIL, 0, 1, head)
    _fuzz_memory.write(0, memoryview(mem)[:_TABLES_END])
    q = SplitQueue(_fuzz_memory, FUZZ_SIZE, F_DESC, F_AVAIL, F_USED, indirect=indirect)
    expected = _reference_walk(bytes(mem), head, indirect)
    try:
        chain = q.pop()
    except QueueError:
        assert expected is None
        return
    assert chain is not None and expected is not None
    views = [*chain.readable, *chain.writable]
    kinds = [(len(v), any(v is w for w in chain.writable)) for v in views]
    assert kinds == [(n, w) for _, n, w in expected]
    for view, (addr, length, _) in zip(views, expected, strict=True):
        assert bytes(view) == bytes(mem[addr : addr + length])  # the view is that guest memory
    q.add_used(chain, 2**32 - 1)
    used_id, used_len = struct.unpack_from("<II", _fuzz_memory.view(F_USED + 4, 8))
    assert (used_id, used_len) == (head, chain.writable_len)
