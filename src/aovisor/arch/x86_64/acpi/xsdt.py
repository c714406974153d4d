"""The Extended System Description Table: 64-bit pointers to the tables but the DSDT (ACPI 6.5 §5.2.8)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aovisor.arch.x86_64.acpi.tables import sdt

_XSDT_REVISION = 1


def build_xsdt(table_gpas: Sequence[int]) -> bytes:
    """An XSDT listing the tables at ``table_gpas`` (the FADT first, by convention)."""
    return sdt(b"XSDT", _XSDT_REVISION, struct.pack(f"<{len(table_gpas)}Q", *table_gpas))
