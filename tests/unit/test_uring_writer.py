"""UringWriter, the io_uring batch of writes behind virtio-net transmit, against a SOCK_SEQPACKET socket pair
(which, like a TAP, keeps each write a message of its own): order, contents, results, errors, many batches
around the rings, and a clean close."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
from collections.abc import Iterator

import pytest

from aovisor.virtio.devices.uring import UringWriter


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    yield a, b
    a.close()
    b.close()


def open_writer(fd: int, entries: int) -> UringWriter:
    try:
        return UringWriter(fd, entries)
    except OSError as e:
        pytest.skip(f"no io_uring here: {e.strerror}")


class Buffers:
    """A page-aligned mapping standing in for guest RAM, with the host addresses of its bytes."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size)
        probe = ctypes.c_char.from_buffer(self.map)
        self.base = ctypes.addressof(probe)
        del probe

    def put(self, offset: int, data: bytes) -> tuple[int, int]:
        self.map[offset : offset + len(data)] = data
        return self.base + offset, len(data)


def receive_all(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(1 << 16))
        except BlockingIOError:
            return out


def test_a_batch_is_written_in_order_one_message_per_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    writer = open_writer(pair[0].fileno(), 16)
    buffers = Buffers(1 << 16)
    frames = [bytes([i]) * (10 + 7 * i) for i in range(12)]
    targets = [buffers.put(0x1000 * i + i, frame) for i, frame in enumerate(frames)]  # odd offsets too
    assert writer.write([a for a, _ in targets], [n for _, n in targets]) == []
    assert receive_all(pair[1]) == frames
    writer.close()


def test_many_batches_go_around_the_rings(pair: tuple[socket.socket, socket.socket]) -> None:
    writer = open_writer(pair[0].fileno(), 8)
    assert writer.entries == 8
    buffers = Buffers(1 << 16)
    sent: list[bytes] = []
    got: list[bytes] = []
    n = 0
    for size in [1, 8, 3, 5, 7, 8, 2, 6, 8, 8, 1, 4] * 3:  # batch sizes that do not divide the rings
        frames = [n.to_bytes(4, "little") + bytes(n % 50) for n in range(n, n + size)]
        n += size
        targets = [buffers.put(0x800 * i, f) for i, f in enumerate(frames)]
        assert writer.write([a for a, _ in targets], [k for _, k in targets]) == []
        sent += frames
        got += receive_all(pair[1])
    assert got == sent
    writer.close()


def test_a_failed_write_is_reported_and_the_others_still_go(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    pair[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    writer = open_writer(pair[0].fileno(), 4)
    buffers = Buffers(1 << 16)
    good = buffers.put(0, b"first")
    too_big = (buffers.base, 0xC000)  # more than the socket's buffer can ever hold: EMSGSIZE
    last = buffers.put(0x100, b"last")
    failed = writer.write([good[0], too_big[0], last[0]], [good[1], too_big[1], last[1]])
    assert failed == [(1, -errno.EMSGSIZE)]
    assert receive_all(pair[1]) == [b"first", b"last"]
    writer.close()


def test_bad_batches_are_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    writer = open_writer(pair[0].fileno(), 4)
    assert writer.write([], []) == []
    with pytest.raises(ValueError):
        writer.write([0] * 5, [1] * 5)
    with pytest.raises(ValueError):
        writer.write([0, 0], [1])
    writer.close()


def test_close_releases_the_ring(pair: tuple[socket.socket, socket.socket]) -> None:
    writer = open_writer(pair[0].fileno(), 4)
    fd = writer.fd
    writer.close()
    assert writer.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    writer.close()  # idempotent
