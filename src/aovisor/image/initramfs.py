"""The default guest's initramfs: static busybox, the decompressed modules, ``/init`` (init_script.py)."""

from __future__ import annotations

from pathlib import Path, PurePath

from aovisor.image.cpio import CpioWriter
from aovisor.image.init_script import (
    INIT_SCRIPT,
    MODULE_LIST,
    MODULES_DIR,
    POWER_BUTTON_HANDLER,
    POWER_BUTTON_SCRIPT,
)
from aovisor.image.modules import KernelModule

_HANDLER_DIRECTORIES = tuple(
    str(p) for p in reversed(PurePath(POWER_BUTTON_HANDLER).parents) if str(p) != "."
)
_DIRECTORIES = ("bin", "dev", "proc", "sys", "tmp", "root", "lib", MODULES_DIR, *_HANDLER_DIRECTORIES)
# The kernel opens /dev/console for init's stdin/stdout before anything is mounted: it must be in the archive.
_CONSOLE = ("dev/console", 5, 1)


def write_guest_initramfs(path: Path, *, busybox: bytes, modules: list[KernelModule]) -> None:
    """An uncompressed newc archive (nothing for the guest to decompress); ``modules`` in load order."""
    with path.open("wb") as out:
        cpio = CpioWriter(out)
        for directory in _DIRECTORIES:
            cpio.directory(directory, 0o1777 if directory == "tmp" else 0o755)
        cpio.char_device(*_CONSOLE)
        cpio.file("bin/busybox", busybox, 0o755)
        cpio.symlink("bin/sh", "busybox")
        cpio.file("init", INIT_SCRIPT.encode(), 0o755)
        cpio.file(POWER_BUTTON_HANDLER, POWER_BUTTON_SCRIPT.encode(), 0o755)
        for module in modules:
            cpio.file(f"{MODULES_DIR}/{module.name}.ko", module.image)
        cpio.file(MODULE_LIST, "".join(f"{module.name}\n" for module in modules).encode())
        cpio.close()
