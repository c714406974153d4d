"""A writer for the cpio "newc" archive format, the format of a Linux initramfs.

Format: Documentation/driver-api/early-userspace/buffer-format.rst in the kernel tree. Each entry is a
110-byte ASCII header (magic "070701" and 13 eight-digit hex fields), the NUL-terminated name padded to a
multiple of 4, then the data padded to a multiple of 4. The archive ends with an entry named "TRAILER!!!".
Linux unpacks archives that follow each other in one initramfs image too, so a caller may append its own
archive to a built one.
"""

from __future__ import annotations

import stat
from typing import BinaryIO

_MAGIC = b"070701"


class CpioWriter:
    """Writes a newc archive entry by entry; call `close()` to append the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._offset = 0
        self._next_inode = 1

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, b"", inode=0)

    def _entry(
        self, name: str, mode: int, data: bytes, *, rdev: tuple[int, int] = (0, 0), inode: int | None = None
    ) -> None:
        if inode is None:
            inode = self._next_inode
            self._next_inode += 1
        encoded_name = name.lstrip("/").encode() + b"\0"
        fields = (
            inode,
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,  # nlink
            0,  # mtime: fixed, so the archive is reproducible
            len(data),
            0,  # dev major
            0,  # dev minor
            rdev[0],
            rdev[1],
            len(encoded_name),
            0,  # check (unused by newc)
        )
        header = _MAGIC + b"".join(b"%08X" % value for value in fields)
        self._write(header + encoded_name)
        self._pad()
        self._write(data)
        self._pad()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self._offset % 4))
