"""A minimal AML byte-code writer: the subset of ACPI Machine Language a VMM's DSDT needs.

Every function returns the encoded bytes of one term (ACPI 6.5 §20.2, "AML Grammar Definition"), so
terms compose by nesting calls::

    device("COM1",
           name("_HID", eisa_id("PNP0501")),
           name("_CRS", resource_template(io(0x3F8, 8), irq_no_flags(4))))

Resource descriptors (§6.4) are plain bytes too; :func:`resource_template` wraps them in a Buffer and
appends the End Tag.  Names are validated here (4-character segments of ``A-Z 0-9 _``, not starting with
a digit) so a typo fails when the table is built, not when the guest's interpreter trips over it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum

# --- Opcodes (§20.2.5) ----------------------------------------------------------------------------
_ZERO_OP = 0x00
_ONE_OP = 0x01
_NAME_OP = 0x08
_BYTE_PREFIX = 0x0A
_WORD_PREFIX = 0x0B
_DWORD_PREFIX = 0x0C
_STRING_PREFIX = 0x0D
_QWORD_PREFIX = 0x0E
_SCOPE_OP = 0x10
_BUFFER_OP = 0x11
_PACKAGE_OP = 0x12
_METHOD_OP = 0x14
_DUAL_NAME_PREFIX = 0x2E
_MULTI_NAME_PREFIX = 0x2F
_EXT_OP_PREFIX = 0x5B
_ROOT_CHAR = ord("\\")
_PARENT_PREFIX_CHAR = ord("^")
_LOCAL0_OP = 0x60
_ARG0_OP = 0x68
_STORE_OP = 0x70
_AND_OP = 0x7B
_NOTIFY_OP = 0x86
_LEQUAL_OP = 0x93
_IF_OP = 0xA0
_RETURN_OP = 0xA4
# Extended opcodes follow _EXT_OP_PREFIX.
_OP_REGION_EXT = 0x80
_FIELD_EXT = 0x81
_DEVICE_EXT = 0x82

_NULL_NAME = b"\x00"

# PkgLength (§20.2.4): the largest value each encoding size can carry.
_PKG_LENGTH_MAX = (0x3F, 0xFFF, 0xF_FFFF, 0xFFF_FFFF)


# --- Lengths and names ----------------------------------------------------------------------------
def _encode_pkg_value(value: int, size: int) -> bytes:
    """Encode ``value`` in exactly ``size`` PkgLength bytes.

    One byte holds 0..63 in bits 5:0.  Longer forms put the count of following bytes in bits 7:6 of the
    lead byte, the value's low nibble in its bits 3:0, and the rest of the value, little-endian, in the
    following bytes.
    """
    if size == 1:
        return bytes([value])
    lead = ((size - 1) << 6) | (value & 0x0F)
    rest = value >> 4
    return bytes([lead]) + rest.to_bytes(size - 1, "little")


def pkg_length(body_length: int) -> bytes:
    """The PkgLength for a package whose contents after the PkgLength are ``body_length`` bytes.

    The encoded value counts the PkgLength bytes themselves, so the size is chosen with them included.
    """
    if body_length < 0:
        raise ValueError(f"negative package length {body_length}")
    for size, limit in enumerate(_PKG_LENGTH_MAX, start=1):
        if body_length + size <= limit:
            return _encode_pkg_value(body_length + size, size)
    raise ValueError(f"package of {body_length} bytes is too long for AML (max 256 MiB)")


def _field_length(bits: int) -> bytes:
    """A field unit's width in bits: PkgLength encoding, but the value does not count its own bytes."""
    if not 0 < bits <= _PKG_LENGTH_MAX[-1]:
        raise ValueError(f"field width {bits} bits is out of range")
    for size, limit in enumerate(_PKG_LENGTH_MAX, start=1):
        if bits <= limit:
            return _encode_pkg_value(bits, size)
    raise AssertionError("unreachable")  # pragma: no cover


def _with_pkg_length(body: bytes) -> bytes:
    return pkg_length(len(body)) + body


def name_seg(segment: str) -> bytes:
    """One 4-character NameSeg; shorter names are ``_``-padded as ASL compilers do (``_S5`` is ``_S5_``)."""
    if not 1 <= len(segment) <= 4:
        raise ValueError(f"AML name segment {segment!r} must be 1 to 4 characters")
    lead, rest = segment[0], segment[1:]
    if not (("A" <= lead <= "Z") or lead == "_"):
        raise ValueError(f"AML name segment {segment!r} must start with A-Z or _")
    if not all(("A" <= c <= "Z") or ("0" <= c <= "9") or c == "_" for c in rest):
        raise ValueError(f"AML name segment {segment!r} may only contain A-Z, 0-9 and _")
    return segment.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    r"""A NameString: an optional ``\`` (root) or ``^`` run (parent scopes), then dot-separated segments."""
    prefix = b""
    rest = path
    if rest.startswith("\\"):
        prefix, rest = bytes([_ROOT_CHAR]), rest[1:]
    else:
        carets = len(rest) - len(rest.lstrip("^"))
        prefix, rest = bytes([_PARENT_PREFIX_CHAR]) * carets, rest[carets:]
    if not rest:
        if not prefix:
            raise ValueError("empty AML name")
        return prefix + _NULL_NAME
    segments = [name_seg(s) for s in rest.split(".")]
    if len(segments) == 1:
        return prefix + segments[0]
    if len(segments) == 2:
        return prefix + bytes([_DUAL_NAME_PREFIX]) + b"".join(segments)
    if len(segments) > 255:
        raise ValueError(f"AML name {path!r} has too many segments")
    return prefix + bytes([_MULTI_NAME_PREFIX, len(segments)]) + b"".join(segments)


# --- Data objects ---------------------------------------------------------------------------------
def integer(value: int) -> bytes:
    """The shortest encoding of an unsigned integer: ZeroOp, OneOp, or a Byte/Word/DWord/QWord constant."""
    if value < 0 or value > 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"AML integer {value} is not a 64-bit unsigned value")
    if value == 0:
        return bytes([_ZERO_OP])
    if value == 1:
        return bytes([_ONE_OP])
    if value <= 0xFF:
        return bytes([_BYTE_PREFIX, value])
    if value <= 0xFFFF:
        return bytes([_WORD_PREFIX]) + struct.pack("<H", value)
    if value <= 0xFFFF_FFFF:
        return bytes([_DWORD_PREFIX]) + struct.pack("<I", value)
    return bytes([_QWORD_PREFIX]) + struct.pack("<Q", value)


def string(text: str) -> bytes:
    """A String constant: ASCII 0x01-0x7F, NUL-terminated (§20.2.3)."""
    if not text.isascii() or "\x00" in text:
        raise ValueError(f"AML string {text!r} must be ASCII without NUL")
    return bytes([_STRING_PREFIX]) + text.encode("ascii") + b"\x00"


def eisa_id_value(pnp_id: str) -> int:
    """The 32-bit compressed EISA id of a 7-character PNP id such as ``PNP0501`` (§6.1.5, _HID).

    Three letters of 5 bits each (``'A'`` is 1) and four hex digits form a big-endian 32-bit value; AML
    stores that value's bytes as a little-endian DWord, hence the final byte swap.
    """
    if len(pnp_id) != 7 or not all("A" <= c <= "Z" for c in pnp_id[:3]):
        raise ValueError(f"EISA id {pnp_id!r} must be three letters A-Z and four hex digits")
    try:
        product = int(pnp_id[3:], 16)
    except ValueError:
        raise ValueError(f"EISA id {pnp_id!r} must end in four hex digits") from None
    vendor = 0
    for c in pnp_id[:3]:
        vendor = (vendor << 5) | (ord(c) - 0x40)
    big_endian = (vendor << 16) | product
    return int.from_bytes(big_endian.to_bytes(4, "big"), "little")


def eisa_id(pnp_id: str) -> bytes:
    """``EisaId("PNP0501")``: the compressed id as an integer term."""
    return integer(eisa_id_value(pnp_id))


def buffer(data: bytes) -> bytes:
    """``Buffer() {...}`` with its size given as an integer term."""
    return bytes([_BUFFER_OP]) + _with_pkg_length(integer(len(data)) + data)


def package(*elements: bytes | int) -> bytes:
    """``Package() {...}``; ``int`` elements are encoded with :func:`integer`, others are terms."""
    if len(elements) > 255:
        raise ValueError("AML Package is limited to 255 elements (VarPackage is not supported)")
    body = bytes([len(elements)]) + b"".join(integer(e) if isinstance(e, int) else e for e in elements)
    return bytes([_PACKAGE_OP]) + _with_pkg_length(body)


# --- Named objects and namespace ------------------------------------------------------------------
def name(path: str, value: bytes) -> bytes:
    """``Name(path, value)``: bind a data object to a name."""
    return bytes([_NAME_OP]) + name_string(path) + value


def scope(path: str, *terms: bytes) -> bytes:
    r"""``Scope(path) {...}``, e.g. ``scope("\_SB_", ...)``."""
    return bytes([_SCOPE_OP]) + _with_pkg_length(name_string(path) + b"".join(terms))


def device(path: str, *terms: bytes) -> bytes:
    """``Device(path) {...}``."""
    body = name_string(path) + b"".join(terms)
    return bytes([_EXT_OP_PREFIX, _DEVICE_EXT]) + _with_pkg_length(body)


def method(path: str, arg_count: int, *terms: bytes, serialized: bool = False, sync_level: int = 0) -> bytes:
    """``Method(path, arg_count, Serialized|NotSerialized, sync_level) {...}``."""
    if not 0 <= arg_count <= 7:
        raise ValueError(f"AML methods take 0 to 7 arguments, not {arg_count}")
    if not 0 <= sync_level <= 15:
        raise ValueError(f"AML sync level {sync_level} is not 0-15")
    flags = arg_count | (int(serialized) << 3) | (sync_level << 4)
    body = name_string(path) + bytes([flags]) + b"".join(terms)
    return bytes([_METHOD_OP]) + _with_pkg_length(body)


class RegionSpace(IntEnum):
    """OperationRegion address spaces (§19.6.100)."""

    SYSTEM_MEMORY = 0
    SYSTEM_IO = 1
    PCI_CONFIG = 2


class FieldAccess(IntEnum):
    """Field AccessType (§19.6.48), bits 3:0 of FieldFlags."""

    ANY = 0
    BYTE = 1
    WORD = 2
    DWORD = 3
    QWORD = 4


def operation_region(path: str, space: RegionSpace, offset: int, length: int) -> bytes:
    """``OperationRegion(path, space, offset, length)``."""
    return (
        bytes([_EXT_OP_PREFIX, _OP_REGION_EXT])
        + name_string(path)
        + bytes([space])
        + integer(offset)
        + integer(length)
    )


def field(region: str, access: FieldAccess, units: Sequence[tuple[str | None, int]]) -> bytes:
    """``Field(region, access, NoLock, Preserve) {name, bits, ...}``; a ``None`` name reserves bits."""
    body = bytearray(name_string(region) + bytes([access]))  # LockRule NoLock, UpdateRule Preserve: 0
    for unit_name, bits in units:
        body += (b"\x00" if unit_name is None else name_seg(unit_name)) + _field_length(bits)
    return bytes([_EXT_OP_PREFIX, _FIELD_EXT]) + _with_pkg_length(bytes(body))


# --- Method bodies --------------------------------------------------------------------------------
def arg(index: int) -> bytes:
    """``ArgN`` (0-6)."""
    if not 0 <= index <= 6:
        raise ValueError(f"Arg{index} does not exist")
    return bytes([_ARG0_OP + index])


def local(index: int) -> bytes:
    """``LocalN`` (0-7)."""
    if not 0 <= index <= 7:
        raise ValueError(f"Local{index} does not exist")
    return bytes([_LOCAL0_OP + index])


def path_ref(path: str) -> bytes:
    """A reference to a named object, for use as an operand (``GDAT``, ``\\_SB_.PWRB``)."""
    return name_string(path)


def return_(value: bytes) -> bytes:
    """``Return(value)``."""
    return bytes([_RETURN_OP]) + value


def store(source: bytes, target: bytes) -> bytes:
    """``Store(source, target)`` (``target = source``)."""
    return bytes([_STORE_OP]) + source + target


def and_(left: bytes, right: bytes, target: bytes = _NULL_NAME) -> bytes:
    """``And(left, right, target)``; without a target the result is only the expression's value."""
    return bytes([_AND_OP]) + left + right + target


def lequal(left: bytes, right: bytes) -> bytes:
    """``LEqual(left, right)`` (``left == right``)."""
    return bytes([_LEQUAL_OP]) + left + right


def if_(predicate: bytes, *terms: bytes) -> bytes:
    """``If(predicate) {...}``."""
    return bytes([_IF_OP]) + _with_pkg_length(predicate + b"".join(terms))


def notify(target: bytes, value: bytes) -> bytes:
    """``Notify(target, value)``, e.g. 0x80 on a power button device."""
    return bytes([_NOTIFY_OP]) + target + value


# --- Resource descriptors (§6.4) ------------------------------------------------------------------
# Small items: one tag byte 0b0nnnnlll (item name n, length l).  Large items: 0b1nnnnnnn + u16 length.
_SMALL_IRQ = 0x04
_SMALL_IO = 0x08
_SMALL_END_TAG = 0x0F
_LARGE_MEMORY32_FIXED = 0x86
_LARGE_DWORD_ADDRESS = 0x87
_LARGE_WORD_ADDRESS = 0x88
_LARGE_EXTENDED_IRQ = 0x89
_LARGE_QWORD_ADDRESS = 0x8A


def _small(item: int, payload: bytes) -> bytes:
    return bytes([(item << 3) | len(payload)]) + payload


def _large(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + struct.pack("<H", len(payload)) + payload


def io(base: int, length: int, alignment: int = 1) -> bytes:
    """``IO(Decode16, base, base, alignment, length)``: a fixed 16-bit-decoded port range (§6.4.2.5)."""
    if not (0 <= base <= 0xFFFF and 0 <= length <= 0xFF and 0 <= alignment <= 0xFF):
        raise ValueError(f"IO descriptor {base:#x}+{length:#x} out of range")
    return _small(_SMALL_IO, struct.pack("<BHHBB", 1, base, base, alignment, length))


def _irq_mask(irqs: Sequence[int]) -> int:
    if not irqs or any(not 0 <= i <= 15 for i in irqs):
        raise ValueError(f"IRQ descriptor needs ISA IRQs 0-15, got {list(irqs)}")
    return sum(1 << i for i in set(irqs))


def irq_no_flags(*irqs: int) -> bytes:
    """``IRQNoFlags() {irqs}``: ISA IRQs, edge-triggered, active-high, exclusive (§6.4.2.1)."""
    return _small(_SMALL_IRQ, struct.pack("<H", _irq_mask(irqs)))


def irq(*irqs: int, level: bool = False, active_low: bool = False, shared: bool = False) -> bytes:
    """``IRQ(Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {irqs}`` (3-byte form)."""
    flags = (0 if level else 0x01) | (0x08 if active_low else 0) | (0x10 if shared else 0)
    return _small(_SMALL_IRQ, struct.pack("<HB", _irq_mask(irqs), flags))


def interrupt(
    *gsis: int, level: bool = False, active_low: bool = False, shared: bool = False, consumer: bool = True
) -> bytes:
    """``Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {gsis}``.

    The Extended Interrupt descriptor (§6.4.3.6) names GSIs (any 32-bit number), not just ISA IRQs.
    """
    if not 1 <= len(gsis) <= 255 or any(not 0 <= g <= 0xFFFF_FFFF for g in gsis):
        raise ValueError(f"Interrupt descriptor needs 1-255 32-bit GSIs, got {list(gsis)}")
    flags = int(consumer) | (0 if level else 0x02) | (0x04 if active_low else 0) | (0x08 if shared else 0)
    return _large(_LARGE_EXTENDED_IRQ, struct.pack(f"<BB{len(gsis)}I", flags, len(gsis), *gsis))


def memory32_fixed(base: int, length: int, writable: bool = True) -> bytes:
    """``Memory32Fixed(ReadWrite|ReadOnly, base, length)`` (§6.4.3.4)."""
    if not (0 <= base <= 0xFFFF_FFFF and 0 <= length <= 0xFFFF_FFFF):
        raise ValueError(f"Memory32Fixed {base:#x}+{length:#x} out of range")
    return _large(_LARGE_MEMORY32_FIXED, struct.pack("<BII", int(writable), base, length))


class AddressSpaceType(IntEnum):
    """Resource Type of an address space descriptor (§6.4.3.5)."""

    MEMORY = 0
    IO = 1
    BUS_NUMBER = 2


class Cacheability(IntEnum):
    """Memory type-specific flags bits 2:1 (_MEM, §6.4.3.5.4)."""

    NON_CACHEABLE = 0
    CACHEABLE = 1
    WRITE_COMBINING = 2
    PREFETCHABLE = 3


_IO_ENTIRE_RANGE = 0x03  # I/O type-specific flags _RNG: both ISA and non-ISA ranges (§6.4.3.5.5)
_ADDRESS_FORMATS = {
    16: ("H", _LARGE_WORD_ADDRESS),
    32: ("I", _LARGE_DWORD_ADDRESS),
    64: ("Q", _LARGE_QWORD_ADDRESS),
}


def address_space(
    space: AddressSpaceType,
    width: int,
    minimum: int,
    maximum: int,
    *,
    type_flags: int,
    translation: int = 0,
    consumer: bool = False,
) -> bytes:
    """A Word/DWord/QWord Address Space Descriptor (§6.4.3.5.1-3) with fixed minimum and maximum.

    General flags: bit 0 set for ResourceConsumer (clear: ResourceProducer, as a bridge's windows are),
    bit 1 clear (positive decode), bits 2 and 3 set (_MIF/_MAF: the range is fixed, not relocatable).
    The granularity field is 0 and the length is ``maximum - minimum + 1``.
    """
    code, tag = _ADDRESS_FORMATS[width]
    limit = (1 << width) - 1
    if not 0 <= minimum <= maximum <= limit or not 0 <= translation <= limit:
        raise ValueError(f"{width}-bit address range {minimum:#x}-{maximum:#x} is invalid")
    general_flags = int(consumer) | 0x04 | 0x08
    payload = struct.pack(
        f"<BBB5{code}",
        space,
        general_flags,
        type_flags,
        0,
        minimum,
        maximum,
        translation,
        maximum - minimum + 1,
    )
    return _large(tag, payload)


def word_bus_number(minimum: int, maximum: int) -> bytes:
    """``WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, minimum, maximum, 0, length)``."""
    return address_space(AddressSpaceType.BUS_NUMBER, 16, minimum, maximum, type_flags=0)


def word_io(minimum: int, maximum: int, translation: int = 0) -> bytes:
    """``WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ...)``."""
    return address_space(
        AddressSpaceType.IO, 16, minimum, maximum, type_flags=_IO_ENTIRE_RANGE, translation=translation
    )


def dword_io(minimum: int, maximum: int, translation: int = 0) -> bytes:
    """``DWordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ...)``."""
    return address_space(
        AddressSpaceType.IO, 32, minimum, maximum, type_flags=_IO_ENTIRE_RANGE, translation=translation
    )


def _memory_flags(cacheability: Cacheability, writable: bool) -> int:
    return int(writable) | (cacheability << 1)


def dword_memory(
    minimum: int,
    maximum: int,
    *,
    cacheability: Cacheability = Cacheability.NON_CACHEABLE,
    writable: bool = True,
    translation: int = 0,
) -> bytes:
    """``DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite, ...)``."""
    return address_space(
        AddressSpaceType.MEMORY,
        32,
        minimum,
        maximum,
        type_flags=_memory_flags(cacheability, writable),
        translation=translation,
    )


def qword_memory(
    minimum: int,
    maximum: int,
    *,
    cacheability: Cacheability = Cacheability.NON_CACHEABLE,
    writable: bool = True,
    translation: int = 0,
) -> bytes:
    """``QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite, ...)``."""
    return address_space(
        AddressSpaceType.MEMORY,
        64,
        minimum,
        maximum,
        type_flags=_memory_flags(cacheability, writable),
        translation=translation,
    )


def end_tag() -> bytes:
    """The End Tag closing a resource template; checksum 0 means "treat as valid" (§6.4.2.9)."""
    return _small(_SMALL_END_TAG, b"\x00")


def resource_template(*descriptors: bytes) -> bytes:
    """``ResourceTemplate() {...}``: the descriptors and an End Tag in a Buffer (the value of a _CRS)."""
    return buffer(b"".join(descriptors) + end_tag())
