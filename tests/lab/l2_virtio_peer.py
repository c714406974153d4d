"""Runs in L2 next to aovisor (standard library only): the host-side peers of the Linux guest's network and
vsock traffic in tests/lab/test_virtio_linux.py.

    python3 l2_virtio_peer.py TCP_PORT VSOCK_SOCKET GUEST_TO_HOST_PORT HOST_TO_GUEST_PORT

* TCP: accept one connection on TCP_PORT (any address: the TAP's address exists only once aovisor made the
  TAP), read a line, answer ``l2 got: LINE`` upper-cased;
* vsock, guest to host: listen on ``VSOCK_SOCKET_<port>`` (where aovisor's hybrid vsock connects for the
  guest), read a line, answer ``l2 vsock got: LINE``;
* vsock, host to guest: connect to VSOCK_SOCKET, ``CONNECT <port>``, until the guest listens and the answer
  is ``OK <n>``; send ``hello from l2``, read the guest's answer.

Each prints ``peer: ...`` lines as things happen; the process ends when all three are done (or after 240 s).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

DEADLINE = time.monotonic() + 240


def say(text: str) -> None:
    print(f"peer: {text}", flush=True)


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def tcp_server(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    server.settimeout(DEADLINE - time.monotonic())
    conn, (address, _) = server.accept()
    with conn:
        line = read_line(conn).decode(errors="replace").strip()
        say(f"tcp from {address}: {line}")
        conn.sendall(f"l2 got: {line}\n".upper().encode())


def vsock_guest_to_host(path: str, port: int) -> None:
    name = f"{path}_{port}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    server.settimeout(DEADLINE - time.monotonic())
    conn, _ = server.accept()
    with conn:
        line = read_line(conn).decode(errors="replace").strip()
        say(f"vsock from the guest: {line}")
        conn.sendall(f"l2 vsock got: {line}\n".encode())


def vsock_host_to_guest(path: str, port: int) -> None:
    while time.monotonic() < DEADLINE:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(30)
        try:
            conn.connect(path)
            conn.sendall(f"CONNECT {port}\n".encode())
            ok = read_line(conn)
        except OSError:
            ok = b""
        if not ok.startswith(b"OK "):  # the socket is not there yet, or the guest does not listen yet
            conn.close()
            time.sleep(0.5)
            continue
        with conn:
            say(f"vsock connected: {ok.decode().strip()}")
            conn.sendall(b"hello from l2\n")
            say(f"vsock answer from the guest: {read_line(conn).decode(errors='replace').strip()}")
        return


def main(tcp_port: str, vsock_path: str, to_host: str, to_guest: str) -> int:
    if os.path.exists(f"{vsock_path}_{to_host}"):
        os.unlink(f"{vsock_path}_{to_host}")
    jobs = [
        threading.Thread(target=tcp_server, args=(int(tcp_port),)),
        threading.Thread(target=vsock_guest_to_host, args=(vsock_path, int(to_host))),
        threading.Thread(target=vsock_host_to_guest, args=(vsock_path, int(to_guest))),
    ]
    for job in jobs:
        job.daemon = True
        job.start()
    for job in jobs:
        job.join(max(DEADLINE - time.monotonic(), 0))
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
