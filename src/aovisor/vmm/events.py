"""The event monitor: Cloud Hypervisor's ``--event-monitor`` stream of JSON lifecycle events.

Each event is one JSON object, pretty-printed with two-space indentation and followed by a blank line,
exactly the shape Cloud Hypervisor writes (``event_monitor`` crate) and libvirt's ch driver parses::

    {
      "timestamp": {
        "secs": 0,
        "nanos": 1234567
      },
      "source": "vm",
      "event": "booted",
      "properties": null
    }

``timestamp`` is the time since the VMM started (a Rust ``Duration``).  The events we emit: ``vmm:starting``,
``vm:booting``, ``vm:booted``, ``vm:pausing``, ``vm:paused``, ``vm:resuming``, ``vm:resumed``,
``vm:rebooting``, ``vm:rebooted``, ``vm:shutdown``, ``vm:deleted``, ``vmm:shutdown``.

The destination is a file (truncated, as CH's ``File::create``), a FIFO, or an inherited fd.  Like CH the fd
is non-blocking: a reader that stops reading must not stall the VMM, so an event that does not fit in the
pipe is dropped (and logged).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from aovisor.errors import ConfigError
from aovisor.logs import get_logger

log = get_logger(__name__)


class EventMonitor:
    """Writes events to ``fd`` (owned: closed by :meth:`close`) and to any in-process subscribers."""

    def __init__(self, fd: int | None = None) -> None:
        self._fd = fd
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str, str], None]] = []
        if fd is not None:
            os.set_blocking(fd, False)

    @classmethod
    def open(cls, path: str | None = None, fd: int | None = None) -> EventMonitor:
        """``--event-monitor path=PATH`` or ``fd=N``; errors name the option."""
        if (path is None) == (fd is None):
            raise ConfigError("--event-monitor: give exactly one of path=PATH or fd=N")
        if fd is not None:
            try:
                os.fstat(fd)
            except OSError as e:
                raise ConfigError(f"--event-monitor: fd={fd}: {e.strerror}") from None
            os.set_inheritable(fd, False)
            return cls(fd)
        assert path is not None
        try:
            # A blocking open, as Cloud Hypervisor's: on a FIFO it waits for the reader (libvirt opens its end
            # after starting the VMM); writes are non-blocking from then on.
            opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"--event-monitor: path={path}: {e.strerror}") from None
        except ValueError:
            raise ConfigError(f"--event-monitor: path={path!r} is not a valid path") from None
        return cls(opened)

    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        """Also call ``callback(source, event)`` for every event (the Python API and tests use this)."""
        self._subscribers.append(callback)

    def emit(self, source: str, event: str, properties: dict[str, str] | None = None) -> None:
        log.info("event %s:%s", source, event)
        for callback in self._subscribers:
            callback(source, event)
        if self._fd is None:
            return
        import json  # only when a monitor is configured: the plain CLI path does not pay for it

        elapsed = time.monotonic() - self._start
        secs = int(elapsed)
        record = {
            "timestamp": {"secs": secs, "nanos": int((elapsed - secs) * 1e9)},
            "source": source,
            "event": event,
            "properties": properties,
        }
        data = (json.dumps(record, indent=2) + "\n\n").encode()
        with self._lock:
            if self._fd is None:
                return
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    log.warning("event monitor: short write, event %s:%s truncated", source, event)
            except BlockingIOError:
                log.warning("event monitor: reader too slow, event %s:%s dropped", source, event)
            except OSError as e:
                log.warning("event monitor: %s; no more events will be written", e.strerror)
                self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_fd()
