"""The batch side of the split virtqueue (SplitQueue.pop_readable / add_used_readable): which chains a batch
takes and where it stops, that what it stops at is left for pop(), and a hypothesis check that draining a
hostile ring in batches gives exactly what pop() alone gives."""

from __future__ import annotations

import ctypes
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aovisor.memory import GuestMemory
from aovisor.virtio.queue import (
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    DescriptorChain,
    QueueError,
    SplitQueue,
)

MEM_SIZE = 0x10000
SIZE = 8
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
DATA = 0x8000
MIN, MAX = 4, 0x400


@pytest.fixture
def memory() -> GuestMemory:
    return GuestMemory([(0, MEM_SIZE)])


def put_desc(memory: GuestMemory, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
    memory.write(DESC + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))


def make_available(memory: GuestMemory, heads: list[int], start: int = 0) -> None:
    for i, head in enumerate(heads):
        memory.write_u16(AVAIL + 4 + 2 * ((start + i) % SIZE), head)
    memory.write_u16(AVAIL + 2, (start + len(heads)) & 0xFFFF)


def used(memory: GuestMemory, start: int, count: int) -> list[tuple[int, int]]:
    return [
        struct.unpack_from("<II", memory.read(USED + 4 + 8 * ((start + i) % SIZE), 8)) for i in range(count)
    ]


def test_a_batch_takes_simple_readable_chains_in_order(memory: GuestMemory) -> None:
    for i in range(SIZE):
        put_desc(memory, i, DATA + 0x100 * i, 16 + i)
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    make_available(memory, [5, 2, 7])
    heads, addresses, lengths = q.pop_readable(SIZE, MIN, MAX)
    base = memory.regions[0].host_address  # the host addresses of guest RAM
    assert heads == [5, 2, 7] and lengths == [21, 18, 23]
    assert addresses == [base + DATA + 0x500, base + DATA + 0x200, base + DATA + 0x700]
    assert q.pop() is None and q.pop_readable(SIZE, MIN, MAX) == ([], [], [])
    memory.write(DATA + 0x200, b"frame")
    assert ctypes.string_at(addresses[1], 5) == b"frame"


@pytest.mark.parametrize(
    ("desc", "why"),
    [
        ((DATA, 16, VIRTQ_DESC_F_NEXT, 1), "a chain of two descriptors"),
        ((DATA, 16, VIRTQ_DESC_F_WRITE, 0), "a device-writable buffer"),
        ((DATA, 16, VIRTQ_DESC_F_INDIRECT, 0), "an indirect table"),
        ((DATA, 16, 0x80, 0), "an unknown flag"),
        ((DATA, MIN - 1, 0, 0), "too short"),
        ((DATA, MAX + 1, 0, 0), "too long"),
        ((MEM_SIZE - 8, 16, 0, 0), "past the end of RAM"),
        ((1 << 63, 16, 0, 0), "far outside RAM"),
        ((2**64 - 8, 16, 0, 0), "wrapping around the address space"),
    ],
)
def test_a_batch_stops_at_any_other_chain_and_leaves_it_to_pop(
    memory: GuestMemory, desc: tuple[int, int, int, int], why: str
) -> None:
    put_desc(memory, 0, DATA + 0x100, 8)
    put_desc(memory, 1, DATA + 0x200, 8)
    put_desc(memory, 3, *desc)
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED, indirect=True)
    make_available(memory, [0, 3, 1])
    assert q.pop_readable(SIZE, MIN, MAX)[0] == [0], why
    assert q.pop_readable(SIZE, MIN, MAX)[0] == [], why  # still at the odd chain
    try:
        chain = q.pop()  # pop() decides: a chain, or the ring is broken
    except QueueError:
        return
    assert chain is not None and chain.head == 3
    assert q.pop_readable(SIZE, MIN, MAX)[0] == [1]


def test_the_header_mask_picks_the_chains_a_batch_takes(memory: GuestMemory) -> None:
    for i, header in enumerate([b"\x00\x00", b"\x01\x00", b"\x00\x04", b"\x02\x00"]):
        memory.write(DATA + 0x100 * i + i, header + b"rest")  # at even and odd addresses
        put_desc(memory, i, DATA + 0x100 * i + i, 6)
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    make_available(memory, [0, 1, 2, 3])
    assert q.pop_readable(SIZE, MIN, MAX, header_mask=0xFFFE)[0] == [0, 1]  # bit 0 of byte 0 allowed
    assert q.pop_readable(SIZE, MIN, MAX, header_mask=0xFFFE)[0] == []  # byte 1 has a bit set
    assert q.pop_readable(SIZE, MIN, MAX, header_mask=0)[0] == [2, 3]


def test_a_batch_is_limited_and_follows_the_ring_around(memory: GuestMemory) -> None:
    for i in range(SIZE):
        put_desc(memory, i, DATA + 0x100 * i, 8)
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    start = 0xFFFE  # the 16-bit indices wrap as well as the ring
    q.next_avail = q.next_used = start
    make_available(memory, [6, 7, 0, 1, 2, 3, 4, 5], start=start)
    assert q.pop_readable(3, MIN, MAX)[0] == [6, 7, 0]
    heads, _, _ = q.pop_readable(SIZE, MIN, MAX)
    assert heads == [1, 2, 3, 4, 5]
    q.add_used_readable([6, 7, 0])
    q.add_used_readable(heads)
    assert memory.read_u16(USED + 2) == (start + 8) & 0xFFFF
    assert used(memory, start, 8) == [(h, 0) for h in [6, 7, 0, 1, 2, 3, 4, 5]]


def test_a_driver_running_ahead_of_the_queue_breaks_it(memory: GuestMemory) -> None:
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    memory.write_u16(AVAIL + 2, SIZE + 1)
    with pytest.raises(QueueError, match="ahead"):
        q.pop_readable(SIZE, MIN, MAX)


def test_a_head_outside_the_table_stops_the_batch_and_pop_reports_it(memory: GuestMemory) -> None:
    put_desc(memory, 0, DATA, 8)
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    make_available(memory, [0, SIZE + 3, 0])
    assert q.pop_readable(SIZE, MIN, MAX)[0] == [0]
    with pytest.raises(QueueError, match="outside"):
        q.pop()


def test_more_chains_than_the_queue_cannot_be_returned_at_once(memory: GuestMemory) -> None:
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    with pytest.raises(QueueError):
        q.add_used_readable(list(range(SIZE + 1)))
    q.add_used_readable([])
    assert memory.read_u16(USED + 2) == 0


def test_a_released_queue_lets_guest_ram_go() -> None:
    memory = GuestMemory([(0, MEM_SIZE)])
    put_desc(memory, 0, DATA, 8)
    make_available(memory, [0])
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    assert q.pop_readable(SIZE, MIN, MAX)[0] == [0]
    mapping = memory.regions[0].mapping
    q.release()
    assert q.low_ram_address == 0
    memory.close()
    assert mapping.closed  # no view of it was left behind


# --- Batches and pop() agree on any ring -----------------------------------------------------------------
_DESC_FLAGS = st.sampled_from([0, 0, 0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, 0x10])
_DESCRIPTOR = st.tuples(
    st.sampled_from([DATA, DATA + 0x123, DATA + 0x80, DATA + 0x81, MEM_SIZE - 16, 0, 2**64 - 4, MEM_SIZE]),
    st.sampled_from([0, 1, MIN, 16, MAX, MAX + 1, 0xFFFF_FFFF]),
    _DESC_FLAGS,
    st.integers(0, SIZE),
)


def _seen(chain: DescriptorChain) -> tuple[int, list[bytes], list[int]]:
    return chain.head, [bytes(v) for v in chain.readable], [len(v) for v in chain.writable]


def _drain_with_pop(q: SplitQueue) -> list[object]:
    seen: list[object] = []
    try:
        while (chain := q.pop()) is not None:
            seen.append(_seen(chain))
    except QueueError:
        seen.append("broken")
    return seen


def _drain_in_batches(q: SplitQueue, limit: int, mask: int) -> list[object]:
    seen: list[object] = []
    try:
        while True:
            heads, addresses, lengths = q.pop_readable(limit, MIN, MAX, mask)
            for head, address, length in zip(heads, addresses, lengths, strict=True):
                gpa = address - q.low_ram_address
                assert gpa >= 0 and gpa + length <= MEM_SIZE
                seen.append((head, [ctypes.string_at(address, length)], []))
            if not heads:
                chain = q.pop()
                if chain is None:
                    return seen
                seen.append(_seen(chain))
    except QueueError:
        seen.append("broken")
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    descs=st.lists(_DESCRIPTOR, min_size=SIZE, max_size=SIZE),
    heads=st.lists(st.integers(0, SIZE + 2), min_size=0, max_size=SIZE),
    start=st.integers(0, 0xFFFF),
    limit=st.integers(1, SIZE),
    mask=st.sampled_from([0, 0xFFFF, 0xFF02, 0x00FE, 0x0100]),
)
def test_batches_and_pop_see_the_same_chains(
    memory: GuestMemory,
    descs: list[tuple[int, int, int, int]],
    heads: list[int],
    start: int,
    limit: int,
    mask: int,
) -> None:
    """Whatever a batch leaves (a chain it does not take, a header the mask rejects), pop() takes next."""
    memory.write(0, bytes(MEM_SIZE))
    memory.write(DATA, bytes(range(256)) * 4)
    for i, (addr, length, flags, nxt) in enumerate(descs):
        put_desc(memory, i, addr, length, flags, nxt)
    make_available(memory, heads, start=start)
    one = SplitQueue(memory, SIZE, DESC, AVAIL, USED, indirect=True)
    batched = SplitQueue(memory, SIZE, DESC, AVAIL, USED, indirect=True)
    one.next_avail = batched.next_avail = start
    assert _drain_in_batches(batched, limit, mask) == _drain_with_pop(one)
