"""Build the freestanding guest programs in guests/ with the system gcc and binutils.

Usable as a module (the tests and the Makefile call ``build_guest`` / ``build_bzimage_guest``) and as a
command: ``python guests/build.py [NAME...] -o OUTDIR`` (no names: build everything).

PVH guests become ``OUTDIR/NAME.elf``; the bzImage-format guest becomes ``OUTDIR/bzimage-guest``.
Builds are cached: an output is rebuilt only when the hash of its sources, the runtime, the linker scripts
and this file (which holds the flags) changes. Objects are cached by the same kind of hash under
``OUTDIR/.guest-build/``, so the runtime is compiled once for all guests.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent

# PVH ELF guests (build_guest). The bzImage-format guest is built by build_bzimage_guest.
GUEST_NAMES: tuple[str, ...] = (
    *("hello", "cpl3", "pio", "mmio", "timer", "smp", "pvhinfo", "reset", "echo"),
    *("virtio_blk", "virtio_rng", "virtio_net", "virtio_console", "virtio_vsock"),
    "ticker",
)
BZIMAGE_GUEST_NAME = "bzimage"
BZIMAGE_OUTPUT_NAME = "bzimage-guest"

# Sources of each PVH guest besides the runtime, relative to guests/.
_GUEST_SOURCES: dict[str, tuple[str, ...]] = {
    "hello": ("hello.c",),
    "cpl3": ("cpl3.c",),
    "pio": ("pio.c",),
    "mmio": ("mmio.c",),
    "timer": ("timer.c",),
    "smp": ("smp.c", "smp_trampoline.S"),
    "pvhinfo": ("pvhinfo.c",),
    "reset": ("reset.c",),
    "mmio_forms": ("mmio_forms.c",),
    "echo": ("echo.c",),
    "virtio_blk": ("virtio_blk.c", "runtime/pci.c", "runtime/virtio.c"),
    "virtio_rng": ("virtio_rng.c", "runtime/pci.c", "runtime/virtio.c"),
    "virtio_net": ("virtio_net.c", "runtime/pci.c", "runtime/virtio.c"),
    "virtio_console": ("virtio_console.c", "runtime/pci.c", "runtime/virtio.c"),
    "virtio_vsock": ("virtio_vsock.c", "runtime/pci.c", "runtime/virtio.c"),
    "ticker": ("ticker.c",),
}
# The runtime shared by every guest; the PVH entry files are added for PVH guests only.
_RUNTIME_SOURCES = (
    "runtime/boot.S",
    "runtime/serial.c",
    "runtime/printf.c",
    "runtime/cmdline.c",
    "runtime/string.c",
    "runtime/power.c",
    "runtime/trap.c",
    "runtime/acpi.c",
    "runtime/tsc.c",
)
_PVH_ENTRY_SOURCES = ("runtime/pvh.S", "runtime/pvh_entry.c")
_BZIMAGE_SOURCES = ("bzimage/setup.S", "bzimage/head.S", "bzimage/main.c")
_PVH_LINKER_SCRIPT = "runtime/pvh.ld"
_BZIMAGE_LINKER_SCRIPT = "bzimage/bzimage.ld"

_COMMON_FLAGS = (
    "-m64",
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-fno-pie",
    "-fno-pic",
    "-mcmodel=small",
    "-mno-red-zone",  # interrupts at CPL0 push onto the interrupted stack
    "-mgeneral-regs-only",  # no SSE/x87 state to set up or save in interrupt handlers
    "-fcf-protection=none",  # no endbr64: keep to instructions a CPL0 emulator certainly knows
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-I",
    "runtime",
)
CFLAGS: tuple[str, ...] = (
    *_COMMON_FLAGS,
    "-std=gnu11",
    "-O2",
    "-fno-strict-aliasing",
    "-fno-common",
    "-fno-tree-loop-distribute-patterns",  # else gcc turns memset's own loop into a call to memset
    "-Wall",
    "-Wextra",
)
ASFLAGS: tuple[str, ...] = (*_COMMON_FLAGS, "-D__ASSEMBLY__")
LDFLAGS: tuple[str, ...] = (
    "-nostdlib",
    "-static",
    "--no-dynamic-linker",
    "--build-id=none",
    "-z",
    "noexecstack",
    "-z",
    "max-page-size=0x1000",
    "-L",
    "runtime",
)

_INSTALL_HINT = "install a C toolchain for x86-64, e.g. `apt-get install gcc binutils` on Debian/Ubuntu"


class GuestBuildError(RuntimeError):
    """A guest could not be built (missing toolchain, compiler or linker error)."""


def build_guest(name: str, outdir: Path, *, source_dir: Path = GUESTS_DIR) -> Path:
    """Build PVH guest ``name`` into ``outdir/NAME.elf`` (cached) and return its path.

    ``build_guest("bzimage", ...)`` is the same as ``build_bzimage_guest``. ``source_dir`` is the guests
    tree to build from (tests point it at a copy).
    """
    if name == BZIMAGE_GUEST_NAME:
        return build_bzimage_guest(outdir, source_dir=source_dir)
    if name not in _GUEST_SOURCES:
        known = ", ".join((*GUEST_NAMES, BZIMAGE_GUEST_NAME))
        raise GuestBuildError(f"unknown guest {name!r}; known: {known}")
    sources = (*_RUNTIME_SOURCES, *_PVH_ENTRY_SOURCES, *_GUEST_SOURCES[name])
    output = Path(outdir).resolve() / f"{name}.elf"
    return _build(source_dir, sources, _PVH_LINKER_SCRIPT, output, flat_binary=False)


def build_bzimage_guest(outdir: Path, *, source_dir: Path = GUESTS_DIR) -> Path:
    """Build the bzImage-format guest into ``outdir/bzimage-guest`` (cached) and return its path."""
    sources = (*_RUNTIME_SOURCES, *_BZIMAGE_SOURCES)
    output = Path(outdir).resolve() / BZIMAGE_OUTPUT_NAME
    return _build(source_dir, sources, _BZIMAGE_LINKER_SCRIPT, output, flat_binary=True)


def build_all(outdir: Path, *, source_dir: Path = GUESTS_DIR) -> list[Path]:
    """Build every guest (the PVH ones and the bzImage one); return the output paths."""
    paths = [build_guest(name, outdir, source_dir=source_dir) for name in GUEST_NAMES]
    paths.append(build_bzimage_guest(outdir, source_dir=source_dir))
    return paths


# --- Implementation --------------------------------------------------------------------------------------


def _build(
    source_dir: Path, sources: Sequence[str], linker_script: str, output: Path, *, flat_binary: bool
) -> Path:
    source_dir = Path(source_dir).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    headers = _shared_inputs(source_dir, linker_script)
    key = _hash_inputs(source_dir, [*headers, *sources], extra=("flat" if flat_binary else "elf",))
    stamp = output.with_name(f".{output.name}.key")
    if output.exists() and stamp.exists() and stamp.read_text() == key:
        return output

    tools = _toolchain()
    cache_dir = output.parent / ".guest-build"
    cache_dir.mkdir(exist_ok=True)
    header_key = _hash_inputs(source_dir, headers)
    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(lambda src: _compile(tools, source_dir, src, header_key, cache_dir), sources))

    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        elf = Path(tmp) / "image.elf"
        # The bzImage's intermediate ELF has one RWX segment by design (it only feeds objcopy).
        quiet = ["--no-warn-rwx-segments"] if flat_binary and tools.ld_warns_rwx else []
        _run(
            [tools.ld, *LDFLAGS, *quiet, "-T", linker_script, "-o", str(elf), *map(str, objects)],
            cwd=source_dir,
            what=f"link {output.name}",
        )
        if flat_binary:
            flat = Path(tmp) / "image.bin"
            _run([tools.objcopy, "-O", "binary", str(elf), str(flat)], cwd=source_dir, what="objcopy")
            produced = flat
        else:
            produced = elf
        staged = output.with_name(f".{output.name}.tmp{os.getpid()}")
        shutil.copyfile(produced, staged)
        os.replace(staged, output)
    stamp_tmp = stamp.with_name(f"{stamp.name}.tmp{os.getpid()}")
    stamp_tmp.write_text(key)
    os.replace(stamp_tmp, stamp)
    return output


def _shared_inputs(source_dir: Path, linker_script: str) -> list[str]:
    """Files every compile or link may read besides its own source: headers and linker scripts."""
    names = {linker_script}
    for pattern in ("runtime/*.h", "runtime/*.ld", "bzimage/*.h", "*.h"):
        names.update(str(p.relative_to(source_dir)) for p in source_dir.glob(pattern))
    return sorted(names)


def _hash_inputs(source_dir: Path, names: Iterable[str], extra: Sequence[str] = ()) -> str:
    digest = hashlib.sha256()
    # This file holds the flags and the source lists: any change to it invalidates every output.
    digest.update(Path(__file__).read_bytes())
    for part in extra:
        digest.update(part.encode() + b"\0")
    for name in names:
        path = source_dir / name
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise GuestBuildError(f"guest source missing: {path}") from None
        digest.update(name.encode() + b"\0" + len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()


def _compile(tools: _Toolchain, source_dir: Path, source: str, header_key: str, cache_dir: Path) -> Path:
    key = _hash_inputs(source_dir, [source], extra=(header_key,))
    obj = cache_dir / f"{Path(source).stem}-{key[:20]}.o"
    if obj.exists():
        return obj
    flags = ASFLAGS if source.endswith(".S") else CFLAGS
    staged = obj.with_name(f"{obj.name}.tmp{os.getpid()}-{os.urandom(4).hex()}")
    _run([tools.gcc, *flags, "-c", source, "-o", str(staged)], cwd=source_dir, what=f"compile {source}")
    os.replace(staged, obj)
    return obj


def _run(cmd: list[str], *, cwd: Path, what: str) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GuestBuildError(
            f"{what} failed (exit {result.returncode}):\n  {' '.join(cmd)}\n{result.stdout}{result.stderr}"
        )
    if result.stderr.strip():
        # Warnings do not fail the build, but they should be seen.
        print(f"guests/build.py: {what}:\n{result.stderr}", file=sys.stderr)


@dataclass(frozen=True)
class _Toolchain:
    gcc: str
    ld: str
    objcopy: str
    ld_warns_rwx: bool  # binutils >= 2.39 warns about RWX segments and has --no-warn-rwx-segments


def _output_of(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


@cache
def _toolchain() -> _Toolchain:
    found: dict[str, str] = {}
    for tool in ("gcc", "ld", "objcopy"):
        path = shutil.which(tool)
        if path is None:
            raise GuestBuildError(f"`{tool}` was not found on PATH; the guests need it: {_INSTALL_HINT}")
        found[tool] = path
    machine = _output_of([found["gcc"], "-dumpmachine"]).strip()
    if not machine.startswith("x86_64"):
        raise GuestBuildError(f"gcc targets {machine or 'an unknown machine'}, not x86_64: {_INSTALL_HINT}")
    ld_warns_rwx = "--no-warn-rwx-segments" in _output_of([found["ld"], "--help"])
    return _Toolchain(found["gcc"], found["ld"], found["objcopy"], ld_warns_rwx)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"guests to build (default: all): {', '.join((*GUEST_NAMES, BZIMAGE_GUEST_NAME))}",
    )
    parser.add_argument("-o", "--outdir", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    try:
        if args.names:
            paths = [build_guest(name, args.outdir) for name in args.names]
        else:
            paths = build_all(args.outdir)
    except GuestBuildError as exc:
        print(f"guests/build.py: error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
