"""Raw system calls shared by the backends: ``ioctl`` through ctypes, eventfd, thread naming.

Why ctypes and not ``fcntl.ioctl``: ctypes releases the GIL for the duration of the call (KVM_RUN blocks for
as long as the guest runs), passes pointers without copying, and lets us see EINTR.  Newer CPython versions
retry ``fcntl.ioctl`` on EINTR, which would swallow the signal we use to kick a vCPU out of KVM_RUN.
"""

from __future__ import annotations

import ctypes
import os

from aovisor.lean_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# Not ctypes.util.find_library: it runs ldconfig in a subprocess (tens of milliseconds of startup).
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def _address(arg: Any) -> int | None:
    if arg is None or isinstance(arg, int):
        return arg
    return ctypes.addressof(arg)


def ioctl(fd: int, request: int, arg: Any = None, *, retry_eintr: bool = True) -> int:
    """``ioctl(fd, request, arg)``; ``arg`` is an int, None or a ctypes object (passed by address)."""
    ptr = _address(arg)
    while True:
        ret: int = _ioctl(fd, request, ptr)
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err == 4 and retry_eintr:  # EINTR
            continue
        raise OSError(err, os.strerror(err))


def raw_ioctl_function() -> Any:
    """A bare libc ``ioctl`` for the vCPU run loops: no Python wrapper and no ``argtypes``.

    Converting arguments through ``argtypes`` costs about 0.4 µs a call, on every guest exit.  Without
    them ctypes passes a Python int as a C ``int``, so pass the request as a ``ctypes.c_ulong`` (request
    numbers can exceed ``INT_MAX``) and a pointer as ``ctypes.c_void_p`` or ``None``; the fd is a small int.
    """
    function = _libc["ioctl"]  # indexing gives a new function object, unlike the cached attribute
    function.restype = ctypes.c_int
    return function


def get_errno() -> int:
    return ctypes.get_errno()


_PR_SET_NAME = 15


def set_thread_name(name: str) -> None:
    """Name the calling OS thread (seen in /proc/<pid>/task/*/comm; libvirt finds vCPUs as ``vcpuN``)."""
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
