"""What every virtio transport does the same way, whatever its register layout: the device status and its
NEEDS_RESET bit (virtio 1.2 §2.1), feature negotiation (§2.2, §3.1.1), turning the queue registers into
validated rings at DRIVER_OK, reset, and the interrupt status bits a device raises (§4.1.4.5, §4.2.2).

:class:`VirtioTransport` holds that state; virtio-pci and virtio-mmio subclass it, map its fields onto
their own registers and say how an interrupt reaches the guest (an MSI-X vector, a wired line)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger
from aovisor.virtio.device import VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, DeviceQueue
from aovisor.virtio.queue import QueueConfig, QueueError, SplitQueue

if TYPE_CHECKING:
    from aovisor.memory import GuestMemory
    from aovisor.virtio.device import Interrupt, VirtioDevice

log = get_logger(__name__)

# Device status bits (§2.1).
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 64
STATUS_FAILED = 128

# Interrupt status bits: virtio-pci's ISR (§4.1.4.5) and virtio-mmio's InterruptStatus (§4.2.2) agree.
INTERRUPT_QUEUE = 1  # a used buffer notification
INTERRUPT_CONFIG = 2  # a configuration change (also how NEEDS_RESET is announced, §2.1.2)


def features_acceptable(driver_features: int, device: VirtioDevice) -> bool:
    """FEATURES_OK may stick (§3.1.1): only offered bits, and VIRTIO_F_VERSION_1 (no legacy interface)."""
    return not driver_features & ~device.avail_features and bool(driver_features & VIRTIO_F_VERSION_1)


def feature_word(features: int, select: int) -> int:
    """The 32 bits of ``features`` a feature-select register picks; words past the second read 0."""
    return features >> (32 * select) & 0xFFFF_FFFF if select < 2 else 0


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


class VirtioTransport:
    """The transport-neutral half of a virtio transport; also the :class:`Interrupt` its device raises.

    A subclass keeps its own selector registers, decodes guest accesses into the calls below (under
    ``_lock``), extends :meth:`_reset_registers` and :meth:`close`, and delivers interrupts in
    :meth:`_send_queue_interrupt` / :meth:`_send_config_interrupt`.
    """

    def __init__(self, device: VirtioDevice, memory: GuestMemory) -> None:
        self.device = device
        self._memory = memory
        self._lock = threading.RLock()  # register state (vCPU threads)
        # The interrupt status alone has its own lock: the device thread sets bits while a vCPU may hold
        # _lock waiting for that very thread (a reset is synchronous with request processing).
        self._isr_lock = threading.Lock()
        self.queues = [QueueConfig(max_size=size) for size in device.queue_max_sizes]
        # One eventfd per queue, signalled on the driver's notification (by an ioeventfd, or by the
        # transport when the write reached Python); the device thread waits on them.
        self.kick_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in self.queues]
        self.interrupt_status = 0
        self._needs_reset = False
        self.status = 0
        self.driver_features = 0
        device.on_needs_reset = self._set_needs_reset

    def _reset_registers(self) -> None:
        """Back to the values after a reset; subclasses add their own registers."""
        self.status = 0
        self.driver_features = 0
        for q in self.queues:
            q.reset()

    # --- Device status and features (the caller holds _lock) ----------------------------------------
    @property
    def device_status(self) -> int:
        """The status register as the driver reads it: what it wrote, plus DEVICE_NEEDS_RESET."""
        return self.status | (STATUS_NEEDS_RESET if self._needs_reset else 0)

    @property
    def needs_reset(self) -> bool:
        return self._needs_reset

    def _queue(self, index: int) -> QueueConfig | None:
        """Queue ``index`` as the driver selects it; None if the device has no such queue."""
        return self.queues[index] if index < len(self.queues) else None

    def _writable_queue(self, index: int) -> QueueConfig | None:
        """Queue ``index`` for a register write; None once DRIVER_OK is set, as the device uses the rings."""
        q = self._queue(index)
        if q is not None and self.status & STATUS_DRIVER_OK:
            log.debug("%s: queue register write after DRIVER_OK ignored", self.device.name)
            return None
        return q

    def _write_driver_features(self, select: int, value: int) -> None:
        """The driver writes 32 bits of its features; fixed once FEATURES_OK is set, words past 1 ignored."""
        if select > 1 or self.status & STATUS_FEATURES_OK:
            return
        shift = 32 * select
        self.driver_features = (self.driver_features & ~(0xFFFF_FFFF << shift)) | (value << shift)

    def _write_status(self, value: int) -> None:
        """0 resets the device; FEATURES_OK is refused for unacceptable features; DRIVER_OK activates."""
        if value == 0:
            self.device.reset()
            self._reset_registers()
            self._needs_reset = False
            with self._isr_lock:
                self.interrupt_status = 0
            return
        old = self.status
        if value & ~old & STATUS_FEATURES_OK and not features_acceptable(self.driver_features, self.device):
            value &= ~STATUS_FEATURES_OK  # the driver re-reads the status and sees it refused
        self.status = value
        if value & ~old & STATUS_DRIVER_OK:
            problem = activate(
                self.device,
                self._memory,
                self.queues,
                self.kick_fds,
                status=self.status,
                driver_features=self.driver_features,
                interrupt=self,
            )
            if problem is not None:
                self._set_needs_reset(problem)

    def _set_needs_reset(self, reason: str) -> None:
        """Misprogramming or a broken ring: DEVICE_NEEDS_RESET, announced by a config-change interrupt to
        a running driver (§2.1.2); the VM keeps running and the driver may reset the device."""
        log.warning("%s: device needs reset: %s", self.device.name, reason)
        self._needs_reset = True
        if self.status & STATUS_DRIVER_OK:
            self.signal_config()

    # --- Interrupts (the device thread calls these) --------------------------------------------------
    def signal_queue(self, index: int) -> None:
        self._set_interrupt_status(INTERRUPT_QUEUE)
        self._send_queue_interrupt(index)

    def signal_config(self) -> None:
        self._set_interrupt_status(INTERRUPT_CONFIG)
        self._send_config_interrupt()

    def _set_interrupt_status(self, bit: int) -> None:
        with self._isr_lock:
            self.interrupt_status |= bit

    def _send_queue_interrupt(self, index: int) -> None:
        raise NotImplementedError

    def _send_config_interrupt(self) -> None:
        raise NotImplementedError

    # --- Teardown ------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return self.device.counters()

    def close(self) -> None:
        """Stop the device and close the notification eventfds; subclasses close their interrupt fds."""
        self.device.close()
        for fd in self.kick_fds:
            os.close(fd)
        self.kick_fds = []
