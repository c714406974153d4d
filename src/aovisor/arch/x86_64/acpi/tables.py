"""What every ACPI table shares: the 36-byte System Description Table header, the checksum, and the
Generic Address Structure (ACPI 6.5 §5.2.3, §5.2.6)."""

from __future__ import annotations

import struct
from enum import IntEnum

OEM_ID = b"AOVSOR"  # 6 bytes
OEM_REVISION = 1
CREATOR_ID = b"AOVS"  # the "ASL compiler" id: the tool that wrote the table
CREATOR_REVISION = 1

SDT_HEADER_SIZE = 36
_SDT_HEADER = struct.Struct("<4sIBB6s8sI4sI")
_CHECKSUM_OFFSET = 9
assert _SDT_HEADER.size == SDT_HEADER_SIZE


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes ``data`` (with that byte zeroed) sum to 0 modulo 256."""
    return -sum(data) & 0xFF


def oem_table_id(signature: bytes) -> bytes:
    """``AOV`` + signature, space-padded to 8 bytes (e.g. ``AOVFACP ``), as firmware conventionally does."""
    return (b"AOV" + signature).ljust(8, b" ")


def sdt(signature: bytes, revision: int, body: bytes | bytearray) -> bytes:
    """A complete table: header (length, OEM fields, creator) + ``body``, with the checksum filled in."""
    if len(signature) != 4:
        raise ValueError(f"ACPI table signature {signature!r} must be 4 bytes")
    length = SDT_HEADER_SIZE + len(body)
    table = bytearray(
        _SDT_HEADER.pack(
            signature,
            length,
            revision,
            0,
            OEM_ID,
            oem_table_id(signature),
            OEM_REVISION,
            CREATOR_ID,
            CREATOR_REVISION,
        )
    )
    table += body
    table[_CHECKSUM_OFFSET] = checksum(table)
    return bytes(table)


class AddressSpaceId(IntEnum):
    """Generic Address Structure address spaces (Table 5.1)."""

    SYSTEM_MEMORY = 0
    SYSTEM_IO = 1


class AccessSize(IntEnum):
    """Generic Address Structure access sizes (Table 5.1)."""

    UNDEFINED = 0
    BYTE = 1
    WORD = 2
    DWORD = 3
    QWORD = 4


GAS_SIZE = 12
_GAS = struct.Struct("<BBBBQ")
assert _GAS.size == GAS_SIZE


def generic_address(
    space: AddressSpaceId, address: int, bit_width: int, access_size: AccessSize, bit_offset: int = 0
) -> bytes:
    """A 12-byte Generic Address Structure describing a register."""
    return _GAS.pack(space, bit_width, bit_offset, access_size, address)


def io_port_register(port: int) -> bytes:
    """An 8-bit register at an I/O port, accessed with byte I/O: the FADT's sleep and reset registers."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"I/O port {port:#x} out of range")
    return generic_address(AddressSpaceId.SYSTEM_IO, port, 8, AccessSize.BYTE)
