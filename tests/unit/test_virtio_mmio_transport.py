"""virtio-mmio: the register window, negotiation, misprogramming -> NEEDS_RESET, interrupts, a request end to
end through the device thread, and the DSDT description a guest finds it by."""

from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Iterator

import pytest

from aovisor.arch.x86_64.acpi import aml
from aovisor.config import RngConfig
from aovisor.devices.bus import Bus
from aovisor.memory import GuestMemory
from aovisor.virtio.devices.rng import RngDevice
from aovisor.virtio.transport import common as vcommon
from aovisor.virtio.transport import mmio as vmmio
from aovisor.virtio.transport.mmio import VirtioMmioDevice

BASE = 0xE000_0000
GSI = 16
MEM = 0x100000
ACK, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET = 1, 2, 4, 8, 64


class FakeVm:
    def __init__(self) -> None:
        self.irqfds: dict[int, int] = {}
        self.ioeventfds: list[tuple[int, int, int, int | None]] = []

    def register_irqfd(self, eventfd: int, gsi: int) -> None:
        self.irqfds[gsi] = eventfd

    def register_ioeventfd(
        self, eventfd: int, addr: int, length: int, *, pio: bool = False, datamatch: int | None = None
    ) -> None:
        self.ioeventfds.append((eventfd, addr, length, datamatch))


@pytest.fixture
def memory() -> GuestMemory:
    return GuestMemory([(0, MEM)])


@pytest.fixture
def env(memory: GuestMemory) -> Iterator[tuple[VirtioMmioDevice, FakeVm, Bus]]:
    hv, bus = FakeVm(), Bus("mmio")
    dev = VirtioMmioDevice(RngDevice("virtio-rng0", RngConfig()), memory=memory, hv_vm=hv, base=BASE, gsi=GSI)
    bus.insert(dev, BASE, vmmio.WINDOW_SIZE)
    yield dev, hv, bus
    dev.close()


def reg(bus: Bus, offset: int) -> int:
    return bus.read(BASE + offset, 4)


def set_reg(bus: Bus, offset: int, value: int) -> None:
    bus.write(BASE + offset, 4, value)


def negotiate(bus: Bus, features: int) -> int:
    set_reg(bus, vmmio.STATUS, 0)
    set_reg(bus, vmmio.STATUS, ACK | DRIVER)
    for sel in (0, 1):
        set_reg(bus, vmmio.DRIVER_FEATURES_SEL, sel)
        set_reg(bus, vmmio.DRIVER_FEATURES, features >> (32 * sel) & 0xFFFF_FFFF)
    set_reg(bus, vmmio.STATUS, ACK | DRIVER | FEATURES_OK)
    return reg(bus, vmmio.STATUS)


def setup_queue(bus: Bus, desc: int, avail: int, used: int, size: int = 16) -> None:
    set_reg(bus, vmmio.QUEUE_SEL, 0)
    set_reg(bus, vmmio.QUEUE_NUM, size)
    for offset, address in ((vmmio.QUEUE_DESC_LOW, desc), (vmmio.QUEUE_DRIVER_LOW, avail),
                            (vmmio.QUEUE_DEVICE_LOW, used)):  # fmt: skip
        set_reg(bus, offset, address & 0xFFFF_FFFF)
        set_reg(bus, offset + 4, address >> 32)
    set_reg(bus, vmmio.QUEUE_READY, 1)


def test_identity_registers(env: tuple[VirtioMmioDevice, FakeVm, Bus]) -> None:
    _, hv, bus = env
    assert reg(bus, vmmio.MAGIC_VALUE) == 0x74726976  # "virt"
    assert reg(bus, vmmio.VERSION_REG) == 2
    assert reg(bus, vmmio.DEVICE_ID) == 4  # virtio-rng
    set_reg(bus, vmmio.DEVICE_FEATURES_SEL, 1)
    assert reg(bus, vmmio.DEVICE_FEATURES) & 1  # VIRTIO_F_VERSION_1 (bit 32)
    set_reg(bus, vmmio.QUEUE_SEL, 0)
    assert reg(bus, vmmio.QUEUE_NUM_MAX) == 256
    set_reg(bus, vmmio.QUEUE_SEL, 1)
    assert reg(bus, vmmio.QUEUE_NUM_MAX) == 0  # no such queue
    assert reg(bus, vmmio.SHM_LEN_LOW) == reg(bus, vmmio.SHM_LEN_HIGH) == 0xFFFF_FFFF
    # One notification ioeventfd per queue, matching the queue index written to QueueNotify.
    assert [(a, n, d) for _, a, n, d in hv.ioeventfds] == [(BASE + vmmio.QUEUE_NOTIFY, 4, 0)]
    assert GSI in hv.irqfds


def test_non_32_bit_register_accesses_are_ignored(env: tuple[VirtioMmioDevice, FakeVm, Bus]) -> None:
    _, _, bus = env
    assert bus.read(BASE + vmmio.MAGIC_VALUE, 2) == 0
    bus.write(BASE + vmmio.STATUS, 1, ACK)
    assert reg(bus, vmmio.STATUS) == 0


def test_feature_negotiation(env: tuple[VirtioMmioDevice, FakeVm, Bus]) -> None:
    _, _, bus = env
    assert negotiate(bus, 1 << 32) & FEATURES_OK
    assert not negotiate(bus, 1 << 29 | 1 << 10) & FEATURES_OK  # no VERSION_1, and a bit never offered
    set_reg(bus, vmmio.STATUS, 0)
    assert reg(bus, vmmio.STATUS) == 0


@pytest.mark.parametrize(
    ("size", "desc"),
    [
        (300, 0x1000),
        (12, 0x1000),
        (16, MEM - 8),
        (16, 0x1008),
    ],  # too big, not a power of 2, outside, misaligned
)
def test_misprogrammed_queue_sets_needs_reset(
    env: tuple[VirtioMmioDevice, FakeVm, Bus], size: int, desc: int
) -> None:
    _, hv, bus = env
    negotiate(bus, 1 << 32)
    setup_queue(bus, desc, 0x2000, 0x3000, size=size)
    set_reg(bus, vmmio.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    assert reg(bus, vmmio.STATUS) & NEEDS_RESET
    assert reg(bus, vmmio.INTERRUPT_STATUS) == vcommon.INTERRUPT_CONFIG
    assert select.select([hv.irqfds[GSI]], [], [], 1)[0]
    set_reg(bus, vmmio.STATUS, 0)  # the driver resets: the device is usable again
    assert reg(bus, vmmio.STATUS) == 0 and reg(bus, vmmio.INTERRUPT_STATUS) == 0


def test_driver_ok_without_features_ok_needs_reset(env: tuple[VirtioMmioDevice, FakeVm, Bus]) -> None:
    _, _, bus = env
    set_reg(bus, vmmio.STATUS, ACK | DRIVER | DRIVER_OK)
    assert reg(bus, vmmio.STATUS) & NEEDS_RESET


def test_queue_registers_are_frozen_after_driver_ok(env: tuple[VirtioMmioDevice, FakeVm, Bus]) -> None:
    dev, _, bus = env
    negotiate(bus, 1 << 32)
    setup_queue(bus, 0x1000, 0x2000, 0x3000)
    set_reg(bus, vmmio.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    set_reg(bus, vmmio.QUEUE_DESC_LOW, 0x5000)
    assert reg(bus, vmmio.QUEUE_DESC_LOW) == 0x1000
    assert reg(bus, vmmio.QUEUE_READY) == 1
    set_reg(bus, vmmio.STATUS, 0)
    assert dev.device.queues == [] and reg(bus, vmmio.QUEUE_READY) == 0


def test_rng_request_end_to_end(env: tuple[VirtioMmioDevice, FakeVm, Bus], memory: GuestMemory) -> None:
    """Negotiate, set up the queue, DRIVER_OK, kick through the queue's eventfd: the device thread fills the
    buffer, returns it in the used ring, sets InterruptStatus bit 0 and pulses the irqfd; the driver's
    InterruptACK clears the bit."""
    dev, hv, bus = env
    desc, avail, used, buf = 0x1000, 0x2000, 0x3000, 0x8000
    assert negotiate(bus, 1 << 32) & FEATURES_OK
    setup_queue(bus, desc, avail, used)
    set_reg(bus, vmmio.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    memory.write(desc, struct.pack("<QIHH", buf, 256, 2, 0))
    memory.write_u16(avail + 4, 0)
    memory.write_u16(avail + 2, 1)
    kick_fd = hv.ioeventfds[0][0]
    os.eventfd_write(kick_fd, 1)  # what KVM does on the guest's QueueNotify write of 0
    deadline = time.monotonic() + 5
    while memory.read_u16(used + 2) != 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert memory.read(used + 4, 8) == struct.pack("<II", 0, 256)
    assert memory.read(buf, 256) != bytes(256)
    assert select.select([hv.irqfds[GSI]], [], [], 5)[0]
    assert reg(bus, vmmio.INTERRUPT_STATUS) == vcommon.INTERRUPT_QUEUE
    set_reg(bus, vmmio.INTERRUPT_ACK, vcommon.INTERRUPT_QUEUE)
    assert reg(bus, vmmio.INTERRUPT_STATUS) == 0
    # A QueueNotify write that misses the ioeventfd takes the MMIO path to the same eventfd; an index
    # without a queue is ignored.
    dev.device.pause()
    set_reg(bus, vmmio.QUEUE_NOTIFY, 0)
    set_reg(bus, vmmio.QUEUE_NOTIFY, 7)
    assert os.eventfd_read(kick_fd) == 1
    dev.device.resume()


def test_dsdt_entry_names_the_window_and_the_interrupt(env: tuple[VirtioMmioDevice, FakeVm, Bus]) -> None:
    dev, _, _ = env
    entry = dev.aml(3)
    assert b"_HID" in entry and aml.string("LNRO0005") in entry
    assert aml.memory32_fixed(BASE, vmmio.WINDOW_SIZE) in entry
    # Extended Interrupt: consumer, edge, active high, exclusive; one GSI.
    assert bytes([0x89, 6, 0, 0x03, 1]) + struct.pack("<I", GSI) in entry
    assert b"VR03" in entry
