"""Reading a cpio "newc" archive back, for tests of the initramfs writers (the kernel's buffer-format.rst)."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SIZE = 110


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(archive: bytes) -> list[Entry]:
    """Every entry up to the trailer (the trailer itself not included); raises ValueError on a bad archive."""
    entries: list[Entry] = []
    offset = 0
    while True:
        header = archive[offset : offset + HEADER_SIZE]
        if len(header) < HEADER_SIZE or header[:6] != b"070701":
            raise ValueError(f"no newc header at offset {offset}")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, file_size, rdev_major, rdev_minor, name_size = (
            fields[1],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        name_start = offset + HEADER_SIZE
        name = archive[name_start : name_start + name_size - 1].decode()
        data_start = _align4(name_start + name_size)
        data = archive[data_start : data_start + file_size]
        offset = _align4(data_start + file_size)
        if name == "TRAILER!!!":
            return entries
        entries.append(Entry(name, mode, (rdev_major, rdev_minor), data))


def _align4(value: int) -> int:
    return (value + 3) & ~3
