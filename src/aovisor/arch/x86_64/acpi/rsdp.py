"""The Root System Description Pointer: where the guest starts looking for ACPI tables (ACPI 6.5 §5.2.5).

Linux finds it through ``boot_params.acpi_rsdp_addr`` / PVH ``rsdp_paddr`` or, failing those, by scanning
0xE0000-0xFFFFF on 16-byte boundaries for the "RSD PTR " signature.
"""

from __future__ import annotations

import struct

from aovisor.arch.x86_64.acpi.tables import OEM_ID, checksum

RSDP_SIZE = 36
RSDP_ALIGNMENT = 16
_RSDP_REVISION = 2  # ACPI 2.0+: the 36-byte form with an XSDT address
_RSDP = struct.Struct("<8sB6sBIIQB3s")
_V1_LENGTH = 20  # the ACPI 1.0 part the first checksum covers
assert _RSDP.size == RSDP_SIZE


def build_rsdp(xsdt_gpa: int) -> bytes:
    """An ACPI 2.0 RSDP pointing at the XSDT; the 32-bit RSDT address is 0 (there is no RSDT)."""
    raw = bytearray(_RSDP.pack(b"RSD PTR ", 0, OEM_ID, _RSDP_REVISION, 0, RSDP_SIZE, xsdt_gpa, 0, b"\0\0\0"))
    raw[8] = checksum(raw[:_V1_LENGTH])  # covers the first 20 bytes
    raw[32] = checksum(raw)  # extended checksum: the whole structure, first checksum included
    return bytes(raw)
