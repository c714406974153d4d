"""Kick suppression while a device drains a ring (virtio 1.2 §2.7.7.2 and §2.7.10), checked against a model
of the driver's side: whether it kicks after publishing, with and without VIRTIO_F_EVENT_IDX."""

from __future__ import annotations

import struct

import pytest

from aovisor.memory import GuestMemory
from aovisor.virtio.queue import VIRTQ_USED_F_NO_NOTIFY, SplitQueue

SIZE = 8
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
DATA = 0x8000
AVAIL_EVENT = USED + 4 + 8 * SIZE


class Driver:
    """The driver's half of a split queue: publishes chains and decides, as §2.7.13.4 says, whether to
    notify the device."""

    def __init__(self, memory: GuestMemory, event_idx: bool) -> None:
        self.memory = memory
        self.event_idx = event_idx
        self.avail = 0
        self.kicks = 0
        for i in range(SIZE):
            memory.write(DESC + 16 * i, struct.pack("<QIHH", DATA + 0x100 * i, 64, 0, 0))

    def publish(self, count: int = 1) -> None:
        old = self.avail
        for _ in range(count):
            self.memory.write_u16(AVAIL + 4 + 2 * (self.avail % SIZE), self.avail % SIZE)
            self.avail += 1
        self.memory.write_u16(AVAIL + 2, self.avail & 0xFFFF)
        if self.event_idx:
            event = self.memory.read_u16(AVAIL_EVENT)
            kick = (self.avail - event - 1) & 0xFFFF < (self.avail - old) & 0xFFFF  # vring_need_event
        else:
            kick = not self.memory.read_u16(USED) & VIRTQ_USED_F_NO_NOTIFY
        self.kicks += kick


def drain(q: SplitQueue) -> int:
    """Pop and return every available chain, as a device does; how many."""
    n = 0
    while (chain := q.pop()) is not None:
        q.add_used(chain, 0)
        n += 1
    return n


@pytest.mark.parametrize("event_idx", [False, True])
def test_no_kicks_while_the_device_drains_and_one_after(event_idx: bool) -> None:
    memory = GuestMemory([(0, 0x10000)])
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED, event_idx=event_idx)
    driver = Driver(memory, event_idx)
    q.arm_notification()  # as after activation: the device waits for a kick
    driver.publish()
    assert driver.kicks == 1
    q.suppress_notifications()  # the kick woke the device
    drained = drain(q)
    driver.publish(2)  # while the device is busy: no kick
    driver.publish()
    assert driver.kicks == 1
    drained += drain(q)
    assert not q.arm_notification()  # nothing left: wait for the next kick
    driver.publish()
    assert driver.kicks == 2
    assert q.arm_notification()  # a chain arrived: the device pops again rather than sleeping
    assert drained + drain(q) == 5


def test_without_event_idx_the_flag_is_set_once_and_cleared_on_arming() -> None:
    memory = GuestMemory([(0, 0x10000)])
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED)
    assert memory.read_u16(USED) == 0
    q.suppress_notifications()
    q.suppress_notifications()
    assert memory.read_u16(USED) == VIRTQ_USED_F_NO_NOTIFY
    q.arm_notification()
    assert memory.read_u16(USED) == 0


def test_with_event_idx_suppression_leaves_the_ring_alone() -> None:
    memory = GuestMemory([(0, 0x10000)])
    q = SplitQueue(memory, SIZE, DESC, AVAIL, USED, event_idx=True)
    memory.write_u16(AVAIL_EVENT, 0x1234)
    q.suppress_notifications()
    assert (memory.read_u16(USED), memory.read_u16(AVAIL_EVENT)) == (0, 0x1234)
