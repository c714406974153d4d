"""virtio-pci: config space and capabilities, BAR sizing and mapping, MSI-X routes, negotiation,
misprogramming -> NEEDS_RESET, and one request end to end through the device thread."""

from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aovisor.config import DiskConfig, RngConfig
from aovisor.devices.bus import Bus
from aovisor.devices.pci import config_space as pci
from aovisor.memory import GuestMemory
from aovisor.virtio.devices.block import BlockDevice
from aovisor.virtio.devices.rng import RngDevice
from aovisor.virtio.transport import common as vcommon
from aovisor.virtio.transport import pci as vpci
from aovisor.virtio.transport.pci import VirtioPciDevice

BAR = 0xC000_0000
GSIS = [24, 25]
MEM = 0x100000


class FakeVm:
    def __init__(self) -> None:
        self.routes: dict[int, tuple[int, int]] = {}
        self.irqfds: dict[int, int] = {}
        self.ioeventfds: list[tuple[int, int, int]] = []

    def set_msi_route(self, gsi: int, address: int, data: int) -> None:
        self.routes[gsi] = (address, data)

    def register_irqfd(self, eventfd: int, gsi: int) -> None:
        self.irqfds[gsi] = eventfd

    def register_ioeventfd(self, eventfd: int, addr: int, length: int, **_: object) -> None:
        self.ioeventfds.append((eventfd, addr, length))


@pytest.fixture
def memory() -> GuestMemory:
    return GuestMemory([(0, MEM)])


@pytest.fixture
def env(memory: GuestMemory) -> Iterator[tuple[VirtioPciDevice, FakeVm, Bus]]:
    hv, bus = FakeVm(), Bus("mmio")
    dev = VirtioPciDevice(
        RngDevice("virtio-rng0", RngConfig()),
        memory=memory,
        hv_vm=hv,
        mmio_bus=bus,
        bar_address=BAR,
        gsis=GSIS,
    )
    yield dev, hv, bus
    dev.close()


def capabilities(dev: VirtioPciDevice) -> dict[int, int]:
    """cfg_type (or 0x100 + id for non-vendor capabilities) -> config offset, walking the list."""
    found, at = {}, dev.read_config(pci.CAPABILITIES_POINTER, 1)
    for _ in range(48):
        if at == 0:
            break
        cap_id = dev.read_config(at, 1)
        found[dev.read_config(at + 3, 1) if cap_id == 0x09 else 0x100 + cap_id] = at
        at = dev.read_config(at + 1, 1)
    return found


def test_identity_and_capability_list(env: tuple[VirtioPciDevice, FakeVm, Bus]) -> None:
    dev, _, _ = env
    assert dev.read_config(pci.VENDOR_ID, 2) == 0x1AF4
    assert dev.read_config(pci.DEVICE_ID, 2) == 0x1044  # 0x1040 + virtio-rng
    assert dev.read_config(pci.REVISION_ID, 1) == 1
    assert dev.read_config(pci.INTERRUPT_PIN, 1) == 0  # MSI-X only
    assert dev.read_config(pci.STATUS, 2) & 0x10
    caps = capabilities(dev)
    assert set(caps) == {1, 2, 3, 5, 0x111}  # rng has no device-specific config
    notify = caps[2]
    assert dev.read_config(notify + 4, 1) == 0  # BAR 0
    assert dev.read_config(notify + 8, 4) == vpci.NOTIFY_AT
    assert dev.read_config(notify + 16, 4) == vpci.NOTIFY_MULTIPLIER
    msix = caps[0x111]
    assert dev.read_config(msix + 2, 2) & 0x7FF == 1  # 2 vectors: the queue and config changes


def test_block_device_has_a_device_config_capability(memory: GuestMemory, tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(4096))
    dev = VirtioPciDevice(
        BlockDevice("b", DiskConfig(image)), memory=memory, hv_vm=FakeVm(), mmio_bus=Bus("m"),
        bar_address=BAR, gsis=GSIS,
    )  # fmt: skip
    try:
        caps = capabilities(dev)
        assert 4 in caps
        assert dev.read_config(pci.DEVICE_ID, 2) == 0x1042
        assert dev.bar_read(vpci.DEVICE_CFG_AT, 4) == 8  # capacity in sectors
    finally:
        dev.close()


def test_bar_sizing_and_placement(env: tuple[VirtioPciDevice, FakeVm, Bus]) -> None:
    dev, hv, bus = env
    assert dev.read_config(pci.BAR0, 4) == BAR | pci.BAR_MEM_64
    assert bus.find(BAR + 0x10) == (dev, 0x10)
    assert {addr for _, addr, _ in hv.ioeventfds} == {BAR + vpci.NOTIFY_AT}
    # Sizing as an OS does it: decoding off, all-ones, read back, restore (PCI 3.0 §6.2.5.1).
    dev.write_config(pci.COMMAND, 2, 0)
    assert bus.find(BAR) is None
    dev.write_config(pci.BAR0, 4, 0xFFFF_FFFF)
    dev.write_config(pci.BAR0 + 4, 4, 0xFFFF_FFFF)
    assert dev.read_config(pci.BAR0, 4) == (~(vpci.BAR_SIZE - 1) & 0xFFFF_FFF0) | pci.BAR_MEM_64
    assert dev.read_config(pci.BAR0 + 4, 4) == 0xFFFF_FFFF
    # The OS moves it.
    dev.write_config(pci.BAR0, 4, 0xD000_0000)
    dev.write_config(pci.BAR0 + 4, 4, 0)
    dev.write_config(pci.COMMAND, 2, 0x2)
    assert bus.find(BAR) is None
    assert bus.find(0xD000_0000) == (dev, 0)


def test_msix_table_writes_become_routes_and_masking_pends(env: tuple[VirtioPciDevice, FakeVm, Bus]) -> None:
    dev, hv, bus = env
    assert set(hv.irqfds) == set(GSIS)
    table = BAR + vpci.MSIX_TABLE_AT
    bus.write(table + 16, 4, 0xFEE0_1000)
    bus.write(table + 20, 4, 0)
    bus.write(table + 24, 4, 0x45)
    assert hv.routes[GSIS[1]] == (0xFEE0_1000, 0x45)
    assert bus.read(table + 24, 4) == 0x45
    bus.write(table + 25, 1, 0xFF)  # byte writes are not allowed: ignored
    assert bus.read(table + 24, 4) == 0x45
    fd = hv.irqfds[GSIS[1]]
    dev.msix.trigger(1)  # MSI-X disabled and the entry masked: pending
    assert not select.select([fd], [], [], 0)[0]
    assert bus.read(BAR + vpci.MSIX_PBA_AT, 8) == 0b10
    caps = capabilities(dev)
    dev.write_config(caps[0x111] + 2, 2, 0x8000)  # enable
    assert not select.select([fd], [], [], 0)[0]  # still masked
    bus.write(table + 28, 4, 0)  # unmask: the pending message goes out
    assert select.select([fd], [], [], 0)[0]
    assert os.eventfd_read(fd) == 1
    assert bus.read(BAR + vpci.MSIX_PBA_AT, 8) == 0
    dev.msix.trigger(7)  # no such vector: nothing happens
    dev.msix.trigger(1)
    assert os.eventfd_read(fd) == 1


def common_write(bus: Bus, offset: int, size: int, value: int) -> None:
    bus.write(BAR + vpci.COMMON_AT + offset, size, value)


def common_read(bus: Bus, offset: int, size: int) -> int:
    return bus.read(BAR + vpci.COMMON_AT + offset, size)


def negotiate(bus: Bus, features: int) -> int:
    common_write(bus, 0x14, 1, 0)
    common_write(bus, 0x14, 1, 1 | 2)
    common_write(bus, 0x08, 4, 0)
    common_write(bus, 0x0C, 4, features & 0xFFFF_FFFF)
    common_write(bus, 0x08, 4, 1)
    common_write(bus, 0x0C, 4, features >> 32)
    common_write(bus, 0x14, 1, 1 | 2 | 8)
    return common_read(bus, 0x14, 1)


def test_feature_negotiation(env: tuple[VirtioPciDevice, FakeVm, Bus]) -> None:
    _, _, bus = env
    common_write(bus, 0x00, 4, 1)
    assert common_read(bus, 0x04, 4) & 1  # VIRTIO_F_VERSION_1 (bit 32)
    assert not negotiate(bus, 0) & 8  # legacy drivers are refused
    assert not negotiate(bus, (1 << 32) | (1 << 40)) & 8  # a feature we do not offer
    assert negotiate(bus, (1 << 32) | (1 << 29)) & 8


def setup_queue(bus: Bus, desc: int, avail: int, used: int, size: int = 16, vector: int = 0) -> None:
    common_write(bus, 0x16, 2, 0)
    common_write(bus, 0x18, 2, size)
    common_write(bus, 0x1A, 2, vector)
    for offset, address in ((0x20, desc), (0x28, avail), (0x30, used)):
        common_write(bus, offset, 4, address & 0xFFFF_FFFF)
        common_write(bus, offset + 4, 4, address >> 32)
    common_write(bus, 0x1C, 2, 1)


@pytest.mark.parametrize(
    ("size", "desc"),
    [(16, 0xC000_0000), (16, MEM - 64), (12, 0x1000), (512, 0x1000)],
    ids=["ring-in-mmio-hole", "ring-past-ram", "size-not-power-of-two", "size-above-max"],
)
def test_misprogrammed_queue_sets_needs_reset(
    env: tuple[VirtioPciDevice, FakeVm, Bus], size: int, desc: int
) -> None:
    _, _, bus = env
    assert negotiate(bus, 1 << 32) & 8
    common_write(bus, 0x10, 2, 1)  # config changes on vector 1
    setup_queue(bus, desc, 0x2000, 0x3000, size=size)
    common_write(bus, 0x14, 1, 1 | 2 | 8 | 4)
    assert common_read(bus, 0x14, 1) & vcommon.STATUS_NEEDS_RESET
    assert bus.read(BAR + vpci.ISR_AT, 1) & vcommon.INTERRUPT_CONFIG
    assert bus.read(BAR + vpci.ISR_AT, 1) == 0  # read to clear
    common_write(bus, 0x14, 1, 0)  # the driver resets the device: usable again
    assert common_read(bus, 0x14, 1) == 0
    assert negotiate(bus, 1 << 32) & 8


def test_driver_ok_without_features_ok_needs_reset(env: tuple[VirtioPciDevice, FakeVm, Bus]) -> None:
    _, _, bus = env
    common_write(bus, 0x14, 1, 1 | 2 | 4)
    assert common_read(bus, 0x14, 1) & vcommon.STATUS_NEEDS_RESET


def test_out_of_range_vectors_and_queues(env: tuple[VirtioPciDevice, FakeVm, Bus]) -> None:
    _, _, bus = env
    common_write(bus, 0x10, 2, 5)
    assert common_read(bus, 0x10, 2) == 0xFFFF  # NO_VECTOR: the driver learns it was refused
    common_write(bus, 0x16, 2, 3)  # a queue that does not exist
    assert common_read(bus, 0x18, 2) == 0
    common_write(bus, 0x18, 2, 8)  # ignored
    assert common_read(bus, 0x12, 2) == 1


def test_rng_request_end_to_end(env: tuple[VirtioPciDevice, FakeVm, Bus], memory: GuestMemory) -> None:
    """A driver's sequence: negotiate, queue, MSI-X, DRIVER_OK, then a kick through the queue's eventfd; the
    device thread fills the buffer, returns it in the used ring and raises the MSI-X vector."""
    dev, hv, bus = env
    desc, avail, used, buf = 0x1000, 0x2000, 0x3000, 0x8000
    assert negotiate(bus, (1 << 32) | (1 << 29)) & 8
    setup_queue(bus, desc, avail, used, vector=0)
    table = BAR + vpci.MSIX_TABLE_AT
    bus.write(table, 4, 0xFEE0_0000)
    bus.write(table + 8, 4, 0x50)
    bus.write(table + 12, 4, 0)
    dev.write_config(capabilities(dev)[0x111] + 2, 2, 0x8000)
    common_write(bus, 0x14, 1, 1 | 2 | 8 | 4)
    assert common_read(bus, 0x14, 1) == 1 | 2 | 8 | 4
    memory.write(desc, struct.pack("<QIHH", buf, 256, 2, 0))
    memory.write_u16(avail + 4, 0)
    memory.write_u16(avail + 2, 1)
    kick_fd, notify_addr, _ = hv.ioeventfds[0]
    os.eventfd_write(kick_fd, 1)  # what KVM does on the guest's notify write
    deadline = time.monotonic() + 5
    while memory.read_u16(used + 2) != 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert memory.read(used + 4, 8) == struct.pack("<II", 0, 256)
    assert memory.read(buf, 256) != bytes(256)
    assert select.select([hv.irqfds[GSIS[0]]], [], [], 5)[0]
    # The notify write that misses the ioeventfd (another width) takes the MMIO path to the same eventfd;
    # the device thread is paused so that it does not consume it first.
    dev.device.pause()
    bus.write(notify_addr, 4, 0)
    assert os.eventfd_read(kick_fd) == 1
    dev.device.resume()
    common_write(bus, 0x14, 1, 0)
    assert dev.device.queues == []
