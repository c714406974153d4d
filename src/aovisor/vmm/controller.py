"""The one internal command interface: a queue of calls into the :class:`~aovisor.vmm.vmm.Vmm`, woken by an
eventfd, as Cloud Hypervisor's ``vmm/src/api/`` (an mpsc channel + an ``api_evt`` eventfd).

Every VM operation runs on the VMM's control thread, one at a time, in arrival order: the REST server's
connection threads and the Python API only :meth:`Controller.call` and wait, so the lifecycle state never
sees two operations at once and needs no lock of its own.  The control loop polls :attr:`Controller.fd`
(with the VM's exit eventfd) and runs :meth:`Controller.run_pending`.

An exception raised by the operation is re-raised in the caller's thread, unchanged, so each front end maps
errors its own way (HTTP statuses, CLI exit codes, Python exceptions).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable

from aovisor.errors import AovisorError
from aovisor.lean_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


class VmmShutDownError(AovisorError):
    """The VMM's control loop has ended: no operation can run any more."""


class _Call:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Controller:
    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._queue: deque[_Call] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` on the control thread and return its result (or raise its exception).

        Must not be called from the control thread itself (it would wait for itself).
        """
        request = _Call(fn, args)
        with self._lock:
            if self._closed:
                raise VmmShutDownError("the VMM has shut down")
            self._queue.append(request)
            os.eventfd_write(self.fd, 1)  # under the lock: close() cannot close the fd in between
        if not request.done.wait(timeout):
            raise TimeoutError(f"the VMM did not answer within {timeout} s")
        if request.error is not None:
            raise request.error
        result: T = request.result
        return result

    def run_pending(self) -> None:
        """Run every queued call (on the control thread), in order."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        while True:
            with self._lock:
                if not self._queue:
                    return
                request = self._queue.popleft()
            try:
                request.result = request.fn(*request.args)
            except Exception as e:  # handed to the caller; the control loop goes on
                request.error = e
            except BaseException as e:  # Ctrl-C, SystemExit: the caller hears of it, the loop stops
                request.error = VmmShutDownError(f"the VMM is stopping ({type(e).__name__})")
                raise
            finally:
                request.done.set()

    def close(self) -> None:
        """Refuse new calls and fail the queued ones (the control loop is ending)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            os.close(self.fd)
        for request in pending:
            request.error = VmmShutDownError("the VMM has shut down")
            request.done.set()
