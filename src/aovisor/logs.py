"""aovisor's loggers: :mod:`logging` loggers that import :mod:`logging` only when a record could be emitted.

Importing :mod:`logging` (with the ``traceback``, ``tokenize``, ``string`` and ``weakref`` it pulls in) is
about 10 ms of a VM's start-up on our machines, and a plain ``aovisor --kernel ...`` run emits nothing below
WARNING.  So every module takes ``log = get_logger(__name__)``, and the ``aovisor`` command line declares
with :func:`defer_setup` which levels can reach a handler at all: calls below that are dropped at once, and
the first record at or above it imports :mod:`logging` and installs the handler.

Without :func:`defer_setup` (the Python API, the tests) every call goes straight to the real logger, so
``logging`` configuration, ``caplog`` and handlers work as with plain ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the values of logging.DEBUG... (logging/__init__.py)

_threshold = 0  # records below this level are dropped unseen; 0: none is
_pending_setup: Callable[[], None] | None = None
_setup_lock = threading.Lock()


def defer_setup(threshold: int, setup: Callable[[], None]) -> None:
    """Drop records below ``threshold``; run ``setup`` (it installs the handlers) before the first other."""
    global _threshold, _pending_setup
    _threshold, _pending_setup = threshold, setup


def reset() -> None:
    """Forget :func:`defer_setup`: every call reaches :mod:`logging` again (a CLI run in-process ended)."""
    global _threshold, _pending_setup
    _threshold, _pending_setup = 0, None


def _run_pending_setup() -> None:
    global _pending_setup
    with _setup_lock:
        setup, _pending_setup = _pending_setup, None
        if setup is not None:
            setup()


class Logger:
    """The part of :class:`logging.Logger` that aovisor uses; the real logger is made on first use."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self) -> logging.Logger:
        logger = self._logger
        if logger is None:
            if _pending_setup is not None:
                _run_pending_setup()
            import logging

            logger = self._logger = logging.getLogger(self.name)
        return logger

    def isEnabledFor(self, level: int) -> bool:
        return level >= _threshold and self._real().isEnabledFor(level)

    # stacklevel=2: the record names the caller of these methods, not this module.
    def debug(self, msg: str, *args: object, **kwargs: Any) -> None:
        if _threshold <= DEBUG:
            self._real().debug(msg, *args, stacklevel=2, **kwargs)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        if _threshold <= INFO:
            self._real().info(msg, *args, stacklevel=2, **kwargs)

    def warning(self, msg: str, *args: object, **kwargs: Any) -> None:
        if _threshold <= WARNING:
            self._real().warning(msg, *args, stacklevel=2, **kwargs)

    def error(self, msg: str, *args: object, **kwargs: Any) -> None:
        if _threshold <= ERROR:
            self._real().error(msg, *args, stacklevel=2, **kwargs)

    def exception(self, msg: str, *args: object, **kwargs: Any) -> None:
        """An ERROR record with the exception being handled."""
        if _threshold <= ERROR:
            self._real().exception(msg, *args, stacklevel=2, **kwargs)


def get_logger(name: str) -> Logger:
    """The logger ``name`` (a module's ``__name__``): ``logging.getLogger(name)`` once it logs."""
    return Logger(name)
