"""Reading files straight into guest memory, and placing the initramfs.

Files are read with ``preadv`` into a view of guest RAM: a 100 MiB initramfs never passes through a
Python ``bytes`` object.
"""

from __future__ import annotations

import os
import stat

from aovisor.errors import LoaderError
from aovisor.lean_typing import NamedTuple
from aovisor.memory import GuestMemory

PAGE_SIZE = 4096
# Linux transfers at most 0x7ffff000 bytes per read call; larger views are read in chunks.
_MAX_READ = 1 << 30


def read_exact_into(fd: int, view: memoryview, offset: int, path: str) -> None:
    """Fill ``view`` with the file's bytes at ``offset``; a short file is a LoaderError naming ``path``."""
    done = 0
    while done < len(view):
        try:
            n = os.preadv(fd, [view[done : done + _MAX_READ]], offset + done)
        except OSError as exc:
            raise LoaderError(f"{path}: read failed: {exc.strerror}") from exc
        if n == 0:
            raise LoaderError(
                f"{path}: file is truncated: expected {len(view)} bytes at offset {offset:#x}, found {done}"
            )
        done += n


class LoadedInitramfs(NamedTuple):
    """Where the initramfs was put in guest RAM."""

    gpa: int
    size: int


def load_initramfs(mem: GuestMemory, path: str, *, lowest: int, top: int) -> LoadedInitramfs:
    """Read ``path`` into guest RAM, page-aligned and as high as possible inside ``[lowest, top)``.

    High placement is what boot loaders conventionally do (boot.rst: "an initrd should be placed near end
    of memory"): it keeps the initramfs clear of the kernel, which decompresses and grows upwards.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LoaderError(f"{path}: cannot open initramfs: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LoaderError(f"{path}: initramfs is not a regular file")
        size = st.st_size
        if size == 0:
            raise LoaderError(f"{path}: initramfs is empty")
        floor = _align_up(lowest, PAGE_SIZE)
        gpa = (top - size) & ~(PAGE_SIZE - 1)
        if top - size < floor or not mem.contains(gpa, size):
            free = max(0, top - floor)
            raise LoaderError(
                f"{path}: initramfs is {_human_size(size)} but only {_human_size(free)} of guest RAM is "
                f"free between the kernel ({floor:#x}) and {top:#x}; give the VM more memory (--memory)"
            )
        read_exact_into(fd, mem.view(gpa, size), 0, path)
        return LoadedInitramfs(gpa, size)
    finally:
        os.close(fd)


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _human_size(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size} bytes"
