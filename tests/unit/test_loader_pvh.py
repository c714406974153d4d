"""PVH ELF loading: Debian's real vmlinux (unpacked from its bzImage) and ELF files built here byte by byte.

The boot structures are checked with ``struct`` at the offsets of Xen's start_info.h, independently of
the ctypes layout the loader uses.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aovisor.arch.x86_64.e820 import e820_map
from aovisor.arch.x86_64.layout import (
    ACPI_START,
    CMDLINE_MAX_SIZE,
    CMDLINE_START,
    EBDA_START,
    HIGH_RAM_START,
    MMIO_HOLE_END,
    MMIO_HOLE_START,
    PVH_INFO_START,
    PVH_MEMMAP_MAX_ENTRIES,
    PVH_MEMMAP_START,
    PVH_MODLIST_START,
    ZERO_PAGE_START,
    MiB,
)
from aovisor.arch.x86_64.pvh import HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo
from aovisor.errors import LoaderError
from aovisor.loader import load_kernel
from aovisor.memory import GuestMemory

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/: shared test helpers
import kernel_cache

START_INFO = struct.Struct(
    "<IIIIQQQQII"
)  # magic, version, flags, nr_modules, modlist, cmdline, rsdp, memmap, n, rsvd
MODLIST_ENTRY = struct.Struct("<QQQQ")  # paddr, size, cmdline_paddr, reserved
MEMMAP_ENTRY = struct.Struct("<QQII")  # addr, size, type, reserved
PHYS32_ENTRY = 18


def make_mem(size: int) -> GuestMemory:
    return GuestMemory.with_hole(size, MMIO_HOLE_START, MMIO_HOLE_END)


@pytest.fixture
def mem() -> Iterator[GuestMemory]:
    m = make_mem(64 * MiB)
    yield m
    m.close()


def start_info(mem: GuestMemory) -> tuple[int, ...]:
    return START_INFO.unpack(mem.read(PVH_INFO_START, START_INFO.size))


def memmap(mem: GuestMemory, paddr: int, count: int) -> list[tuple[int, int, int]]:
    raw = mem.read(paddr, count * MEMMAP_ENTRY.size)
    return [MEMMAP_ENTRY.unpack_from(raw, i * MEMMAP_ENTRY.size)[:3] for i in range(count)]


def test_structures_match_start_info_h_and_fit_the_address_map() -> None:
    assert ctypes.sizeof(HvmStartInfo) == START_INFO.size == 56
    assert ctypes.sizeof(HvmModlistEntry) == MODLIST_ENTRY.size == 32
    assert ctypes.sizeof(HvmMemmapTableEntry) == MEMMAP_ENTRY.size == 24
    assert HvmStartInfo.memmap_paddr.offset == 40
    assert PVH_INFO_START + START_INFO.size <= PVH_MODLIST_START
    assert PVH_MODLIST_START + MODLIST_ENTRY.size <= PVH_MEMMAP_START
    assert PVH_MEMMAP_START + PVH_MEMMAP_MAX_ENTRIES * MEMMAP_ENTRY.size <= ZERO_PAGE_START


# --- The real kernel ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vmlinux() -> Path:
    try:
        return kernel_cache.extract_vmlinux(kernel_cache.debian_cloud_kernel())
    except kernel_cache.KernelCacheError as exc:
        pytest.fail(f"cannot get the Debian test kernel: {exc}", pytrace=False)


def test_real_vmlinux_boots_through_pvh(vmlinux: Path, tmp_path: Path) -> None:
    from elftools.elf.elffile import ELFFile

    initrd_data = os.urandom(2 * MiB + 7)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(initrd_data)
    cmdline = "console=hvc0 earlyprintk=ttyS0 root=/dev/vda"
    mem = make_mem(256 * MiB)
    try:
        info = load_kernel(mem, vmlinux, cmdline=cmdline, initramfs=initrd, rsdp_gpa=ACPI_START)

        # The note, read with pyelftools' own note walker; Linux emits the entry as an 8-byte value.
        with vmlinux.open("rb") as f:
            elf = ELFFile(f)
            notes = [n for s in elf.iter_segments() if s["p_type"] == "PT_NOTE" for n in s.iter_notes()]
            (note,) = [n for n in notes if n["n_name"] == "Xen" and n["n_type"] == PHYS32_ENTRY]
            loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
            assert info.protocol == "pvh"
            assert info.entry == int.from_bytes(note["n_desc"], "little")
            assert info.boot_struct_gpa == PVH_INFO_START
            assert any(s["p_paddr"] <= info.entry < s["p_paddr"] + s["p_memsz"] for s in loads)

            # Every PT_LOAD at its physical address (the .data..percpu one has p_vaddr 0).
            for seg in loads:
                assert mem.read(seg["p_paddr"], seg["p_filesz"]) == seg.data()
                assert not any(mem.read(seg["p_paddr"] + seg["p_filesz"], seg["p_memsz"] - seg["p_filesz"]))
            kernel_end = max(s["p_paddr"] + s["p_memsz"] for s in loads)

        magic, version, flags, nr_modules, modlist, cmdline_paddr, rsdp, mm_paddr, mm_count, rsvd = (
            start_info(mem)
        )
        assert (magic, version, flags, rsvd) == (0x336EC578, 1, 0, 0)
        assert mem.read(cmdline_paddr, len(cmdline) + 1) == cmdline.encode() + b"\0"
        assert rsdp == ACPI_START

        assert (nr_modules, modlist) == (1, PVH_MODLIST_START)
        rd_paddr, rd_size, rd_cmdline, _ = MODLIST_ENTRY.unpack(mem.read(modlist, MODLIST_ENTRY.size))
        assert rd_size == len(initrd_data) and rd_cmdline == 0
        assert mem.read(rd_paddr, rd_size) == initrd_data
        assert rd_paddr % 4096 == 0 and rd_paddr >= kernel_end
        assert 256 * MiB - 4096 < rd_paddr + rd_size <= 256 * MiB

        assert memmap(mem, mm_paddr, mm_count) == [
            (0, EBDA_START, 1),
            (EBDA_START, HIGH_RAM_START - EBDA_START, 2),
            (HIGH_RAM_START, 255 * MiB, 1),
        ]
    finally:
        mem.close()


# --- Synthetic ELF files -----------------------------------------------------------------------------


@dataclass
class Seg:
    paddr: int
    data: bytes
    memsz: int = 0  # 0: same as len(data)
    vaddr: int = 0xFFFF_FFFF_8000_0000


@dataclass
class Elf:
    """A minimal x86 ELF executable: program headers, optionally a PT_NOTE and a .note section."""

    segments: list[Seg] = field(default_factory=list)
    notes: list[tuple[bytes, int, bytes]] = field(default_factory=list)  # (name, type, desc)
    notes_as: str = "segment"  # "segment", "section" or "both"
    elfclass: int = 64
    machine: int = 62  # EM_X86_64
    etype: int = 2  # ET_EXEC

    def note_blob(self) -> bytes:
        out = b""
        for name, ntype, desc in self.notes:
            n = name + b"\0"
            out += struct.pack("<III", len(n), len(desc), ntype) + pad4(n) + pad4(desc)
        return out

    def build(self) -> bytes:
        is64 = self.elfclass == 64
        ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
        blob = self.note_blob()
        with_phnote = bool(self.notes) and self.notes_as in ("segment", "both")
        with_shnote = bool(self.notes) and self.notes_as in ("section", "both")
        phnum = len(self.segments) + with_phnote
        offset = ehsize + phnum * phentsize
        body = b""

        def place(data: bytes) -> int:
            nonlocal body
            at = offset + len(body)
            body += data + b"\0" * (-len(data) % 16)
            return at

        phdrs = b""
        for seg in self.segments:
            at = place(seg.data)
            phdrs += phdr(
                is64, 1, at, seg.vaddr, seg.paddr, len(seg.data), seg.memsz or len(seg.data), 0x1000
            )
        note_at = place(blob)
        if with_phnote:
            phdrs += phdr(is64, 4, note_at, 0, 0, len(blob), len(blob), 4)
        shdrs, shnum, shstrndx = b"", 0, 0
        if with_shnote:
            strtab_at = place(b"\0.note\0.shstrtab\0")
            shoff = offset + len(body)
            shdrs = (
                shdr(is64, 0, 0, 0, 0, 0)
                + shdr(is64, 1, 7, note_at, len(blob), 4)  # SHT_NOTE
                + shdr(is64, 7, 3, strtab_at, 17, 1)  # SHT_STRTAB
            )
            shnum, shstrndx = 3, 2
        else:
            shoff = 0
        ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1, 0]) + bytes(8)
        rest = "<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH"
        ehdr = ident + struct.pack(
            rest, self.etype, self.machine, 1, 0, ehsize if phnum else 0, shoff, 0,
            ehsize, phentsize, phnum, shentsize, shnum, shstrndx,
        )  # fmt: skip
        return ehdr + phdrs + body + shdrs


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def phdr(
    is64: bool, ptype: int, off: int, vaddr: int, paddr: int, filesz: int, memsz: int, align: int
) -> bytes:
    if is64:
        return struct.pack("<IIQQQQQQ", ptype, 7, off, vaddr, paddr, filesz, memsz, align)
    return struct.pack("<IIIIIIII", ptype, off, vaddr & 0xFFFF_FFFF, paddr, filesz, memsz, 7, align)


def shdr(is64: bool, name: int, stype: int, off: int, size: int, align: int) -> bytes:
    if is64:
        return struct.pack("<IIQQQQIIQQ", name, stype, 0, 0, off, size, 0, 0, align, 0)
    return struct.pack("<IIIIIIIIII", name, stype, 0, 0, off, size, 0, 0, align, 0)


TEXT = bytes(range(256)) * 64  # 16 KiB
DATA = b"D" * 3000
ENTRY = 0x20_0010


def pvh_note(entry: int = ENTRY, size: int = 8) -> tuple[bytes, int, bytes]:
    return (b"Xen", PHYS32_ENTRY, entry.to_bytes(size, "little"))


def kernel_elf(**overrides: object) -> Elf:
    elf = Elf(
        segments=[Seg(0x20_0000, TEXT), Seg(0x30_0000, DATA, memsz=0x5000)],
        notes=[(b"Linux", 6, b"linux\0"), (b"Xen", 6, b"linux\0"), pvh_note()],
    )
    for key, value in overrides.items():
        setattr(elf, key, value)
    return elf


def write(tmp_path: Path, data: bytes, name: str = "vmlinux") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_synthetic_kernel_loads_at_paddr_and_zeroes_bss(mem: GuestMemory, tmp_path: Path) -> None:
    kernel = write(tmp_path, kernel_elf().build())
    mem.write(0x30_0000, b"\xaa" * 0x6000)  # stale memory must not survive in .bss
    info = load_kernel(mem, kernel, cmdline="quiet")
    assert (info.protocol, info.entry, info.boot_struct_gpa) == ("pvh", ENTRY, PVH_INFO_START)
    assert mem.read(0x20_0000, len(TEXT)) == TEXT
    assert mem.read(0x30_0000, len(DATA)) == DATA
    assert mem.read(0x30_0000 + len(DATA), 0x5000 - len(DATA)) == bytes(0x5000 - len(DATA))
    assert mem.read(0x30_5000, 0x1000) == b"\xaa" * 0x1000  # memsz is the limit
    _, _, _, nr_modules, modlist, cmdline_paddr, rsdp, mm_paddr, mm_count, _ = start_info(mem)
    assert (nr_modules, modlist, rsdp) == (0, 0, 0)
    assert cmdline_paddr == CMDLINE_START and mem.read(CMDLINE_START, 6) == b"quiet\0"
    expected = [(e.addr, e.size, int(e.type)) for e in e820_map((r.gpa, r.size) for r in mem)]
    assert memmap(mem, mm_paddr, mm_count) == expected


@pytest.mark.parametrize(
    "elf",
    [
        kernel_elf(notes=[pvh_note(size=4)]),  # i386 kernels emit a 4-byte value
        kernel_elf(notes_as="section"),  # no PT_NOTE: found through the section headers
        kernel_elf(notes_as="both"),
        kernel_elf(elfclass=32, machine=3),  # ELF32, EM_386
    ],
    ids=["4-byte-note", "note-in-section", "note-in-both", "elf32"],
)
def test_note_and_class_variants(mem: GuestMemory, tmp_path: Path, elf: Elf) -> None:
    info = load_kernel(mem, write(tmp_path, elf.build()), cmdline="")
    assert info.entry == ENTRY
    assert mem.read(0x20_0000, len(TEXT)) == TEXT


@pytest.mark.parametrize("chunk", [None, 4096], ids=["one-read", "chunked-reads"])
def test_initramfs_goes_above_the_kernel_and_below_the_end_of_ram(
    mem: GuestMemory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None
) -> None:
    if chunk:  # the loop that splits reads larger than Linux's per-call limit
        monkeypatch.setattr("aovisor.loader.initrd._MAX_READ", chunk)
    data = os.urandom(1 * MiB + 5)
    initrd = write(tmp_path, data, "initrd")
    load_kernel(mem, write(tmp_path, kernel_elf().build()), cmdline="", initramfs=initrd)
    _, _, _, nr_modules, modlist, *_ = start_info(mem)
    paddr, size, _, _ = MODLIST_ENTRY.unpack(mem.read(modlist, MODLIST_ENTRY.size))
    assert nr_modules == 1 and size == len(data) and mem.read(paddr, size) == data
    assert paddr % 4096 == 0 and 64 * MiB - 4096 < paddr + size <= 64 * MiB


def test_missing_pvh_note(mem: GuestMemory, tmp_path: Path) -> None:
    # A Xen note of another type (XEN_ELFNOTE_ENTRY, the PV entry) is not the PVH entry.
    kernel = write(tmp_path, kernel_elf(notes=[(b"Xen", 1, bytes(8)), (b"Linux", 18, bytes(8))]).build())
    with pytest.raises(LoaderError) as err:
        load_kernel(mem, kernel, cmdline="")
    assert str(err.value) == f"{kernel}: ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"


@pytest.mark.parametrize(
    ("elf", "message"),
    [
        (
            kernel_elf(segments=[Seg(0x20_0000, TEXT), Seg(0x8000_0000, DATA)]),
            r"segment 1 .* outside guest RAM",
        ),
        (
            kernel_elf(segments=[Seg(0x20_0000, TEXT), Seg(0x3FF_F000, DATA, memsz=0x2000)]),
            r"segment 1 .* outside guest RAM",
        ),
        (kernel_elf(segments=[Seg(0x8000, TEXT)]), r"segment 0 \[0x8000, 0xc000\): starts below 1 MiB"),
        (kernel_elf(notes=[pvh_note(0x10_0000)]), r"PVH entry point 0x100000 is not inside any PT_LOAD"),
        (
            kernel_elf(notes=[pvh_note(1 << 32)]),
            r"PVH entry point 0x100000000 is not a 32-bit physical address",
        ),
        (kernel_elf(notes=[(b"Xen", PHYS32_ENTRY, b"\0\0")]), r"PVH entry note has a 2-byte value"),
        (kernel_elf(machine=183), r"ELF file is for machine 183, not x86"),
        (kernel_elf(etype=1), r"ELF file is of type ET_REL, not an executable"),
        (kernel_elf(segments=[]), r"ELF kernel has no PT_LOAD segment"),
    ],
    ids=[
        "above-ram",
        "across-ram-end",
        "low-memory",
        "entry-outside",
        "entry-64bit",
        "bad-note",
        "arm",
        "rel",
        "no-load",
    ],
)
def test_bad_kernels_are_named_errors(mem: GuestMemory, tmp_path: Path, elf: Elf, message: str) -> None:
    kernel = write(tmp_path, elf.build())
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(kernel))}: {message}"):
        load_kernel(mem, kernel, cmdline="")


def test_segment_larger_than_memory_asks_for_more_memory(mem: GuestMemory, tmp_path: Path) -> None:
    kernel = write(tmp_path, kernel_elf(segments=[Seg(0x20_0000, TEXT, memsz=100 * MiB)]).build())
    with pytest.raises(LoaderError, match=r"outside guest RAM \(\[0x0, 0x4000000\)\); .*\(--memory\)"):
        load_kernel(mem, kernel, cmdline="")


@pytest.mark.parametrize("keep", [20, 63, 200, 0x4000], ids=["ident", "ehdr", "phdrs", "segment-data"])
def test_truncated_file(mem: GuestMemory, tmp_path: Path, keep: int) -> None:
    kernel = write(tmp_path, kernel_elf().build()[:keep])
    with pytest.raises(
        LoaderError, match=rf"^{re.escape(str(kernel))}: (malformed ELF file|file is truncated)"
    ):
        load_kernel(mem, kernel, cmdline="")


def test_command_line_longer_than_the_buffer(mem: GuestMemory, tmp_path: Path) -> None:
    kernel = write(tmp_path, kernel_elf().build())
    load_kernel(mem, kernel, cmdline="y" * (CMDLINE_MAX_SIZE - 1))
    with pytest.raises(LoaderError, match=r"^--cmdline: .* is 65536 bytes; .* accepts at most 65535"):
        load_kernel(mem, kernel, cmdline="y" * CMDLINE_MAX_SIZE)
    with pytest.raises(LoaderError, match=r"^--cmdline: .* must not contain NUL"):
        load_kernel(mem, kernel, cmdline="a\0b")


@pytest.fixture(scope="module")
def fuzz_mem() -> Iterator[GuestMemory]:
    m = make_mem(64 * MiB)
    yield m
    m.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_garbage_after_the_elf_magic_only_raises_loader_error(
    data: bytes, fuzz_mem: GuestMemory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kernel = write(tmp_path_factory.mktemp("fuzz"), b"\x7fELF" + data)
    with pytest.raises(LoaderError, match=re.escape(str(kernel))):
        load_kernel(fuzz_mem, kernel, cmdline="")


VALID = kernel_elf(notes_as="both").build()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.just(len(VALID)), st.integers(0, len(VALID))),
)
def test_corrupted_kernel_loads_or_raises_loader_error(
    flips: list[tuple[int, int]], cut: int, fuzz_mem: GuestMemory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = bytearray(VALID)
    for pos, value in flips:
        data[pos] = value
    kernel = write(tmp_path_factory.mktemp("fuzz"), bytes(data[:cut]))
    try:
        info = load_kernel(fuzz_mem, kernel, cmdline="")
    except LoaderError as exc:
        assert str(kernel) in str(exc)
        event(re.sub(r"0x[0-9a-f]+|\d+", "N", str(exc).replace(str(kernel), ""))[:50])
    else:
        event("loaded")
        assert info.protocol == "pvh" and HIGH_RAM_START <= info.entry < 1 << 32


def test_elf_reader_agrees_with_pyelftools_on_the_debian_vmlinux(vmlinux: Path) -> None:
    """Our small ELF reader (used for startup speed) sees the same headers as pyelftools does."""
    from elftools.elf.elffile import ELFFile

    from aovisor.loader.elf import read_elf

    with vmlinux.open("rb") as f:
        ours = read_elf(f.fileno(), vmlinux)
        elf = ELFFile(f)
        theirs = [
            (s["p_offset"], s["p_paddr"], s["p_filesz"], s["p_memsz"], s["p_align"])
            for s in elf.iter_segments()
        ]
        notes = [
            (s["sh_offset"], s["sh_size"], s["sh_addralign"])
            for s in elf.iter_sections()
            if s["sh_type"] == "SHT_NOTE"
        ]
    assert [(p.offset, p.paddr, p.filesz, p.memsz, p.align) for p in ours.program_headers] == theirs
    assert [tuple(n) for n in ours.note_sections] == notes
    assert any(p.type == 4 for p in ours.program_headers)  # the PT_NOTE with the PVH entry
