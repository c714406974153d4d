"""``--virtio-transport mmio``: the same guest programs find their devices as virtio-mmio windows through the
DSDT (``LNRO0005``, a Memory32Fixed window and an edge-triggered interrupt) and drive them there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO, run_aovisor
from netns import GuestRun, NetNamespace

Guest = Callable[[str], Path]


def boot(hypervisor: str, kernel: Path, *args: str, transport: str = "mmio") -> tuple[int, str, str]:
    proc = run_aovisor(
        ["--hypervisor", hypervisor, "--kernel", str(kernel), "--memory", "size=128M",
         "--virtio-transport", transport, *args]
    )  # fmt: skip
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 13 + (i >> 9) * 7 + seed) & 0xFF for i in range(n))


def test_block_device_over_mmio_with_its_interrupt(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image},serial=MMIO-DISK",
        "--cmdline", "op=write start=5 sectors=17 seed=9",
    )  # fmt: skip
    assert rc == 0, err
    # The first device gets the first window and IOAPIC pin 16; its interrupt reached the guest.
    head = "virtio-blk: capacity 2048 sectors\nvirtio-blk: serial MMIO-DISK\n"
    assert out.startswith(head + "virtio-blk: mmio interrupt ok (gsi 16)\n"), out
    assert "write 17 sectors at 5: status 0\nflush: status 0\nverify: ok\n" in out
    assert image.read_bytes()[5 * 512 : 22 * 512] == pattern(17 * 512, 9)


def test_windows_named_on_the_kernel_command_line(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    """``mmio-cmdline``: the windows are named on the guest's command line, after the user's words (the
    disk first, then the default rng), and the guest drives the disk it found there."""
    rc, out, err = boot(hypervisor, guest("pvhinfo"), "--cmdline", "hello", transport="mmio-cmdline")
    assert rc == 0, err
    windows = "virtio_mmio.device=4K@0xe0000000:16"
    assert "cmdline: hello virtio_mmio.device=4K@0xe0000000:16\n" in out, out  # the rng alone
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image},serial=CMDLINE-DISK",
        "--cmdline", "op=write start=3 sectors=4 seed=2", transport="mmio-cmdline",
    )  # fmt: skip
    assert rc == 0, err
    head = "virtio-blk: capacity 2048 sectors\nvirtio-blk: serial CMDLINE-DISK\n"
    assert out.startswith(head + "virtio-blk: mmio interrupt ok (gsi 16)\n"), out
    assert "verify: ok\n" in out
    assert image.read_bytes()[3 * 512 : 7 * 512] == pattern(4 * 512, 2)
    rc, out, err = boot(hypervisor, guest("pvhinfo"), "--disk", f"path={image}", transport="mmio-cmdline")
    assert f"cmdline: {windows} virtio_mmio.device=4K@0xe0001000:17\n" in out, out


def test_several_devices_each_in_its_window(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    """A disk, the console and the rng: the console guest finds its device (type 3) among the three."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    console = tmp_path / "console.log"
    rc, out, err = boot(
        hypervisor, guest("virtio_console"), "--disk", f"path={image}", "--console", f"file={console}",
        "--cmdline", "lines=2",
    )  # fmt: skip
    assert rc == 0, err
    assert out.endswith("virtio-console done\n"), out
    assert console.read_text() == "hvc0 line 1 of 2\nhvc0 line 2 of 2\n"
    rc, out, err = boot(hypervisor, guest("virtio_rng"), "--disk", f"path={image}", "--cmdline", "bytes=4096")
    assert rc == 0, err
    assert out.startswith("virtio-rng: read 4096 bytes in 1 requests\n"), out


def test_vsock_over_mmio(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    path = tmp_path / "v.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}_77")
    listener.listen(1)
    listener.settimeout(30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aovisor", "--hypervisor", hypervisor, "--kernel", str(guest("virtio_vsock")),
         "--memory", "size=64M", "--virtio-transport", "mmio", "--vsock", f"cid=9,socket={path}",
         "--cmdline", "op=connect port=77"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            data = b""
            while not data.endswith(b"\n"):
                data += conn.recv(100)
            assert data == b"hello from guest\n"
            conn.sendall(b"over mmio\n")
            echo = b""
            while not echo.endswith(b"\n"):
                echo += conn.recv(100)
            assert echo == b"OVER MMIO\n"
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(10) == b""
        out, err = proc.communicate(timeout=60)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert b"vsock: guest cid 9\nvsock: connected to host port 77\n" in out


def test_net_over_mmio(hypervisor: str, guest: Guest) -> None:
    ns = NetNamespace()
    run = GuestRun(
        ns,
        ["--hypervisor", hypervisor, "--kernel", str(guest("virtio_net")), "--memory", "size=64M",
         "--virtio-transport", "mmio", "--net", "tap=mmtap0,mac=52:54:00:00:00:42"],
    )  # fmt: skip
    try:
        run.expect(r"virtio-net: mac 52:54:00:00:00:42")
        run.expect(r"virtio-net: ready")
        sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
        with sock:
            sock.bind(("mmtap0", 0x88B5))
            mac = sock.getsockname()[4]
            sock.settimeout(10)
            sock.send(b"\xff" * 6 + mac + b"\x88\xb5PING over mmio")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                frame = sock.recv(2048)
                if frame[14:18] == b"PONG":
                    break
            assert frame[14:] == b"PONG over mmio"
            sock.send(b"\xff" * 6 + mac + b"\x88\xb5BYE")
        assert run.wait() == 0
    finally:
        run.close()
        ns.close()


@pytest.mark.parametrize("value", ["ccw", "PCI", ""])
def test_bad_transport_is_a_one_line_error(guest: Guest, value: str) -> None:
    proc = run_aovisor(["--kernel", str(guest("hello")), "--virtio-transport", value])
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "--virtio-transport" in err, err
