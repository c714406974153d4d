"""The transport-neutral virtio device: features, device config space, activation, reset, NEEDS_RESET.

A transport (virtio-pci, later virtio-mmio) owns the registers the driver programs and calls, in order:

1. ``avail_features`` / ``read_config`` / ``write_config`` while the driver negotiates;
2. :meth:`VirtioDevice.activate` when the driver sets DRIVER_OK, with the validated queues, the eventfd the
   transport signals for each queue's notification, and an :class:`Interrupt` to raise;
3. :meth:`VirtioDevice.reset` when the driver writes 0 to the status (synchronous: when it returns, the
   device thread no longer touches the queues).

A device never knows its transport.  It runs its requests on its own :class:`EventLoop` thread (named like
``virtio-blk0``), woken by the queue eventfds: the kernel signals them on a guest kick (ioeventfd), so no
Python runs on the vCPU thread for a kick.  When the driver breaks the queue contract (:class:`QueueError`)
the device stops serving and calls ``on_needs_reset``: the transport sets DEVICE_NEEDS_RESET and sends a
config-change interrupt (virtio 1.2 §2.1.2); the VM keeps running and the driver may reset the device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

from aovisor.lean_typing import TYPE_CHECKING, Protocol
from aovisor.logs import get_logger
from aovisor.virtio.queue import QueueError, SplitQueue
from aovisor.vmm.event_loop import EventLoop

if TYPE_CHECKING:
    from aovisor.memory import GuestMemory

log = get_logger(__name__)

# Device-independent feature bits (virtio 1.2 §6).
VIRTIO_F_INDIRECT_DESC = 1 << 28
VIRTIO_F_EVENT_IDX = 1 << 29
VIRTIO_F_VERSION_1 = 1 << 32
TRANSPORT_FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC

# Device types (§5).
DEVICE_TYPE_NET = 1
DEVICE_TYPE_BLOCK = 2
DEVICE_TYPE_CONSOLE = 3
DEVICE_TYPE_RNG = 4
DEVICE_TYPE_VSOCK = 19


class Interrupt(Protocol):
    """How a device tells the driver about used buffers or a config change (the transport decides how)."""

    def signal_queue(self, index: int) -> None: ...

    def signal_config(self) -> None: ...


class DeviceQueue:
    """An enabled queue handed to an active device (a plain class: a NamedTuple's ``index`` is a method)."""

    __slots__ = ("index", "kick", "ring")

    def __init__(self, index: int, ring: SplitQueue, kick: int) -> None:
        self.index = index
        self.ring = ring
        self.kick = kick  # an eventfd the transport signals when the driver notifies this queue


class VirtioDevice:
    """Base of every virtio device; subclasses define the config space and :meth:`process_queue`."""

    def __init__(
        self,
        name: str,
        device_type: int,
        features: int,
        queue_sizes: Sequence[int],
        config: bytes = b"",
    ) -> None:
        self.name = name
        self.device_type = device_type
        self.avail_features = features | TRANSPORT_FEATURES
        self.queue_max_sizes = tuple(queue_sizes)
        self.config = bytearray(config)
        self.acked_features = 0
        self.on_needs_reset: Callable[[str], None] = lambda reason: None
        self.loop = EventLoop(name)
        self.memory: GuestMemory | None = None
        self.queues: list[DeviceQueue] = []
        self._interrupt: Interrupt | None = None
        self.broken = False

    # --- Config space (device-specific layout, little-endian) ---------------------------------------
    def read_config(self, offset: int, size: int) -> int:
        """A ``size``-byte read at ``offset``; bytes past the end read 0."""
        if offset < 0 or size <= 0:
            return 0
        return int.from_bytes(self.config[offset : offset + size].ljust(size, b"\0"), "little")

    def write_config(self, offset: int, size: int, value: int) -> None:
        """Most config fields are read-only: writes are ignored unless a device overrides this."""
        log.debug("%s: ignored config write %#x/%d = %#x", self.name, offset, size, value)

    # --- Lifecycle, called by the transport ---------------------------------------------------------
    def activate(self, memory: GuestMemory, queues: Sequence[DeviceQueue], interrupt: Interrupt) -> None:
        """Start serving ``queues`` (called once the driver set DRIVER_OK)."""
        self.memory = memory
        self.queues = list(queues)
        self._interrupt = interrupt
        self.broken = False
        self.loop.start()

        def register() -> None:
            for q in self.queues:
                self.loop.add(q.kick, self._kick_handler(q))
            self.activated()
            for q in self.queues:  # buffers made available before DRIVER_OK's kick are served now
                self._serve(q)

        self.loop.call(register)

    def reset(self) -> None:
        """Stop serving the queues; when this returns the device thread no longer touches them."""
        self.loop.call(self._deactivate)
        self.acked_features = 0
        self.broken = False

    def _deactivate(self) -> None:
        for q in self.queues:
            self.loop.remove(q.kick)
            q.ring.release()
        self.queues = []
        self._interrupt = None
        self.memory = None
        self.deactivated()

    def activated(self) -> None:
        """Hook for subclasses: start per-activation work, e.g. watch a host fd (runs on the device
        thread, after the queue kicks are registered and before the queues are first served)."""

    def deactivated(self) -> None:
        """Hook for subclasses: drop per-activation state (runs on the device thread)."""

    def has_feature(self, bit: int) -> bool:
        return bool(self.acked_features & bit)

    # --- Threads -------------------------------------------------------------------------------------
    def pause(self) -> None:
        self.loop.pause()

    def resume(self) -> None:
        self.loop.resume()

    def counters(self) -> dict[str, int]:
        """What ``vm.counters`` shows for this device (Cloud Hypervisor's names); none by default."""
        return {}

    def close(self) -> None:
        """Stop the device thread and release what the device holds (files, fds)."""
        self.loop.stop()

    # --- Request processing (device thread) ----------------------------------------------------------
    def _kick_handler(self, q: DeviceQueue) -> Callable[[], None]:
        def handle() -> None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(q.kick)
            self._serve(q)

        return handle

    def _serve(self, q: DeviceQueue) -> None:
        if self.broken:
            return
        try:
            while True:
                self.process_queue(q)
                if not q.ring.arm_notification():
                    break
        except QueueError as e:
            self.fail(f"queue {q.index}: {e}")
        finally:
            self.notify_queue(q)

    def notify_queue(self, q: DeviceQueue) -> None:
        """Interrupt the driver for what was added to ``q``'s used ring, if it wants one (§2.7.10)."""
        interrupt = self._interrupt
        if interrupt is not None and q.ring.needs_interrupt():
            interrupt.signal_queue(q.index)

    def signal_config_change(self) -> None:
        """Tell the driver the device configuration space changed (§2.1.2 / §4.1.4.5)."""
        interrupt = self._interrupt
        if interrupt is not None:
            interrupt.signal_config()

    def process_queue(self, q: DeviceQueue) -> None:
        """Serve every chain available on ``q`` (raise :class:`QueueError` on a driver error)."""
        raise NotImplementedError

    def fail(self, reason: str) -> None:
        """The driver broke the contract: stop serving until reset, and tell the transport."""
        log.warning("%s: needs reset: %s", self.name, reason)
        self.broken = True
        for q in self.queues:
            self.loop.remove(q.kick)
        self.on_needs_reset(reason)
