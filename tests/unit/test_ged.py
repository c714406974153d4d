"""The ACPI Generic Event Device behind vm.power-button: its register, its interrupt pulse, its AML."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aovisor.arch.x86_64 import layout
from aovisor.arch.x86_64.acpi import AcpiConfig, build_acpi
from aovisor.devices.legacy.ged import AcpiGedDevice, GedEvent, ged_aml


class RecordingIrq:
    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, level: bool) -> None:
        self.levels.append(level)


def test_notify_latches_the_event_and_pulses_the_edge_triggered_line() -> None:
    irq = RecordingIrq()
    ged = AcpiGedDevice(irq)
    assert ged.read(0, 1) == 0
    ged.notify(GedEvent.POWER_BUTTON)
    ged.notify(GedEvent.PCI_DEVICES_CHANGED)
    assert irq.levels == [True, False, True, False]
    assert ged.read(0, 2) == 0  # only the byte-wide access the AML makes reads the register
    assert ged.read(0, 1) == 0x0C  # both events, in one read...
    assert ged.read(0, 1) == 0  # ...which cleared them
    ged.write(0, 1, 0xFF)  # read-only
    assert ged.read(0, 1) == 0
    assert ged.counters() == {"events": 2}


def test_dsdt_has_the_ged_and_the_power_button(tmp_path: Path) -> None:
    iasl = shutil.which("iasl")
    if iasl is None:
        pytest.fail("iasl not found: apt-get install -y acpica-tools")
    blob = build_acpi(AcpiConfig(n_cpus=1, sb_devices=ged_aml()), layout.ACPI_START)
    gpa = blob.table_gpas["DSDT"] - blob.rsdp_gpa
    length = int.from_bytes(blob.data[gpa + 4 : gpa + 8], "little")
    (tmp_path / "dsdt.dat").write_bytes(blob.data[gpa : gpa + length])
    proc = subprocess.run([iasl, "-d", "dsdt.dat"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert re.search(r'Device \(PWRB\)\s*\{\s*Name \(_HID, EisaId \("PNP0C0C"\)', dsl)
    assert re.search(r'Device \(GED\)\s*\{\s*Name \(_HID, "ACPI0013"', dsl)
    assert re.search(r"Local0 = GDAT.*\n\s*If \(\(\(Local0 & 0x08\) == 0x08\)\)", dsl)
    assert "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n" in dsl
    assert re.search(r"\{\s*0x00000005,\s*\}", dsl)
    assert "OperationRegion (GDST, SystemIO, 0x0602, One)" in dsl
    assert re.search(r"Method \(_EVT, 1, Serialized\)", dsl)
    assert re.search(r"Notify \(\\_SB\.PWRB, 0x80\)", dsl)
