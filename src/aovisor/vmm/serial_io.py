"""Where a serial port's bytes go and come from: this process's terminal, a new pty, a file, or nowhere.

This endpoint lives as long as the process (it survives guest reboots); each new VM's UART is attached to it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import termios
import threading
from collections.abc import Callable

from aovisor.config import OutputConfig, OutputMode
from aovisor.errors import ConfigError
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)


class SerialEndpoint:
    def __init__(self, cfg: OutputConfig, option: str = "--serial") -> None:
        self.mode = cfg.mode
        self._out_fd: int | None = None
        self._own_fd = False
        self._saved_tty: list[Any] | None = None
        self._target: Callable[[bytes], object] | None = None
        self._reader: threading.Thread | None = None
        self.tx_bytes = 0  # guest -> endpoint, and endpoint -> guest (vm.counters)
        self.rx_bytes = 0
        self.pty_path: str | None = None  # with OutputMode.PTY: the terminal a client opens (vm.info)
        self._pty_client_side: int | None = None
        if cfg.mode is OutputMode.PTY:
            self._open_pty(option)
        elif cfg.mode is OutputMode.TTY:
            self._out_fd = sys.stdout.fileno()
        elif cfg.mode is OutputMode.FILE:
            assert cfg.file is not None
            try:
                self._out_fd = os.open(cfg.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ConfigError(f"{option}: file={cfg.file}: {e.strerror}") from None
            self._own_fd = True

    def _open_pty(self, option: str) -> None:
        """A new pseudo-terminal, as Cloud Hypervisor's ``pty`` mode: the guest's side is the master (ours),
        a client (``screen``, libvirt's console) opens ``pty_path``.  The client side is raw, so bytes pass
        unchanged, and kept open by us: without it a master read fails (EIO) whenever no client is there.
        The master is non-blocking: with no client reading, output beyond the pty's buffer is dropped
        rather than stalling the vCPU that writes it."""
        import tty

        try:
            master, client = os.openpty()
        except OSError as e:
            raise ConfigError(f"{option}: pty: cannot open a pseudo-terminal: {e.strerror}") from None
        tty.setraw(client)
        os.set_blocking(master, False)
        self._out_fd, self._own_fd, self._pty_client_side = master, True, client
        self.pty_path = os.ttyname(client)
        log.info("%s: pty %s", option, self.pty_path)

    @property
    def enabled(self) -> bool:
        return self.mode is not OutputMode.OFF

    def write(self, data: bytes) -> None:
        self.tx_bytes += len(data)
        fd = self._out_fd
        if fd is None:
            return
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except OSError as e:  # a closed terminal or full disk must not take the guest down
            log.debug("serial output dropped: %s", e)

    def attach_input(self, target: Callable[[bytes], object]) -> None:
        """Deliver terminal input to ``target`` (the current VM's UART); starts the reader once."""
        self._target = target
        if self._reader is not None:
            return
        if self.mode is OutputMode.PTY:
            assert self._out_fd is not None
            self._start_reader(self._out_fd)
            return
        if self.mode is not OutputMode.TTY:
            return
        stdin = sys.stdin.fileno() if sys.stdin is not None else -1
        if stdin < 0:
            return
        if os.isatty(stdin):
            self._enter_raw_mode(stdin)
        self._start_reader(stdin)

    def _start_reader(self, fd: int) -> None:
        self._reader = threading.Thread(target=self._read_loop, args=(fd,), name="serial-in", daemon=True)
        self._reader.start()

    def _enter_raw_mode(self, fd: int) -> None:
        """Raw input (keys, Ctrl-C included, go to the guest); output post-processing stays on."""
        saved = termios.tcgetattr(fd)
        mode = termios.tcgetattr(fd)
        mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
        self._saved_tty = saved
        atexit.register(self._restore_tty, fd)

    def _restore_tty(self, fd: int) -> None:
        if self._saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSAFLUSH, self._saved_tty)
            self._saved_tty = None

    def _read_loop(self, fd: int) -> None:
        import select

        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:  # the pty master is non-blocking: wait for the client's next bytes
                try:
                    select.select([fd], [], [])
                except (OSError, ValueError):  # closed under us: the endpoint is closing
                    return
                continue
            except OSError:
                return
            if not data:
                return
            target = self._target
            if target is not None:
                self.rx_bytes += len(data)
                target(data)

    def close(self) -> None:
        if sys.stdin is not None and self._saved_tty is not None:
            self._restore_tty(sys.stdin.fileno())
        if self._own_fd and self._out_fd is not None:
            os.close(self._out_fd)
            self._out_fd = None
        if self._pty_client_side is not None:
            os.close(self._pty_client_side)
            self._pty_client_side = None
