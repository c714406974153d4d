"""A throw-away network namespace for tests that need TAP interfaces, and a guest run inside it.

The VMM is started under ``ip netns exec``, so the TAP it creates lives in the namespace and never touches
the host's interfaces; the test reaches the TAP from its side with sockets created inside the namespace
(``setns`` on a short-lived thread: a socket keeps the namespace it was made in).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
REPO = Path(__file__).resolve().parent.parent


class NetNamespace:
    """``ip netns add`` on creation, ``ip netns del`` on :meth:`close`."""

    def __init__(self, prefix: str = "aovt") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.run("ip", "link", "set", "lo", "up")

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *args: str) -> str:
        proc = subprocess.run([*self.exec_prefix, *args], check=True, capture_output=True, text=True)
        return proc.stdout

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a thread that has entered the namespace (for creating sockets there)."""
        result: list[T] = []
        errors: list[BaseException] = []

        def target() -> None:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, os.strerror(errno))
            finally:
                os.close(fd)
            try:
                result.append(fn())
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return result[0]

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        return self.call(lambda: socket.socket(family, kind, proto))

    def has_link(self, name: str) -> bool:
        command = [*self.exec_prefix, "ip", "link", "show", name]
        return subprocess.run(command, capture_output=True).returncode == 0

    def wait_for_link(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has_link(name):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no interface {name} in {self.name}")

    def link_disappears(self, name: str, timeout: float = 5.0) -> bool:
        """Whether ``name`` is gone within ``timeout``.  A closed TAP's netdev can outlive the process that
        held it by a moment (seen here in about one run in five, checked right after the VMM exited)."""
        deadline = time.monotonic() + timeout
        while self.has_link(name):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def open_tap(name: str) -> int:
    """A TAP fd as Kata makes them (netlink TUNTAP_VNET_HDR: virtio-net needs the vnet header), in the
    calling thread's namespace (use :meth:`NetNamespace.call`)."""
    import fcntl

    from aovisor.virtio.devices.tap import IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


ETHERTYPE_TEST = 0x88B5  # IEEE 802 "local experimental" ethertype: what the virtio_net guest answers
BROADCAST = b"\xff" * 6


class Wire:
    """The test's end of a TAP in a namespace: raw frames of ETHERTYPE_TEST on an AF_PACKET socket."""

    def __init__(self, ns: NetNamespace, tap: str) -> None:
        self.sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE_TEST))
        self.sock.bind((tap, ETHERTYPE_TEST))
        self.mac: bytes = self.sock.getsockname()[4]

    def send(self, payload: bytes, dst: bytes = BROADCAST) -> None:
        self.sock.send(dst + self.mac + struct.pack("!H", ETHERTYPE_TEST) + payload)

    def receive(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def close(self) -> None:
        self.sock.close()


class GuestRun:
    """``python -m aovisor ARGS`` inside a namespace, its stdout read line by line on a thread."""

    def __init__(
        self, ns: NetNamespace, args: Sequence[str], *, preexec: Callable[[], Any] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [*ns.exec_prefix, sys.executable, "-m", "aovisor", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            preexec_fn=preexec,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._seen = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode(errors="replace"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The next output line matching ``pattern`` (lines before it are kept in :attr:`lines`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; output so far: {self.lines}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"guest ended before {pattern!r}: {self.lines} {self.stderr()}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return rc

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
