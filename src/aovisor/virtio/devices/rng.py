"""virtio-rng (virtio 1.2 §5.4): fills the driver's device-writable buffers from a host entropy source.

One queue, no config space, no feature bits.  Each chain is answered with one ``readv`` from the source
(``/dev/urandom`` by default, as in Cloud Hypervisor) straight into guest RAM; the used length says how
many bytes arrived, which the spec allows to be fewer than offered.  Requests are capped at
:data:`MAX_REQUEST` bytes so that one huge buffer cannot keep the device thread busy.
"""

from __future__ import annotations

import os

from aovisor.errors import AovisorError
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger
from aovisor.virtio.device import DEVICE_TYPE_RNG, DeviceQueue, VirtioDevice
from aovisor.virtio.queue import DescriptorChain

if TYPE_CHECKING:
    from aovisor.config import RngConfig

log = get_logger(__name__)

QUEUE_SIZE = 256
MAX_REQUEST = 64 * 1024


class RngDevice(VirtioDevice):
    def __init__(self, name: str, rng: RngConfig) -> None:
        self.source = str(rng.src)
        try:
            self.fd = os.open(self.source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise AovisorError(f"--rng: cannot open {self.source!r}: {e.strerror}") from None
        super().__init__(name, DEVICE_TYPE_RNG, 0, (QUEUE_SIZE,))
        self.bytes_served = 0

    def close(self) -> None:
        super().close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def process_queue(self, q: DeviceQueue) -> None:
        ring = q.ring
        while (chain := ring.pop()) is not None:
            ring.add_used(chain, self._fill(chain))

    def _fill(self, chain: DescriptorChain) -> int:
        views: list[memoryview] = []
        room = MAX_REQUEST
        for view in chain.writable:
            if room <= 0:
                break
            part = view if len(view) <= room else view[:room]
            views.append(part)
            room -= len(part)
        if not views:
            return 0
        try:
            done = os.readv(self.fd, views)
        except OSError as e:  # the source failed: the driver gets nothing, and may ask again
            log.warning("%s: reading %s: %s", self.name, self.source, e.strerror or e)
            return 0
        self.bytes_served += done
        return done
