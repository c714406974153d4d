"""virtio-net transmit in io_uring batches, against a stand-in TAP (a SOCK_SEQPACKET socket pair): the same
frames leave, in the same order, as with one writev per frame — whatever mix of batchable frames, chains
that need the slow path and frames that break the rules the guest queues — and every chain comes back."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from aovisor.config import NetConfig
from aovisor.memory import GuestMemory
from aovisor.virtio.device import VIRTIO_F_VERSION_1, DeviceQueue
from aovisor.virtio.devices import net
from aovisor.virtio.devices.net import NetDevice
from aovisor.virtio.queue import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, SplitQueue

SIZE = 32
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
BUFS = 0x10000
MEM = 0x100000
ETH = b"\xff" * 6 + b"\x52\x54\x00\x00\x00\x01" + b"\x88\xb5"


class FakeTap:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.name = "faketap"

    def set_offload(self, flags: int) -> None:
        pass

    def mtu(self) -> int:
        return 1500

    def close(self) -> None:
        os.close(self.fd)


class TxRig:
    """A NetDevice's transmit queue in guest RAM, filled by hand; the TAP's other end is ``host``."""

    def __init__(self, features: int, *, batch_tx: bool) -> None:
        self.memory = GuestMemory([(0, MEM)])
        self.host, device_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        device_end.setblocking(False)
        device_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.host.setblocking(False)
        self.dev = NetDevice(
            "virtio-net-test",
            NetConfig(mac="52:54:00:00:00:01"),
            tap=FakeTap(device_end.detach()),  # type: ignore[arg-type]
            batch_tx=batch_tx,
        )
        self.dev.acked_features = VIRTIO_F_VERSION_1 | features
        self.ring = SplitQueue(self.memory, SIZE, DESC, AVAIL, USED)
        self.queue = DeviceQueue(net.TX_QUEUE, self.ring, -1)
        self.dev.queues = [self.queue]
        self.dev.activated()
        self.avail = self.used = 0
        self.next_desc = 0

    def desc(self, data: bytes, flags: int = 0, nxt: int = 0, *, at: int | None = None) -> int:
        """Put ``data`` in a buffer of its own and describe it (in the next free slot, or ``at``)."""
        index = self.next_desc if at is None else at
        if at is None:
            self.next_desc += 1
        self.memory.write(BUFS + 0x4000 * index, data)
        self.memory.write(
            DESC + 16 * index, struct.pack("<QIHH", BUFS + 0x4000 * index, len(data), flags, nxt)
        )
        return index

    def publish(self, *heads: int) -> None:
        for head in heads:
            self.memory.write_u16(AVAIL + 4 + 2 * (self.avail % SIZE), head)
            self.avail += 1
        self.memory.write_u16(AVAIL + 2, self.avail & 0xFFFF)

    def take_used(self) -> list[tuple[int, int]]:
        out = []
        while self.used != self.memory.read_u16(USED + 2):
            out.append(struct.unpack("<II", self.memory.read(USED + 4 + 8 * (self.used % SIZE), 8)))
            self.used = (self.used + 1) & 0xFFFF
        return out

    def sent(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.host.recv(1 << 17))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.dev.close()
        self.host.close()


def header(flags: int = 0, gso_type: int = 0, gso_size: int = 0, start: int = 0, offset: int = 0) -> bytes:
    return struct.pack("<BBHHHHH", flags, gso_type, 0, gso_size, start, offset, 0)


def queue_mixed_frames(rig: TxRig) -> tuple[list[int], list[bytes]]:
    """Queue a mix of frames; returns the heads published and the frames that must leave, in order."""
    good = [header() + ETH + b"good %d" % i for i in range(6)]
    partial = header(flags=1, start=14, offset=2) + ETH + b"csum"  # NEEDS_CSUM: negotiated
    valid = header(flags=2) + ETH + b"data valid"  # DATA_VALID: tolerated
    split = header() + ETH + b"split in two"  # header and frame in two descriptors: the slow path
    tso = header(flags=1, gso_type=1, gso_size=1000, start=34, offset=16) + ETH + b"tso4"  # not negotiated
    unknown = header(flags=0x40) + ETH + b"odd flag"
    heads = [rig.desc(good[0]), rig.desc(good[1]), rig.desc(partial)]
    tail = rig.desc(split[12:], at=SIZE - 1)
    heads.append(rig.desc(split[:12], VIRTQ_DESC_F_NEXT, tail, at=SIZE - 2))
    heads += [rig.desc(good[2]), rig.desc(tso), rig.desc(good[3]), rig.desc(header()[:6])]  # 6 bytes: short
    writable = rig.desc(b"\0" * 64, VIRTQ_DESC_F_WRITE, at=SIZE - 3)
    heads.append(rig.desc(good[4], VIRTQ_DESC_F_NEXT, writable, at=SIZE - 4))  # with a writable buffer
    heads += [rig.desc(unknown), rig.desc(valid), rig.desc(good[5])]
    rig.publish(*heads)
    return heads, [good[0], good[1], partial, split, good[2], good[3], valid, good[5]]


@pytest.fixture(params=[True, False], ids=["io_uring", "writev"])
def rig(request: pytest.FixtureRequest) -> Iterator[TxRig]:
    r = TxRig(net.VIRTIO_NET_F_CSUM, batch_tx=request.param)
    if request.param and r.dev._tx_writer is None:
        r.close()
        pytest.skip("no io_uring here")
    yield r
    r.close()


def test_the_frames_that_may_leave_leave_in_order_and_every_chain_returns(rig: TxRig) -> None:
    heads, expected = queue_mixed_frames(rig)
    rig.dev.process_queue(rig.queue)
    assert rig.sent() == expected  # header and frame as the guest wrote them
    assert rig.take_used() == [(head, 0) for head in heads]
    assert (rig.dev.tx_frames, rig.dev.tx_dropped) == (len(expected), len(heads) - len(expected))
    assert rig.dev.tx_bytes == sum(len(f) - 12 for f in expected)


def test_the_ring_is_served_again_and_again_around_its_end(rig: TxRig) -> None:
    expected: list[bytes] = []
    for round_ in range(5):  # 5 x 12 chains through a ring of 32
        rig.next_desc = 0
        heads, frames = queue_mixed_frames(rig)
        expected += frames
        rig.dev.process_queue(rig.queue)
        assert rig.take_used() == [(head, 0) for head in heads], round_
    assert rig.sent() == expected


def test_without_checksum_offload_a_partial_checksum_is_dropped() -> None:
    rig = TxRig(0, batch_tx=True)
    try:
        frames = [
            header() + ETH + b"a",
            header(flags=1, start=14, offset=2) + ETH + b"b",
            header() + ETH + b"c",
        ]
        rig.publish(*(rig.desc(f) for f in frames))
        rig.dev.process_queue(rig.queue)
        assert rig.sent() == [frames[0], frames[2]]
        assert rig.dev.tx_dropped == 1 and len(rig.take_used()) == 3
    finally:
        rig.close()


class FailingWriter:
    entries = SIZE

    def __init__(self) -> None:
        self.closed = False

    def write(self, addresses: list[int], lengths: list[int]) -> list[tuple[int, int]]:
        raise OSError(errno.EBADFD, os.strerror(errno.EBADFD))

    def close(self) -> None:
        self.closed = True


def test_when_the_io_uring_fails_the_device_goes_on_with_writev() -> None:
    rig = TxRig(0, batch_tx=True)
    try:
        if rig.dev._tx_writer is None:
            pytest.skip("no io_uring here")
        rig.dev._tx_writer.close()
        failing = FailingWriter()
        rig.dev._tx_writer = failing  # type: ignore[assignment]
        lost = [header() + ETH + b"lost %d" % i for i in range(3)]
        rig.publish(*(rig.desc(f) for f in lost))
        rig.dev.process_queue(rig.queue)
        assert failing.closed and rig.dev._tx_writer is None
        assert rig.dev.tx_dropped == 3 and len(rig.take_used()) == 3
        later = header() + ETH + b"later"
        rig.publish(rig.desc(later))
        rig.dev.process_queue(rig.queue)
        assert rig.take_used() == [(3, 0)]
        assert rig.sent()[-1] == later
    finally:
        rig.close()


def test_a_frame_the_kernel_refuses_is_dropped_and_counted_exactly(rig: TxRig) -> None:
    device_end = socket.socket(fileno=rig.dev.tap.fd)
    try:
        device_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # a 9000-byte frame: EMSGSIZE
    finally:
        device_end.detach()
    frames = [header() + ETH + b"small", header() + ETH + bytes(9000), header() + ETH + b"also small"]
    heads = [rig.desc(f) for f in frames]
    rig.publish(*heads)
    rig.dev.process_queue(rig.queue)
    assert rig.sent() == [frames[0], frames[2]]
    assert rig.take_used() == [(head, 0) for head in heads]
    assert (rig.dev.tx_frames, rig.dev.tx_dropped) == (2, 1)
    assert rig.dev.tx_bytes == len(frames[0]) + len(frames[2]) - 2 * 12
