"""The guest programs in guests/: they build, have the boot metadata loaders rely on, and behave as
guests/README.md documents when booted by the reference VMM (QEMU, skipped where it cannot run)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment
from guests.build import (
    BZIMAGE_GUEST_NAME,
    GUEST_NAMES,
    GUESTS_DIR,
    GuestBuildError,
    build_bzimage_guest,
    build_guest,
    main,
)

from conftest import host_model_name

LOAD_ADDR = 0x100000
XEN_ELFNOTE_PHYS32_ENTRY = 18
PF_X = 1


# --- PVH ELF metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GUEST_NAMES)
def test_guest_is_a_static_x86_64_elf_loaded_at_1mib(guest: Callable[[str], Path], name: str) -> None:
    with guest(name).open("rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64
        assert elf["e_machine"] == "EM_X86_64"
        assert elf["e_type"] == "ET_EXEC"
        kinds = [seg["p_type"] for seg in elf.iter_segments()]
        assert "PT_INTERP" not in kinds and "PT_DYNAMIC" not in kinds
        loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
        assert loads
        for seg in loads:
            assert seg["p_paddr"] == seg["p_vaddr"]
            assert LOAD_ADDR <= seg["p_paddr"] < 0x8000_0000
            assert seg["p_memsz"] >= seg["p_filesz"]
        assert min(seg["p_paddr"] for seg in loads) == LOAD_ADDR


@pytest.mark.parametrize("name", GUEST_NAMES)
def test_guest_has_pvh_entry_note_pointing_at_its_code(guest: Callable[[str], Path], name: str) -> None:
    with guest(name).open("rb") as f:
        elf = ELFFile(f)
        notes = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_NOTE"]
        assert len(notes) == 1
        assert isinstance(notes[0], NoteSegment)
        # QEMU pads the note name to the PT_NOTE p_align; only 4 gives the standard layout.
        assert notes[0]["p_align"] == 4
        xen = [n for n in notes[0].iter_notes() if n["n_name"] == "Xen"]
        assert [int(n["n_type"]) for n in xen] == [XEN_ELFNOTE_PHYS32_ENTRY]
        desc = xen[0]["n_descdata"]
        assert len(desc) == 8
        entry = int.from_bytes(desc, "little")
        assert entry == elf["e_entry"]
        code = [
            seg
            for seg in elf.iter_segments()
            if seg["p_type"] == "PT_LOAD"
            and seg["p_flags"] & PF_X
            and seg["p_paddr"] <= entry < seg["p_paddr"] + seg["p_filesz"]
        ]
        assert len(code) == 1
        assert code[0].data()[entry - code[0]["p_paddr"]] == 0xFA  # cli: the 32-bit entry's first instruction


# --- bzImage layout ---------------------------------------------------------------------------------------


def _header(image: bytes) -> dict[str, int]:
    fields = {
        "setup_sects": ("<B", 0x1F1),
        "syssize": ("<I", 0x1F4),
        "boot_flag": ("<H", 0x1FE),
        "jump": ("<H", 0x200),
        "header": ("<I", 0x202),
        "version": ("<H", 0x206),
        "kernel_version": ("<H", 0x20E),
        "loadflags": ("<B", 0x211),
        "code32_start": ("<I", 0x214),
        "initrd_addr_max": ("<I", 0x22C),
        "kernel_alignment": ("<I", 0x230),
        "relocatable_kernel": ("<B", 0x234),
        "xloadflags": ("<H", 0x236),
        "cmdline_size": ("<I", 0x238),
        "pref_address": ("<Q", 0x258),
        "init_size": ("<I", 0x260),
    }
    return {name: struct.unpack_from(fmt, image, off)[0] for name, (fmt, off) in fields.items()}


def test_bzimage_setup_header_follows_the_boot_protocol(bzimage_guest: Path) -> None:
    image = bzimage_guest.read_bytes()
    hdr = _header(image)
    assert hdr["boot_flag"] == 0xAA55
    assert hdr["header"] == int.from_bytes(b"HdrS", "little")
    assert hdr["version"] == 0x020F
    assert hdr["loadflags"] & 0x01  # LOADED_HIGH
    assert hdr["xloadflags"] & 0x01  # XLF_KERNEL_64: 64-bit entry at +0x200
    assert hdr["relocatable_kernel"] == 0
    assert hdr["code32_start"] == LOAD_ADDR
    assert hdr["pref_address"] == LOAD_ADDR
    assert hdr["initrd_addr_max"] == 0x7FFF_FFFF
    assert hdr["kernel_alignment"] and hdr["kernel_alignment"] & (hdr["kernel_alignment"] - 1) == 0
    assert hdr["cmdline_size"] >= 255
    # The short jump at 0x200 lands past the header, inside the setup sectors.
    assert hdr["jump"] & 0xFF == 0xEB
    setup_bytes = (hdr["setup_sects"] + 1) * 512
    assert 0x26C <= 0x202 + (hdr["jump"] >> 8) < setup_bytes
    version = image[0x200 + hdr["kernel_version"] :].split(b"\0", 1)[0]
    assert version.startswith(b"aovisor")


def test_bzimage_protected_mode_kernel_sizes_and_entry_points(bzimage_guest: Path) -> None:
    image = bzimage_guest.read_bytes()
    hdr = _header(image)
    kernel = image[(hdr["setup_sects"] + 1) * 512 :]
    assert len(kernel) > 0x200
    assert hdr["syssize"] == (len(kernel) + 15) // 16
    assert len(kernel) <= hdr["init_size"]
    assert hdr["init_size"] % 4096 == 0
    assert kernel[0x000] == 0xFA  # startup_32 (code32_start) begins with cli
    assert kernel[0x200] == 0xFA  # so does startup_64 at +0x200


# --- The builder --------------------------------------------------------------------------------------------


def test_unchanged_sources_are_not_rebuilt_and_changed_ones_are(tmp_path: Path) -> None:
    sources = tmp_path / "guests"
    shutil.copytree(GUESTS_DIR, sources, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    first = build_guest("hello", out, source_dir=sources)
    stamp = first.stat().st_mtime_ns
    assert build_guest("hello", out, source_dir=sources).stat().st_mtime_ns == stamp

    hello = sources / "hello.c"
    hello.write_text(hello.read_text().replace("Hello, world!", "Changed text"))
    rebuilt = build_guest("hello", out, source_dir=sources)
    assert b"Changed text" in rebuilt.read_bytes()
    assert b"Hello, world!" not in rebuilt.read_bytes()

    # A runtime header is an input of every object: changing it rebuilds too.
    key = (out / ".hello.elf.key").read_text()
    com1 = rebuilt.read_bytes()
    header = sources / "runtime" / "layout.h"
    header.write_text(header.read_text().replace("#define COM1_BASE 0x3f8", "#define COM1_BASE 0x2f8"))
    com2 = build_guest("hello", out, source_dir=sources).read_bytes()
    assert (out / ".hello.elf.key").read_text() != key
    assert com2 != com1


def test_compile_error_names_the_file(tmp_path: Path) -> None:
    sources = tmp_path / "guests"
    shutil.copytree(GUESTS_DIR, sources, ignore=shutil.ignore_patterns("__pycache__"))
    (sources / "hello.c").write_text("this is not C\n")
    with pytest.raises(GuestBuildError, match=r"compile hello\.c failed"):
        build_guest("hello", tmp_path / "out", source_dir=sources)


def test_missing_gcc_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from guests import build

    build._toolchain.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no gcc, ld or objcopy
    try:
        with pytest.raises(GuestBuildError, match=r"`gcc` was not found.*apt-get install gcc binutils"):
            build_guest("hello", tmp_path / "out")
    finally:
        build._toolchain.cache_clear()


def test_unknown_guest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GuestBuildError, match=r"unknown guest 'nope'; known: hello, .*bzimage"):
        build_guest("nope", tmp_path)


def test_cli_builds_named_guests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hello", BZIMAGE_GUEST_NAME, "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "hello.elf"), str(tmp_path / "bzimage-guest")]
    assert main(["nope", "-o", str(tmp_path)]) == 1
    assert "unknown guest 'nope'" in capsys.readouterr().err


# --- Behaviour under the reference VMM (QEMU microvm with KVM) ---------------------------------------------

QEMU = shutil.which("qemu-system-x86_64")
POWEROFF_STATUS = (0x34 << 1) | 1  # isa-debug-exit at 0x600 turns the power-off write into this exit status


def _kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


needs_qemu = pytest.mark.skipif(
    QEMU is None or not _kvm_usable(), reason="needs qemu-system-x86_64 and /dev/kvm (the reference VMM)"
)


def _boot(kernel: Path, *extra: str, smp: int = 1) -> list[str]:
    assert QEMU is not None
    cmd = [
        QEMU,
        "-M",
        "microvm",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-m",
        "256M",
        "-smp",
        str(smp),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0x600,iosize=1",
        "-kernel",
        str(kernel),
        *extra,
    ]
    result = subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == POWEROFF_STATUS, f"exit {result.returncode}\n{output}\n{result.stderr!r}"
    return output.splitlines()


def _mmix_lcg(iterations: int) -> int:
    x = 1
    for _ in range(iterations):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
    return x


@needs_qemu
def test_hello_prints_its_line(guest: Callable[[str], Path]) -> None:
    assert _boot(guest("hello")) == ["Hello, world! from aovisor guest"]


@needs_qemu
def test_cpl3_computes_at_cpl3(guest: Callable[[str], Path]) -> None:
    assert _boot(guest("cpl3"), "-append", "count=5000") == [
        "cpl3: running at CPL 3",
        f"cpl3: 5000 iterations, result 0x{_mmix_lcg(5000):016x}",
        "cpl3 ok",
    ]


@needs_qemu
def test_pio_out_and_in(guest: Callable[[str], Path]) -> None:
    lines = _boot(guest("pio"), "-append", "count=500")
    assert lines == ["pio: out 500 x 1 bytes at port 0x80", "pio done 500"]
    # Port 0x3fd is the UART's LSR: idle, it reads THRE|TEMT (0x60).
    assert _boot(guest("pio"), "-append", "count=10 mode=in port=0x3fd") == [
        "pio: in 10 x 1 bytes at port 0x3fd",
        f"pio in sum 0x{10 * 0x60:016x}",
        "pio done 10",
    ]


@needs_qemu
def test_mmio_write_and_bad_arguments(guest: Callable[[str], Path]) -> None:
    assert _boot(guest("mmio"), "-append", "count=500") == [
        "mmio: write 500 x 4 bytes at 0xd0000000",
        "mmio done 500",
    ]
    lines = _boot(guest("mmio"), "-append", "addr=0xd0000002")
    assert lines == ["mmio: bad arguments: addr=0xd0000002 size=4"]


@needs_qemu
def test_timer_gets_lapic_and_pit_interrupts(guest: Callable[[str], Path]) -> None:
    lines = _boot(guest("timer"), "-append", "ticks=2")
    assert lines[:10] == [
        "timer: lapic phase",
        "lapic tick 1",
        "lapic tick 2",
        "timer: tsc-deadline phase",  # QEMU offers TSC-deadline mode with an in-kernel LAPIC
        "tsc-deadline tick 1",
        "tsc-deadline tick 2",
        "timer: pit phase",
        "pit tick 1",
        "pit tick 2",
        "timer: pit arrived on ioapic pin 2",  # QEMU routes the PIT to GSI 2
    ]
    # microvm's PIT (QEMU's own, in user space) does not replay the ticks a guest missed either.
    assert re.fullmatch(r"timer: [12] pit ticks after 5 missed", lines[10]), lines[10]
    assert lines[11:] == ["timer ok"]


@needs_qemu
def test_smp_starts_every_cpu(guest: Callable[[str], Path]) -> None:
    lines = _boot(guest("smp"), smp=2)
    assert lines == [
        "smp: 2 cpus in MADT",
        'smp: cpuid: hypervisor "KVMKVMKVM", 2 logical cpus per package',
        f'smp: cpuid: brand "{host_model_name()}"',
        "smp: bsp apic id 0, cpuid apic id 0, x2apic id 0",
        "cpu online: apic id 1, cpuid apic id 1, x2apic id 1",
        "smp: all 2 cpus online",
    ]


@needs_qemu
def test_pvhinfo_reports_cmdline_memory_and_initrd(guest: Callable[[str], Path], tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    payload = bytes(range(256)) * 40 + b"tail"
    initrd.write_bytes(payload)
    lines = _boot(guest("pvhinfo"), "-append", "hello there", "-initrd", str(initrd))
    assert lines[:2] == ["pvhinfo: start_info version 1", "cmdline: hello there"]
    assert lines[2].startswith("memmap: ") and lines[2].endswith(" MiB usable")
    usable_mib = int(lines[2].split(", ")[1].split()[0])
    assert 240 <= usable_mib < 256
    checksum = sum(payload) & 0xFFFFFFFF
    assert lines[3:5] == ["modules: 1", f"initrd: {len(payload)} bytes, sum 0x{checksum:08x}"]
    assert lines[5].startswith("rsdp: 0x")


@needs_qemu
def test_bzimage_reports_its_boot_params(bzimage_guest: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    payload = os.urandom(5000)
    initrd.write_bytes(payload)
    lines = _boot(bzimage_guest, "-append", "console=ttyS0 hello", "-initrd", str(initrd))
    assert lines[:2] == ["bzimage: boot_params ok", "cmdline: console=ttyS0 hello"]
    assert lines[2].startswith("e820: ") and lines[2].endswith(" MiB usable")
    assert lines[3:] == [f"initrd: 5000 bytes, sum 0x{sum(payload) & 0xFFFFFFFF:08x}", "loader: 0xb0"]


@needs_qemu
def test_exception_is_reported_not_hung(tmp_path: Path) -> None:
    sources = tmp_path / "guests"
    shutil.copytree(GUESTS_DIR, sources, ignore=shutil.ignore_patterns("__pycache__"))
    hello = sources / "hello.c"
    hello.write_text(hello.read_text().replace("poweroff();", "*(volatile int *)0x200000000ull = 1;"))
    lines = _boot(build_guest("hello", tmp_path / "out", source_dir=sources))
    assert lines[0] == "Hello, world! from aovisor guest"
    assert lines[1].startswith("*** exception 14 (#PF) error 0x2 rip 0x")
    assert lines[1].endswith(" cr2 0x200000000")


def test_bzimage_builds_from_the_cli_name(tmp_path: Path) -> None:
    assert build_guest(BZIMAGE_GUEST_NAME, tmp_path) == build_bzimage_guest(tmp_path)
