"""Run one VMM process and observe it: wall time spawn to reap, output lines with arrival times, peak RSS.

Peak RSS comes from ``VmHWM`` in ``/proc/PID/status``, polled while the process runs and read again whenever
output arrives (so the guest's last line, printed just before it powers off, triggers a read close to exit).
``wait4``'s ``ru_maxrss`` is not used: Linux charges a spawned child with the high-water mark of the memory
it was spawned from (``exec_mmap`` folds the old mm's ``hiwater_rss`` into ``signal->maxrss``, and with
vfork that old mm is the *parent's*), so it would report this harness's own size.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RSS_POLL_INTERVAL = 0.01  # seconds: VmHWM is a high-water mark, so polling only needs to be regular


@dataclass(frozen=True)
class TimedLine:
    """One line of output and when it arrived, in seconds after the spawn."""

    at: float
    stream: str  # "stdout" or "stderr"
    text: str


@dataclass(frozen=True)
class ProcessResult:
    argv: tuple[str, ...]
    exit_status: int  # as subprocess reports it: the exit code, or -SIGNAL when killed by a signal
    wall_s: float  # spawn -> reaped
    lines: tuple[TimedLine, ...]
    peak_rss_kib: int | None  # highest VmHWM seen; None when not sampled or never readable
    timed_out: bool = False

    def text(self, stream: str) -> str:
        return "".join(line.text for line in self.lines if line.stream == stream)

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")


@dataclass
class _Stream:
    name: str
    fd: int
    pending: bytearray = field(default_factory=bytearray)


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    sample_rss: bool = False,
) -> ProcessResult:
    """Spawn ``argv`` (stdin from /dev/null), collect its output until it exits, and reap it.

    A process still running after ``timeout`` seconds is killed (SIGKILL) and reported with ``timed_out``.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # os.pipe() fds are close-on-exec; dup2 onto 1 and 2 clears that flag for the child's copies only.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    started = time.perf_counter()
    try:
        pid = os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions)
    finally:
        os.close(out_w)
        os.close(err_w)
    streams = [_Stream("stdout", out_r), _Stream("stderr", err_r)]
    lines: list[TimedLine] = []
    peak: int | None = None
    timed_out = False
    deadline = started + timeout
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream.fd, selectors.EVENT_READ, stream)
        open_streams = len(streams)
        while open_streams:
            now = time.perf_counter()
            if now >= deadline:
                timed_out = True
                os.kill(pid, signal.SIGKILL)  # our own child, by pid
                break
            wait = min(deadline - now, RSS_POLL_INTERVAL) if sample_rss else deadline - now
            events = selector.select(wait)
            arrived = time.perf_counter() - started
            for key, _ in events:
                source: _Stream = key.data
                chunk = os.read(source.fd, 65536)
                if not chunk:
                    selector.unregister(source.fd)
                    open_streams -= 1
                    if source.pending:
                        lines.append(TimedLine(arrived, source.name, _decode(source.pending)))
                        source.pending.clear()
                    continue
                source.pending += chunk
                lines.extend(TimedLine(arrived, source.name, text) for text in _take_lines(source.pending))
            if sample_rss:
                peak = _max(peak, read_vm_hwm_kib(pid))
    for stream in streams:
        os.close(stream.fd)
    _, status, _ = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    return ProcessResult(
        argv=tuple(argv),
        exit_status=os.waitstatus_to_exitcode(status),
        wall_s=wall,
        lines=tuple(lines),
        peak_rss_kib=peak,
        timed_out=timed_out,
    )


def read_vm_hwm_kib(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM``, KiB); None once it has exited (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return parse_vm_hwm_kib(f.read())
    except OSError:
        return None


def parse_vm_hwm_kib(status_text: str) -> int | None:
    """``VmHWM`` in KiB from the text of ``/proc/PID/status`` (absent for kernel threads and zombies)."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    return None


def _take_lines(pending: bytearray) -> list[str]:
    """Remove the complete lines (each with its ``\\n``) from ``pending`` and return them decoded."""
    end = pending.rfind(b"\n")
    if end < 0:
        return []
    complete = bytes(pending[:end])
    del pending[: end + 1]
    return [_decode(line) + "\n" for line in complete.split(b"\n")]


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
