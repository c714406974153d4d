"""The REST API server: HTTP/1.1 (h11) over a Unix socket, one thread per connection, keep-alive.

Why each piece:

* **recvmsg, not recv**: a client may pass file descriptors with ``SCM_RIGHTS`` (Kata Containers sends the
  TAP fds of ``vm.add-net`` this way, as does ``ch-remote add-net fd=[...]``).  Every read takes the
  ancillary data too (``MSG_CMSG_CLOEXEC``), and the descriptors received while a request is being read
  are handed to that request; whatever its handler does not keep is closed.
* **h11**: a strict, small HTTP/1.1 state machine; malformed requests become 4xx answers, not exceptions.
  ``Expect: 100-continue`` (curl sends it for bodies over 1 KiB) is answered so uploads do not stall.
* **bounds everywhere** (the client may be hostile or broken): bodies over :data:`MAX_BODY` are refused
  with 413 before they are read, header blocks over 64 KiB with 431, idle or stalled connections are
  closed after :data:`IDLE_TIMEOUT`, at most :data:`MAX_CONNECTIONS` connections are served at once.
  A connection never hangs waiting for the server: every request gets exactly one response.
* **socket file**: created with mode 0600 (only the VMM's user may drive the VMM), replaced if stale,
  refused if another VMM is listening on it, removed when the server closes.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import select
import socket
import stat
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11

from aovisor.errors import ConfigError
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.api.routes import Response
    from aovisor.vmm.vmm import Vmm

log = get_logger(__name__)

MAX_BODY = 4 << 20  # Cloud Hypervisor's HTTP_PAYLOAD_MAX_SIZE
MAX_HEADERS = 64 << 10
MAX_FDS_PER_READ = 64
MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 60.0  # seconds a connection may sit idle (or stall mid-request) before it is closed
READ_SIZE = 64 << 10
SERVER_NAME = "aovisor API"


@dataclass(frozen=True)
class ApiSocketSpec:
    """``--api-socket path=PATH`` or ``fd=N`` (an already bound Unix stream socket, as libvirt passes)."""

    path: str | None = None
    fd: int | None = None


class ApiServer:
    def __init__(self, listener: socket.socket, vmm: Vmm, path: str | None = None) -> None:
        self._listener = listener
        self._vmm = vmm
        self._path = path
        self._stop = threading.Event()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._acceptor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: dict[_Connection, threading.Thread] = {}

    # --- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, spec: ApiSocketSpec, vmm: Vmm) -> ApiServer:
        if spec.fd is not None:
            return cls(_adopt_listener(spec.fd), vmm)
        assert spec.path is not None
        return cls(_bind_listener(spec.path), vmm, spec.path)

    @property
    def path(self) -> str | None:
        return self._path

    def start(self) -> None:
        self._acceptor = threading.Thread(target=self._accept_loop, name="http-server", daemon=True)
        self._acceptor.start()

    # --- accepting -----------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        poller = select.poll()
        poller.register(self._listener.fileno(), select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        while not self._stop.is_set():
            try:
                ready = poller.poll()
            except InterruptedError:
                continue
            if self._stop.is_set():
                return
            if not any(fd == self._listener.fileno() for fd, _ in ready):
                continue
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("API: cannot accept a connection: %s", e.strerror)
                    self._stop.wait(0.1)  # the fd table is full: do not spin
                    continue
                if self._stop.is_set():
                    return
                log.error("API: accept failed: %s", e)
                continue
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        sock.settimeout(IDLE_TIMEOUT)
        with self._lock:
            if len(self._connections) >= MAX_CONNECTIONS or self._stop.is_set():
                refused = True
            else:
                refused = False
                connection = _Connection(sock, self._vmm)
                thread = threading.Thread(
                    target=self._serve, args=(connection,), name="http-conn", daemon=True
                )
                self._connections[connection] = thread
        if refused:
            log.warning("API: too many connections; one refused")
            with contextlib.suppress(OSError):
                sock.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 30\r\nConnection: close\r\n\r\n["Too many open connections"]\n'
                )
            sock.close()
            return
        thread.start()

    def _serve(self, connection: _Connection) -> None:
        try:
            connection.serve()
        except Exception:  # a bug must cost one connection, never the server
            log.exception("API: connection failed")
        finally:
            connection.close()
            with self._lock:
                self._connections.pop(connection, None)

    # --- closing -------------------------------------------------------------------------------------------
    def close(self, grace: float = 2.0) -> None:
        """Stop accepting; let requests in progress finish (up to ``grace`` s: a ``vmm.shutdown`` must get
        its answer before the process exits), then close every connection and remove the socket file."""
        if self._stop.is_set():
            return
        self._stop.set()
        os.eventfd_write(self._wake, 1)
        if self._acceptor is not None:
            self._acceptor.join(grace)
        with self._lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            connection.finish_current(grace)
        for connection, thread in connections:
            connection.abort()
            thread.join(grace)
        self._listener.close()
        os.close(self._wake)
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)


def _bind_listener(path: str) -> socket.socket:
    if not path or "\x00" in path:
        raise ConfigError(f"--api-socket: path={path!r} is not a valid path")
    _remove_stale_socket(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Bound and listening under a temporary name, then renamed: a client that sees the path can connect.
    staging = f"{path}.{os.getpid()}.tmp"
    old_umask = os.umask(0o177)  # the socket file is created 0600: bind() applies the umask
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        listener.bind(staging)
        os.chmod(staging, 0o600)  # also when the umask was already stricter, the mode is exactly 0600
        listener.listen(16)
        os.rename(staging, path)
    except OSError as e:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise ConfigError(f"--api-socket: path={path}: {e.strerror}") from None
    finally:
        os.umask(old_umask)
    return listener


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a VMM that died is removed; one that a live VMM listens on is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"--api-socket: path={path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"--api-socket: path={path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except OSError:  # ECONNREFUSED: nobody listens any more
        os.unlink(path)
        return
    finally:
        probe.close()
    raise ConfigError(f"--api-socket: path={path} is in use by another running VMM")


def _adopt_listener(fd: int) -> socket.socket:
    try:
        listener = socket.socket(fileno=fd)
    except OSError as e:
        raise ConfigError(f"--api-socket: fd={fd}: {e.strerror}") from None
    if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
        listener.detach()
        raise ConfigError(f"--api-socket: fd={fd} is not a Unix stream socket")
    listener.set_inheritable(False)
    if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        try:
            listener.listen(16)
        except OSError as e:
            raise ConfigError(f"--api-socket: fd={fd}: cannot listen: {e.strerror}") from None
    return listener


class _Connection:
    """One client connection: read requests (with their fds), answer each, keep alive until told not to."""

    def __init__(self, sock: socket.socket, vmm: Vmm) -> None:
        self.sock = sock
        self._vmm = vmm
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        self._fds: list[int] = []
        self._fds_truncated = False
        self._busy = threading.Condition()
        self._in_request = False
        self._closing = False

    def serve(self) -> None:
        while not self._closing:
            event = self._next_event()
            if event is None or isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return  # nothing else can start a cycle; h11 would have raised already
            with self._busy:
                self._in_request = True
            try:
                response = self._handle(event)
                if response is None:
                    return
                self._send_response(response)
            finally:
                self._close_fds()
                with self._busy:
                    self._in_request = False
                    self._busy.notify_all()
            if self._conn.our_state is not h11.DONE or self._conn.their_state is not h11.DONE:
                return  # h11 decided this connection must close (Connection: close, HTTP/1.0, ...)
            try:
                self._conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    # --- reading -------------------------------------------------------------------------------------------
    def _next_event(self) -> h11.Event | None:
        """The next h11 event; ``None`` after answering a protocol error or when the peer went away."""
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as e:
                # h11 hints 501 for an unknown Transfer-Encoding: to the client, a request we cannot read.
                self._reject(min(e.error_status_hint, 431), f"Malformed HTTP request: {e}")
                return None
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # only after a cycle ends, which serve() handles: treat as closed
                return None
            if not self._receive():  # NEED_DATA
                return None

    def _receive(self) -> bool:
        """Read more bytes (and fds) into h11; False when the peer closed, stalled, or the socket failed."""
        try:
            data, ancdata, flags, _ = self.sock.recvmsg(
                READ_SIZE, socket.CMSG_SPACE(MAX_FDS_PER_READ * 4), socket.MSG_CMSG_CLOEXEC
            )
        except TimeoutError:
            log.info("API: closing a connection idle for %g s", IDLE_TIMEOUT)
            return False
        except OSError:
            return False
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            self._fds_truncated = True
        self._conn.receive_data(data)  # b"" tells h11 the peer closed
        return True

    def _read_body(self, request: h11.Request) -> bytes | None:
        """The request body; ``None`` once an error has been answered (too large, malformed, cut off)."""
        length = _content_length(request)
        if length is not None and length > MAX_BODY:
            self._reject(413, f"Request body of {length} bytes is over the {MAX_BODY}-byte limit")
            return None
        if self._conn.they_are_waiting_for_100_continue:
            self._send_bytes(self._conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        while True:
            event = self._next_event()
            if event is None:
                return None
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    self._reject(413, f"Request body is over the {MAX_BODY}-byte limit")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed mid-body
                return None

    # --- answering -----------------------------------------------------------------------------------------
    def _handle(self, request: h11.Request) -> Response | None:
        from aovisor.api.routes import dispatch

        body = self._read_body(request)
        if body is None:
            return None
        if self._fds_truncated:
            self._fds_truncated = False
            from aovisor.api.routes import error_response

            return error_response(400, "Too many file descriptors in one message (some were dropped)")
        target = request.target.decode("ascii", "replace")
        method = request.method.decode("ascii", "replace")
        fds, self._fds = self._fds, []
        kept: set[int] = set()
        try:
            return dispatch(self._vmm, method, target, body, fds, kept)
        finally:
            for fd in fds:
                if fd not in kept:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _send_response(self, response: Response) -> None:
        headers = [("Server", SERVER_NAME), *response.headers]
        if response.body is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(response.body)))]
        try:
            self._send_bytes(
                self._conn.send(
                    h11.Response(
                        status_code=response.status, headers=headers, reason=_reason(response.status)
                    )
                )
            )
            if response.body is not None:
                self._send_bytes(self._conn.send(h11.Data(data=response.body)))
            self._send_bytes(self._conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as e:
            log.error("API: cannot send a %d response: %s", response.status, e)
            self._closing = True

    def _reject(self, status: int, message: str) -> None:
        """Answer a request we could not read, then close: the stream position is unknown."""
        from aovisor.api.routes import error_response

        self._closing = True
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = error_response(status, message)
        response.headers.append(("Connection", "close"))
        self._send_response(response)

    def _send_bytes(self, data: bytes | None) -> None:
        if not data:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self._closing = True

    # --- closing -------------------------------------------------------------------------------------------
    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def finish_current(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the request in progress, if any, to be answered."""
        with self._busy:
            self._closing = True
            self._busy.wait_for(lambda: not self._in_request, timeout)

    def abort(self) -> None:
        """Unblock a reader waiting on this socket (the server is closing)."""
        self._closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close gracefully: after our last response, read (and drop) what the client still sends for a
        moment, so closing with unread data does not reset the connection before it reads our answer."""
        self._close_fds()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(0.2)
            drained = 0
            while drained < MAX_BODY:
                chunk = self.sock.recv(READ_SIZE)
                if not chunk:
                    break
                drained += len(chunk)
        with contextlib.suppress(OSError):
            self.sock.close()


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 has already rejected a malformed Content-Length
    return None


def _reason(status: int) -> bytes:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
