"""Batched writes to one file through io_uring: many ``write(2)`` calls for the price of one system call.

virtio-net's transmit path writes one frame per ``write`` on the TAP (a TAP takes exactly one frame per
write, and has no call that takes several).  With an io_uring the device thread fills one submission entry
(SQE) per frame in shared memory and hands the whole batch to the kernel with one ``io_uring_enter``, which
runs every write inline (a TAP write never blocks: the fd is non-blocking) and posts one completion (CQE)
per write; ``io_uring_enter`` returns when all of them are posted, so no write outlives the call and
nothing it points to (guest RAM) can go away under the kernel.

Only what a batch of ``IORING_OP_WRITE`` needs is here (``linux/io_uring.h``): setup, the two rings mapped
once, and SQEs whose constant fields (opcode, fd, offset, user_data) are written at setup: a batch stores
only each write's address and length, two strided slice assignments for the whole batch.  The caller
guarantees that every address lies inside memory that stays mapped (the device checks it against guest
RAM).

No SQPOLL thread: the kernel reads the rings in this thread's own ``io_uring_enter``, so storing the
entries before the tail needs no barrier.  When the kernel has no io_uring, or denies it
(``kernel.io_uring_disabled``, a seccomp filter), or lacks ``IORING_OP_WRITE`` (before 5.6, told by
``IORING_FEAT_RW_CUR_POS``), :class:`UringWriter` raises :class:`OSError` and the caller keeps using
``writev``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from array import array

# System call numbers (the same on every architecture: asm-generic/unistd.h).
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427

IORING_OFF_SQ_RING = 0
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_FEAT_RW_CUR_POS = 1 << 3  # 5.6, with IORING_OP_WRITE
IORING_ENTER_GETEVENTS = 1 << 0
IORING_REGISTER_FILES = 2
IORING_OP_WRITE = 23
IOSQE_FIXED_FILE = 1 << 0

ENTRY_SIZE = 64  # struct io_uring_sqe
CQE_SIZE = 16  # struct io_uring_cqe: user_data, res, flags
PARAMS_SIZE = 120  # struct io_uring_params
CURRENT_POSITION = (1 << 64) - 1  # offset -1: write at the file position, as write(2)

# struct io_uring_sqe up to user_data: opcode, flags, ioprio, fd, off, addr, len, rw_flags, user_data.
_SQE = struct.Struct("<BBHiQQIIQ")
# struct io_sqring_offsets / io_cqring_offsets: head, tail, ring_mask, ring_entries, flags|overflow,
# dropped|cqes, array|flags, resv1, user_addr.
_RING_OFFSETS = struct.Struct("<8IQ")

_RETRY = (errno.EINTR, errno.EAGAIN, errno.EBUSY)
MAX_RETRIES = 1000  # io_uring_enter calls in a row that make no progress before giving up


class _Syscall:
    """libc's ``syscall(2)`` with every argument passed as a C long (ctypes releases the GIL around it)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.call = libc.syscall
        self.call.restype = ctypes.c_long
        self.call.argtypes = [ctypes.c_long] * 7

    def __call__(self, number: int, *args: int) -> int:
        padded = (*args, 0, 0, 0, 0, 0, 0)[:6]
        result: int = self.call(number, *padded)
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result


class UringWriter:
    """Whole-buffer writes to one fd, up to :attr:`entries` per system call (see the module docstring)."""

    def __init__(self, fd: int, entries: int) -> None:
        """Open an io_uring of ``entries`` SQEs writing to ``fd`` (OSError when the kernel will not)."""
        self._syscall = _Syscall()
        params = bytearray(PARAMS_SIZE)
        buffer = (ctypes.c_char * PARAMS_SIZE).from_buffer(params)
        self.fd = self._syscall(SYS_IO_URING_SETUP, entries, ctypes.addressof(buffer))
        del buffer
        self._maps: list[mmap.mmap] = []
        self._views: list[memoryview] = []
        try:
            self._map_rings(params)
            self._fill_entries(fd)
        except BaseException:
            self.close()
            raise

    def _map_rings(self, params: bytearray) -> None:
        sq_entries, cq_entries, _flags, _cpu, _idle, features = struct.unpack_from("<6I", params)
        needed = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_RW_CUR_POS
        if features & needed != needed:
            raise OSError(errno.ENOSYS, "io_uring without IORING_OP_WRITE or a single ring mapping")
        _, sq_tail, sq_mask, _, _, _, sq_array, _, _ = _RING_OFFSETS.unpack_from(params, 40)
        cq_head, cq_tail, cq_mask, _, _, cqes, _, _, _ = _RING_OFFSETS.unpack_from(params, 80)
        size = max(sq_array + 4 * sq_entries, cqes + CQE_SIZE * cq_entries)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        rings = mmap.mmap(self.fd, size, flags, prot, offset=IORING_OFF_SQ_RING)
        self._maps.append(rings)
        sqes = mmap.mmap(self.fd, ENTRY_SIZE * sq_entries, flags, prot, offset=IORING_OFF_SQES)
        self._maps.append(sqes)
        ring_view = memoryview(rings)
        self._u32 = ring_view.cast("I")
        self.entries = sq_entries
        self._sqes = memoryview(sqes)
        # Each SQE's addr (u64 2 of 8) and len (u32 6 of 16), as strided views for filling a batch at once.
        self._addresses = self._sqes.cast("Q")[2::8]
        self._lengths = self._sqes.cast("I")[6::16]
        self._sq_array = ring_view[sq_array : sq_array + 4 * sq_entries].cast("I")
        # Completions as int32s: user_data (two), res, flags for each.
        self._cqes = ring_view[cqes : cqes + CQE_SIZE * cq_entries].cast("i")
        self._views += [
            ring_view,
            self._u32,
            self._sqes,
            self._addresses,
            self._lengths,
            self._sq_array,
            self._cqes,
        ]
        self._sq_tail_at, self._cq_head_at, self._cq_tail_at = sq_tail // 4, cq_head // 4, cq_tail // 4
        self._sq_mask = self._u32[sq_mask // 4]
        self._cq_mask = self._u32[cq_mask // 4]
        self._cq_entries = cq_entries
        self._identity = array("I", range(sq_entries))

    def _fill_entries(self, fd: int) -> None:
        """Every SQE writes at the current position of ``fd`` (registered when the kernel allows: it then
        skips the fd table on each write) and carries its own index as user_data."""
        target, sqe_flags = fd, 0
        fds = array("i", [fd])
        try:
            address, _ = fds.buffer_info()
            self._syscall(SYS_IO_URING_REGISTER, self.fd, IORING_REGISTER_FILES, address, 1)
        except OSError:
            pass
        else:
            target, sqe_flags = 0, IOSQE_FIXED_FILE
        for i in range(self.entries):
            _SQE.pack_into(
                self._sqes,
                ENTRY_SIZE * i,
                IORING_OP_WRITE,
                sqe_flags,
                0,
                target,
                CURRENT_POSITION,
                0,
                0,
                0,
                i,
            )

    def write(self, addresses: list[int], lengths: list[int]) -> list[tuple[int, int]]:
        """Write ``lengths[i]`` bytes from host address ``addresses[i]`` for each i (at most
        :attr:`entries`; the caller guarantees that the memory is mapped), in that order.  Returns the
        writes that failed as ``(i, -errno)`` (a write that succeeds writes all its bytes, as a TAP's
        does), ``[]`` when none did.  Every write has finished when this returns."""
        count = len(addresses)
        if count == 0:
            return []
        if count > self.entries or len(lengths) != count:
            raise ValueError(f"{count} writes for {len(lengths)} lengths in a ring of {self.entries}")
        self._addresses[:count] = array("Q", addresses)
        self._lengths[:count] = array("I", lengths)
        u32 = self._u32
        tail = u32[self._sq_tail_at]
        # The SQ ring holds SQE indices: this batch's slots name entries 0..count-1.
        start = tail & self._sq_mask
        first = min(count, self.entries - start)
        self._sq_array[start : start + first] = self._identity[:first]
        if first < count:
            self._sq_array[: count - first] = self._identity[first:count]
        u32[self._sq_tail_at] = (tail + count) & 0xFFFFFFFF
        to_submit = count
        completed = 0
        failed: list[tuple[int, int]] = []
        idle = 0
        while True:
            # Waits for the completions only once all were submitted (else the kernel returns at once).
            try:
                submitted = self._syscall(
                    SYS_IO_URING_ENTER, self.fd, to_submit, count - completed, IORING_ENTER_GETEVENTS
                )
            except OSError as e:
                if e.errno not in _RETRY or idle >= MAX_RETRIES:
                    raise
                submitted = 0
            to_submit -= submitted
            reaped = self._reap(failed)
            completed += reaped
            if completed >= count and to_submit == 0:
                return failed
            idle = 0 if submitted or reaped else idle + 1

    def _reap(self, failed: list[tuple[int, int]]) -> int:
        """Release the completions posted since the last call, adding the failed ones to ``failed`` as
        ``(entry, -errno)``; returns how many there were."""
        u32 = self._u32
        head: int = u32[self._cq_head_at]
        tail: int = u32[self._cq_tail_at]
        n = (tail - head) & 0xFFFFFFFF
        if n:
            start = head & self._cq_mask
            first = min(n, self._cq_entries - start)
            cqes = self._cqes
            for at, end in ((start, start + first), (0, n - first)):
                if end > at and min(cqes[4 * at + 2 : 4 * end : 4]) < 0:
                    # user_data (its low half: the entry index) and res of each completion.
                    failed += [(cqes[4 * i], cqes[4 * i + 2]) for i in range(at, end) if cqes[4 * i + 2] < 0]
            u32[self._cq_head_at] = tail  # after reading them: the kernel may reuse the slots
        return n

    def close(self) -> None:
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        for m in self._maps:
            m.close()
        self._maps.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
