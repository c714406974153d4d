"""virtio-console (virtio 1.2 §5.3): one port, the guest's ``/dev/hvc0``.

Queue 0 (receiveq) takes bytes typed on the host, queue 1 (transmitq) carries the guest's output to the
``--console`` endpoint (the terminal, a file, or nowhere).  Features: VIRTIO_CONSOLE_F_SIZE (the
terminal's columns and rows in the config space, when the endpoint is a terminal) and
VIRTIO_CONSOLE_F_EMERG_WRITE (a byte written to ``emerg_wr`` is output at once, even before the queues
are set up: Linux's early ``hvc`` console can use it).

Input arrives on the endpoint's reader thread; it is queued here (at most :data:`INPUT_LIMIT` bytes,
more is dropped, as a UART drops characters nobody reads) and an eventfd wakes the device thread, which
copies it into the guest's receive buffers.  A chain in the wrong direction (device-writable buffers on
the transmit queue, device-readable ones on the receive queue) is returned untouched, with nothing used.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aovisor.logs import get_logger
from aovisor.virtio.device import DEVICE_TYPE_CONSOLE, DeviceQueue, VirtioDevice

if TYPE_CHECKING:
    from aovisor.virtio.queue import DescriptorChain

log = get_logger(__name__)

QUEUE_SIZE = 256
RX_QUEUE = 0
TX_QUEUE = 1
INPUT_LIMIT = 64 * 1024
MAX_OUTPUT_CHAIN = 1 << 20  # bytes of one transmit chain written out; the rest is dropped

VIRTIO_CONSOLE_F_SIZE = 1 << 0
VIRTIO_CONSOLE_F_EMERG_WRITE = 1 << 2

CONFIG_SIZE = 12  # cols u16, rows u16, max_nr_ports u32, emerg_wr u32
EMERG_WR_AT = 8


def console_config_space(cols: int, rows: int) -> bytes:
    return struct.pack("<HHII", cols, rows, 1, 0)


class ConsoleDevice(VirtioDevice):
    """The virtio console; ``write`` is where guest output goes (the endpoint's ``write``)."""

    def __init__(
        self, name: str, write: Callable[[bytes], None], size: tuple[int, int] | None = None
    ) -> None:
        features = VIRTIO_CONSOLE_F_EMERG_WRITE | (VIRTIO_CONSOLE_F_SIZE if size is not None else 0)
        cols, rows = size or (0, 0)
        super().__init__(
            name, DEVICE_TYPE_CONSOLE, features, (QUEUE_SIZE, QUEUE_SIZE), console_config_space(cols, rows)
        )
        self._write = write
        self._input: deque[bytes] = deque()
        self._input_len = 0
        self._input_lock = threading.Lock()
        self._input_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._rx: DeviceQueue | None = None
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.dropped_input = 0

    def counters(self) -> dict[str, int]:
        return {"tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes, "dropped_input": self.dropped_input}

    def close(self) -> None:
        super().close()
        if self._input_fd >= 0:
            os.close(self._input_fd)
            self._input_fd = -1

    # --- Host side -----------------------------------------------------------------------------------
    def enqueue_input(self, data: bytes) -> None:
        """Bytes typed on the host for the guest (any thread)."""
        with self._input_lock:
            room = INPUT_LIMIT - self._input_len
            if len(data) > room:
                self.dropped_input += len(data) - room
                data = data[:room]
            if not data:
                return
            self._input.append(data)
            self._input_len += len(data)
        with contextlib.suppress(OSError):  # closed: the VM is going away
            os.eventfd_write(self._input_fd, 1)

    def write_config(self, offset: int, size: int, value: int) -> None:
        """``emerg_wr`` (§5.3.4): the low byte is output immediately."""
        if offset == EMERG_WR_AT and size == 4 and self.avail_features & VIRTIO_CONSOLE_F_EMERG_WRITE:
            self.tx_bytes += 1
            self._write(bytes([value & 0xFF]))
        else:
            super().write_config(offset, size, value)

    # --- Device thread -------------------------------------------------------------------------------
    def activated(self) -> None:
        self._rx = next((q for q in self.queues if q.index == RX_QUEUE), None)
        if self._rx is not None:
            self.loop.add(self._input_fd, self._input_ready)

    def deactivated(self) -> None:
        self.loop.remove(self._input_fd)
        self._rx = None

    def fail(self, reason: str) -> None:
        self.loop.remove(self._input_fd)
        super().fail(reason)

    def _input_ready(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._input_fd)
        if self._rx is not None:
            self._serve(self._rx)

    def _serve(self, q: DeviceQueue) -> None:
        if q.index == RX_QUEUE:
            self._receive(q)
        else:
            super()._serve(q)

    def process_queue(self, q: DeviceQueue) -> None:
        """The transmit queue: each chain's bytes go to the endpoint."""
        if q.index != TX_QUEUE:
            return
        ring = q.ring
        while (chain := ring.pop()) is not None:
            self._output(chain)
            ring.add_used(chain, 0)

    def _output(self, chain: DescriptorChain) -> None:
        if chain.writable:
            log.debug("%s: transmit chain with device-writable buffers dropped", self.name)
            return
        data = b"".join(chain.readable) if len(chain.readable) > 1 else bytes(chain.readable[0])
        if len(data) > MAX_OUTPUT_CHAIN:
            data = data[:MAX_OUTPUT_CHAIN]
        if data:
            self.tx_bytes += len(data)
            self._write(data)

    def _receive(self, q: DeviceQueue) -> None:
        """Move queued host input into the guest's receive buffers."""
        if self.broken:
            return
        ring = q.ring
        try:
            while True:
                with self._input_lock:
                    if not self._input:
                        return
                chain = ring.pop()
                if chain is None:
                    if ring.arm_notification():
                        continue
                    return  # the guest's next receive-queue kick brings buffers
                if chain.readable or not chain.writable:
                    log.debug("%s: receive chain with device-readable buffers returned unused", self.name)
                    ring.add_used(chain, 0)
                    continue
                ring.add_used(chain, self._fill(chain))
        finally:
            self.notify_queue(q)

    def _fill(self, chain: DescriptorChain) -> int:
        done = 0
        with self._input_lock:
            for view in chain.writable:
                at = 0
                while at < len(view) and self._input:
                    piece = self._input[0]
                    take = min(len(piece), len(view) - at)
                    view[at : at + take] = piece[:take]
                    at += take
                    if take == len(piece):
                        self._input.popleft()
                    else:
                        self._input[0] = piece[take:]
                done += at
                if not self._input:
                    break
            self._input_len -= done
        self.rx_bytes += done
        return done
