"""PCI configuration mechanism #1 (ports 0xCF8-0xCFF): host bridge, attached functions, 0xCF9 reset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aovisor.devices.bus import Bus
from aovisor.devices.pci import ConfigSpace, PciRoot

BASE = 0xCF8


def address(slot: int, reg: int, *, bus: int = 0, function: int = 0, enable: int = 1) -> int:
    return enable << 31 | bus << 16 | slot << 11 | function << 8 | (reg & 0xFC)


class Machine:
    def __init__(self) -> None:
        self.resets = 0
        self.root = PciRoot(reset=self._reset)
        self.bus = Bus("pio")
        self.bus.insert(self.root, BASE, 8)

    def _reset(self) -> None:
        self.resets += 1

    def cfg_read(self, slot: int, reg: int, size: int, **kw: int) -> int:
        self.bus.write(0xCF8, 4, address(slot, reg, **kw))
        return self.bus.read(0xCFC + (reg & 3), size)

    def cfg_write(self, slot: int, reg: int, size: int, value: int, **kw: int) -> None:
        self.bus.write(0xCF8, 4, address(slot, reg, **kw))
        self.bus.write(0xCFC + (reg & 3), size, value)


@pytest.fixture
def m() -> Machine:
    return Machine()


def test_linux_type1_check(m: Machine) -> None:
    # pci_check_type1(): a byte to 0xCFB, then CONFIG_ADDRESS must read back exactly.
    m.bus.write(0xCFB, 1, 0x01)
    saved = m.bus.read(0xCF8, 4)
    m.bus.write(0xCF8, 4, 0x8000_0000)
    assert m.bus.read(0xCF8, 4) == 0x8000_0000
    m.bus.write(0xCF8, 4, saved)
    # pci_sanity_check(): a host bridge class on bus 0.
    assert m.cfg_read(0, 0x0A, 2) == 0x0600


def test_config_address_keeps_only_defined_bits(m: Machine) -> None:
    m.bus.write(0xCF8, 4, 0xFFFF_FFFF)
    assert m.bus.read(0xCF8, 4) == 0x80FF_FFFC


def test_host_bridge_identity(m: Machine) -> None:
    assert m.cfg_read(0, 0x00, 4) == 0x0D57_8086
    assert m.cfg_read(0, 0x08, 4) >> 8 == 0x06_00_00  # class: bridge / host bridge
    assert m.cfg_read(0, 0x0E, 1) == 0x00  # header type 0, single function
    assert m.cfg_read(0, 0x00, 1) == 0x86
    assert m.cfg_read(0, 0x01, 1) == 0x80
    assert m.cfg_read(0, 0x02, 2) == 0x0D57


def test_absent_devices_read_all_ones(m: Machine) -> None:
    assert m.cfg_read(1, 0, 4) == 0xFFFF_FFFF
    assert m.cfg_read(31, 0, 2) == 0xFFFF
    assert m.cfg_read(0, 0, 4, function=1) == 0xFFFF_FFFF
    assert m.cfg_read(0, 0, 4, bus=1) == 0xFFFF_FFFF
    assert m.cfg_read(0, 0, 4, enable=0) == 0xFFFF_FFFF


def test_read_only_registers_ignore_writes(m: Machine) -> None:
    m.cfg_write(0, 0x00, 4, 0x1234_5678)
    m.cfg_write(0, 0x08, 4, 0xFFFF_FFFF)
    m.cfg_write(0, 0x10, 4, 0xFFFF_FFFF)  # no BARs: hardwired to 0
    assert m.cfg_read(0, 0x00, 4) == 0x0D57_8086
    assert m.cfg_read(0, 0x08, 4) == 0x0600_0000
    assert m.cfg_read(0, 0x10, 4) == 0


def test_writable_registers_read_back(m: Machine) -> None:
    m.cfg_write(0, 0x3C, 1, 0x0B)  # interrupt line: scratch for the OS
    m.cfg_write(0, 0x04, 2, 0xFFFF)  # command: only implemented bits stick
    assert m.cfg_read(0, 0x3C, 1) == 0x0B
    assert m.cfg_read(0, 0x04, 2) == 0x0547
    m.cfg_write(0, 0x04, 2, 0x0006)
    assert m.cfg_read(0, 0x04, 2) == 0x0006


def test_sub_dword_data_accesses_address_the_right_bytes(m: Machine) -> None:
    m.cfg_write(0, 0x0C, 2, 0x4010)  # cache line size and latency timer at once
    assert m.cfg_read(0, 0x0C, 1) == 0x10
    assert m.cfg_read(0, 0x0D, 1) == 0x40
    assert m.cfg_read(0, 0x0C, 4) & 0xFFFF == 0x4010


def test_unaligned_data_accesses_are_refused(m: Machine) -> None:
    m.bus.write(0xCF8, 4, address(0, 0x3C))
    assert m.bus.read(0xCFD, 2) == 0xFFFF
    assert m.bus.read(0xCFF, 2) == 0xFFFF
    assert m.bus.read(0xCFE, 4) == 0xFFFF_FFFF
    m.bus.write(0xCFD, 2, 0xAAAA)
    assert m.cfg_read(0, 0x3C, 4) & 0xFF == 0


def test_0xcf9_resets_without_touching_config_address(m: Machine) -> None:
    m.bus.write(0xCF8, 4, address(0, 0x08))
    m.bus.write(0xCF9, 1, 0x02)  # Linux reboot=pci: request a hard reset ...
    assert m.resets == 0
    assert m.bus.read(0xCF9, 1) == 0x02
    m.bus.write(0xCF9, 1, 0x06)  # ... then start it
    assert m.resets == 1
    assert m.bus.read(0xCF8, 4) == address(0, 0x08)
    m.bus.write(0xCF9, 1, 0x0E)  # full reset also counts
    assert m.resets == 2


def test_other_narrow_accesses_to_the_address_port_do_nothing(m: Machine) -> None:
    m.bus.write(0xCF8, 4, address(0, 0x08))
    m.bus.write(0xCF8, 1, 0x00)
    m.bus.write(0xCF8, 2, 0x0000)
    m.bus.write(0xCFA, 2, 0x0000)
    m.bus.write(0xCF9, 2, 0x0606)  # not a byte access: not the reset register
    assert m.bus.read(0xCF8, 4) == address(0, 0x08)
    assert m.bus.read(0xCF8, 2) == 0xFFFF
    assert m.resets == 0


def test_attached_functions_answer_in_their_slot(m: Machine) -> None:
    dev = ConfigSpace(vendor_id=0x1AF4, device_id=0x1041, class_code=0x02_00_00, interrupt_pin=1)
    dev.set_bar(0, 0x4000)
    dev.set_bar(2, 1 << 33, is_64bit=True, prefetchable=True)
    dev.set_bar(4, 0x20, io=True)
    m.root.add_device(3, dev)
    assert m.cfg_read(3, 0, 4) == 0x1041_1AF4
    assert m.cfg_read(3, 0x3D, 1) == 1
    # BAR sizing (PCI 3.0 §6.2.5.1): write all-ones, read the size mask back.
    m.cfg_write(3, 0x10, 4, 0xFFFF_FFFF)
    assert m.cfg_read(3, 0x10, 4) == 0xFFFF_C000
    m.cfg_write(3, 0x18, 4, 0xFFFF_FFFF)
    m.cfg_write(3, 0x1C, 4, 0xFFFF_FFFF)
    assert m.cfg_read(3, 0x18, 4) == 0x0000_000C  # 64-bit prefetchable, no writable low bits
    assert m.cfg_read(3, 0x1C, 4) == 0xFFFF_FFFE
    m.cfg_write(3, 0x20, 4, 0xFFFF_FFFF)
    assert m.cfg_read(3, 0x20, 4) == 0xFFFF_FFE1
    # Programming addresses.
    m.cfg_write(3, 0x10, 4, 0xC000_4000)
    m.cfg_write(3, 0x18, 4, 0)
    m.cfg_write(3, 0x1C, 4, 0x4)
    m.cfg_write(3, 0x20, 4, 0x1040)
    assert dev.bar_address(0) == 0xC000_4000
    assert dev.bar_address(2) == 0x4_0000_0000
    assert dev.bar_address(4) == 0x1040


def test_status_error_bits_are_write_one_to_clear() -> None:
    dev = ConfigSpace(vendor_id=1, device_id=2, class_code=0)
    dev.set_status_bits(0x06, 2, 0x2000 | 0x0010)  # received master abort; capabilities list
    dev.write_config(0x06, 2, 0x0010)  # writing 1 to a read-only bit changes nothing
    assert dev.read_config(0x06, 2) == 0x2010
    dev.write_config(0x06, 2, 0x2000)
    assert dev.read_config(0x06, 2) == 0x0010


def test_slot_management(m: Machine) -> None:
    dev = ConfigSpace(vendor_id=1, device_id=2, class_code=0)
    assert m.root.free_slot() == 1
    m.root.add_device(1, dev)
    assert m.root.free_slot() == 2
    with pytest.raises(ValueError, match="in use"):
        m.root.add_device(1, dev)
    with pytest.raises(ValueError):
        m.root.add_device(32, dev)
    with pytest.raises(ValueError):
        m.root.remove_device(0)
    assert m.root.remove_device(1) is dev
    assert m.cfg_read(1, 0, 4) == 0xFFFF_FFFF


def test_bad_bar_declarations_are_refused() -> None:
    dev = ConfigSpace(vendor_id=1, device_id=2, class_code=0)
    with pytest.raises(ValueError):
        dev.set_bar(0, 0x3000)
    with pytest.raises(ValueError):
        dev.set_bar(6, 0x1000)
    with pytest.raises(ValueError):
        dev.set_bar(5, 0x1000, is_64bit=True)
    with pytest.raises(ValueError):
        dev.set_bar(0, 0x1000, io=True)


@given(
    ops=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(-2, 10),
            st.sampled_from([0, 1, 2, 3, 4, 8]),
            st.integers(-(2**40), 2**40),
        ),
        max_size=40,
    )
)
def test_no_access_sequence_raises_or_leaves_the_value_range(ops: list[tuple[bool, int, int, int]]) -> None:
    root = PciRoot(reset=lambda: None)
    root.add_device(2, ConfigSpace(vendor_id=1, device_id=2, class_code=0))
    for is_write, offset, size, value in ops:
        if is_write:
            root.write(offset, size, value)
        else:
            assert 0 <= root.read(offset, size) < max(1 << (8 * size), 1)
    assert root.config_read(0, 0, 0, 0, 2) == 0x8086  # identity never changes
