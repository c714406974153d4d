"""MSHV_ROOT_HVCALL: hypercalls passed through the mainline kernel, and their input/output layouts (§3).

Mainline ``mshv_root`` has no ioctl for registers, interrupt assertion or partition properties; the VMM
builds the hypervisor's own hypercall input and the kernel forwards it (after overwriting the leading
partition id, which we therefore pass as 0).  The ``build_*``/``parse_*`` functions are pure so the layouts
are unit-tested without /dev/mshv; :func:`root_hvcall` issues one call.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Callable, Sequence

from aovisor.errors import HypervisorError
from aovisor.hypervisor.mshv import abi
from aovisor.hypervisor.syscalls import ioctl as _default_ioctl

IoctlFunction = Callable[..., int]

_HV_STATUS_NAMES = {
    abi.HV_STATUS_INVALID_PARAMETER: "HV_STATUS_INVALID_PARAMETER",
    abi.HV_STATUS_ACCESS_DENIED: "HV_STATUS_ACCESS_DENIED",
    abi.HV_STATUS_INSUFFICIENT_MEMORY: "HV_STATUS_INSUFFICIENT_MEMORY",
}
_EAGAIN_RETRIES = 16  # older kernels deposit a page per EAGAIN (§3)


class HypercallError(HypervisorError):
    """A hypercall the hypervisor (or the kernel's whitelist) refused."""

    def __init__(self, code: int, status: int, err: int) -> None:
        name = _HV_STATUS_NAMES.get(status, f"status {status:#x}")
        super().__init__(f"hypercall {code:#x} failed: {name} (errno {err})")
        self.code = code
        self.status = status
        self.errno = err


def root_hvcall(
    fd: int,
    code: int,
    data: bytes,
    out_size: int = 0,
    reps: int = 0,
    *,
    request: int = abi.MSHV_ROOT_HVCALL,
    ioctl: IoctlFunction = _default_ioctl,
) -> bytes:
    """Issue hypercall ``code`` with input ``data``; return ``out_size`` output bytes.

    For rep hypercalls ``reps`` is the element count; the kernel reports how many completed and anything
    short of all of them is an error.
    """
    if not 8 <= len(data) <= abi.HV_HYPERCALL_MAX_INPUT or out_size > abi.HV_HYPERCALL_MAX_INPUT:
        raise ValueError(f"hypercall {code:#x}: bad input/output size {len(data)}/{out_size}")
    in_buf = ctypes.create_string_buffer(bytes(data), len(data))
    out_buf = ctypes.create_string_buffer(out_size) if out_size else None
    args = abi.mshv_root_hvcall(
        code=code,
        reps=reps,
        in_sz=len(data),
        out_sz=out_size,
        in_ptr=ctypes.addressof(in_buf),
        out_ptr=ctypes.addressof(out_buf) if out_buf is not None else 0,
    )
    for _ in range(_EAGAIN_RETRIES):
        args.status = 0
        try:
            ioctl(fd, request, args)
            break
        except OSError as e:
            if e.errno == errno.EAGAIN:
                continue
            raise HypercallError(code, int(args.status), e.errno or 0) from None
    else:
        raise HypercallError(code, abi.HV_STATUS_INSUFFICIENT_MEMORY, errno.EAGAIN)
    if reps and args.reps != reps:
        raise HypercallError(code, int(args.status), 0)
    return out_buf.raw if out_buf is not None else b""


# --- input/output layouts -------------------------------------------------------------------------------
_PARTITION_ID = 0  # overwritten by the kernel (§3)
_VP_HEADER = struct.Struct("<QIBBH")  # partition_id, vp_index, input_vtl, rsvd, rsvd
_ASSOC = struct.Struct("<IIQ16s")  # hv_register_assoc: name, reserved1, reserved2, value


def build_set_partition_property(code: int, value: int) -> bytes:
    return struct.pack("<QIIQ", _PARTITION_ID, code, 0, value)


def build_get_partition_property(code: int) -> bytes:
    return struct.pack("<QII", _PARTITION_ID, code, 0)


def build_get_vp_registers(vp_index: int, names: Sequence[int]) -> bytes:
    return _VP_HEADER.pack(_PARTITION_ID, vp_index, 0, 0, 0) + struct.pack(f"<{len(names)}I", *names)


def build_set_vp_registers(vp_index: int, values: Sequence[tuple[int, int]]) -> bytes:
    """``values``: (register id, 128-bit value) pairs; the value's bytes are the hv_register_value union."""
    parts = [_VP_HEADER.pack(_PARTITION_ID, vp_index, 0, 0, 0)]
    parts += [_ASSOC.pack(name, 0, 0, value.to_bytes(16, "little")) for name, value in values]
    return b"".join(parts)


def parse_register_values(out: bytes, count: int) -> list[int]:
    """hv_register_value[count] (16 bytes each) as 128-bit little-endian integers."""
    return [int.from_bytes(out[i * 16 : i * 16 + 16], "little") for i in range(count)]


def build_assert_virtual_interrupt(
    interrupt_type: int, vector: int, apic_id: int, *, level_triggered: bool = False, logical: bool = False
) -> bytes:
    control = interrupt_type & 0xFFFF_FFFF
    if level_triggered:
        control |= abi.HV_INTERRUPT_CONTROL_LEVEL_TRIGGERED
    if logical:
        control |= abi.HV_INTERRUPT_CONTROL_LOGICAL_DEST
    return struct.pack("<QQQIBBH", _PARTITION_ID, control, apic_id, vector, 0, 0, 0)


def build_install_intercept(access_type: int, intercept_type: int, parameter: int) -> bytes:
    return struct.pack("<QIIQ", _PARTITION_ID, access_type, intercept_type, parameter)


def build_translate_virtual_address(vp_index: int, gva_page: int, flags: int) -> bytes:
    return struct.pack("<QIIQQ", _PARTITION_ID, vp_index, 0, flags, gva_page)


def parse_translate_virtual_address(out: bytes) -> tuple[int, int]:
    """(result code, GPA page number); result code 0 means the translation succeeded."""
    result, gpa_page = struct.unpack_from("<QQ", out)
    return result & 0xFFFF_FFFF, gpa_page
