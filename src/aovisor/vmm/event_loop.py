"""An epoll loop on its own thread: the device side of ioeventfds, with no busy polling.

Each virtio device owns one :class:`EventLoop` (a thread named after the device, ``virtio-blk0``).  The
guest's queue kicks arrive as ioeventfd signals the kernel raises without leaving the guest, so the vCPU
thread never runs Python for them; this thread wakes in ``epoll_wait`` and calls the handler registered
for that fd.  Other threads talk to the loop through :meth:`EventLoop.call` (run a function on the loop
thread and wait for it: how a device reset is made synchronous with request processing) and through
:meth:`pause`/:meth:`resume`/:meth:`stop`.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections import deque
from collections.abc import Callable

from aovisor.hypervisor.syscalls import set_thread_name
from aovisor.lean_typing import TYPE_CHECKING, Protocol
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

log = get_logger(__name__)


STOP_TIMEOUT = 5.0  # seconds to wait for a loop thread to finish its current handler


class Pausable(Protocol):
    """What VM pause/resume calls on every object in ``VirtualMachine.pausables``."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def _mask(edge: bool, writable: bool) -> int:
    return select.EPOLLIN | (select.EPOLLOUT if writable else 0) | (select.EPOLLET if edge else 0)


class _Call:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None


class EventLoop:
    """Wait for fds to become readable and run their handlers, on one thread; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._handlers: dict[int, Callable[[], None]] = {}
        self._calls: deque[_Call] = deque()
        self._state = threading.Condition()
        self._pause_requested = False
        self._parked = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- fds -----------------------------------------------------------------------------------------
    def add(
        self, fd: int, handler: Callable[[], None], *, edge: bool = False, writable: bool = False
    ) -> None:
        """Call ``handler`` on the loop thread whenever ``fd`` is readable (the handler must drain it).

        ``edge``: edge-triggered — the handler runs once per arrival of new data, so it may leave data
        unread (a device out of guest buffers) without being called again and again; it must then come
        back to the fd by itself.  ``writable``: also when the fd becomes writable."""
        self._handlers[fd] = handler
        self._epoll.register(fd, _mask(edge, writable))

    def modify(self, fd: int, *, edge: bool = False, writable: bool = False) -> None:
        """Change what ``fd`` (already added) is watched for."""
        self._epoll.modify(fd, _mask(edge, writable))

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    # --- other threads -------------------------------------------------------------------------------
    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread between handlers and return its result (inline when the loop is
        not running or when called from the loop thread itself)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            return fn()
        call = _Call(fn)
        self._calls.append(call)
        os.eventfd_write(self._wake, 1)
        while not call.done.wait(0.5):
            # Stopped meanwhile: nobody else will run it.
            if not thread.is_alive() and self._calls_remove(call):
                return fn()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _calls_remove(self, call: _Call) -> bool:
        try:
            self._calls.remove(call)
        except ValueError:
            return False
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def pause(self) -> None:
        """Return once the loop thread is parked: no handler runs until :meth:`resume`."""
        with self._state:
            self._pause_requested = True
            os.eventfd_write(self._wake, 1)
            thread = self._thread
            while thread is not None and thread.is_alive() and not self._parked and not self._stopping:
                self._state.wait(0.5)

    def resume(self) -> None:
        with self._state:
            self._pause_requested = False
            self._state.notify_all()

    def stop(self) -> None:
        """Stop the thread (after its current handler) and close the loop's fds; idempotent."""
        with self._state:
            self._stopping = True
            self._state.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive():
            os.eventfd_write(self._wake, 1)
            if threading.current_thread() is not thread:
                thread.join(STOP_TIMEOUT)
                if thread.is_alive():
                    log.warning("%s: the loop thread did not stop in %.0f s", self.name, STOP_TIMEOUT)
                    return  # leave its fds open: the thread may still use them
        if self._wake >= 0:
            self._epoll.close()
            os.close(self._wake)
            self._wake = -1

    # --- the loop thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        set_thread_name(self.name)
        wake = self._wake
        while not self._stopping:
            try:
                events = self._epoll.poll()
            except OSError as e:
                log.error("%s: epoll failed: %s", self.name, e)
                return
            for fd, _mask in events:
                if fd == wake:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(wake)
                    continue
                handler = self._handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler()
                except Exception:  # a device bug must not kill the loop (the device resets itself)
                    log.exception("%s: handler for fd %d failed", self.name, fd)
                if self._stopping:
                    break
            self._run_calls()
            if self._pause_requested:
                self._park()

    def _run_calls(self) -> None:
        while self._calls:
            call = self._calls.popleft()
            try:
                call.result = call.fn()
            except BaseException as e:  # handed to the caller
                call.error = e
            call.done.set()

    def _park(self) -> None:
        with self._state:
            self._parked = True
            self._state.notify_all()
            while self._pause_requested and not self._stopping:
                self._state.wait()
            self._parked = False
        self._run_calls()
