"""virtio-net's receive and transmit logic against a stand-in TAP (a SOCK_SEQPACKET socket pair keeps frame
boundaries as a TAP does): merged receive buffers and num_buffers, a frame held until the guest gives room,
frames too large for a buffer, hostile chains, and the transmit header checks."""

from __future__ import annotations

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

SIZE = 16
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
BUFS = 0x10000
MEM = 0x100000


class FakeTap:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.name = "faketap"
        self.offload: int | None = None

    def set_offload(self, flags: int) -> None:
        self.offload = flags

    def mtu(self) -> int:
        return 1500

    def close(self) -> None:
        os.close(self.fd)


class Rig:
    """A NetDevice with one queue (receive or transmit) in guest RAM, driven by hand."""

    def __init__(self, features: int, index: int) -> None:
        self.memory = GuestMemory([(0, MEM)])
        self.host, device_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        device_end.setblocking(False)
        self.tap = FakeTap(device_end.detach())
        self.dev = NetDevice("virtio-net-test", NetConfig(mac="52:54:00:00:00:01"), tap=self.tap)  # type: ignore[arg-type]
        self.dev.acked_features = VIRTIO_F_VERSION_1 | features
        self.ring = SplitQueue(self.memory, SIZE, DESC, AVAIL, USED)
        self.queue = DeviceQueue(index, self.ring, -1)
        self.dev.queues = [self.queue]
        self.dev.activated()
        self.avail = 0
        self.used = 0

    def post(self, index: int, length: int, flags: int = VIRTQ_DESC_F_WRITE, nxt: int = 0) -> None:
        self.memory.write(DESC + 16 * index, struct.pack("<QIHH", BUFS + 0x2000 * index, length, flags, nxt))

    def publish(self, *heads: int) -> None:
        for head in heads:
            self.memory.write_u16(AVAIL + 4 + 2 * (self.avail % SIZE), head)
            self.avail += 1
        self.memory.write_u16(AVAIL + 2, self.avail)

    def buffer(self, index: int, length: int) -> bytes:
        return self.memory.read(BUFS + 0x2000 * index, length)

    def take_used(self) -> list[tuple[int, int]]:
        out = []
        while self.used != self.memory.read_u16(USED + 2):
            out.append(struct.unpack("<II", self.memory.read(USED + 4 + 8 * (self.used % SIZE), 8)))
            self.used += 1
        return out

    def close(self) -> None:
        self.dev.close()
        self.host.close()


@pytest.fixture
def rx() -> Iterator[Rig]:
    rig = Rig(net.VIRTIO_NET_F_MRG_RXBUF, net.RX_QUEUE)
    yield rig
    rig.close()


def frame(payload_len: int, seed: int = 0) -> bytes:
    """A vnet header (as the kernel writes it: num_buffers left alone) and an Ethernet frame."""
    return bytes(12) + bytes((seed + i) & 0xFF for i in range(payload_len))


def test_frame_spread_over_merged_buffers(rx: Rig) -> None:
    for i in range(SIZE):
        rx.post(i, 256)
    rx.publish(*range(SIZE))
    data = frame(700, seed=3)
    rx.host.send(data)
    rx.dev._receive(rx.queue)
    assert rx.take_used() == [(0, 256), (1, 256), (2, 200)]
    got = rx.buffer(0, 256) + rx.buffer(1, 256) + rx.buffer(2, 200)
    assert struct.unpack_from("<H", got, 10)[0] == 3  # num_buffers
    assert got[12:] == data[12:] and got[:10] == data[:10]
    assert rx.dev.rx_frames == 1 and rx.dev.rx_bytes == 700


def test_frame_waits_until_the_guest_gives_room(rx: Rig) -> None:
    """Three 256-byte buffers cannot hold a maximal frame: one frame is read to learn its size (1012
    bytes), held, and delivered once the guest adds a fourth buffer."""
    for i in range(5):
        rx.post(i, 256)
    rx.publish(0, 1, 2)
    data = frame(1000, seed=9)
    rx.host.send(data)
    rx.host.send(frame(20, seed=1))
    rx.dev._receive(rx.queue)
    assert rx.take_used() == []
    rx.publish(3, 4)  # the guest's receive-queue kick
    rx.dev._receive(rx.queue)
    # The held frame in four buffers, then the next frame in the fifth.
    assert rx.take_used() == [(0, 256), (1, 256), (2, 256), (3, 244), (4, 32)]
    got = b"".join(rx.buffer(i, 256) for i in range(3)) + rx.buffer(3, 244)
    assert struct.unpack_from("<H", got, 10)[0] == 4 and got[12:] == data[12:]
    assert rx.buffer(4, 32)[12:] == frame(20, seed=1)[12:]


def test_without_merging_a_frame_larger_than_a_buffer_is_dropped() -> None:
    rig = Rig(0, net.RX_QUEUE)
    try:
        rig.post(0, 256)
        rig.publish(0)
        rig.host.send(frame(1000))
        small = frame(100, seed=5)
        rig.host.send(small)
        rig.dev._receive(rig.queue)
        assert rig.take_used() == [(0, 112)]  # the small frame, in the buffer the large one could not use
        got = rig.buffer(0, 112)
        assert struct.unpack_from("<H", got, 10)[0] == 1 and got[12:] == small[12:]
        assert rig.dev.rx_dropped == 1
    finally:
        rig.close()


def test_hostile_receive_chains_come_back_empty(rx: Rig) -> None:
    rx.memory.write(BUFS, b"\xa5" * 64)
    rx.post(0, 64, flags=0)  # device-readable: the device may not write it
    rx.post(1, 4)  # too short for the header
    rx.post(2, 2048)
    rx.publish(0, 1, 2)
    rx.host.send(frame(60))
    rx.dev._receive(rx.queue)
    assert rx.take_used() == [(0, 0), (1, 0), (2, 72)]
    assert rx.buffer(0, 64) == b"\xa5" * 64


@pytest.fixture
def tx() -> Iterator[Rig]:
    rig = Rig(net.VIRTIO_NET_F_CSUM | net.VIRTIO_NET_F_HOST_TSO4, net.TX_QUEUE)
    yield rig
    rig.close()


def test_transmit_checks_headers_and_forwards_the_rest_untouched(tx: Rig) -> None:
    eth = b"\xff" * 6 + b"\x52\x54\x00\x00\x00\x01" + b"\x88\xb5"
    good = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 0) + eth + b"good"
    partial = struct.pack("<BBHHHHH", 1, 0, 0, 0, 14, 2, 0) + eth + b"csum"  # NEEDS_CSUM: negotiated
    tso6 = struct.pack("<BBHHHHH", 1, 4, 54, 1000, 54, 16, 0) + eth + b"tso6"  # TCPv6 GSO: not negotiated
    ecn = struct.pack("<BBHHHHH", 0, 0x80, 0, 0, 0, 0, 0) + eth + b"ecn!"  # ECN bit without GSO
    frames = [good, partial, tso6, ecn, good[:6]]
    for i, data in enumerate(frames):
        tx.memory.write(BUFS + 0x2000 * i, data)
        tx.post(i, len(data), flags=0)
    # A chain whose second buffer is device-writable.
    tx.memory.write(BUFS + 0x2000 * 5, good)
    tx.post(5, len(good), flags=VIRTQ_DESC_F_NEXT, nxt=6)
    tx.post(6, 64)
    tx.publish(0, 1, 2, 3, 4, 5)
    tx.dev.process_queue(tx.queue)
    assert [head for head, _ in tx.take_used()] == [0, 1, 2, 3, 4, 5]
    tx.host.setblocking(False)
    sent = []
    while True:
        try:
            sent.append(tx.host.recv(4096))
        except BlockingIOError:
            break
    assert sent == [good, partial]  # header and frame as the guest wrote them
    assert (tx.dev.tx_frames, tx.dev.tx_dropped) == (2, 4)
