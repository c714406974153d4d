"""virtio-vsock in Cloud Hypervisor's hybrid form: a host process talks to the virtio_vsock guest (a minimal
vsock stream endpoint at CPL3 that echoes upper-cased) over Unix sockets, in both directions."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import REPO, run_aovisor

Guest = Callable[[str], Path]
CID = 7


class Vm:
    def __init__(self, hypervisor: str, kernel: Path, sock: Path, cmdline: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aovisor", "--hypervisor", hypervisor, "--kernel", str(kernel),
             "--memory", "size=64M", "--vsock", f"cid={CID},socket={sock}", "--cmdline", cmdline],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"no vsock socket: {self.proc.communicate(timeout=5)}")
            time.sleep(0.02)

        self.out = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out += line

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.out
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout)
        self._reader.join(10)  # the only reader of stdout (communicate() would race it)
        assert self.proc.stderr is not None
        return rc, self.out.decode(errors="replace"), self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def vms() -> Iterator[list[Vm]]:
    started: list[Vm] = []
    yield started
    for vm in started:
        vm.kill()


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def closed_by_peer(sock: socket.socket) -> bool:
    """The peer closed: end of file, or a reset (closing with our bytes unread resets a Unix stream)."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def host_connect(path: Path, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(path))
    sock.sendall(f"CONNECT {port}\n".encode())
    return sock, read_line(sock)


def echo_bulk(sock: socket.socket, size: int) -> bytes:
    """Send ``size`` random lower-case bytes while reading the echo; returns what came back."""
    data = bytes(random.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))
    received = bytearray()

    def reader() -> None:
        while len(received) < size:
            chunk = sock.recv(65536)
            if not chunk:
                return
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(data)
    thread.join(60)
    assert bytes(received) == data.upper()
    return bytes(received)


@pytest.mark.parametrize("credit", [65536, 4096])
def test_host_connects_to_the_guest(
    hypervisor: str, guest: Guest, tmp_path: Path, vms: list[Vm], credit: int
) -> None:
    path = tmp_path / "vsock.sock"
    vm = Vm(hypervisor, guest("virtio_vsock"), path, f"op=listen port=1234 credit={credit}")
    vms.append(vm)
    sock, ok = host_connect(path, 1234)
    with sock:
        assert ok.startswith(b"OK ") and int(ok[3:]) >= 1 << 30, ok
        assert read_line(sock) == b"hello from guest\n"
        sock.sendall(b"ping\n")
        assert read_line(sock) == b"PING\n"
        echo_bulk(sock, 1 << 20)  # far more than the guest's credit: flow control both ways
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""  # the guest answered the shutdown with RST: the socket closes
    rc, out, err = vm.finish()
    assert rc == 0, err
    assert f"vsock: guest cid {CID}\n" in out
    assert "vsock: accepted host port" in out
    closed = re.search(r"vsock: closed after (\d+) bytes, max in flight (\d+)\n", out)
    assert closed, out
    echoed, max_in_flight = int(closed.group(1)), int(closed.group(2))
    assert echoed == 5 + (1 << 20)
    assert 0 < max_in_flight <= credit  # the device never sent beyond the guest's credit
    assert "CREDIT VIOLATED" not in out


def test_guest_connects_to_the_host(hypervisor: str, guest: Guest, tmp_path: Path, vms: list[Vm]) -> None:
    path = tmp_path / "vsock.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}_4321")
    listener.listen(1)
    listener.settimeout(30)
    with listener:
        vm = Vm(hypervisor, guest("virtio_vsock"), path, "op=connect port=4321 conns=2")
        vms.append(vm)
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                assert read_line(conn) == b"hello from guest\n"
                echo_bulk(conn, 200_000)
                conn.shutdown(socket.SHUT_WR)
                assert conn.recv(10) == b""
    rc, out, err = vm.finish()
    assert rc == 0, err
    assert out.count("vsock: connected to host port 4321\n") == 2
    assert out.count("vsock: closed after 200000 bytes") == 2
    assert out.endswith("vsock done\n")


def test_guest_connection_to_nothing_is_refused(
    hypervisor: str, guest: Guest, tmp_path: Path, vms: list[Vm]
) -> None:
    path = tmp_path / "vsock.sock"
    vm = Vm(hypervisor, guest("virtio_vsock"), path, "op=connect port=9999")
    vms.append(vm)
    rc, out, err = vm.finish()
    assert rc == 0, err
    assert "vsock: refused by host port 9999\nvsock done\n" in out


def test_connect_to_a_closed_guest_port_and_bad_handshakes_close_the_client(
    hypervisor: str, guest: Guest, tmp_path: Path, vms: list[Vm]
) -> None:
    path = tmp_path / "vsock.sock"
    vm = Vm(hypervisor, guest("virtio_vsock"), path, "op=listen port=1234")
    vms.append(vm)
    sock, ok = host_connect(path, 999)  # nobody listens there in the guest: RST, then the client is closed
    assert ok == b""
    sock.close()
    for bad in (b"HELLO 1234\n", b"CONNECT abc\n", b"CONNECT " + b"9" * 40):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(20)
        raw.connect(str(path))
        raw.sendall(bad)
        assert closed_by_peer(raw), bad
        raw.close()
    sock, ok = host_connect(path, 1234)  # the device is fine
    with sock:
        assert ok.startswith(b"OK ")
        assert read_line(sock) == b"hello from guest\n"
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""
    rc, _out, err = vm.finish()
    assert rc == 0, err


def test_hostile_packets_are_dropped_or_reset(
    hypervisor: str, guest: Guest, tmp_path: Path, vms: list[Vm]
) -> None:
    path = tmp_path / "vsock.sock"
    vm = Vm(hypervisor, guest("virtio_vsock"), path, "op=listen port=1234 hostile=1")
    vms.append(vm)
    vm.expect("hostile: rst for unknown op\n")
    sock, ok = host_connect(path, 1234)
    with sock:
        assert ok.startswith(b"OK ")
        assert read_line(sock) == b"hello from guest\n"
        sock.sendall(b"still working\n")
        assert read_line(sock) == b"STILL WORKING\n"
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""
    rc, out, err = vm.finish()
    assert rc == 0, err
    rsts = ("rw on no connection", "seqpacket request", "unknown op")
    assert "".join(f"hostile: rst for {what}\n" for what in rsts) in out


@pytest.mark.parametrize(
    ("vsock", "message"),
    [
        ("cid=2,socket=SOCK", "--vsock: cid: 2 is reserved"),
        ("socket=SOCK", "--vsock: cid: missing"),
        ("cid=3", "--vsock: socket: missing"),
        ("cid=3,socket=/nonexistent/dir/v.sock", "--vsock: socket: the directory of"),
        ("cid=x,socket=SOCK", "--vsock: cid:"),
    ],
)
def test_bad_vsock_options_are_one_line_errors(
    guest: Guest, tmp_path: Path, vsock: str, message: str
) -> None:
    proc = run_aovisor(
        ["--kernel", str(guest("hello")), "--vsock", vsock.replace("SOCK", str(tmp_path / "v"))]
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("aovisor: error: ") and message in err, err


def test_socket_path_taken_by_a_file_is_one_line_error(guest: Guest, tmp_path: Path) -> None:
    path = tmp_path / "v.sock"
    path.write_text("not a socket")
    proc = run_aovisor(["--kernel", str(guest("hello")), "--vsock", f"cid=3,socket={path}"])
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and f"--vsock: socket={path}: cannot listen" in err, err
    assert path.read_text() == "not a socket"
    assert not os.path.exists(f"{path}_1")
