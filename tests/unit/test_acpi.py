"""ACPI tables: structure walked from the RSDP, field offsets from the ACPI 6.5 spec, AML byte encodings,
and the tables checked by ACPICA itself (``iasl -d`` disassembly and recompilation, ``acpiexec``).

ACPICA is the interpreter Linux uses, so a table it decodes without complaint is one Linux will read.
The tools come from Debian's ``acpica-tools`` package; the tests fail (not skip) without them.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from aovisor.arch.x86_64 import layout
from aovisor.arch.x86_64.acpi import AcpiBlob, AcpiConfig, aml, build_acpi
from aovisor.arch.x86_64.acpi.tables import sdt

BASE = layout.ACPI_START
CPU_COUNTS = (1, 2, 4, 64, 254, 255)


# --- An independent reader for the blob: walk pointers as a guest would ---------------------------
def _table_at(blob: AcpiBlob, gpa: int) -> bytes:
    offset = gpa - blob.rsdp_gpa
    assert 0 <= offset <= len(blob.data) - 36, f"table pointer {gpa:#x} leaves the blob"
    (length,) = struct.unpack_from("<I", blob.data, offset + 4)
    assert offset + length <= len(blob.data), f"table at {gpa:#x} runs past the blob"
    return blob.data[offset : offset + length]


def _rsdp(blob: AcpiBlob) -> bytes:
    offset = blob.rsdp_gpa - BASE
    return blob.data[offset : offset + 36]


def _walk(blob: AcpiBlob) -> dict[str, tuple[int, bytes]]:
    """Signature -> (gpa, bytes) of every table reachable from the RSDP: XSDT, its entries, the DSDT."""
    rsdp = _rsdp(blob)
    (xsdt_gpa,) = struct.unpack_from("<Q", rsdp, 24)
    xsdt = _table_at(blob, xsdt_gpa)
    found = {"XSDT": (xsdt_gpa, xsdt)}
    for (gpa,) in struct.iter_unpack("<Q", xsdt[36:]):
        table = _table_at(blob, gpa)
        sig = table[:4].decode()
        assert sig not in found, f"{sig} listed twice"
        found[sig] = (gpa, table)
    (x_dsdt,) = struct.unpack_from("<Q", found["FACP"][1], 140)
    found["DSDT"] = (x_dsdt, _table_at(blob, x_dsdt))
    return found


def _madt_entries(madt: bytes) -> list[tuple[int, bytes]]:
    entries, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        assert length >= 2, f"MADT entry at {offset} has length {length}"
        entries.append((kind, madt[offset : offset + length]))
        offset += length
    assert offset == len(madt), "MADT entries overrun the table"
    return entries


def _gas(table: bytes, offset: int) -> tuple[int, int, int, int, int]:
    space, width, bit_offset, access, address = struct.unpack_from("<BBBBQ", table, offset)
    return space, width, bit_offset, access, address


# --- Structure --------------------------------------------------------------------------------------
def test_rsdp_is_acpi2_with_both_checksums_and_aligned_in_the_bios_scan_area() -> None:
    blob = build_acpi(AcpiConfig(n_cpus=2), BASE)
    rsdp = _rsdp(blob)
    assert blob.rsdp_gpa == BASE and blob.rsdp_gpa % 16 == 0
    assert 0xE0000 <= blob.rsdp_gpa < 0x100000
    signature, _, oem_id, revision, rsdt, length, xsdt, _, _ = struct.unpack("<8sB6sBIIQB3s", rsdp)
    assert signature == b"RSD PTR "
    assert revision == 2 and length == 36
    assert rsdt == 0 and xsdt == blob.table_gpas["XSDT"]
    assert oem_id.strip()
    assert sum(rsdp[:20]) % 256 == 0, "ACPI 1.0 checksum (first 20 bytes)"
    assert sum(rsdp) % 256 == 0, "extended checksum (all 36 bytes)"


@pytest.mark.parametrize("n_cpus", CPU_COUNTS)
def test_every_table_is_reachable_from_the_rsdp_with_valid_checksum_and_length(n_cpus: int) -> None:
    blob = build_acpi(AcpiConfig(n_cpus=n_cpus), BASE)
    tables = _walk(blob)
    assert set(tables) == {"XSDT", "FACP", "APIC", "DSDT"}
    for sig, (gpa, table) in tables.items():
        assert blob.table_gpas[sig] == gpa
        assert struct.unpack_from("<I", table, 4)[0] == len(table) >= 36
        assert sum(table) % 256 == 0, f"{sig} checksum"
        assert table[10:16] == b"AOVSOR", f"{sig} OEM id"
    assert len(tables["FACP"][1]) == 276
    assert len(tables["XSDT"][1]) == 36 + 8 * 2
    assert BASE + len(blob.data) <= 0x100000, "tables must stay below 1 MiB"


def test_extra_tables_are_listed_in_the_xsdt() -> None:
    mcfg = sdt(b"MCFG", 1, bytes(8) + struct.pack("<QHBBI", 0xE000_0000, 0, 0, 0xFF, 0))
    blob = build_acpi(AcpiConfig(n_cpus=1, extra_tables=(mcfg,)), BASE)
    tables = _walk(blob)
    assert tables["MCFG"][1] == mcfg


def test_bad_extra_table_and_bad_placement_are_rejected() -> None:
    good = sdt(b"MCFG", 1, bytes(8))
    corrupted = good[:9] + bytes([good[9] ^ 1]) + good[10:]
    with pytest.raises(ValueError, match="checksum"):
        build_acpi(AcpiConfig(n_cpus=1, extra_tables=(corrupted,)), BASE)
    with pytest.raises(ValueError, match="aligned"):
        build_acpi(AcpiConfig(n_cpus=1), BASE + 8)
    huge = aml.device("HUGE", aml.name("DATA", aml.buffer(bytes(0x20000))))
    with pytest.raises(ValueError, match="limit"):
        build_acpi(AcpiConfig(n_cpus=1, sb_devices=(huge,)), BASE)


@pytest.mark.parametrize("n_cpus", [0, 256])
def test_cpu_count_outside_xapic_range_is_rejected(n_cpus: int) -> None:
    with pytest.raises(ValueError, match="vCPUs"):
        build_acpi(AcpiConfig(n_cpus=n_cpus), BASE)


# --- MADT ----------------------------------------------------------------------------------------------
def test_madt_lists_the_apic_ids_a_topology_gives() -> None:
    # topology 1:3:1:2: a 2-bit core field, so the second package's cores are APIC ids 4, 5, 6.
    madt = _walk(build_acpi(AcpiConfig(n_cpus=6, apic_ids=(0, 1, 2, 4, 5, 6)), BASE))["APIC"][1]
    lapics = [struct.unpack("<BBBBI", e) for kind, e in _madt_entries(madt) if kind == 0]
    assert [(uid, apic_id) for _, _, uid, apic_id, _ in lapics] == [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 4),
        (4, 5),
        (5, 6),
    ]


@pytest.mark.parametrize("apic_ids", [(0, 1), (0, 0, 1), (0, 1, 255)])
def test_apic_ids_must_be_one_distinct_xapic_id_per_vcpu(apic_ids: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="APIC id"):
        build_acpi(AcpiConfig(n_cpus=3, apic_ids=apic_ids), BASE)


@pytest.mark.parametrize("n_cpus", CPU_COUNTS)
def test_madt_has_one_enabled_lapic_per_vcpu_and_the_ioapic(n_cpus: int) -> None:
    madt = _walk(build_acpi(AcpiConfig(n_cpus=n_cpus), BASE))["APIC"][1]
    assert madt[8] >= 4, "MADT revision"
    lapic_address, flags = struct.unpack_from("<II", madt, 36)
    assert lapic_address == 0xFEE00000
    assert flags & 1 == 0, "PCAT_COMPAT"
    entries = _madt_entries(madt)

    lapics = [struct.unpack("<BBBBI", e) for kind, e in entries if kind == 0]
    assert len(lapics) == n_cpus
    assert [(uid, apic_id) for _, _, uid, apic_id, _ in lapics] == [(i, i) for i in range(n_cpus)]
    assert all(length == 8 and lapic_flags & 1 for _, length, _, _, lapic_flags in lapics)

    ioapics = [struct.unpack("<BBBBII", e) for kind, e in entries if kind == 1]
    assert ioapics == [(1, 12, 0, 0, 0xFEC00000, 0)]

    overrides = {e[3]: struct.unpack("<BBBBIH", e) for kind, e in entries if kind == 2}
    assert overrides[0] == (2, 10, 0, 0, 2, 0), "ISA IRQ0 (PIT) -> GSI 2, conforming"
    assert overrides[9] == (2, 10, 0, 9, 9, 0x000D), "SCI: level-triggered, active-high"
    assert len(overrides) == 2

    nmis = [struct.unpack("<BBBHB", e) for kind, e in entries if kind == 4]
    assert nmis == [(4, 6, 0xFF, 0, 1)], "NMI on LINT1 of all processors"


def test_madt_and_fadt_without_sci() -> None:
    tables = _walk(build_acpi(AcpiConfig(n_cpus=1, sci_irq=None), BASE))
    overrides = [e for kind, e in _madt_entries(tables["APIC"][1]) if kind == 2]
    assert [e[3] for e in overrides] == [0]
    assert struct.unpack_from("<H", tables["FACP"][1], 46)[0] == 0


def test_ioapic_id_and_addresses_come_from_the_config() -> None:
    cfg = AcpiConfig(n_cpus=2, ioapic_id=2, ioapic_address=0xFEC01000, ioapic_gsi_base=24)
    madt = _walk(build_acpi(cfg, BASE))["APIC"][1]
    ioapics = [struct.unpack("<BBBBII", e) for kind, e in _madt_entries(madt) if kind == 1]
    assert ioapics == [(1, 12, 2, 0, 0xFEC01000, 24)]


# --- FADT ----------------------------------------------------------------------------------------------
SYSTEM_IO, BYTE_ACCESS = 1, 1


def test_fadt_fields_at_their_acpi_6_offsets() -> None:
    blob = build_acpi(AcpiConfig(n_cpus=2), BASE)
    tables = _walk(blob)
    fadt = tables["FACP"][1]
    assert fadt[8] == 6 and len(fadt) == 276, "revision 6, full length"
    (flags,) = struct.unpack_from("<I", fadt, 112)
    assert flags & (1 << 20), "HW_REDUCED_ACPI"
    assert flags & (1 << 10), "RESET_REG_SUP"
    # Linux's acpi_reboot() wants an 8-bit reset register at bit offset 0.
    assert _gas(fadt, 116) == (SYSTEM_IO, 8, 0, BYTE_ACCESS, 0x600), "RESET_REG"
    assert fadt[128] == 1, "RESET_VALUE"
    assert _gas(fadt, 244) == (SYSTEM_IO, 8, 0, BYTE_ACCESS, 0x600), "SLEEP_CONTROL_REG"
    assert _gas(fadt, 256) == (SYSTEM_IO, 8, 0, BYTE_ACCESS, 0x601), "SLEEP_STATUS_REG"
    assert struct.unpack_from("<Q", fadt, 140)[0] == tables["DSDT"][0] == blob.table_gpas["DSDT"], "X_DSDT"
    assert struct.unpack_from("<I", fadt, 40)[0] == 0, "32-bit DSDT unused"
    assert struct.unpack_from("<I", fadt, 36)[0] == 0 and struct.unpack_from("<Q", fadt, 132)[0] == 0, (
        "no FACS"
    )
    assert struct.unpack_from("<H", fadt, 46)[0] == 9, "SCI_INT"
    (boot_arch,) = struct.unpack_from("<H", fadt, 109)
    assert boot_arch & (1 << 1), "8042 present"
    assert not boot_arch & (1 << 5), "CMOS RTC present"
    assert struct.unpack_from("<I", fadt, 76)[0] == 0 and _gas(fadt, 208)[4] == 0, "no PM timer"
    assert fadt[268:276].rstrip(b" \0") == b"AOVISOR"


def test_fadt_boot_flags_follow_the_legacy_devices() -> None:
    tables = _walk(build_acpi(AcpiConfig(n_cpus=1, i8042=False, rtc=False), BASE))
    (boot_arch,) = struct.unpack_from("<H", tables["FACP"][1], 109)
    assert not boot_arch & (1 << 1), "no 8042"
    assert boot_arch & (1 << 5), "CMOS RTC not present"
    dsdt = tables["DSDT"][1]
    assert aml.eisa_id("PNP0303") not in dsdt and aml.eisa_id("PNP0B00") not in dsdt
    assert aml.eisa_id("PNP0501") in dsdt


# --- AML encodings (ACPI 6.5 §20.2) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body_length", "encoded"),
    [
        (0, b"\x01"),  # the length counts its own byte
        (62, b"\x3f"),  # largest 1-byte form: 63
        (63, b"\x41\x04"),  # 65 = 0x041: lead 0x40 | low nibble 1, then 0x04
        (0xFFD, b"\x4f\xff"),  # largest 2-byte form: 0xFFF
        (0xFFE, b"\x81\x00\x01"),  # 0x1001 in 3 bytes
        (0xFFFFC, b"\x8f\xff\xff"),  # largest 3-byte form: 0xFFFFF
        (0xFFFFD, b"\xc1\x00\x00\x01"),  # 0x100001 in 4 bytes
        (0xFFFFFFB, b"\xcf\xff\xff\xff"),  # largest 4-byte form: 0xFFFFFFF
    ],
)
def test_pkg_length_encodings(body_length: int, encoded: bytes) -> None:
    assert aml.pkg_length(body_length) == encoded


def test_pkg_length_too_long() -> None:
    with pytest.raises(ValueError):
        aml.pkg_length(0xFFFFFFC)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),  # ZeroOp
        (1, b"\x01"),  # OneOp
        (2, b"\x0a\x02"),  # BytePrefix
        (0xFF, b"\x0a\xff"),
        (0x100, b"\x0b\x00\x01"),  # WordPrefix
        (0xFFFF, b"\x0b\xff\xff"),
        (0x10000, b"\x0c\x00\x00\x01\x00"),  # DWordPrefix
        (0xFFFF_FFFF, b"\x0c\xff\xff\xff\xff"),
        (0x1_0000_0000, b"\x0e\x00\x00\x00\x00\x01\x00\x00\x00"),  # QWordPrefix
        (0xFFFF_FFFF_FFFF_FFFF, b"\x0e" + b"\xff" * 8),
    ],
)
def test_integer_encodings(value: int, encoded: bytes) -> None:
    assert aml.integer(value) == encoded


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_integer_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        aml.integer(value)


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("_S5", b"_S5_"),  # NameSeg padded with '_'
        ("A", b"A___"),
        ("PCI0", b"PCI0"),
        ("\\_SB_", b"\\_SB_"),
        ("\\_SB.PCI0", b"\\\x2e_SB_PCI0"),  # DualNamePrefix
        ("\\_SB.PCI0.S08", b"\\\x2f\x03_SB_PCI0S08_"),  # MultiNamePrefix + count
        ("^^PWRB", b"^^PWRB"),
        ("\\", b"\\\x00"),  # NullName
    ],
)
def test_name_string_encodings(path: str, encoded: bytes) -> None:
    assert aml.name_string(path) == encoded


@pytest.mark.parametrize("bad", ["", "0ABC", "abcd", "TOOLONG", "A-B", "\\_SB_..X"])
def test_invalid_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        aml.name_string(bad)


def test_data_object_encodings() -> None:
    assert aml.string("ACPI0007") == b"\x0dACPI0007\x00"
    assert aml.eisa_id_value("PNP0501") == 0x0105D041  # the value every PC firmware's EisaId gives
    assert aml.eisa_id_value("PNP0A08") == 0x080AD041
    assert aml.package(5, 0, 0, 0) == b"\x12\x07\x04\x0a\x05\x00\x00\x00"
    assert aml.name("_S5", aml.package(5, 0, 0, 0)) == b"\x08_S5_\x12\x07\x04\x0a\x05\x00\x00\x00"
    assert aml.buffer(b"\xaa\xbb") == b"\x11\x05\x0a\x02\xaa\xbb"
    assert aml.device("COM1") == b"\x5b\x82\x05COM1"
    assert aml.method("_STA", 0, aml.return_(aml.integer(0xF))) == b"\x14\x09_STA\x00\xa4\x0a\x0f"
    with pytest.raises(ValueError):
        aml.string("caf\u00e9")
    with pytest.raises(ValueError):
        aml.eisa_id_value("PNP05G1")


def test_resource_descriptor_encodings() -> None:
    assert aml.io(0x3F8, 8) == b"\x47\x01\xf8\x03\xf8\x03\x01\x08"
    assert aml.irq_no_flags(4) == b"\x22\x10\x00"
    assert aml.irq(5, level=True, active_low=True, shared=True) == b"\x23\x20\x00\x18"
    assert aml.interrupt(5) == b"\x89\x06\x00\x03\x01\x05\x00\x00\x00"
    assert aml.memory32_fixed(0xFEC00000, 0x1000) == b"\x86\x09\x00\x01\x00\x00\xc0\xfe\x00\x10\x00\x00"
    assert aml.end_tag() == b"\x79\x00"
    bus = aml.word_bus_number(0, 0xFF)
    assert bus == b"\x88\x0d\x00\x02\x0c\x00" + struct.pack("<5H", 0, 0, 0xFF, 0, 0x100)
    assert len(aml.dword_memory(0, 0xFFF)) == 3 + 23 and len(aml.qword_memory(0, 0xFFF)) == 3 + 43
    assert aml.resource_template(aml.irq_no_flags(1)) == b"\x11\x08\x0a\x05\x22\x02\x00\x79\x00"


# --- ACPICA: iasl and acpiexec ------------------------------------------------------------------------
def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: the ACPI tests need ACPICA's tools; install them with "
            "`apt-get install -y acpica-tools`"
        )
    return path


_PROBLEM = re.compile(r"error|warning|incorrect|invalid|unknown|\*\*\*\*", re.IGNORECASE)


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} exited with {proc.returncode}:\n{output}"
    return output


def _disassemble(tmp_path: Path, stem: str, table: bytes) -> str:
    """``iasl -d`` one table; fail on any error, warning or bad-checksum note; return the .dsl text."""
    (tmp_path / f"{stem}.dat").write_bytes(table)
    output = _run([_tool("iasl"), "-d", f"{stem}.dat"], tmp_path)
    dsl = (tmp_path / f"{stem}.dsl").read_text()
    problems = [line for line in (output + dsl).splitlines() if _PROBLEM.search(line)]
    assert not problems, f"iasl reported problems in {stem}:\n" + "\n".join(problems)
    return dsl


def _field(dsl: str, name: str) -> str:
    """The value of ``name : value`` in a data-table disassembly (first occurrence; decoded flag lines
    have no ``[offset length]`` prefix)."""
    match = re.search(rf"^(?:\[[^]]*\])?\s*{re.escape(name)} : (.*)$", dsl, re.MULTILINE)
    assert match, f"{name!r} not in disassembly"
    return match.group(1).strip()


@pytest.mark.parametrize("n_cpus", [1, 4, 254])
def test_iasl_disassembles_every_table_cleanly(tmp_path: Path, n_cpus: int) -> None:
    blob = build_acpi(AcpiConfig(n_cpus=n_cpus), BASE)
    tables = {sig: table for sig, (_, table) in _walk(blob).items()}
    dsl = {sig: _disassemble(tmp_path, sig.lower(), table) for sig, table in tables.items()}

    xsdt_entries = re.findall(r"ACPI Table Address\s+\d+ : ([0-9A-F]+)", dsl["XSDT"])
    assert [int(a, 16) for a in xsdt_entries] == [blob.table_gpas["FACP"], blob.table_gpas["APIC"]]

    fadt = dsl["FACP"]
    assert _field(fadt, "Revision") == "06"
    assert _field(fadt, "Hardware Reduced (V5)") == "1"
    assert _field(fadt, "Reset Register Supported (V2)") == "1"
    assert _field(fadt, "8042 Present on ports 60/64 (V2)") == "1"
    assert _field(fadt, "Value to cause reset") == "01"
    assert int(_field(fadt, "DSDT Address").split()[0], 16) == 0
    reset, sleep_control, sleep_status = (
        re.search(rf"{title} : \[Generic Address Structure\]\n((?:.*\n){{5}})", fadt)
        for title in ("Reset Register", "Sleep Control Register", "Sleep Status Register")
    )
    assert reset and sleep_control and sleep_status
    assert "[SystemIO]" in reset.group(1) and "0000000000000600" in reset.group(1)
    assert "[SystemIO]" in sleep_control.group(1) and "0000000000000600" in sleep_control.group(1)
    assert "[SystemIO]" in sleep_status.group(1) and "0000000000000601" in sleep_status.group(1)
    x_dsdt = re.findall(r"DSDT Address : ([0-9A-F]+)", fadt)
    assert [int(a, 16) for a in x_dsdt] == [0, blob.table_gpas["DSDT"]]  # 32-bit field, then X_DSDT

    madt = dsl["APIC"]
    assert madt.count("[Processor Local APIC]") == n_cpus
    assert madt.count("[I/O APIC]") == 1
    assert madt.count("[Interrupt Source Override]") == 2
    assert madt.count("[Local APIC NMI]") == 1
    assert _field(madt, "Interrupt Input LINT") == "01"
    assert _field(madt, "Local Apic Address") == "FEE00000"

    dsdt = dsl["DSDT"]
    assert re.search(
        r"Name \(\\_S5, Package \(0x04\)\s+// _S5_.*\n\s*\{\s*0x05,\s*Zero,\s*Zero,\s*Zero\s*\}", dsdt
    )
    for device, hid in (("COM1", "PNP0501"), ("KBD", "PNP0303"), ("RTC", "PNP0B00")):
        assert re.search(rf"Device \({device}\)\s*\{{\s*Name \(_HID, EisaId \(\"{hid}\"\)", dsdt), device
    assert dsdt.count('"ACPI0007"') == n_cpus
    assert "0x03F8,             // Range Minimum" in dsdt and "IRQNoFlags ()\n                    {4}" in dsdt
    assert "0x0060,             // Range Minimum" in dsdt and "0x0064,             // Range Minimum" in dsdt


def _every_aml_construct() -> tuple[bytes, ...]:
    """Devices using every AML writer function, as a GED power button and a PCI root bridge would."""
    ged = aml.device(
        "GED_",
        aml.name("_HID", aml.string("ACPI0013")),
        aml.name("_UID", aml.integer(0)),
        aml.name("_CRS", aml.resource_template(aml.interrupt(5), aml.memory32_fixed(0xFED00000, 0x1000))),
        aml.operation_region("GDST", aml.RegionSpace.SYSTEM_MEMORY, 0xFED00000, 0x1000),
        aml.field("GDST", aml.FieldAccess.DWORD, [("GDAT", 32), (None, 0x7E0), ("GEND", 32)]),
        aml.method(
            "_EVT",
            1,
            aml.store(aml.path_ref("GDAT"), aml.local(0)),
            aml.if_(
                aml.lequal(aml.and_(aml.local(0), aml.integer(1)), aml.integer(1)),
                aml.notify(aml.path_ref("\\_SB_.PWRB"), aml.integer(0x80)),
            ),
            serialized=True,
        ),
    )
    power_button = aml.device(
        "PWRB", aml.name("_HID", aml.eisa_id("PNP0C0C")), aml.name("_UID", aml.integer(0))
    )
    pci = aml.device(
        "PCI0",
        aml.name("_HID", aml.eisa_id("PNP0A08")),
        aml.name("_CID", aml.eisa_id("PNP0A03")),
        aml.name("_SEG", aml.integer(0)),
        aml.name("_UID", aml.integer(0)),
        aml.method("_STA", 0, aml.return_(aml.integer(0xF))),
        aml.name(
            "_CRS",
            aml.resource_template(
                aml.word_bus_number(0, 0xFF),
                aml.io(0xCF8, 8),
                aml.word_io(0, 0xCF7),
                aml.word_io(0xD00, 0xFFFF),
                aml.dword_io(0x1_0000, 0x1_FFFF),
                aml.dword_memory(0xC000_0000, 0xFEBF_FFFF),
                aml.qword_memory(0x1_0000_0000, 0xFF_FFFF_FFFF, cacheability=aml.Cacheability.PREFETCHABLE),
                aml.irq(10, 11, level=True, active_low=True, shared=True),
                aml.interrupt(32, 33, level=True, active_low=True, shared=True),
            ),
        ),
        aml.name("PKG_", aml.package(aml.string("x"), 0x1234_5678_9ABC, aml.package(1, 2))),
    )
    return ged, power_button, pci


def test_iasl_recompiles_the_dsdt_to_identical_aml(tmp_path: Path) -> None:
    """Disassemble our DSDT and compile the result: ACPICA's own encoding must equal ours, byte for byte.

    254 processors push the ``\\_SB_`` scope past 4 KiB, exercising the 3-byte PkgLength form; the extra
    devices exercise every other writer function.  ``-on`` keeps iasl from shortening name paths.
    """
    cfg = AcpiConfig(
        n_cpus=254, sb_devices=_every_aml_construct(), dsdt_terms=(aml.name("AOVT", aml.integer(7)),)
    )
    dsdt = _walk(build_acpi(cfg, BASE))["DSDT"][1]
    assert len(dsdt) > 0x1000
    _disassemble(tmp_path, "dsdt", dsdt)
    output = _run([_tool("iasl"), "-on", "-p", "recompiled", "dsdt.dsl"], tmp_path)
    assert re.search(r"Compilation successful\. 0 Errors, 0 Warnings", output), output
    ours, iasl_body = dsdt[36:], (tmp_path / "recompiled.aml").read_bytes()[36:]
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(ours, iasl_body, strict=False)) if a != b),
        min(len(ours), len(iasl_body)),
    )
    assert ours == iasl_body, (
        f"AML differs from iasl's encoding of the same ASL at DSDT offset {36 + first_difference:#x}: "
        f"ours {ours[first_difference : first_difference + 16].hex(' ')}, "
        f"iasl {iasl_body[first_difference : first_difference + 16].hex(' ')}"
    )


def test_acpica_loads_the_tables_and_evaluates_s5_and_resources(tmp_path: Path) -> None:
    """acpiexec runs ACPICA's interpreter (Linux's) over our FADT, MADT and DSDT."""
    tables = _walk(build_acpi(AcpiConfig(n_cpus=2), BASE))
    files = []
    for sig in ("DSDT", "FACP", "APIC"):
        (tmp_path / f"{sig}.dat").write_bytes(tables[sig][1])
        files.append(f"{sig}.dat")
    commands = "; ".join(
        ["evaluate \\_S5_", "resources \\_SB_.COM1", "resources \\_SB_.KBD_", "resources \\_SB_.RTC_"]
    )
    output = _run([_tool("acpiexec"), "-b", commands, *files], tmp_path)
    assert "1 ACPI AML tables successfully acquired and loaded" in output
    assert not re.search(r"ACPI (Error|Warning)|Firmware Warning", output), output

    s5 = re.search(r"Evaluating \\_S5_\n.*\n\s*\[Package\] Contains 4 Elements:\n((?:.*\n){4})", output)
    assert s5, output
    slp_typ = int(s5.group(1).split("=")[1].split()[0], 16)
    assert (slp_typ << 2) | (1 << 5) == 0x34, "Linux's S5 write to the sleep control register"

    def decoded(label: str) -> list[str]:
        return [value.strip() for value in re.findall(rf"{label} : (.*)", output)]

    assert decoded("Address Minimum") == ["03F8", "0060", "0064", "0070"]
    assert decoded("Address Length") == ["08", "01", "01", "02"]
    assert decoded("Interrupt List") == ["4", "1"]
    assert set(decoded("Triggering")) == {"Edge"} and set(decoded("Polarity")) == {"ActiveHigh"}
