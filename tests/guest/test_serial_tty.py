"""`--serial tty` on a real terminal: keys reach the guest in raw mode (Ctrl-C included) and the terminal's
settings are restored when the VMM exits, also when SIGTERM ends it."""

from __future__ import annotations

import os
import pty
import select
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from conftest import REPO


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
    return buf


def _vmm_on_a_terminal(hypervisor: str, kernel: Path) -> tuple[int, int, int]:
    """Fork the VMM with ``--serial tty`` on a new pty's slave side, as a user would run it; returns its
    pid and the pty's (master, slave) fds."""
    master, slave = pty.openpty()
    pid = os.fork()
    if pid == 0:  # child
        os.setsid()
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.chdir(REPO)
        args = ["--hypervisor", hypervisor, "--kernel", str(kernel), "--memory", "size=64M"]
        os.execv(sys.executable, [sys.executable, "-m", "aovisor", *args, "--serial", "tty"])
    return pid, master, slave


def _reap(pid: int, master: int, slave: int) -> None:
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(master)
    os.close(slave)


def test_terminal_input_reaches_the_guest_in_raw_mode(hypervisor: str, guest: Callable[[str], Path]) -> None:
    pid, master, slave = _vmm_on_a_terminal(hypervisor, guest("echo"))
    before = termios.tcgetattr(slave)
    try:
        assert b"echo: ready" in _read_until(master, b"echo: ready", 30)
        os.write(master, b"hi\x03there")  # \x03 is Ctrl-C: in raw mode it is a byte for the guest
        echoed = _read_until(master, b"THERE", 30)
        assert b"HI<ctrl-c>THERE" in echoed
        os.write(master, b"q")
        assert b"echo: bye" in _read_until(master, b"echo: bye", 30)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        after = termios.tcgetattr(slave)
        assert after[3] == before[3], "local modes (ICANON, ECHO, ISIG) were not restored"
    finally:
        _reap(pid, master, slave)


def test_sigterm_restores_the_terminal(hypervisor: str, guest: Callable[[str], Path]) -> None:
    """Stopped by SIGTERM while the terminal is raw, the VMM still gives the terminal its settings back."""
    pid, master, slave = _vmm_on_a_terminal(hypervisor, guest("echo"))
    before = termios.tcgetattr(slave)
    try:
        assert b"echo: ready" in _read_until(master, b"echo: ready", 30)
        assert termios.tcgetattr(slave)[3] != before[3], "the VMM did not put the terminal in raw mode"
        os.kill(pid, 15)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert termios.tcgetattr(slave)[3] == before[3], "local modes (ICANON, ECHO, ISIG) were not restored"
    finally:
        _reap(pid, master, slave)
