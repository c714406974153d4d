"""virtio-blk (virtio 1.2 §5.2) on a raw image file or block device.

A request is a chain: a 16-byte header ``{type u32, reserved u32, sector u64}`` (device-readable), data
buffers, and one status byte at the very end (device-writable).  Data moves with ``os.preadv`` /
``os.pwritev`` straight between the image and views of guest RAM: no copies in Python.

Every failure becomes a status byte, never a VMM error: a request outside the disk, a data length that is
not a multiple of 512, or an error from the backing file is ``VIRTIO_BLK_S_IOERR``; a write to a read-only
disk is ``IOERR`` too (§5.2.6.1); an unknown type is ``VIRTIO_BLK_S_UNSUPP``.  Only a chain too broken to
carry a status (no header, no status byte) is a queue error, which puts the device in NEEDS_RESET.

The image is locked with ``flock`` — exclusive when writable, shared when read-only — so two VMs cannot
write one image.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aovisor.errors import AovisorError
from aovisor.logs import get_logger
from aovisor.virtio.device import DEVICE_TYPE_BLOCK, DeviceQueue, VirtioDevice
from aovisor.virtio.queue import DescriptorChain, QueueError

if TYPE_CHECKING:
    from aovisor.config import DiskConfig

log = get_logger(__name__)

SECTOR_SIZE = 512
SECTOR_SHIFT = 9
QUEUE_SIZE = 256
HEADER_SIZE = 16
ID_BYTES = 20  # VIRTIO_BLK_ID_BYTES
IOV_MAX = 1024

# Feature bits (§5.2.3).
VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_BLK_SIZE = 1 << 6
VIRTIO_BLK_F_FLUSH = 1 << 9
VIRTIO_BLK_F_DISCARD = 1 << 13
VIRTIO_BLK_F_WRITE_ZEROES = 1 << 14

# Request types and status values (§5.2.6).
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

DISCARD_SEGMENT_SIZE = 16  # {sector u64, num_sectors u32, flags u32}
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1
MAX_DISCARD_SECTORS = 1 << 22  # 2 GiB per segment
MAX_DISCARD_SEGMENTS = 32
DISCARD_ALIGNMENT_SECTORS = 8  # 4 KiB, the page size hole punching works in

CONFIG_SIZE = 60  # struct virtio_blk_config up to write_zeroes_may_unmap and its padding

_HEADER = struct.Struct("<IIQ")
_SEGMENT = struct.Struct("<QII")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


class DiskError(AovisorError):
    """The disk image cannot be used (open, lock, size); the message names the image."""


class _IoError(Exception):
    """A request that completes with VIRTIO_BLK_S_IOERR (its message is logged at debug level)."""


def block_config(capacity_sectors: int, *, seg_max: int, discard: bool) -> bytes:
    """struct virtio_blk_config (§5.2.4)."""
    config = bytearray(CONFIG_SIZE)
    struct.pack_into("<Q", config, 0, capacity_sectors)
    struct.pack_into("<I", config, 12, seg_max)
    struct.pack_into("<I", config, 20, SECTOR_SIZE)  # blk_size
    struct.pack_into("<H", config, 34, 1)  # num_queues
    if discard:
        struct.pack_into(
            "<IIIIIB",
            config,
            36,
            MAX_DISCARD_SECTORS,
            MAX_DISCARD_SEGMENTS,
            DISCARD_ALIGNMENT_SECTORS,
            MAX_DISCARD_SECTORS,
            MAX_DISCARD_SEGMENTS,
            1,  # write_zeroes_may_unmap
        )
    return bytes(config)


class BlockDevice(VirtioDevice):
    """One virtio-blk device with one request queue, served on its own thread."""

    def __init__(self, name: str, disk: DiskConfig) -> None:
        self.path = str(disk.path)
        self.readonly = disk.readonly
        self.fd = _open_image(self.path, readonly=disk.readonly, direct=disk.direct)
        try:
            self.capacity = _image_size(self.fd) >> SECTOR_SHIFT
        except OSError as e:
            os.close(self.fd)
            raise DiskError(f"--disk: {self.path}: cannot read its size: {e.strerror}") from None
        self.serial = (disk.serial or disk.id or name).encode()[:ID_BYTES]
        features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH
        if disk.readonly:
            features |= VIRTIO_BLK_F_RO
        else:
            features |= VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES
        config = block_config(self.capacity, seg_max=QUEUE_SIZE - 2, discard=not disk.readonly)
        super().__init__(name, DEVICE_TYPE_BLOCK, features, (QUEUE_SIZE,), config)
        self._bounce: mmap.mmap | None = None
        self.requests = 0  # completed requests, for tests
        # Cloud Hypervisor's vm.counters names for a block device.
        self.read_ops = self.read_bytes = self.write_ops = self.write_bytes = 0

    def counters(self) -> dict[str, int]:
        return {
            "read_ops": self.read_ops,
            "read_bytes": self.read_bytes,
            "write_ops": self.write_ops,
            "write_bytes": self.write_bytes,
        }

    def close(self) -> None:
        super().close()
        if self.fd >= 0:
            os.close(self.fd)  # also drops the flock
            self.fd = -1

    # --- Requests (device thread) --------------------------------------------------------------------
    def process_queue(self, q: DeviceQueue) -> None:
        ring = q.ring
        handle = self.handle_request
        while (chain := ring.pop()) is not None:
            ring.add_used(chain, handle(chain))
            self.requests += 1

    def handle_request(self, chain: DescriptorChain) -> int:
        """Execute one request and store its status; return the bytes written to the chain."""
        if chain.readable_len < HEADER_SIZE or chain.writable_len < 1:
            raise QueueError(f"virtio-blk request without header or status byte: {chain!r}")
        readable = chain.readable
        first = readable[0]
        if len(first) == HEADER_SIZE:  # the usual framing: the header has its own descriptor
            kind, _reserved, sector = _HEADER.unpack(first)
            data_in = readable[1:]
        else:
            header, data_in = _split(readable, HEADER_SIZE)
            kind, _reserved, sector = _HEADER.unpack(b"".join(header))
        writable = chain.writable
        last = writable[-1]
        if len(last) == 1:
            status_view = last
            data_out = writable[:-1]
        else:
            data_out, tail = _split(writable, chain.writable_len - 1)
            status_view = tail[-1]
        data_len = 0
        try:
            if kind == VIRTIO_BLK_T_IN:
                data_len = chain.writable_len - 1
                self._read(sector, data_out, data_len)
                status = VIRTIO_BLK_S_OK
                self.read_ops += 1
                self.read_bytes += data_len
            elif kind == VIRTIO_BLK_T_OUT:
                self._write(sector, data_in, chain.readable_len - HEADER_SIZE)
                status = VIRTIO_BLK_S_OK
                self.write_ops += 1
                self.write_bytes += chain.readable_len - HEADER_SIZE
            elif kind == VIRTIO_BLK_T_FLUSH:
                os.fdatasync(self.fd)
                status = VIRTIO_BLK_S_OK
            elif kind == VIRTIO_BLK_T_GET_ID:
                data_len = min(ID_BYTES, chain.writable_len - 1)
                _fill(data_out, self.serial.ljust(ID_BYTES, b"\0")[:data_len])
                status = VIRTIO_BLK_S_OK
            elif kind in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES) and not self.readonly:
                status = self._discard_or_zero(kind, b"".join(data_in))
            elif kind in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES):
                raise _IoError("discard or write-zeroes on a read-only disk")
            else:
                status = VIRTIO_BLK_S_UNSUPP
        except _IoError as e:
            log.debug("%s: I/O error: %s", self.name, e)
            status, data_len = VIRTIO_BLK_S_IOERR, 0
        except OSError as e:  # the backing file failed: the guest sees an I/O error, the VMM goes on
            log.warning("%s: %s: %s", self.name, self.path, e.strerror or e)
            status, data_len = VIRTIO_BLK_S_IOERR, 0
        status_view[0] = status
        return data_len + 1

    def _check_range(self, sector: int, length: int) -> int:
        if length % SECTOR_SIZE:
            raise _IoError(f"data length {length} is not a multiple of {SECTOR_SIZE}")
        if sector + (length >> SECTOR_SHIFT) > self.capacity:
            raise _IoError(f"sectors {sector}+{length >> SECTOR_SHIFT} beyond the disk ({self.capacity})")
        return sector << SECTOR_SHIFT

    def _read(self, sector: int, views: Sequence[memoryview], length: int) -> None:
        offset = self._check_range(sector, length)
        fd = self.fd
        for batch in _batches(views):
            size = sum(len(v) for v in batch) if len(batch) > 1 else len(batch[0])
            try:
                done = os.preadv(fd, batch, offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                done = self._bounce_read(batch, size, offset)  # O_DIRECT and an unaligned buffer
            if done != size:
                done += _preadv_rest(fd, batch, offset, done, size)
            offset += size

    def _write(self, sector: int, views: Sequence[memoryview], length: int) -> None:
        if self.readonly:
            raise _IoError("write to a read-only disk")
        offset = self._check_range(sector, length)
        fd = self.fd
        for batch in _batches(views):
            size = sum(len(v) for v in batch) if len(batch) > 1 else len(batch[0])
            try:
                done = os.pwritev(fd, batch, offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                done = self._bounce_write(batch, size, offset)
            if done != size:
                _pwritev_rest(fd, batch, offset, done, size)
            offset += size

    def _bounce_buffer(self, size: int) -> memoryview:
        """A page-aligned buffer for O_DIRECT when the guest's buffers are not aligned."""
        if self._bounce is None or len(self._bounce) < size:
            if self._bounce is not None:
                self._bounce.close()
            self._bounce = mmap.mmap(-1, max(size, mmap.PAGESIZE))
        return memoryview(self._bounce)[:size]

    def _bounce_read(self, views: Sequence[memoryview], size: int, offset: int) -> int:
        buf = self._bounce_buffer(size)
        try:
            done = os.preadv(self.fd, [buf], offset)
            if done != size:
                raise _IoError(f"short read at {offset}")
            _fill(views, buf)
        finally:
            buf.release()
        return size

    def _bounce_write(self, views: Sequence[memoryview], size: int, offset: int) -> int:
        buf = self._bounce_buffer(size)
        try:
            at = 0
            for v in views:
                buf[at : at + len(v)] = v
                at += len(v)
            done = os.pwritev(self.fd, [buf], offset)
            if done != size:
                raise _IoError(f"short write at {offset}")
        finally:
            buf.release()
        return size

    def _discard_or_zero(self, kind: int, data: bytes) -> int:
        count, rest = divmod(len(data), DISCARD_SEGMENT_SIZE)
        if rest or not 1 <= count <= MAX_DISCARD_SEGMENTS:
            raise _IoError(f"{len(data)} bytes of discard segments")
        segments = [_SEGMENT.unpack_from(data, DISCARD_SEGMENT_SIZE * i) for i in range(count)]
        for sector, sectors, flags in segments:
            # Unknown flags, and UNMAP on a discard, are not supported (§5.2.6.2).
            if flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP or (kind == VIRTIO_BLK_T_DISCARD and flags):
                return VIRTIO_BLK_S_UNSUPP
            if sectors > MAX_DISCARD_SECTORS:
                raise _IoError(f"discard of {sectors} sectors")
            self._check_range(sector, sectors << SECTOR_SHIFT)
        for sector, sectors, flags in segments:
            offset, length = sector << SECTOR_SHIFT, sectors << SECTOR_SHIFT
            if kind == VIRTIO_BLK_T_DISCARD or flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP:
                # A punched hole reads as zeros, so it serves both a discard and an unmapping write-zeroes.
                if not _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
                    if kind == VIRTIO_BLK_T_DISCARD:
                        continue  # discard is a hint: nothing to do if the file system cannot punch
                    self._write_zeroes(offset, length)
            elif not _fallocate(self.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length):
                self._write_zeroes(offset, length)
        return VIRTIO_BLK_S_OK

    def _write_zeroes(self, offset: int, length: int) -> None:
        chunk = bytes(min(length, 1 << 20))
        while length:
            n = min(length, len(chunk))
            os.pwrite(self.fd, chunk[:n] if n < len(chunk) else chunk, offset)
            offset += n
            length -= n


# --- Helpers -------------------------------------------------------------------------------------------
def _open_image(path: str, *, readonly: bool, direct: bool) -> int:
    flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if direct and e.errno == errno.EINVAL:
            raise DiskError(f"--disk: {path}: direct=on is not supported by its file system") from None
        raise DiskError(f"--disk: cannot open {path!r}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise DiskError(f"--disk: {path!r} is not a regular file or block device")
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DiskError(f"--disk: {path!r} is locked: another VM is using it") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _image_size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def _batches(views: Sequence[memoryview]) -> list[Sequence[memoryview]]:
    if len(views) <= IOV_MAX:
        return [views]
    return [views[i : i + IOV_MAX] for i in range(0, len(views), IOV_MAX)]


def _skip(views: Sequence[memoryview], skip: int) -> list[memoryview]:
    """``views`` without their first ``skip`` bytes."""
    out: list[memoryview] = []
    for v in views:
        if skip >= len(v):
            skip -= len(v)
            continue
        out.append(v[skip:] if skip else v)
        skip = 0
    return out


def _split(views: Sequence[memoryview], at: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first ``at`` bytes of ``views`` and the rest, as two lists of views."""
    head: list[memoryview] = []
    rest: list[memoryview] = []
    for v in views:
        if at <= 0:
            rest.append(v)
        elif len(v) <= at:
            head.append(v)
            at -= len(v)
        else:
            head.append(v[:at])
            rest.append(v[at:])
            at = 0
    return head, rest


def _fill(views: Sequence[memoryview], data: bytes | memoryview) -> None:
    at = 0
    for v in views:
        n = min(len(v), len(data) - at)
        if n <= 0:
            break
        v[:n] = data[at : at + n]
        at += n


def _preadv_rest(fd: int, views: Sequence[memoryview], offset: int, done: int, size: int) -> int:
    """Finish a short read; past the end of the image (it shrank) is an I/O error."""
    extra = 0
    while done + extra < size:
        n = os.preadv(fd, _skip(views, done + extra), offset + done + extra)
        if n == 0:
            raise _IoError(f"read past the end of the image at {offset + done + extra}")
        extra += n
    return extra


def _pwritev_rest(fd: int, views: Sequence[memoryview], offset: int, done: int, size: int) -> None:
    while done < size:
        n = os.pwritev(fd, _skip(views, done), offset + done)
        if n == 0:
            raise _IoError(f"short write at {offset + done}")
        done += n


_libc_fallocate = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """fallocate(2) with ``mode``; False when the file system does not support that mode."""
    global _libc_fallocate
    if _libc_fallocate is None:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        func = libc.fallocate
        func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        func.restype = ctypes.c_int
        _libc_fallocate = func
    if _libc_fallocate(fd, mode, offset, length) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))
