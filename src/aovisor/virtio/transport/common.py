"""What every virtio transport does the same way once the driver has written its registers: accept or
refuse the driver's features (FEATURES_OK) and turn the queue registers into validated rings (DRIVER_OK)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aovisor.virtio.device import VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, DeviceQueue
from aovisor.virtio.queue import QueueConfig, QueueError, SplitQueue

if TYPE_CHECKING:
    from aovisor.memory import GuestMemory
    from aovisor.virtio.device import Interrupt, VirtioDevice

STATUS_FEATURES_OK = 8  # device status bit (virtio 1.x §2.1)


def features_acceptable(driver_features: int, device: VirtioDevice) -> bool:
    """FEATURES_OK may stick (§3.1.1): only offered bits, and VIRTIO_F_VERSION_1 (no legacy interface)."""
    return not driver_features & ~device.avail_features and bool(driver_features & VIRTIO_F_VERSION_1)


def enabled_queues(
    memory: GuestMemory, configs: Sequence[QueueConfig], kick_fds: Sequence[int], features: int
) -> list[DeviceQueue]:
    """The enabled queues as rings in guest RAM; :class:`QueueError` names the first bad one."""
    queues: list[DeviceQueue] = []
    for index, cfg in enumerate(configs):
        if not cfg.enabled:
            continue
        if cfg.size > cfg.max_size:
            raise QueueError(f"queue {index}: size {cfg.size} above the maximum {cfg.max_size}")
        ring = SplitQueue(
            memory,
            cfg.size,
            cfg.desc,
            cfg.driver,
            cfg.device,
            event_idx=bool(features & VIRTIO_F_EVENT_IDX),
            indirect=bool(features & VIRTIO_F_INDIRECT_DESC),
        )
        queues.append(DeviceQueue(index, ring, kick_fds[index]))
    return queues


def activate(
    device: VirtioDevice,
    memory: GuestMemory,
    configs: Sequence[QueueConfig],
    kick_fds: Sequence[int],
    *,
    status: int,
    driver_features: int,
    interrupt: Interrupt,
) -> str | None:
    """DRIVER_OK: hand the validated rings to the device.  Returns why the device must go to NEEDS_RESET
    instead (the caller reports it through its transport), or None once the device runs."""
    if not status & STATUS_FEATURES_OK:
        return "DRIVER_OK without FEATURES_OK"
    device.acked_features = driver_features
    try:
        queues = enabled_queues(memory, configs, kick_fds, driver_features)
    except QueueError as e:
        return f"at DRIVER_OK: {e}"
    device.activate(memory, queues, interrupt)
    return None
