"""One stream connection between a guest vsock port and a host Unix socket, with its credit accounting."""

from __future__ import annotations

import enum
import socket


class State(enum.Enum):
    AWAIT_CONNECT = "await-connect"  # a host client that has not sent its "CONNECT <port>" line yet
    CONNECTING = "connecting"  # REQUEST sent to the guest, no RESPONSE yet
    ESTABLISHED = "established"


# Our receive credit for each connection (what the guest may have in flight towards the host socket).
BUF_ALLOC = 256 * 1024


class Connection:
    """The host side of one connection (device thread only)."""

    __slots__ = (
        "close_after_flush",
        "credit_blocked",
        "fwd_cnt",
        "fwd_cnt_sent",
        "host_eof",
        "local_port",
        "peer_buf_alloc",
        "peer_fwd_cnt",
        "peer_port",
        "rx_cnt",
        "shut_write",
        "sock",
        "state",
        "tx",
    )

    def __init__(self, sock: socket.socket, state: State, local_port: int = 0, peer_port: int = 0) -> None:
        self.sock = sock
        self.state = state
        self.local_port = local_port  # the host side's vsock port
        self.peer_port = peer_port  # the guest's port
        self.tx = bytearray()  # guest -> host bytes not yet written to the socket
        self.fwd_cnt = 0  # bytes written to the host socket (our fwd_cnt)
        self.fwd_cnt_sent = 0  # the fwd_cnt the guest last heard from us
        self.rx_cnt = 0  # bytes sent to the guest
        self.peer_buf_alloc = 0
        self.peer_fwd_cnt = 0
        self.host_eof = False  # the host client closed its end (or shut down writing)
        self.shut_write = False  # the guest will send no more: shut the socket down once tx is flushed
        self.close_after_flush = False  # the guest closed: close once tx is flushed
        self.credit_blocked = False  # data waits for the guest's credit

    @property
    def key(self) -> tuple[int, int]:
        return self.local_port, self.peer_port

    def peer_credit(self) -> int:
        """Bytes we may still send to the guest on this connection (§5.10.6.3.1)."""
        in_flight = (self.rx_cnt - self.peer_fwd_cnt) & 0xFFFF_FFFF
        return max(0, self.peer_buf_alloc - in_flight)

    def update_peer_credit(self, buf_alloc: int, fwd_cnt: int) -> None:
        self.peer_buf_alloc = buf_alloc
        self.peer_fwd_cnt = fwd_cnt

    def fileno(self) -> int:
        return self.sock.fileno()
