"""virtio-vsock (virtio 1.2 §5.10) with Cloud Hypervisor's *hybrid* host side: Unix sockets, no host vsock.

Host to guest: a program connects to the Unix socket ``socket=PATH`` and writes ``CONNECT <port>\\n``; the
device sends the guest a connection REQUEST to ``<port>`` from a fresh host port, and once the guest
accepts (RESPONSE) writes ``OK <host port>\\n`` back; from then on the Unix stream *is* the connection.  If
the guest refuses (RST), the client's socket is closed.  Guest to host: a REQUEST to host port ``P``
(CID 2) connects to the Unix socket ``PATH_P``; a refused or missing socket answers RST.

Queues: 0 receive (device -> guest), 1 transmit (guest -> device), 2 event (never used: it only matters
for transport resets after a migration).  Every packet is a 44-byte header (:mod:`.packet`) and, for RW,
the data.  Flow control is vsock's credit (§5.10.6.3): we never send the guest more than it advertised
(``buf_alloc - (sent - fwd_cnt)``) and we advertise :data:`.connection.BUF_ALLOC` per connection,
counting as forwarded what reached the host socket; a guest that sends past our credit, or names a
connection or operation that does not exist, gets RST.  A packet whose header lies (``len`` beyond the
buffer, wrong CIDs, device-writable buffers on the transmit queue) is dropped.

Everything runs on the device's thread: the listening socket and every connection's socket are watched
(edge-triggered) by the device's epoll loop, next to the queue kicks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from collections import deque
from typing import TYPE_CHECKING

from aovisor.errors import AovisorError
from aovisor.logs import get_logger
from aovisor.virtio.device import DEVICE_TYPE_VSOCK, DeviceQueue, VirtioDevice
from aovisor.virtio.devices.vsock.connection import BUF_ALLOC, Connection, State
from aovisor.virtio.devices.vsock.packet import (
    HEADER_SIZE,
    HOST_CID,
    OP_CREDIT_REQUEST,
    OP_CREDIT_UPDATE,
    OP_REQUEST,
    OP_RESPONSE,
    OP_RST,
    OP_RW,
    OP_SHUTDOWN,
    SHUTDOWN_BOTH,
    SHUTDOWN_RCV,
    SHUTDOWN_SEND,
    TYPE_STREAM,
    Header,
)

if TYPE_CHECKING:
    from aovisor.config import VsockConfig
    from aovisor.virtio.queue import DescriptorChain, SplitQueue

log = get_logger(__name__)

QUEUE_SIZE = 256
RX_QUEUE, TX_QUEUE, EVENT_QUEUE = 0, 1, 2
MAX_CONNECTIONS = 1024
MAX_PACKET_DATA = 64 * 1024  # data of one packet to the guest
CONNECT_LINE_MAX = 32  # "CONNECT 4294967295\n" and some slack
FIRST_HOST_PORT = 1 << 30  # host ports given to host-initiated connections count up from here
CREDIT_UPDATE_THRESHOLD = BUF_ALLOC // 4


class VsockError(AovisorError):
    """The vsock's Unix socket cannot be set up."""


class VsockDevice(VirtioDevice):
    def __init__(self, name: str, cfg: VsockConfig) -> None:
        self.cid = cfg.cid
        self.path = str(cfg.socket)
        self.listener = _listen(self.path)
        super().__init__(name, DEVICE_TYPE_VSOCK, 0, (QUEUE_SIZE,) * 3, struct.pack("<Q", self.cid))
        self._conns: dict[tuple[int, int], Connection] = {}
        self._by_fd: dict[int, Connection] = {}
        self._control: deque[Header] = deque()  # header-only packets waiting for receive buffers
        self._readable: dict[Connection, None] = {}  # sockets that may have data for the guest
        self._spare: DescriptorChain | None = None  # a receive chain popped but not filled
        self._next_port = FIRST_HOST_PORT
        self._rx: DeviceQueue | None = None
        self.dropped_packets = 0

    def counters(self) -> dict[str, int]:
        return {"connections": len(self._conns), "dropped_packets": self.dropped_packets}

    def close(self) -> None:
        super().close()
        for conn in list(self._by_fd.values()):
            conn.sock.close()
        self._by_fd.clear()
        self._conns.clear()
        if self.listener.fileno() >= 0:
            self.listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    # --- Activation (device thread) -----------------------------------------------------------------
    def activated(self) -> None:
        self._rx = next((q for q in self.queues if q.index == RX_QUEUE), None)
        self.loop.add(self.listener.fileno(), self._accept)

    def deactivated(self) -> None:
        self.loop.remove(self.listener.fileno())
        for conn in list(self._by_fd.values()):
            self._close(conn)
        self._control.clear()
        self._readable.clear()
        self._spare = None
        self._rx = None

    def fail(self, reason: str) -> None:
        self.loop.remove(self.listener.fileno())
        for conn in list(self._by_fd.values()):
            self._close(conn)
        super().fail(reason)

    def _serve(self, q: DeviceQueue) -> None:
        if q.index == RX_QUEUE:
            self._receive(q)
        elif q.index == TX_QUEUE:
            super()._serve(q)
            self._flush_rx()
        # The event queue holds the driver's buffers until a transport reset event, which we never send.

    def _flush_rx(self) -> None:
        if self._rx is not None:
            self._receive(self._rx)

    # --- Host side: accepting clients and their CONNECT line -----------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("%s: accept on %s: %s", self.name, self.path, e.strerror)
                return
            if len(self._by_fd) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(sock, State.AWAIT_CONNECT)
            self._watch(conn)

    def _watch(self, conn: Connection) -> None:
        fd = conn.fileno()
        self._by_fd[fd] = conn
        self.loop.add(fd, lambda: self._socket_event(conn), edge=True, writable=True)

    def _socket_event(self, conn: Connection) -> None:
        if conn.fileno() not in self._by_fd:
            return
        if conn.state is State.AWAIT_CONNECT:
            self._read_connect_line(conn)
            return
        if conn.tx:
            self._flush_tx(conn)
        if conn.state is State.ESTABLISHED and not conn.host_eof and conn.fileno() in self._by_fd:
            self._readable[conn] = None
            self._flush_rx()

    def _read_connect_line(self, conn: Connection) -> None:
        try:
            peek = conn.sock.recv(CONNECT_LINE_MAX, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        end = peek.find(b"\n")
        if end < 0:
            if not peek or len(peek) >= CONNECT_LINE_MAX:
                self._close(conn)  # closed before the line, or a line too long to be CONNECT
            return
        line = conn.sock.recv(end + 1)
        words = line.decode("ascii", "replace").split()
        if len(words) != 2 or words[0] != "CONNECT" or not words[1].isdigit() or int(words[1]) > 0xFFFF_FFFF:
            log.debug("%s: bad host handshake %r", self.name, line)
            self._close(conn)
            return
        if not self._queue_ready():
            self._close(conn)
            return
        conn.peer_port = int(words[1])
        conn.local_port = self._allocate_port(conn.peer_port)
        conn.state = State.CONNECTING
        self._conns[conn.key] = conn
        self._send_control(conn, OP_REQUEST)
        self._flush_rx()

    def _queue_ready(self) -> bool:
        return self._rx is not None and not self.broken

    def _allocate_port(self, peer_port: int) -> int:
        while True:
            port = self._next_port
            self._next_port = FIRST_HOST_PORT if port >= 0xFFFF_FFFE else port + 1
            if (port, peer_port) not in self._conns:
                return port

    # --- Guest -> host (transmit queue) --------------------------------------------------------------
    def process_queue(self, q: DeviceQueue) -> None:
        if q.index != TX_QUEUE:
            return
        ring = q.ring
        while (chain := ring.pop()) is not None:
            self._transmitted(chain)
            ring.add_used(chain, 0)

    def _transmitted(self, chain: DescriptorChain) -> None:
        if chain.writable or chain.readable_len < HEADER_SIZE:
            self._drop("a transmit chain with device-writable buffers or no header")
            return
        first = chain.readable[0]
        raw = first[:HEADER_SIZE] if len(first) >= HEADER_SIZE else b"".join(chain.readable)[:HEADER_SIZE]
        hdr = Header.unpack(raw)
        if hdr.src_cid != self.cid or hdr.dst_cid != HOST_CID:
            self._drop(f"packet from cid {hdr.src_cid} to cid {hdr.dst_cid}")
            return
        if hdr.len > chain.readable_len - HEADER_SIZE:
            self._drop(f"len {hdr.len} beyond the {chain.readable_len - HEADER_SIZE} bytes given")
            return
        key = (hdr.dst_port, hdr.src_port)
        conn = self._conns.get(key)
        if hdr.type != TYPE_STREAM:
            self._reset(hdr)
            return
        if conn is not None:
            conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt)
            if conn.credit_blocked and conn.peer_credit() > 0:
                conn.credit_blocked = False
                self._readable[conn] = None
        op = hdr.op
        if op == OP_REQUEST:
            if conn is None:
                self._guest_connect(hdr)
            else:
                self._reset(hdr)
        elif conn is None:
            if op != OP_RST:  # never answer a RST with a RST
                self._reset(hdr)
        elif op == OP_RESPONSE:
            self._established(conn)
        elif op == OP_RW:
            self._guest_data(conn, chain, hdr.len)
        elif op == OP_CREDIT_UPDATE:
            pass  # the credit was taken above
        elif op == OP_CREDIT_REQUEST:
            self._send_control(conn, OP_CREDIT_UPDATE)
        elif op == OP_SHUTDOWN:
            self._guest_shutdown(conn, hdr.flags)
        elif op == OP_RST:
            self._close(conn)
        else:
            self._reset_conn(conn)

    def _drop(self, why: str) -> None:
        self.dropped_packets += 1
        log.debug("%s: dropped a packet: %s", self.name, why)

    def _guest_connect(self, hdr: Header) -> None:
        """The guest connects to host port ``dst_port``: connect to ``PATH_<port>``."""
        if len(self._by_fd) >= MAX_CONNECTIONS:
            self._reset(hdr)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(f"{self.path}_{hdr.dst_port}")
        except OSError as e:
            log.debug("%s: guest connection to %s_%d: %s", self.name, self.path, hdr.dst_port, e.strerror)
            sock.close()
            self._reset(hdr)
            return
        conn = Connection(sock, State.ESTABLISHED, hdr.dst_port, hdr.src_port)
        conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt)
        self._conns[conn.key] = conn
        self._watch(conn)
        self._send_control(conn, OP_RESPONSE)

    def _established(self, conn: Connection) -> None:
        if conn.state is not State.CONNECTING:
            self._reset_conn(conn)
            return
        conn.state = State.ESTABLISHED
        try:
            conn.sock.send(f"OK {conn.local_port}\n".encode())
        except OSError:
            self._reset_conn(conn)
            return
        self._readable[conn] = None

    def _guest_data(self, conn: Connection, chain: DescriptorChain, length: int) -> None:
        if conn.state is not State.ESTABLISHED or conn.shut_write:
            self._reset_conn(conn)
            return
        if len(conn.tx) + length > BUF_ALLOC:  # more than the credit we gave: a broken or hostile driver
            log.debug("%s: guest overran its credit on %s", self.name, conn.key)
            self._reset_conn(conn)
            return
        skip, left = HEADER_SIZE, length
        for view in chain.readable:
            if skip >= len(view):
                skip -= len(view)
                continue
            part = view[skip : skip + left]
            conn.tx += part
            left -= len(part)
            skip = 0
            if left == 0:
                break
        self._flush_tx(conn)

    def _flush_tx(self, conn: Connection) -> None:
        """Write what the guest sent to the host socket, as far as it takes it."""
        while conn.tx:
            try:
                n = conn.sock.send(conn.tx)
            except BlockingIOError:
                break
            except OSError:
                self._reset_conn(conn)
                return
            del conn.tx[:n]
            conn.fwd_cnt = (conn.fwd_cnt + n) & 0xFFFF_FFFF
        if not conn.tx:
            if conn.close_after_flush:
                self._reset_conn(conn)
                return
            if conn.shut_write:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_WR)
        if (conn.fwd_cnt - conn.fwd_cnt_sent) & 0xFFFF_FFFF >= CREDIT_UPDATE_THRESHOLD or (
            not conn.tx and conn.fwd_cnt != conn.fwd_cnt_sent
        ):
            self._send_control(conn, OP_CREDIT_UPDATE)

    def _guest_shutdown(self, conn: Connection, flags: int) -> None:
        if flags & SHUTDOWN_BOTH == SHUTDOWN_BOTH or conn.host_eof:
            # The guest is done with the connection: flush what it sent, then RST (which Linux waits for).
            conn.close_after_flush = True
            self._flush_tx(conn)
            return
        if flags & SHUTDOWN_SEND:
            conn.shut_write = True
            self._flush_tx(conn)
        if flags & SHUTDOWN_RCV:
            conn.host_eof = True  # the guest reads no more: stop forwarding the socket's data, as at EOF
            self._readable.pop(conn, None)

    # --- Host -> guest (receive queue) ---------------------------------------------------------------
    def _send_control(self, conn: Connection, op: int, flags: int = 0) -> None:
        conn.fwd_cnt_sent = conn.fwd_cnt
        self._control.append(self._header(conn, op, 0, flags))

    def _header(self, conn: Connection, op: int, length: int, flags: int = 0) -> Header:
        return Header(
            HOST_CID,
            self.cid,
            conn.local_port,
            conn.peer_port,
            length,
            TYPE_STREAM,
            op,
            flags,
            BUF_ALLOC,
            conn.fwd_cnt,
        )

    def _reset(self, hdr: Header) -> None:
        """Answer a packet with RST (no connection state involved)."""
        self._control.append(
            Header(HOST_CID, self.cid, hdr.dst_port, hdr.src_port, 0, TYPE_STREAM, OP_RST, 0, 0, 0)
        )

    def _reset_conn(self, conn: Connection) -> None:
        self._send_control(conn, OP_RST)
        self._close(conn)

    def _close(self, conn: Connection) -> None:
        fd = conn.fileno()
        if fd >= 0 and self._by_fd.pop(fd, None) is not None:
            self.loop.remove(fd)
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        self._readable.pop(conn, None)
        conn.sock.close()

    def _receive(self, q: DeviceQueue) -> None:
        """Fill the guest's receive buffers: control packets first, then data the guest has credit for."""
        if self.broken:
            return
        ring = q.ring
        try:
            while self._control or self._readable:
                chain = self._take_chain(ring)
                if chain is None:
                    if ring.arm_notification():
                        continue
                    return  # the next receive-queue kick brings buffers
                if self._control:
                    hdr = self._control.popleft()
                    _write(chain, hdr.pack())
                    ring.add_used(chain, HEADER_SIZE)
                    continue
                if not self._read_into(chain, ring):
                    self._spare = chain
        finally:
            self.notify_queue(q)

    def _take_chain(self, ring: SplitQueue) -> DescriptorChain | None:
        spare = self._spare
        if spare is not None:
            self._spare = None
            return spare
        while (chain := ring.pop()) is not None:
            if chain.readable or chain.writable_len <= HEADER_SIZE:
                self._drop("a receive chain with device-readable buffers or no room for a header")
                ring.add_used(chain, 0)
                continue
            return chain
        return None

    def _read_into(self, chain: DescriptorChain, ring: SplitQueue) -> bool:
        """Read one readable socket into ``chain`` as an RW packet; False if none had data to send."""
        while self._readable:
            conn = next(iter(self._readable))
            credit = conn.peer_credit()
            if credit == 0:
                # Blocked on the guest's credit: its next packet with more credit puts the socket back.
                del self._readable[conn]
                conn.credit_blocked = True
                continue
            room = min(credit, chain.writable_len - HEADER_SIZE, MAX_PACKET_DATA)
            data_view = _data_view(chain, room)
            try:
                n = conn.sock.recv_into(data_view, len(data_view))
            except (BlockingIOError, InterruptedError):
                del self._readable[conn]
                continue
            except OSError:
                self._reset_conn(conn)
                continue
            finally:
                data_view.release()
            if n == 0:  # the client closed or shut down writing: tell the guest the host sends no more
                del self._readable[conn]
                conn.host_eof = True
                self._send_control(conn, OP_SHUTDOWN, SHUTDOWN_SEND)
                continue
            conn.rx_cnt = (conn.rx_cnt + n) & 0xFFFF_FFFF
            conn.fwd_cnt_sent = conn.fwd_cnt
            _write(chain, self._header(conn, OP_RW, n).pack())
            ring.add_used(chain, HEADER_SIZE + n)
            return True
        return False


def _listen(path: str) -> socket.socket:
    """The hybrid vsock's listening Unix socket; a stale socket file at ``path`` is replaced."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise VsockError(f"--vsock: socket={path}: {e.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(128)
    except OSError as e:
        sock.close()
        hint = " (a file is in the way)" if e.errno == errno.EADDRINUSE else ""
        raise VsockError(f"--vsock: socket={path}: cannot listen: {e.strerror}{hint}") from None
    return sock


def _write(chain: DescriptorChain, data: bytes) -> None:
    """Store ``data`` at the start of the chain's writable buffers."""
    at = 0
    for view in chain.writable:
        take = min(len(view), len(data) - at)
        view[:take] = data[at : at + take]
        at += take
        if at == len(data):
            return


def _data_view(chain: DescriptorChain, room: int) -> memoryview:
    """The first contiguous stretch of writable bytes after the header, at most ``room`` long."""
    skip = HEADER_SIZE
    for view in chain.writable:
        if skip >= len(view):
            skip -= len(view)
            continue
        return view[skip : skip + room]
    return memoryview(b"")
