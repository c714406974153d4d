"""The POST diagnostic port 0x80: a write-anything sink.

Firmware writes boot progress codes here, and Linux writes it for I/O delays (``outb`` to 0x80 in
``native_io_delay``), so the access must stay trivially cheap.
"""

from __future__ import annotations


class PostCode:
    """Records the last byte written; reads return it, as on most PC chipsets."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def read(self, offset: int, size: int) -> int:
        return self.last

    def write(self, offset: int, size: int, value: int) -> None:
        self.last = value & 0xFF
