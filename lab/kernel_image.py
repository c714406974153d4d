"""The kernel image: unpacking the compressed vmlinux from a bzImage."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.errors import LabBuildError

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"


def extract_vmlinux(bzimage: Path, vmlinux: Path) -> None:
    """Write the uncompressed ELF kernel inside `bzimage` to `vmlinux` (QEMU boots it through PVH)."""
    # Boot protocol (Documentation/arch/x86/boot.rst): setup_sects at 0x1f1; the protected-mode code starts
    # after (setup_sects + 1) * 512 bytes; payload_offset (0x248) and payload_length (0x24c) locate the
    # compressed vmlinux in it.
    data = bzimage.read_bytes()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise LabBuildError(f"{bzimage} is not a bzImage")
    setup_sects = data[0x1F1] or 4
    payload_offset = int.from_bytes(data[0x248:0x24C], "little")
    payload_length = int.from_bytes(data[0x24C:0x250], "little")
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start : start + payload_length]
    # For zstd and xz the kernel build appends the uncompressed size (4 bytes) after the stream.
    if payload.startswith(_ZSTD_MAGIC):
        completed = subprocess.run(
            ["zstd", "-d", "-c", "-q"], input=payload[:-4], capture_output=True, check=False
        )
        if completed.returncode != 0:
            raise LabBuildError(f"zstd could not unpack the kernel payload: {completed.stderr.decode()}")
        elf = completed.stdout
    elif payload.startswith(_XZ_MAGIC):
        import lzma

        elf = lzma.decompress(payload[:-4])
    elif payload.startswith(_GZIP_MAGIC):
        import gzip

        elf = gzip.decompress(payload)
    else:
        raise LabBuildError(f"unknown kernel payload compression (magic {payload[:6].hex()})")
    if not elf.startswith(b"\x7fELF"):
        raise LabBuildError("the unpacked kernel payload is not an ELF vmlinux")
    vmlinux.write_bytes(elf)
