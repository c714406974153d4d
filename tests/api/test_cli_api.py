"""The command line's control options: --api-socket with a payload, --version under CH's name, mistakes."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from api.helpers import REPO, start_api_vmm, wait_for


def test_payload_with_api_socket_boots_at_once_and_serves_the_api(
    tmp_path: Path, guest: Callable[[str], Path]
) -> None:
    vmm = start_api_vmm(
        tmp_path, "--kernel", str(guest("ticker")), "--memory", "size=64M", "--cmdline", "period_ms=20"
    )
    try:
        wait_for(lambda: "tick 2" in (tmp_path / "stdout").read_text(), what="ticks")
        assert vmm.call("GET", "vm.info").json()["state"] == "Running"
        assert vmm.call("PUT", "vm.power-button").status == 204
        assert vmm.wait_exit() == 0
    finally:
        if vmm.proc.poll() is None:
            vmm.proc.kill()
    assert vmm.event_names()[:3] == ["vmm:starting", "vm:booting", "vm:booted"]


def _read_pty(fd: int, marker: bytes, timeout: float = 20) -> bytes:
    buf, deadline = b"", time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            buf += os.read(fd, 4096)
    return buf


def test_serial_pty_is_the_terminal_vm_info_names(tmp_path: Path, guest: Callable[[str], Path]) -> None:
    """``--serial pty`` (what libvirt's ch driver asks for): vm.info's ``serial.file`` is a pty that carries
    the guest's output, also what it printed before anyone attached, and takes the client's keys."""
    vmm = start_api_vmm(tmp_path, "--kernel", str(guest("echo")), "--memory", "size=64M", "--serial", "pty")
    fd = -1
    try:
        serial = wait_for(lambda: vmm.call("GET", "vm.info").json()["config"]["serial"], what="vm.info")
        assert serial["mode"] == "Pty" and serial["file"].startswith("/dev/pts/"), serial
        fd = os.open(serial["file"], os.O_RDWR | os.O_NOCTTY)
        assert b"echo: ready\n" in _read_pty(fd, b"ready\n")
        os.write(fd, b"hi\n")
        assert b"HI\n" in _read_pty(fd, b"HI\n")  # raw: no echo of "hi", no CR added before the LF
        os.write(fd, b"q")
        assert b"echo: bye" in _read_pty(fd, b"bye")
        assert vmm.wait_exit() == 0
    finally:
        if fd >= 0:
            os.close(fd)
        if vmm.proc.poll() is None:
            vmm.proc.kill()
    assert (tmp_path / "stdout").read_bytes() == b""  # nothing went to the VMM's own stdout


def test_version_as_cloud_hypervisor_claims_the_compatible_release(tmp_path: Path) -> None:
    link = tmp_path / "cloud-hypervisor"
    link.write_text(f"#!{sys.executable}\nimport sys\nfrom aovisor.cli.main import main\nsys.exit(main())\n")
    link.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [str(link), "--version"], capture_output=True, text=True, env=env, timeout=30, check=True
    )
    assert out.stdout.startswith("cloud-hypervisor v28.0.0 ")  # what libvirt's ch driver parses
    own = subprocess.run(
        [sys.executable, "-m", "aovisor", "--version"], capture_output=True, text=True, timeout=30
    )
    assert own.stdout.startswith("aovisor v")


def test_vm_options_without_kernel_in_api_mode_are_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aovisor", "--api-socket", str(tmp_path / "s"), "--cpus", "boot=2"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--cpus needs --kernel" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "aovisor", "--api-socket", "fd=abc"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--api-socket: fd" in proc.stderr
