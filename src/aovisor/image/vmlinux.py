"""The uncompressed kernel inside a bzImage: an ELF ``vmlinux`` with a PVH entry note.

Boot protocol (Documentation/arch/x86/boot.rst): ``setup_sects`` at 0x1f1; the protected-mode code starts
after ``(setup_sects + 1) * 512`` bytes; ``payload_offset`` (0x248) and ``payload_length`` (0x24c) locate the
compressed vmlinux in it.  arch/x86/boot/compressed/Makefile appends the uncompressed size (4 bytes,
little-endian) to zstd and xz payloads; a gzip stream ends with that size already (its ISIZE field).
"""

from __future__ import annotations

from pathlib import Path

from aovisor.image.errors import ImageBuildError
from aovisor.image.tools import run_tool

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGICS = (b"\x1f\x8b", b"\x1f\x9e")
_HEADER_MAGIC_AT = 0x202
_SETUP_SECTS_AT = 0x1F1
_PAYLOAD_AT = 0x248


def extract_vmlinux(bzimage: bytes, *, name: str = "the bzImage") -> bytes:
    """The ELF vmlinux that ``bzimage`` carries as its compressed payload (zstd needs the ``zstd`` tool:
    Python 3.11 has no zstd module)."""
    if len(bzimage) < _PAYLOAD_AT + 8 or bzimage[_HEADER_MAGIC_AT : _HEADER_MAGIC_AT + 4] != b"HdrS":
        raise ImageBuildError(f"{name} is not a bzImage (no HdrS header)")
    setup_sects = bzimage[_SETUP_SECTS_AT] or 4  # 0 means 4 (boot.rst)
    payload_offset = int.from_bytes(bzimage[_PAYLOAD_AT : _PAYLOAD_AT + 4], "little")
    payload_length = int.from_bytes(bzimage[_PAYLOAD_AT + 4 : _PAYLOAD_AT + 8], "little")
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start : start + payload_length]
    if len(payload) != payload_length or payload_length < 8:
        raise ImageBuildError(f"{name}: the payload lies outside the file")
    expected_size = int.from_bytes(payload[-4:], "little")
    if payload.startswith(_ZSTD_MAGIC):
        elf = run_tool(["zstd", "-d", "-c", "-q"], input=payload[:-4], hint="install Debian's zstd package")
    elif payload.startswith(_XZ_MAGIC):
        import lzma

        elf = lzma.decompress(payload[:-4])
    elif payload[:2] in _GZIP_MAGICS:
        import gzip

        elf = gzip.decompress(payload)
    else:
        raise ImageBuildError(f"{name}: unknown payload compression (magic {payload[:6].hex()})")
    if len(elf) != expected_size or not elf.startswith(b"\x7fELF"):
        raise ImageBuildError(f"{name}: the payload did not unpack to the announced ELF vmlinux")
    return elf


def extract_vmlinux_file(bzimage: Path, vmlinux: Path) -> None:
    """Write the vmlinux of the bzImage file ``bzimage`` to ``vmlinux``."""
    vmlinux.write_bytes(extract_vmlinux(bzimage.read_bytes(), name=str(bzimage)))
