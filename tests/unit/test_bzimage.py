"""bzImage loading (Linux 64-bit boot protocol), against Debian's real cloud kernel and synthetic images.

The zero page is checked with ``struct`` at the offsets documented in Documentation/arch/x86/boot.rst and
zero-page.rst, independently of the ctypes layout the loader uses.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aovisor.arch.x86_64.boot_params import BootParams, SetupHeader
from aovisor.arch.x86_64.layout import (
    ACPI_END,
    ACPI_START,
    CMDLINE_MAX_SIZE,
    EBDA_START,
    HIGH_RAM_START,
    MMIO_HOLE_END,
    MMIO_HOLE_START,
    ZERO_PAGE_START,
    MiB,
)
from aovisor.errors import LoaderError
from aovisor.loader import load_kernel
from aovisor.memory import GuestMemory

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/: shared test helpers
import kernel_cache

# --- Spec offsets (boot.rst "The Real-Mode Kernel Header", zero-page.rst) --------------------------------
SETUP_SECTS, SYSSIZE, VID_MODE, BOOT_FLAG, JUMP, HEADER, VERSION = (
    0x1F1,
    0x1F4,
    0x1FA,
    0x1FE,
    0x200,
    0x202,
    0x206,
)
TYPE_OF_LOADER, LOADFLAGS, CODE32_START = 0x210, 0x211, 0x214
RAMDISK_IMAGE, RAMDISK_SIZE, HEAP_END_PTR, CMD_LINE_PTR, INITRD_ADDR_MAX = 0x218, 0x21C, 0x224, 0x228, 0x22C
KERNEL_ALIGNMENT, RELOCATABLE, XLOADFLAGS, CMDLINE_SIZE = 0x230, 0x234, 0x236, 0x238
PAYLOAD_OFFSET, SETUP_DATA, PREF_ADDRESS, INIT_SIZE = 0x248, 0x250, 0x258, 0x260
ACPI_RSDP_ADDR, EXT_RAMDISK_IMAGE, EXT_RAMDISK_SIZE, EXT_CMD_LINE_PTR = 0x070, 0x0C0, 0x0C4, 0x0C8
E820_ENTRIES, SENTINEL, E820_TABLE = 0x1E8, 0x1EF, 0x2D0
# Setup-header bytes the loader writes; all the others must be the image's own.
WRITTEN = {
    VID_MODE: 2,
    TYPE_OF_LOADER: 1,
    LOADFLAGS: 1,
    CODE32_START: 4,
    RAMDISK_IMAGE: 4,
    RAMDISK_SIZE: 4,
    HEAP_END_PTR: 2,
    CMD_LINE_PTR: 4,
    0x23C: 4,  # hardware_subarch
    SETUP_DATA: 8,
}


def u8(buf: bytes, off: int) -> int:
    return buf[off]


def u16(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", buf, off)[0])


def u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


def u64(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", buf, off)[0])


def e820_table(zero_page: bytes) -> list[tuple[int, int, int]]:
    count = zero_page[E820_ENTRIES]
    return [struct.unpack_from("<QQI", zero_page, E820_TABLE + 20 * i) for i in range(count)]


def make_mem(size: int) -> GuestMemory:
    return GuestMemory.with_hole(size, MMIO_HOLE_START, MMIO_HOLE_END)


@pytest.fixture
def mem() -> Iterator[GuestMemory]:
    m = make_mem(256 * MiB)
    yield m
    m.close()


@pytest.fixture
def small_mem() -> Iterator[GuestMemory]:
    m = make_mem(64 * MiB)
    yield m
    m.close()


# --- The real kernel --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bzimage() -> Path:
    try:
        return kernel_cache.debian_cloud_kernel()
    except kernel_cache.KernelCacheError as exc:
        pytest.fail(f"cannot get the Debian test kernel: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def image(bzimage: Path) -> bytes:
    return bzimage.read_bytes()


def test_layout_matches_the_documented_offsets() -> None:
    assert ctypes.sizeof(BootParams) == 4096
    assert BootParams.hdr.offset == SETUP_SECTS
    assert BootParams.e820_table.offset == E820_TABLE
    assert BootParams.acpi_rsdp_addr.offset == ACPI_RSDP_ADDR
    assert BootParams.ext_cmd_line_ptr.offset == EXT_CMD_LINE_PTR
    assert BootParams.sentinel.offset == SENTINEL
    assert SETUP_SECTS + SetupHeader.xloadflags.offset == XLOADFLAGS
    assert SETUP_SECTS + SetupHeader.init_size.offset == INIT_SIZE
    assert SETUP_SECTS + ctypes.sizeof(SetupHeader) == 0x26C  # kernel_info_offset ends the 2.15 header


def test_real_kernel_setup_header_parses(bzimage: Path, image: bytes) -> None:
    from aovisor.loader.bzimage import read_setup_header

    fd = os.open(bzimage, os.O_RDONLY)
    try:
        hdr, raw = read_setup_header(fd, bzimage)
    finally:
        os.close(fd)
    assert raw == image[SETUP_SECTS : 0x202 + image[0x201]]
    assert hdr.header == u32(image, HEADER) == 0x53726448
    assert hdr.boot_flag == 0xAA55
    assert hdr.version == u16(image, VERSION) >= 0x020C
    assert hdr.setup_sects == image[SETUP_SECTS]
    assert hdr.xloadflags == u16(image, XLOADFLAGS) and hdr.xloadflags & 1
    assert hdr.init_size == u32(image, INIT_SIZE)
    assert hdr.pref_address == u64(image, PREF_ADDRESS)
    assert hdr.cmdline_size == u32(image, CMDLINE_SIZE)
    assert hdr.payload_offset == u32(image, PAYLOAD_OFFSET)


def test_real_kernel_boot_params(mem: GuestMemory, bzimage: Path, image: bytes, tmp_path: Path) -> None:
    initrd_data = os.urandom(3 * MiB + 123)
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(initrd_data)
    cmdline = "console=ttyS0 reboot=k panic=1 root=/dev/vda rw"

    info = load_kernel(mem, bzimage, cmdline=cmdline, initramfs=initrd, rsdp_gpa=ACPI_START)

    assert info.protocol == "linux64"
    assert info.entry == HIGH_RAM_START + 0x200
    assert info.boot_struct_gpa == ZERO_PAGE_START
    zp = mem.read(ZERO_PAGE_START, 4096)

    # The header is the image's, except for the fields a loader writes.
    hdr_end = 0x202 + image[0x201]
    assert zp[JUMP + 1] == image[JUMP + 1]
    written = {off + i for off, n in WRITTEN.items() for i in range(n)}
    for off in range(SETUP_SECTS, hdr_end):
        if off not in written:
            assert zp[off] == image[off], f"setup header byte {off:#x} changed"
    assert zp[HEADER : HEADER + 4] == b"HdrS" and u16(zp, BOOT_FLAG) == 0xAA55
    assert u8(zp, TYPE_OF_LOADER) == 0xFF
    assert u8(zp, LOADFLAGS) & 0x01  # LOADED_HIGH
    assert not u8(zp, LOADFLAGS) & 0x80  # no CAN_USE_HEAP: the 16-bit setup never runs
    assert u16(zp, VID_MODE) == 0xFFFF
    assert u32(zp, CODE32_START) == HIGH_RAM_START
    assert u64(zp, SETUP_DATA) == 0
    assert zp[SENTINEL] == 0
    assert u64(zp, ACPI_RSDP_ADDR) == ACPI_START

    # Command line.
    ptr = u32(zp, CMD_LINE_PTR) | u32(zp, EXT_CMD_LINE_PTR) << 32
    assert mem.read(ptr, len(cmdline) + 1) == cmdline.encode() + b"\0"

    # Kernel: the protected-mode part of the file, at 1 MiB.
    pm_offset = ((image[SETUP_SECTS] or 4) + 1) * 512
    assert mem.read(HIGH_RAM_START, len(image) - pm_offset) == image[pm_offset:]
    # The decompressor works in [max(align_up(1 MiB), pref_address), + init_size) (boot.rst, head_64.S).
    kernel_end = max(u64(image, PREF_ADDRESS), 2 * MiB) + u32(image, INIT_SIZE)

    # Initramfs: page aligned, clear of the kernel, below initrd_addr_max, as high as RAM allows.
    rd_addr = u32(zp, RAMDISK_IMAGE) | u32(zp, EXT_RAMDISK_IMAGE) << 32
    rd_size = u32(zp, RAMDISK_SIZE) | u32(zp, EXT_RAMDISK_SIZE) << 32
    assert rd_size == len(initrd_data)
    assert mem.read(rd_addr, rd_size) == initrd_data
    assert rd_addr % 4096 == 0
    assert rd_addr >= kernel_end
    assert rd_addr + rd_size - 1 <= u32(image, INITRD_ADDR_MAX)
    assert 256 * MiB - 4096 < rd_addr + rd_size <= 256 * MiB

    # e820: the regions of a 256 MiB guest; kernel, initramfs, zero page and cmdline in RAM.
    e820 = e820_table(zp)
    assert e820 == [
        (0, EBDA_START, 1),
        (EBDA_START, HIGH_RAM_START - EBDA_START, 2),
        (HIGH_RAM_START, 255 * MiB, 1),
    ]

    def ram(start: int, end: int) -> bool:
        return any(a <= start and end <= a + s and t == 1 for a, s, t in e820)

    assert ram(HIGH_RAM_START, kernel_end)
    assert ram(rd_addr, rd_addr + rd_size)
    assert ram(ZERO_PAGE_START, ZERO_PAGE_START + 4096)
    assert ram(ptr, ptr + len(cmdline) + 1)
    assert not ram(ACPI_START, ACPI_END)

    # Everything outside the header, e820 and the documented fields stays zero.
    assert (
        not any(zp[:ACPI_RSDP_ADDR])
        and not any(zp[0x78:EXT_RAMDISK_IMAGE])
        and not any(zp[0xCC:E820_ENTRIES])
    )
    assert not any(zp[E820_TABLE + 20 * len(e820) :])


def test_real_kernel_without_initramfs_or_rsdp(mem: GuestMemory, bzimage: Path) -> None:
    load_kernel(mem, bzimage, cmdline="", initramfs=None, rsdp_gpa=None)
    zp = mem.read(ZERO_PAGE_START, 4096)
    assert u32(zp, RAMDISK_IMAGE) == u32(zp, RAMDISK_SIZE) == 0
    assert u64(zp, ACPI_RSDP_ADDR) == 0
    assert mem.read(u32(zp, CMD_LINE_PTR), 1) == b"\0"


def test_command_line_limit_is_the_kernels_cmdline_size(
    mem: GuestMemory, bzimage: Path, image: bytes
) -> None:
    limit = min(u32(image, CMDLINE_SIZE), CMDLINE_MAX_SIZE - 1)
    load_kernel(mem, bzimage, cmdline="x" * limit)
    assert mem.read(u32(mem.read(ZERO_PAGE_START, 4096), CMD_LINE_PTR) + limit, 1) == b"\0"
    with pytest.raises(
        LoaderError,
        match=rf"--cmdline: .* is {limit + 1} bytes; .*{re.escape(bzimage.name)} accepts at most {limit}",
    ):
        load_kernel(mem, bzimage, cmdline="x" * (limit + 1))


def test_kernel_too_big_for_guest_ram(bzimage: Path, image: bytes) -> None:
    needed = u64(image, PREF_ADDRESS) + u32(image, INIT_SIZE)
    small = make_mem((needed - MiB) & ~(MiB - 1))
    try:
        with pytest.raises(
            LoaderError, match=rf"^{re.escape(str(bzimage))}: the kernel needs guest RAM .*--memory"
        ):
            load_kernel(small, bzimage, cmdline="")
    finally:
        small.close()


def test_initramfs_that_does_not_fit_names_the_file(mem: GuestMemory, bzimage: Path, tmp_path: Path) -> None:
    big = tmp_path / "huge.img"
    with big.open("wb") as f:
        f.truncate(250 * MiB)  # sparse: never read, the placement check comes first
    with pytest.raises(
        LoaderError, match=rf"^{re.escape(str(big))}: initramfs is 250.0 MiB but only .* free.*--memory"
    ):
        load_kernel(mem, bzimage, cmdline="", initramfs=big)


def test_missing_initramfs_names_the_file(mem: GuestMemory, bzimage: Path, tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(tmp_path / 'nope'))}: cannot open initramfs"):
        load_kernel(mem, bzimage, cmdline="", initramfs=tmp_path / "nope")


# --- Synthetic images ------------------------------------------------------------------------------------

PM_CODE = bytes(range(256)) * 40  # 10 KiB of recognisable "kernel"


def make_bzimage(**fields: int) -> bytes:
    """A minimal bzImage: setup sectors with a protocol 2.15 header, then the protected-mode part."""
    values = {
        "setup_sects": 4,
        "header_len": 0x6A,  # header ends at 0x26c, as in Linux 5.5+
        "version": 0x020F,
        "loadflags": 0x01,
        "xloadflags": 0x03,
        "syssize": (len(PM_CODE) + 15) // 16,
        "relocatable": 1,
        "kernel_alignment": 2 * MiB,
        "pref_address": 16 * MiB,
        "init_size": 8 * MiB,
        "cmdline_size": 2047,
        "initrd_addr_max": 0x7FFF_FFFF,
        "boot_flag": 0xAA55,
    }
    values.update(fields)
    setup = bytearray(((values["setup_sects"] or 4) + 1) * 512)
    setup[SETUP_SECTS] = values["setup_sects"]
    struct.pack_into("<I", setup, SYSSIZE, values["syssize"])
    struct.pack_into("<H", setup, BOOT_FLAG, values["boot_flag"])
    setup[JUMP : JUMP + 2] = bytes([0xEB, values["header_len"]])
    setup[HEADER : HEADER + 4] = b"HdrS"
    struct.pack_into("<H", setup, VERSION, values["version"])
    setup[LOADFLAGS] = values["loadflags"]
    struct.pack_into("<I", setup, CODE32_START, HIGH_RAM_START)
    struct.pack_into("<I", setup, INITRD_ADDR_MAX, values["initrd_addr_max"])
    struct.pack_into("<I", setup, KERNEL_ALIGNMENT, values["kernel_alignment"])
    setup[RELOCATABLE] = values["relocatable"]
    struct.pack_into("<H", setup, XLOADFLAGS, values["xloadflags"])
    struct.pack_into("<I", setup, CMDLINE_SIZE, values["cmdline_size"])
    struct.pack_into("<Q", setup, PREF_ADDRESS, values["pref_address"])
    struct.pack_into("<I", setup, INIT_SIZE, values["init_size"])
    return bytes(setup) + PM_CODE


def write(tmp_path: Path, data: bytes, name: str = "bzImage") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_synthetic_image_loads(small_mem: GuestMemory, tmp_path: Path) -> None:
    kernel = write(tmp_path, make_bzimage(setup_sects=0))  # 0 means 4 sectors
    initrd = write(tmp_path, b"initrd" * 1000, "initrd")
    info = load_kernel(small_mem, kernel, cmdline="quiet", initramfs=initrd)
    assert info.entry == HIGH_RAM_START + 0x200
    assert small_mem.read(HIGH_RAM_START, len(PM_CODE)) == PM_CODE
    zp = small_mem.read(ZERO_PAGE_START, 4096)
    assert (u32(zp, RAMDISK_IMAGE) + u32(zp, RAMDISK_SIZE) + 4095) & ~4095 == 64 * MiB


def test_initramfs_respects_initrd_addr_max(small_mem: GuestMemory, tmp_path: Path) -> None:
    kernel = write(tmp_path, make_bzimage(initrd_addr_max=48 * MiB - 1))
    initrd = write(tmp_path, os.urandom(100_000), "initrd")
    load_kernel(small_mem, kernel, cmdline="", initramfs=initrd)
    zp = small_mem.read(ZERO_PAGE_START, 4096)
    end = u32(zp, RAMDISK_IMAGE) + u32(zp, RAMDISK_SIZE)
    assert 48 * MiB - 4096 < end <= 48 * MiB
    # No room between the kernel's init_size area (16 + 8 MiB) and initrd_addr_max: a clear error.
    kernel = write(tmp_path, make_bzimage(initrd_addr_max=24 * MiB + 50_000))
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(initrd))}: initramfs is .* between the kernel"):
        load_kernel(small_mem, kernel, cmdline="", initramfs=initrd)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 0x0206}, r"boot protocol 2\.06 is too old: 2\.12 \(Linux 3\.8\) or newer"),
        ({"xloadflags": 0}, r"no 64-bit entry point \(xloadflags\.XLF_KERNEL_64 clear\)"),
        ({"loadflags": 0}, r"is a zImage"),
        ({"boot_flag": 0x1234}, r"boot_flag at 0x1fe is 0x1234, not 0xaa55"),
        ({"syssize": 100_000}, r"file is truncated: the header announces 1600000 bytes"),
        ({"header_len": 0xC0}, r"setup header length byte at 0x201 .* past 0x290"),
        ({"kernel_alignment": 3 * MiB}, r"kernel_alignment 0x300000 is not a power of two"),
        ({"relocatable": 0, "pref_address": 0x1000}, r"non-relocatable kernel with pref_address 0x1000"),
        ({"init_size": 0xF000_0000}, r"the kernel needs guest RAM up to .*\(--memory\)"),
    ],
)
def test_bad_headers_are_named_errors(
    small_mem: GuestMemory, tmp_path: Path, fields: dict[str, int], message: str
) -> None:
    kernel = write(tmp_path, make_bzimage(**fields))
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(kernel))}: .*{message}"):
        load_kernel(small_mem, kernel, cmdline="")


def test_file_cut_inside_the_header(small_mem: GuestMemory, tmp_path: Path) -> None:
    kernel = write(tmp_path, make_bzimage()[:0x230])
    with pytest.raises(
        LoaderError, match=rf"^{re.escape(str(kernel))}: file is truncated inside the Linux setup header"
    ):
        load_kernel(small_mem, kernel, cmdline="")


def test_file_that_is_no_kernel(small_mem: GuestMemory, tmp_path: Path) -> None:
    junk = write(tmp_path, b"#!/bin/sh\necho hello\n" * 100, "script")
    expected = f"{junk}: not a kernel image: not an ELF file and no Linux boot header ('HdrS') at 0x202"
    with pytest.raises(LoaderError, match=f"^{re.escape(expected)}$"):
        load_kernel(small_mem, junk, cmdline="")


def test_unreadable_kernel_paths(small_mem: GuestMemory, tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(tmp_path / 'missing'))}: cannot open kernel"):
        load_kernel(small_mem, tmp_path / "missing", cmdline="")
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(tmp_path))}: cannot read kernel"):
        load_kernel(small_mem, tmp_path, cmdline="")


@pytest.fixture(scope="module")
def fuzz_mem() -> Iterator[GuestMemory]:
    m = make_mem(64 * MiB)
    yield m
    m.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=4096))
def test_random_bytes_only_raise_loader_error(
    data: bytes, fuzz_mem: GuestMemory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kernel = tmp_path_factory.mktemp("fuzz") / "kernel"
    kernel.write_bytes(data)
    with pytest.raises(LoaderError):
        load_kernel(fuzz_mem, kernel, cmdline="x")


_u32 = st.integers(0, 0xFFFF_FFFF)
# Per field, values that are plausible or hostile.
FIELD_VALUES = {
    "setup_sects": st.integers(0, 255),
    "header_len": st.integers(0, 255),
    "version": st.integers(0, 0xFFFF),
    "loadflags": st.integers(0, 255),
    "xloadflags": st.integers(0, 0xFFFF),
    "syssize": st.one_of(st.integers(0, 2000), _u32),
    "relocatable": st.integers(0, 1),
    "kernel_alignment": st.one_of(st.sampled_from([0, 4096, 2 * MiB, 1 << 31]), _u32),
    "pref_address": st.one_of(st.sampled_from([0, MiB, 16 * MiB, 60 * MiB]), st.integers(0, (1 << 64) - 1)),
    "init_size": st.one_of(st.integers(0, 64 * MiB), _u32),
    "cmdline_size": st.one_of(st.integers(0, 20), _u32),
    "initrd_addr_max": st.one_of(st.integers(0, 128 * MiB), _u32),
}


@st.composite
def header_mutations(draw: st.DrawFn) -> dict[str, int]:
    """A valid header with a few fields replaced, so that every check (and success) gets exercised."""
    names = draw(st.sets(st.sampled_from(sorted(FIELD_VALUES)), max_size=4))
    return {name: draw(FIELD_VALUES[name]) for name in names}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=header_mutations(), cut=st.one_of(st.just(1 << 20), st.integers(0, 8192)))
def test_random_headers_only_raise_loader_error(
    fields: dict[str, int], cut: int, fuzz_mem: GuestMemory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    kernel = write(directory, make_bzimage(**fields)[: 0x210 + cut])
    initrd = write(directory, b"\x07" * 5000, "initrd")
    try:
        info = load_kernel(fuzz_mem, kernel, cmdline="console=ttyS0", initramfs=initrd)
    except LoaderError as exc:
        assert str(directory) in str(exc)  # names the kernel or the initramfs
        event(str(exc).replace(str(directory), "")[:40])
    else:
        event("loaded")
        assert info.entry == HIGH_RAM_START + 0x200
        zp = fuzz_mem.read(ZERO_PAGE_START, 4096)
        assert fuzz_mem.read(u32(zp, RAMDISK_IMAGE), 5000) == b"\x07" * 5000
