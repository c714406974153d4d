"""The L2 initramfs: static busybox, the boot modules, and the scripts that bring up the root image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aovisor.image.cpio import CpioWriter
from aovisor.image.modules import KernelModule

L2_DIR = Path(__file__).resolve().parent / "l2"
# Copied from the initramfs onto the (copy-on-write) root before switch_root, so that changing them does not
# mean rebuilding the root image.
ROOT_OVERLAY = {"lab-init": "lab_init.sh", "fstab": "fstab"}


def write_initramfs(
    path: Path, *, busybox: bytes, modules: list[KernelModule], module_params: Mapping[str, str]
) -> None:
    """An uncompressed newc archive: no decompression for the emulated CPU to do at boot."""
    with path.open("wb") as out:
        cpio = CpioWriter(out)
        for directory in ("bin", "dev", "modules", "newroot", "proc", "sys", "overlay"):
            cpio.directory(directory)
        cpio.char_device("dev/console", 5, 1)
        cpio.file("bin/busybox", busybox, 0o755)
        cpio.symlink("bin/sh", "busybox")
        cpio.file("init", (L2_DIR / "initramfs_init.sh").read_bytes(), 0o755)
        for name, source in ROOT_OVERLAY.items():
            cpio.file(f"overlay/{name}", (L2_DIR / source).read_bytes(), 0o755)
        load_lines = []
        for module in modules:
            cpio.file(f"modules/{module.name}.ko", module.image)
            load_lines.append(f"{module.name} {module_params.get(module.name, '')}".rstrip())
        cpio.file("modules/load", ("\n".join(load_lines) + "\n").encode())
        cpio.close()
