"""A small client for the REST API over its Unix socket (``aovisor-remote`` and the tests use it).

One keep-alive connection; file descriptors can ride along with a request (``SCM_RIGHTS``), the way
``ch-remote add-net fd=[...]`` and Kata Containers pass TAP devices.
"""

from __future__ import annotations

import array
import contextlib
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

from aovisor.api.routes import API_ROOT


class ApiClientError(Exception):
    """The server could not be reached, or answered with something that is not HTTP."""


@dataclass
class ApiResponse:
    status: int
    reason: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_messages(self) -> list[str]:
        """The error chain of an error response (a JSON array of strings), or the raw body."""
        try:
            value = self.json()
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return [self.body.decode(errors="replace")] if self.body else []


class ApiClient:
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise ApiClientError(f"cannot connect to {path}: {e.strerror or e}") from None
        self._conn = h11.Connection(h11.CLIENT)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def request(
        self,
        method: str,
        endpoint: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        fds: Sequence[int] = (),
    ) -> ApiResponse:
        """``method`` ``/api/v1/<endpoint>`` with ``body`` as JSON (or ``raw`` bytes) and ``fds`` attached."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = [("Host", "localhost"), ("Accept", "application/json")]
        if data is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        else:
            headers.append(("Content-Length", "0"))
        target = f"{API_ROOT}/{endpoint.lstrip('/')}"
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        try:
            out = self._conn.send(h11.Request(method=method, target=target, headers=headers))
            out += self._conn.send(h11.Data(data=data)) if data else b""
            out += self._conn.send(h11.EndOfMessage())
            # The server may answer early (413 before reading the body) and close: read that answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(out, fds)
            return self._read_response()
        except (h11.ProtocolError, OSError) as e:
            raise ApiClientError(f"{method} {target}: {e}") from None

    def _send(self, data: bytes, fds: Sequence[int]) -> None:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = self._sock.sendmsg([data], ancillary)
            data = data[sent:]
        self._sock.sendall(data)

    def _read_response(self) -> ApiResponse:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(self._sock.recv(65536))
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ApiClientError("the server closed the connection without answering")
        assert response is not None
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in response.headers}
        return ApiResponse(
            response.status_code, response.reason.decode(errors="replace"), bytes(body), headers
        )
