"""virtio-blk requests on a real image file: data, status codes, read-only disks, GET_ID, discard, flock."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from aovisor.config import DiskConfig
from aovisor.virtio.devices.block import (
    VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
    BlockDevice,
    DiskError,
)
from aovisor.virtio.queue import DescriptorChain, QueueError

SECTORS = 64


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SECTORS * 512))
    return path


@pytest.fixture
def disk(image: Path) -> BlockDevice:
    device = BlockDevice("virtio-blk0", DiskConfig(image, serial="SER-1"))
    yield device
    device.close()


def request(device: BlockDevice, kind: int, sector: int, out: bytes = b"", in_len: int = 0):
    """Run one request; returns (status, bytes the device wrote into the data buffer, used length)."""
    header = bytearray(struct.pack("<IIQ", kind, 0, sector))
    readable = [memoryview(header)] + ([memoryview(bytearray(out))] if out else [])
    data = bytearray(in_len)
    status = bytearray(b"\xff")
    writable = ([memoryview(data)] if in_len else []) + [memoryview(status)]
    chain = DescriptorChain(0, readable, writable, 16 + len(out), in_len + 1)
    used = device.handle_request(chain)
    return status[0], bytes(data), used


def test_read_returns_the_image_bytes(disk: BlockDevice, image: Path) -> None:
    status, data, used = request(disk, VIRTIO_BLK_T_IN, 3, in_len=4 * 512)
    assert (status, used) == (VIRTIO_BLK_S_OK, 4 * 512 + 1)
    assert data == image.read_bytes()[3 * 512 : 7 * 512]


def test_write_then_flush_reaches_the_file(disk: BlockDevice, image: Path) -> None:
    payload = os.urandom(2 * 512)
    assert request(disk, VIRTIO_BLK_T_OUT, 10, out=payload)[0] == VIRTIO_BLK_S_OK
    assert request(disk, VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    assert image.read_bytes()[10 * 512 : 12 * 512] == payload


def test_split_header_and_shared_status_descriptor(disk: BlockDevice, image: Path) -> None:
    """The device must not assume a framing (virtio 1.2 §2.6.4): header in two parts, status with data."""
    header = struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 1)
    data_and_status = bytearray(512 + 1)
    chain = DescriptorChain(
        0,
        [memoryview(bytearray(header[:5])), memoryview(bytearray(header[5:]))],
        [memoryview(data_and_status)],
        16,
        513,
    )
    assert disk.handle_request(chain) == 513
    assert data_and_status[512] == VIRTIO_BLK_S_OK
    assert bytes(data_and_status[:512]) == image.read_bytes()[512:1024]


@pytest.mark.parametrize(
    ("kind", "sector", "out", "in_len"),
    [
        (VIRTIO_BLK_T_IN, SECTORS - 1, b"", 1024),  # runs past the end
        (VIRTIO_BLK_T_IN, 2**63, b"", 512),  # far past the end
        (VIRTIO_BLK_T_IN, 0, b"", 100),  # not a multiple of 512
        (VIRTIO_BLK_T_OUT, SECTORS, b"x" * 512, 0),
        (VIRTIO_BLK_T_OUT, 0, b"x" * 511, 0),
    ],
)
def test_bad_ranges_are_io_errors(
    disk: BlockDevice, image: Path, kind: int, sector: int, out: bytes, in_len: int
) -> None:
    before = image.read_bytes()
    status, _, used = request(disk, kind, sector, out=out, in_len=in_len)
    assert (status, used) == (VIRTIO_BLK_S_IOERR, 1)
    assert image.read_bytes() == before


def test_backing_file_errors_become_io_errors(disk: BlockDevice, image: Path) -> None:
    os.close(disk.fd)
    disk.fd = os.open(image, os.O_WRONLY)  # reads now fail with EBADF in the host
    status, _, _ = request(disk, VIRTIO_BLK_T_IN, 0, in_len=512)
    assert status == VIRTIO_BLK_S_IOERR


def test_read_only_disk_refuses_writes(image: Path) -> None:
    device = BlockDevice("virtio-blk0", DiskConfig(image, readonly=True))
    try:
        assert device.avail_features & VIRTIO_BLK_F_RO
        assert not device.avail_features & VIRTIO_BLK_F_DISCARD
        before = image.read_bytes()
        assert request(device, VIRTIO_BLK_T_OUT, 0, out=b"z" * 512)[0] == VIRTIO_BLK_S_IOERR
        segment = struct.pack("<QII", 0, 8, 0)
        assert request(device, VIRTIO_BLK_T_WRITE_ZEROES, 0, out=segment)[0] == VIRTIO_BLK_S_IOERR
        assert request(device, VIRTIO_BLK_T_IN, 0, in_len=512)[0] == VIRTIO_BLK_S_OK
        assert image.read_bytes() == before
    finally:
        device.close()


def test_get_id_returns_the_serial(disk: BlockDevice) -> None:
    status, data, used = request(disk, VIRTIO_BLK_T_GET_ID, 0, in_len=20)
    assert (status, data, used) == (VIRTIO_BLK_S_OK, b"SER-1".ljust(20, b"\0"), 21)


def test_unknown_request_type_is_unsupported(disk: BlockDevice) -> None:
    assert request(disk, 99, 0, in_len=512)[0] == VIRTIO_BLK_S_UNSUPP


@pytest.mark.parametrize("kind", [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES])
def test_discard_and_write_zeroes_read_back_as_zeros(disk: BlockDevice, image: Path, kind: int) -> None:
    flags = 1 if kind == VIRTIO_BLK_T_WRITE_ZEROES else 0  # UNMAP: allowed for write-zeroes only
    segments = struct.pack("<QII", 8, 16, flags) + struct.pack("<QII", 40, 8, 0)
    assert request(disk, kind, 0, out=segments)[0] == VIRTIO_BLK_S_OK
    data = image.read_bytes()
    assert data[8 * 512 : 24 * 512] == bytes(16 * 512)
    assert data[40 * 512 : 48 * 512] == bytes(8 * 512)
    assert data[24 * 512 : 40 * 512] != bytes(16 * 512)


def test_discard_with_unmap_or_bad_segments(disk: BlockDevice) -> None:
    assert request(disk, VIRTIO_BLK_T_DISCARD, 0, out=struct.pack("<QII", 0, 8, 1))[0] == VIRTIO_BLK_S_UNSUPP
    beyond = struct.pack("<QII", SECTORS - 4, 8, 0)
    assert request(disk, VIRTIO_BLK_T_WRITE_ZEROES, 0, out=beyond)[0] == VIRTIO_BLK_S_IOERR
    assert request(disk, VIRTIO_BLK_T_DISCARD, 0, out=b"short")[0] == VIRTIO_BLK_S_IOERR


def test_request_without_status_byte_is_a_queue_error(disk: BlockDevice) -> None:
    header = memoryview(bytearray(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)))
    with pytest.raises(QueueError):
        disk.handle_request(DescriptorChain(0, [header], [], 16, 0))
    with pytest.raises(QueueError):
        disk.handle_request(DescriptorChain(0, [header[:8]], [memoryview(bytearray(1))], 8, 1))


def test_image_is_locked_against_a_second_writer(disk: BlockDevice, image: Path) -> None:
    with pytest.raises(DiskError, match="locked"):
        BlockDevice("virtio-blk1", DiskConfig(image))
    with pytest.raises(DiskError, match="locked"):
        BlockDevice("virtio-blk1", DiskConfig(image, readonly=True))


def test_read_only_users_share_an_image(image: Path) -> None:
    first = BlockDevice("a", DiskConfig(image, readonly=True))
    second = BlockDevice("b", DiskConfig(image, readonly=True))
    first.close()
    second.close()
    BlockDevice("c", DiskConfig(image)).close()  # the locks went with the fds


def test_config_space_reports_capacity(disk: BlockDevice) -> None:
    assert disk.read_config(0, 8) == SECTORS
    assert disk.read_config(20, 4) == 512  # blk_size
    assert disk.read_config(1000, 4) == 0  # past the end
