r"""The PCI host bridge in the DSDT: ``\_SB_.PCI0``, so the guest's ACPI PCI driver finds bus 0.

Only configuration mechanism #1 (ports 0xCF8-0xCFF) exists, no ECAM, so the bridge is a conventional PCI
root (``PNP0A03``) and there is no MCFG: Linux then reads the first 256 bytes of config space through the
ports, which holds every capability our devices have.  The ``_CRS`` (ACPI 6.5 §6.4) says what the bridge
decodes, which is where Linux lets BARs live (x86 honours _CRS windows when there is no DMI date before
2008, our case):

* bus numbers 0-0;
* the config ports 0xCF8-0xCFF, consumed by the bridge itself;
* I/O windows 0x0000-0x0CF7 and 0x0D00-0xFFFF (the ISA ports below are forwarded, as on a PC);
* the 32-bit memory window of the MMIO hole where the VMM places BARs (layout.PCI_MMIO_WINDOW_*).

No ``_PRT``: our functions have no INTx pin, they interrupt with MSI-X only.
"""

from __future__ import annotations

from aovisor.arch.x86_64 import layout
from aovisor.arch.x86_64.acpi import aml


def pci_host_bridge(
    mmio_start: int = layout.PCI_MMIO_WINDOW_START, mmio_end: int = layout.PCI_MMIO_WINDOW_END
) -> bytes:
    """``Device(PCI0)`` with ``_HID PNP0A03``, ``_SEG``/``_BBN``/``_UID`` 0 and the ``_CRS`` above."""
    config_port = layout.PORT_PCI_CONFIG
    return aml.device(
        "PCI0",
        aml.name("_HID", aml.eisa_id("PNP0A03")),
        aml.name("_ADR", aml.integer(0)),
        aml.name("_SEG", aml.integer(0)),
        aml.name("_BBN", aml.integer(0)),
        aml.name("_UID", aml.integer(0)),
        aml.name(
            "_CRS",
            aml.resource_template(
                aml.word_bus_number(0, 0),
                aml.io(config_port, 8),
                aml.word_io(0x0000, config_port - 1),
                aml.word_io(config_port + 8, 0xFFFF),
                aml.dword_memory(mmio_start, mmio_end - 1),
            ),
        ),
    )
