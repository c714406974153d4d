"""virtio-net (virtio 1.2 §5.1) on a host TAP interface: one receive and one transmit queue.

Every frame on either queue starts with the 12-byte ``struct virtio_net_hdr_v1`` (§5.1.6), which the TAP
(opened with ``IFF_VNET_HDR``, see :mod:`.tap`) reads and writes in the same layout, so frames move
between guest RAM and the TAP fd with ``readv``/``writev`` and no copy in Python:

* **transmit** (queue 1): each chain's device-readable buffers are written to the TAP as they are, after
  the header was checked against what was negotiated — a partial checksum (``NEEDS_CSUM``) needs
  VIRTIO_NET_F_CSUM, a GSO frame the matching HOST_TSO feature (§5.1.6.2.1).  A frame that breaks the rules
  (short header, device-writable buffers on the transmit queue, an offload not negotiated, a frame the
  kernel refuses) is dropped and counted; the chain is returned, the device goes on.  The common frame —
  one buffer whose header asks for no segmentation — goes out in a batch: up to a queue's worth of
  writes handed to the kernel by one ``io_uring_enter`` (:mod:`.uring`; a TAP takes one frame per write,
  so this is what saves a system call per frame), the chains returned and the driver notified per batch;
  anything else, or a kernel without io_uring, takes one ``writev`` per frame, in its turn.
* **receive** (queue 0): the TAP fd is watched edge-triggered on the device's own thread; frames are read
  straight into the guest's buffers while the guest has given enough of them for the largest frame it
  may receive (1530 bytes at MTU 1500, 65562 with guest TSO).  ``num_buffers`` — which the kernel leaves
  alone — is written by us: 1, or with VIRTIO_NET_F_MRG_RXBUF the number of chains a frame was spread over
  (§5.1.6.4).  When the guest has fewer buffers than a maximal frame, one frame is read into a bounce
  buffer to learn its size and held until it fits; when it has none, the device stops reading the TAP
  until the guest's next receive-queue kick (the kernel queues, then drops, frames meanwhile, as it would
  on a real NIC whose ring is full).

``TUNSETOFFLOAD`` follows the guest's receive features when the driver sets DRIVER_OK: without
VIRTIO_NET_F_GUEST_CSUM the kernel completes every checksum before the frame reaches the guest.
"""

from __future__ import annotations

import errno
import os
import struct
from collections import deque
from typing import TYPE_CHECKING

from aovisor.logs import get_logger
from aovisor.virtio.device import DEVICE_TYPE_NET, DeviceQueue, VirtioDevice
from aovisor.virtio.devices.tap import (
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_TSO_ECN,
    VNET_HDR_SIZE,
    Tap,
)
from aovisor.virtio.devices.uring import UringWriter

if TYPE_CHECKING:
    from aovisor.config import NetConfig
    from aovisor.virtio.queue import DescriptorChain, SplitQueue

log = get_logger(__name__)

QUEUE_SIZE = 256
RX_QUEUE = 0
TX_QUEUE = 1
IOV_MAX = 1024

# Feature bits (§5.1.3).
VIRTIO_NET_F_CSUM = 1 << 0
VIRTIO_NET_F_GUEST_CSUM = 1 << 1
VIRTIO_NET_F_MAC = 1 << 5
VIRTIO_NET_F_GUEST_TSO4 = 1 << 7
VIRTIO_NET_F_GUEST_TSO6 = 1 << 8
VIRTIO_NET_F_GUEST_ECN = 1 << 9
VIRTIO_NET_F_HOST_TSO4 = 1 << 11
VIRTIO_NET_F_HOST_TSO6 = 1 << 12
VIRTIO_NET_F_HOST_ECN = 1 << 13
VIRTIO_NET_F_MRG_RXBUF = 1 << 15
VIRTIO_NET_F_STATUS = 1 << 16

# struct virtio_net_hdr flags and gso_type (§5.1.6).
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80
NUM_BUFFERS_AT = 10

VIRTIO_NET_S_LINK_UP = 1

ETH_HEADER = 14
VLAN_HEADER = 4
ETH_MIN_FRAME = ETH_HEADER
MAX_GSO_FRAME = 65535 + ETH_HEADER + VLAN_HEADER  # an IP packet of 64 KiB in a VLAN-tagged frame
MAX_TX_FRAME = VNET_HDR_SIZE + MAX_GSO_FRAME
MIN_TX_CHAIN = VNET_HDR_SIZE + ETH_MIN_FRAME

_HDR = struct.Struct("<BBHHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
_U16 = struct.Struct("<H")

CSUM_FEATURES = VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM
TSO_FEATURES = (
    VIRTIO_NET_F_GUEST_TSO4
    | VIRTIO_NET_F_GUEST_TSO6
    | VIRTIO_NET_F_GUEST_ECN
    | VIRTIO_NET_F_HOST_TSO4
    | VIRTIO_NET_F_HOST_TSO6
    | VIRTIO_NET_F_HOST_ECN
)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_mac(text: str) -> bytes:
    """``"52:54:00:12:34:56"`` -> 6 bytes; ValueError unless six 2-digit hex bytes of a unicast address.

    The one check of a MAC for the CLI and the REST API.  Only hex digits: ``int(part, 16)`` alone would
    also take ``+1`` or `` 1``.
    """
    parts = text.split(":")
    if len(parts) != 6 or any(len(p) != 2 or not _HEX_DIGITS.issuperset(p) for p in parts):
        raise ValueError(f"{text!r} is not a MAC address (six hex bytes separated by ':')")
    mac = bytes(int(p, 16) for p in parts)
    if mac[0] & 1:
        raise ValueError(f"{text} is a multicast address; a NIC needs a unicast one")
    if mac == bytes(6):
        raise ValueError(f"{text} is the null address")
    return mac


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def random_mac() -> str:
    """A random locally administered unicast address (what Cloud Hypervisor gives a NIC without mac=)."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFC) | 0x02
    return format_mac(bytes(mac))


def net_config_space(mac: bytes) -> bytes:
    """struct virtio_net_config (§5.1.4): mac, status (link up), max_virtqueue_pairs."""
    return mac + struct.pack("<HH", VIRTIO_NET_S_LINK_UP, 1)


class NetDevice(VirtioDevice):
    """A virtio-net device on a TAP; the TAP is opened (and configured) when the device is created."""

    def __init__(self, name: str, net: NetConfig, *, tap: Tap | None = None, batch_tx: bool = True) -> None:
        """``tap``: an open TAP to use instead of the one ``net`` names (tests pass a stand-in);
        ``batch_tx``: False writes each transmitted frame with its own ``writev`` (no io_uring)."""
        if tap is not None:
            self.tap = tap
        elif net.fds:
            self.tap = Tap.from_fd(net.fds[0])
        else:
            self.tap = Tap.open(net.tap or "vmtap%d")
        try:
            if tap is None and net.fds and (net.ip or net.mask):
                log.info("%s: ip/mask ignored for a TAP given by fd", name)
            elif tap is None and not net.fds:
                self.tap.configure(net.ip, net.mask)
        except BaseException:
            self.tap.close()
            raise
        self.mac = parse_mac(net.mac) if net.mac else parse_mac(random_mac())
        features = VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_STATUS
        if net.offload_csum:
            features |= CSUM_FEATURES
            if net.offload_tso:  # segmentation offload needs checksum offload (§5.1.3.1)
                features |= TSO_FEATURES
        super().__init__(
            name, DEVICE_TYPE_NET, features, (QUEUE_SIZE, QUEUE_SIZE), net_config_space(self.mac)
        )
        # Receive state (device thread): chains popped but not yet filled, their total writable bytes,
        # and the length of a frame held in the bounce buffer until the guest gives room for it.
        self._rx_chains: deque[DescriptorChain] = deque()
        self._rx_room = 0
        self._rx_views = 0
        self._held = 0
        self._bounce = memoryview(bytearray(MAX_TX_FRAME))
        self._rx_need = VNET_HDR_SIZE + ETH_HEADER + VLAN_HEADER + 1500
        self._mrg = False
        self._rx_queue: DeviceQueue | None = None
        self.rx_frames = self.rx_bytes = self.rx_dropped = 0
        self.tx_frames = self.tx_bytes = self.tx_dropped = 0
        # Transmit batches through an io_uring (opened at the first activation; None: one writev per frame).
        self._batch_tx = batch_tx
        self._tx_unexpected_flags = 0xFF
        self._tx_header_mask = 0xFFFF
        self._tx_writer: UringWriter | None = None

    def counters(self) -> dict[str, int]:
        return {
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "rx_dropped": self.rx_dropped,
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "tx_dropped": self.tx_dropped,
        }

    def close(self) -> None:
        self.loop.call(self._close_tx_writer)  # on the device thread, between two batches
        super().close()
        self.tap.close()

    def _close_tx_writer(self) -> None:
        writer, self._tx_writer = self._tx_writer, None
        if writer is not None:
            writer.close()

    # --- Activation (device thread) -----------------------------------------------------------------
    def activated(self) -> None:
        features = self.acked_features
        offload = 0
        if features & VIRTIO_NET_F_GUEST_CSUM:
            offload |= TUN_F_CSUM
            if features & VIRTIO_NET_F_GUEST_TSO4:
                offload |= TUN_F_TSO4
            if features & VIRTIO_NET_F_GUEST_TSO6:
                offload |= TUN_F_TSO6
            if offload & (TUN_F_TSO4 | TUN_F_TSO6) and features & VIRTIO_NET_F_GUEST_ECN:
                offload |= TUN_F_TSO_ECN
        self.tap.set_offload(offload)
        self._mrg = bool(features & VIRTIO_NET_F_MRG_RXBUF)
        # Transmit header flags that need a closer look (_check_tx): all but the ones allowed.
        allowed = VIRTIO_NET_HDR_F_DATA_VALID
        if features & VIRTIO_NET_F_CSUM:
            allowed |= VIRTIO_NET_HDR_F_NEEDS_CSUM
        self._tx_unexpected_flags = 0xFF & ~allowed
        self._tx_header_mask = self._tx_unexpected_flags | 0xFF << 8  # and any gso_type
        if offload & (TUN_F_TSO4 | TUN_F_TSO6):
            self._rx_need = VNET_HDR_SIZE + MAX_GSO_FRAME
        else:
            self._rx_need = VNET_HDR_SIZE + ETH_HEADER + VLAN_HEADER + self.tap.mtu()
        self._rx_queue = next((q for q in self.queues if q.index == RX_QUEUE), None)
        if self._rx_queue is not None:
            self.loop.add(self.tap.fd, self._tap_readable, edge=True)
        if self._tx_writer is None and self._batch_tx and any(q.index == TX_QUEUE for q in self.queues):
            try:
                self._tx_writer = UringWriter(self.tap.fd, QUEUE_SIZE)
            except OSError as e:
                log.debug("%s: no io_uring (%s): one writev per transmitted frame", self.name, e.strerror)
                self._batch_tx = False

    def deactivated(self) -> None:
        self.loop.remove(self.tap.fd)
        self._rx_chains.clear()
        self._rx_room = self._rx_views = self._held = 0
        self._rx_queue = None

    def fail(self, reason: str) -> None:
        self.loop.remove(self.tap.fd)
        super().fail(reason)

    # --- Queues (device thread) ----------------------------------------------------------------------
    def _serve(self, q: DeviceQueue) -> None:
        if q.index == RX_QUEUE:
            self._receive(q)
        else:
            super()._serve(q)

    def _tap_readable(self) -> None:
        if self._rx_queue is not None:
            self._receive(self._rx_queue)

    def process_queue(self, q: DeviceQueue) -> None:
        """The transmit queue: every available frame goes to the TAP, in order."""
        if q.index != TX_QUEUE:
            return
        q.ring.suppress_notifications()  # until _serve re-arms them, the ring drained
        if self._tx_writer is not None:
            self._transmit_batches(q)
        else:
            self._transmit_each(q.ring)

    def _transmit_batches(self, q: DeviceQueue) -> None:
        """Send the available frames in batches of one ``io_uring_enter`` each (see :mod:`.uring`).

        The common frame — one device-readable buffer in low RAM whose header asks for nothing the driver
        did not negotiate, and for no segmentation (what :meth:`SplitQueue.pop_readable` takes with
        ``_tx_header_mask``) — costs a few bytecodes; any other chain goes through :meth:`_transmit_each` in
        its turn (with the chains after it, more of them while no batch forms: a driver whose every frame
        is a chain of several buffers costs little more than without batches).  A batch's chains are
        returned once all its writes are done, and the driver is notified per batch, as QEMU does per
        burst."""
        ring = q.ring
        others = 1  # chains to send one by one when a batch finds none: doubles while batches keep failing
        while (writer := self._tx_writer) is not None:
            heads, addresses, lengths = ring.pop_readable(
                writer.entries, MIN_TX_CHAIN, MAX_TX_FRAME, self._tx_header_mask
            )
            if not heads:
                if not self._transmit_each(ring, limit=others):
                    return
                others = min(2 * others, QUEUE_SIZE)
                continue
            others = 1
            try:
                failed = writer.write(addresses, lengths)
            except OSError as e:
                # Should not happen (resources); which frames went out is unknown: count them as lost.
                log.warning("%s: io_uring failed (%s): writing frames one by one", self.name, e.strerror)
                self._close_tx_writer()
                failed = [(i, -(e.errno or errno.EIO)) for i in range(len(heads))]
            if failed:
                self._count_failures(failed, lengths)
            else:
                self.tx_frames += len(heads)
                self.tx_bytes += sum(lengths) - VNET_HDR_SIZE * len(heads)
            ring.add_used_readable(heads)
            self.notify_queue(q)

    def _count_failures(self, failed: list[tuple[int, int]], lengths: list[int]) -> None:
        """Account for a batch of frames (``lengths``) some of whose writes failed (``(i, -errno)``)."""
        lost = 0
        for i, result in failed:
            lost += lengths[i]
            log.debug("%s: TAP write failed: %s", self.name, os.strerror(-result))
        sent = len(lengths) - len(failed)
        self.tx_dropped += len(failed)
        self.tx_frames += sent
        self.tx_bytes += sum(lengths) - lost - VNET_HDR_SIZE * sent

    def _transmit_each(self, ring: SplitQueue, limit: int = -1) -> int:
        """Send available frames one ``writev`` each, up to ``limit`` of them (-1: all); returns how many
        chains were taken.

        This loop runs once per frame, so it is written for speed: a frame whose header asks for nothing
        the driver did not negotiate, and for no segmentation (the common case), in a chain of
        device-readable buffers only is written without further checks; anything else goes through
        :meth:`_check_tx`."""
        pop, add_used, writev, fd = ring.pop, ring.add_used, os.writev, self.tap.fd
        unexpected = self._tx_unexpected_flags
        taken = frames = sent = dropped = 0
        try:
            while taken != limit and (chain := pop()) is not None:
                taken += 1
                readable = chain.readable
                length = chain.readable_len
                first = readable[0] if readable else None
                if (
                    first is None
                    or chain.writable
                    or len(first) < VNET_HDR_SIZE
                    or first[0] & unexpected
                    or first[1]
                    or not MIN_TX_CHAIN <= length <= MAX_TX_FRAME
                    or len(readable) > IOV_MAX
                ):
                    problem = self._check_tx(chain)
                    if problem is not None:
                        dropped += 1
                        log.debug("%s: dropped a transmitted frame: %s", self.name, problem)
                        add_used(chain, 0)
                        continue
                try:
                    writev(fd, readable)
                except OSError as e:  # the kernel refused the frame (bad offsets, too large...)
                    dropped += 1
                    log.debug("%s: TAP write failed: %s", self.name, e.strerror)
                else:
                    frames += 1
                    sent += length
                add_used(chain, 0)
        finally:
            self.tx_frames += frames
            self.tx_bytes += sent - VNET_HDR_SIZE * frames
            self.tx_dropped += dropped
        return taken

    # --- Transmit ------------------------------------------------------------------------------------
    def _check_tx(self, chain: DescriptorChain) -> str | None:
        """Why a transmit chain cannot be sent, or None (§5.1.6.2)."""
        if chain.writable:
            return "device-writable buffers on the transmit queue"
        if chain.readable_len < MIN_TX_CHAIN:
            return f"{chain.readable_len} bytes is less than a header and an Ethernet header"
        if chain.readable_len > MAX_TX_FRAME:
            return f"{chain.readable_len} bytes is more than the largest frame"
        if len(chain.readable) > IOV_MAX:
            return f"{len(chain.readable)} buffers"
        first = chain.readable[0]
        header = first if len(first) >= VNET_HDR_SIZE else _gather(chain.readable, VNET_HDR_SIZE)
        flags, gso_type, _hdr_len, gso_size, _start, _offset, _nb = _HDR.unpack_from(header)
        features = self.acked_features
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and not features & VIRTIO_NET_F_CSUM:
            return "NEEDS_CSUM without VIRTIO_NET_F_CSUM"
        if flags & ~(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID):
            return f"unknown header flags {flags:#x}"
        gso = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
        if gso != VIRTIO_NET_HDR_GSO_NONE:
            needed = {
                VIRTIO_NET_HDR_GSO_TCPV4: VIRTIO_NET_F_HOST_TSO4,
                VIRTIO_NET_HDR_GSO_TCPV6: VIRTIO_NET_F_HOST_TSO6,
            }.get(gso)
            if needed is None or not features & needed:
                return f"GSO type {gso_type:#x} not negotiated"
            if gso_type & VIRTIO_NET_HDR_GSO_ECN and not features & VIRTIO_NET_F_HOST_ECN:
                return "GSO ECN without VIRTIO_NET_F_HOST_ECN"
            if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or gso_size == 0:
                return "a GSO frame without a partial checksum or segment size"
        elif gso_type & VIRTIO_NET_HDR_GSO_ECN:
            return "ECN bit without GSO"
        return None

    # --- Receive -------------------------------------------------------------------------------------
    def _receive(self, q: DeviceQueue) -> None:
        """Move frames from the TAP into the guest's receive buffers until one side runs out."""
        if self.broken:
            return
        ring = q.ring
        fd = self.tap.fd
        try:
            while True:
                if not self._held:
                    self._take_chains(ring, self._rx_need)
                    if self._rx_room >= self._rx_need and self._rx_views <= IOV_MAX:
                        # Room for any frame: read straight into the guest's buffers.
                        views = [v for chain in self._rx_chains for v in chain.writable]
                        try:
                            n = os.readv(fd, views)
                        except BlockingIOError:
                            return
                        except OSError as e:
                            self._rx_error(e)
                            continue
                        if n > self._rx_room:  # truncated (the MTU grew): drop it, reuse the buffers
                            self.rx_dropped += 1
                            continue
                        self._complete(ring, n)
                        continue
                    if not self._rx_chains:
                        if ring.arm_notification():
                            continue
                        return  # the next receive-queue kick brings buffers
                    try:  # fewer buffers than a maximal frame: learn this frame's size first
                        n = os.readv(fd, [self._bounce])
                    except BlockingIOError:
                        return
                    except OSError as e:
                        self._rx_error(e)
                        continue
                    self._held = n
                if not self._deliver_held(ring):
                    if ring.arm_notification():
                        continue
                    return
        finally:
            self.notify_queue(q)

    def _take_chains(self, ring: SplitQueue, want: int) -> None:
        """Pop receive chains until they hold ``want`` bytes (one chain only without MRG_RXBUF)."""
        chains = self._rx_chains
        while self._rx_room < want and (self._mrg or not chains):
            chain = ring.pop()
            if chain is None:
                return
            if chain.readable or chain.writable_len < VNET_HDR_SIZE:
                # A receive buffer the device may not write, or too small for the header (§5.1.6.3):
                # give it back empty.
                log.debug("%s: unusable receive chain %r", self.name, chain)
                ring.add_used(chain, 0)
                continue
            chains.append(chain)
            self._rx_room += chain.writable_len
            self._rx_views += len(chain.writable)

    def _deliver_held(self, ring: SplitQueue) -> bool:
        """Copy the held frame into receive buffers; False when the guest must give more first."""
        n = self._held
        if not self._rx_chains or self._rx_room < n:
            self._take_chains(ring, n)
        if not self._rx_chains:
            return False
        if self._rx_room < n:
            if self._mrg:
                return False
            self.rx_dropped += 1  # one chain of this guest can never hold it (§5.1.6.3.1)
            self._held = 0
            return True
        data = self._bounce[:n]
        at = 0
        for chain in self._rx_chains:
            for view in chain.writable:
                take = min(len(view), n - at)
                view[:take] = data[at : at + take]
                at += take
                if at == n:
                    break
            if at == n:
                break
        self._held = 0
        self._complete(ring, n)
        return True

    def _complete(self, ring: SplitQueue, n: int) -> None:
        """Return the chains that ``n`` received bytes filled, with ``num_buffers`` set."""
        chains = self._rx_chains
        used: list[tuple[DescriptorChain, int]] = []
        left = n
        while left > 0 and chains:
            chain = chains.popleft()
            take = min(chain.writable_len, left)
            used.append((chain, take))
            left -= take
            self._rx_room -= chain.writable_len
            self._rx_views -= len(chain.writable)
        _put_u16(used[0][0].writable, NUM_BUFFERS_AT, len(used))
        for chain, take in used:
            ring.add_used(chain, take)
        self.rx_frames += 1
        self.rx_bytes += n - VNET_HDR_SIZE

    def _rx_error(self, e: OSError) -> None:
        self.rx_dropped += 1
        if e.errno not in (errno.EFAULT, errno.EINVAL, errno.EMSGSIZE):
            log.warning("%s: reading %s: %s", self.name, self.tap.name, e.strerror)


def _gather(views: list[memoryview], length: int) -> bytes:
    """The first ``length`` bytes of ``views`` (a header split across descriptors)."""
    out = bytearray()
    for v in views:
        out += v[: length - len(out)]
        if len(out) >= length:
            break
    return bytes(out)


def _put_u16(views: list[memoryview], offset: int, value: int) -> None:
    """Store a little-endian u16 at ``offset`` of the bytes that ``views`` cover (it may straddle two)."""
    data = _U16.pack(value)
    for v in views:
        if offset < len(v):
            take = min(len(v) - offset, len(data))
            v[offset : offset + take] = data[:take]
            data = data[take:]
            if not data:
                return
            offset = 0
        else:
            offset -= len(v)
