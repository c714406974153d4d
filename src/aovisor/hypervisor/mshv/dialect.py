"""The two kernel ABIs behind one interface: mainline ``mshv_root`` and the legacy out-of-tree driver.

Both drive the same hypervisor with the same message and register layouts (§4); they differ in request
numbers and in how registers, properties and interrupts travel: mainline wraps the hypervisor's hypercall
input in MSHV_ROOT_HVCALL (§3), legacy has an ioctl per operation (§10).  Everything above this module
(partition, VP, run loop) is written once against :class:`Dialect`.

:func:`detect` tells them apart without creating a partition: mainline answers a create request carrying an
unknown ``pt_flags`` bit with EINVAL (§2.1), while the legacy driver does not know that request at all
(ENOTTY).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from typing import Protocol

from aovisor.errors import HypervisorError
from aovisor.hypervisor.mshv import abi, hvcall
from aovisor.hypervisor.syscalls import ioctl as _default_ioctl
from aovisor.logs import get_logger

log = get_logger(__name__)


class Dialect(Protocol):
    name: str
    ioctl: hvcall.IoctlFunction  # how requests reach the kernel (tests substitute a fake kernel)
    run_vp_request: int
    irqfd_request: int
    ioeventfd_request: int
    msi_routing_request: int

    def create_partition(self, mshv_fd: int, synthetic_features: int) -> int: ...

    def set_property(self, partition_fd: int, code: int, value: int) -> None: ...

    def get_property(self, partition_fd: int, code: int) -> int: ...

    def map_memory(self, partition_fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None: ...

    def unmap_memory(self, partition_fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None: ...

    def create_vp(self, partition_fd: int, index: int) -> int: ...

    def get_registers(self, vp_fd: int, vp_index: int, names: Sequence[int]) -> list[int]: ...

    def set_registers(self, vp_fd: int, vp_index: int, values: Sequence[tuple[int, int]]) -> None: ...

    def assert_interrupt(
        self, partition_fd: int, interrupt_type: int, vector: int, apic_id: int, level: bool, logical: bool
    ) -> None: ...

    def translate_gva(self, vp_fd: int, vp_index: int, gva: int, flags: int) -> tuple[int, int]:
        """(result code, GPA) of a guest-virtual address; result 0 means success."""
        ...

    def get_lapic(self, vp_fd: int) -> abi.hv_local_interrupt_controller_state | None: ...

    def set_lapic(self, vp_fd: int, state: abi.hv_local_interrupt_controller_state) -> None: ...


def detect(mshv_fd: int, ioctl: hvcall.IoctlFunction = _default_ioctl) -> Dialect:
    """Which ABI the running kernel speaks (logged once by the caller)."""
    probe = abi.mshv_create_partition(pt_flags=1 << 63, pt_isolation=abi.MSHV_PT_ISOLATION_NONE)
    try:
        fd = ioctl(mshv_fd, abi.MSHV_CREATE_PARTITION, probe)
    except OSError as e:
        if e.errno == errno.ENOTTY:
            return LegacyAbi(ioctl)
        return MainlineAbi(ioctl)  # EINVAL: the request exists and rejected our unknown flag
    os.close(fd)  # a kernel that ignores unknown flags is still mainline
    return MainlineAbi(ioctl)


def _check_register_count(n: int, limit: int) -> None:
    if n > limit:
        raise ValueError(f"{n} registers in one call (at most {limit})")


class MainlineAbi:
    """Linux ≥ 6.15 ``include/uapi/linux/mshv.h`` (§2, §3)."""

    name = "mainline mshv_root (include/uapi/linux/mshv.h)"
    run_vp_request = abi.MSHV_RUN_VP
    irqfd_request = abi.MSHV_IRQFD
    ioeventfd_request = abi.MSHV_IOEVENTFD
    msi_routing_request = abi.MSHV_SET_MSI_ROUTING

    def __init__(self, ioctl: hvcall.IoctlFunction = _default_ioctl) -> None:
        self.ioctl = ioctl

    def _hvcall(self, fd: int, code: int, data: bytes, out_size: int = 0, reps: int = 0) -> bytes:
        return hvcall.root_hvcall(fd, code, data, out_size, reps, ioctl=self.ioctl)

    def create_partition(self, mshv_fd: int, synthetic_features: int) -> int:
        """Create (LAPIC + x2APIC + super pages, as QEMU), set the early synthetic-feature property, and
        initialize (§5 steps 2-4)."""
        flags = (
            1 << abi.MSHV_PT_BIT_LAPIC | 1 << abi.MSHV_PT_BIT_X2APIC | 1 << abi.MSHV_PT_BIT_GPA_SUPER_PAGES
        )
        args = abi.mshv_create_partition(pt_flags=flags, pt_isolation=abi.MSHV_PT_ISOLATION_NONE)
        fd = self.ioctl(mshv_fd, abi.MSHV_CREATE_PARTITION, args)
        try:
            self.set_property(fd, abi.HV_PARTITION_PROPERTY_SYNTHETIC_PROC_FEATURES, synthetic_features)
            self.ioctl(fd, abi.MSHV_INITIALIZE_PARTITION, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def set_property(self, partition_fd: int, code: int, value: int) -> None:
        # SET_PARTITION_PROPERTY is asynchronous in the hypervisor: only the partition fd may issue it.
        self._hvcall(
            partition_fd, abi.HVCALL_SET_PARTITION_PROPERTY, hvcall.build_set_partition_property(code, value)
        )

    def get_property(self, partition_fd: int, code: int) -> int:
        out = self._hvcall(
            partition_fd, abi.HVCALL_GET_PARTITION_PROPERTY, hvcall.build_get_partition_property(code), 8
        )
        return int.from_bytes(out, "little")

    def _memory(self, partition_fd: int, gpa: int, size: int, host: int, flags: int) -> None:
        region = abi.mshv_user_mem_region(size=size, guest_pfn=gpa >> 12, userspace_addr=host, flags=flags)
        self.ioctl(partition_fd, abi.MSHV_SET_GUEST_MEMORY, region)

    def map_memory(self, partition_fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None:
        # Executable always, writable unless read-only, as CH (§7).
        flags = 1 << abi.MSHV_SET_MEM_BIT_EXECUTABLE | (1 << abi.MSHV_SET_MEM_BIT_WRITABLE if writable else 0)
        self._memory(partition_fd, gpa, size, host, flags)

    def unmap_memory(self, partition_fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None:
        self._memory(partition_fd, gpa, size, host, 1 << abi.MSHV_SET_MEM_BIT_UNMAP)

    def create_vp(self, partition_fd: int, index: int) -> int:
        return self.ioctl(partition_fd, abi.MSHV_CREATE_VP, abi.mshv_create_vp(vp_index=index))

    def get_registers(self, vp_fd: int, vp_index: int, names: Sequence[int]) -> list[int]:
        values: list[int] = []
        for start in range(0, len(names), 256):  # 16·n output bytes ≤ one page
            chunk = names[start : start + 256]
            out = self._hvcall(
                vp_fd,
                abi.HVCALL_GET_VP_REGISTERS,
                hvcall.build_get_vp_registers(vp_index, chunk),
                16 * len(chunk),
                reps=len(chunk),
            )
            values += hvcall.parse_register_values(out, len(chunk))
        return values

    def set_registers(self, vp_fd: int, vp_index: int, values: Sequence[tuple[int, int]]) -> None:
        step = abi.HV_MAX_REGISTERS_PER_CALL
        for start in range(0, len(values), step):
            chunk = values[start : start + step]
            self._hvcall(
                vp_fd,
                abi.HVCALL_SET_VP_REGISTERS,
                hvcall.build_set_vp_registers(vp_index, chunk),
                reps=len(chunk),
            )

    def assert_interrupt(
        self, partition_fd: int, interrupt_type: int, vector: int, apic_id: int, level: bool, logical: bool
    ) -> None:
        data = hvcall.build_assert_virtual_interrupt(
            interrupt_type, vector, apic_id, level_triggered=level, logical=logical
        )
        self._hvcall(partition_fd, abi.HVCALL_ASSERT_VIRTUAL_INTERRUPT, data)

    def translate_gva(self, vp_fd: int, vp_index: int, gva: int, flags: int) -> tuple[int, int]:
        out = self._hvcall(
            vp_fd,
            abi.HVCALL_TRANSLATE_VIRTUAL_ADDRESS,
            hvcall.build_translate_virtual_address(vp_index, gva >> 12, flags),
            16,
        )
        result, gpa_page = hvcall.parse_translate_virtual_address(out)
        return result, gpa_page << 12 | (gva & 0xFFF)

    def get_lapic(self, vp_fd: int) -> abi.hv_local_interrupt_controller_state | None:
        page = _AlignedPage()
        args = abi.mshv_get_set_vp_state(
            type=abi.MSHV_VP_STATE_LAPIC, buf_sz=abi.VP_STATE_PAGE, buf_ptr=page.address
        )
        self.ioctl(vp_fd, abi.MSHV_GET_VP_STATE, args)
        return abi.hv_local_interrupt_controller_state.from_buffer_copy(page.read())

    def set_lapic(self, vp_fd: int, state: abi.hv_local_interrupt_controller_state) -> None:
        page = _AlignedPage()
        page.write(bytes(state))
        args = abi.mshv_get_set_vp_state(
            type=abi.MSHV_VP_STATE_LAPIC, buf_sz=abi.VP_STATE_PAGE, buf_ptr=page.address
        )
        self.ioctl(vp_fd, abi.MSHV_SET_VP_STATE, args)


class LegacyAbi:
    """The out-of-tree driver of Cloud Hypervisor ≤ v41 / rust-vmm mshv ≤ 0.2 (§10)."""

    name = "legacy out-of-tree mshv (Cloud Hypervisor <= v41 kernels)"
    run_vp_request = abi.MSHV_LEGACY_RUN_VP
    irqfd_request = abi.MSHV_LEGACY_IRQFD
    ioeventfd_request = abi.MSHV_LEGACY_IOEVENTFD
    msi_routing_request = abi.MSHV_LEGACY_SET_MSI_ROUTING

    def __init__(self, ioctl: hvcall.IoctlFunction = _default_ioctl) -> None:
        self.ioctl = ioctl

    def create_partition(self, mshv_fd: int, synthetic_features: int) -> int:
        """One ioctl creates, sets the synthetic features and initializes; retried on EINTR like CH v41."""
        args = abi.mshv_create_partition_legacy(
            flags=abi.HV_PARTITION_CREATION_FLAG_LAPIC_ENABLED
            | abi.HV_PARTITION_CREATION_FLAG_X2APIC_CAPABLE,
            synthetic_processor_features=synthetic_features,
        )
        return self.ioctl(mshv_fd, abi.MSHV_LEGACY_CREATE_PARTITION, args)

    def set_property(self, partition_fd: int, code: int, value: int) -> None:
        prop = abi.mshv_partition_property_legacy(property_code=code, property_value=value)
        self.ioctl(partition_fd, abi.MSHV_LEGACY_SET_PARTITION_PROPERTY, prop)

    def get_property(self, partition_fd: int, code: int) -> int:
        prop = abi.mshv_partition_property_legacy(property_code=code)
        self.ioctl(partition_fd, abi.MSHV_LEGACY_GET_PARTITION_PROPERTY, prop)
        return int(prop.property_value)

    def _region(self, gpa: int, size: int, host: int, writable: bool) -> abi.mshv_user_mem_region_legacy:
        flags = abi.HV_MAP_GPA_READABLE | abi.HV_MAP_GPA_EXECUTABLE | abi.HV_MAP_GPA_ADJUSTABLE
        if writable:
            flags |= abi.HV_MAP_GPA_WRITABLE
        return abi.mshv_user_mem_region_legacy(
            size=size, guest_pfn=gpa >> 12, userspace_addr=host, flags=flags
        )

    def map_memory(self, partition_fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None:
        self.ioctl(partition_fd, abi.MSHV_LEGACY_MAP_GUEST_MEMORY, self._region(gpa, size, host, writable))

    def unmap_memory(self, partition_fd: int, gpa: int, size: int, host: int, *, writable: bool) -> None:
        self.ioctl(partition_fd, abi.MSHV_LEGACY_UNMAP_GUEST_MEMORY, self._region(gpa, size, host, writable))

    def create_vp(self, partition_fd: int, index: int) -> int:
        return self.ioctl(partition_fd, abi.MSHV_LEGACY_CREATE_VP, abi.mshv_create_vp(vp_index=index))

    def _assocs(self, values: Sequence[tuple[int, int]]) -> ctypes.Array[abi.hv_register_assoc]:
        assocs = (abi.hv_register_assoc * len(values))()
        for a, (name, value) in zip(assocs, values, strict=True):
            a.name = name
            ctypes.memmove(a.value, value.to_bytes(16, "little"), 16)
        return assocs

    def get_registers(self, vp_fd: int, vp_index: int, names: Sequence[int]) -> list[int]:
        values: list[int] = []
        for start in range(0, len(names), abi.MSHV_LEGACY_MAX_REGISTERS):
            chunk = names[start : start + abi.MSHV_LEGACY_MAX_REGISTERS]
            assocs = self._assocs([(n, 0) for n in chunk])  # GET fills the values in place
            args = abi.mshv_vp_registers_legacy(count=len(chunk), regs_ptr=ctypes.addressof(assocs))
            self.ioctl(vp_fd, abi.MSHV_LEGACY_GET_VP_REGISTERS, args)
            values += [int.from_bytes(bytes(a.value), "little") for a in assocs]
        return values

    def set_registers(self, vp_fd: int, vp_index: int, values: Sequence[tuple[int, int]]) -> None:
        for start in range(0, len(values), abi.MSHV_LEGACY_MAX_REGISTERS):
            assocs = self._assocs(values[start : start + abi.MSHV_LEGACY_MAX_REGISTERS])
            args = abi.mshv_vp_registers_legacy(count=len(assocs), regs_ptr=ctypes.addressof(assocs))
            self.ioctl(vp_fd, abi.MSHV_LEGACY_SET_VP_REGISTERS, args)

    def assert_interrupt(
        self, partition_fd: int, interrupt_type: int, vector: int, apic_id: int, level: bool, logical: bool
    ) -> None:
        control = interrupt_type | (abi.HV_INTERRUPT_CONTROL_LEVEL_TRIGGERED if level else 0)
        control |= abi.HV_INTERRUPT_CONTROL_LOGICAL_DEST if logical else 0
        args = abi.mshv_assert_interrupt_legacy(control=control, dest_addr=apic_id, vector=vector)
        self.ioctl(partition_fd, abi.MSHV_LEGACY_ASSERT_INTERRUPT, args)

    def translate_gva(self, vp_fd: int, vp_index: int, gva: int, flags: int) -> tuple[int, int]:
        result = ctypes.c_uint64()
        gpa = ctypes.c_uint64()
        args = abi.mshv_translate_gva_legacy(
            gva=gva, flags=flags, result_ptr=ctypes.addressof(result), gpa_ptr=ctypes.addressof(gpa)
        )
        self.ioctl(vp_fd, abi.MSHV_LEGACY_TRANSLATE_GVA, args)
        return result.value & 0xFFFF_FFFF, gpa.value

    def get_lapic(self, vp_fd: int) -> abi.hv_local_interrupt_controller_state | None:
        return None  # the legacy GET/SET_VP_STATE struct changed between driver versions (§10): not used

    def set_lapic(self, vp_fd: int, state: abi.hv_local_interrupt_controller_state) -> None:
        raise HypervisorError("LAPIC state is not supported on the legacy MSHV ABI")


class _AlignedPage:
    """One page-aligned 4 KiB buffer, as MSHV_GET/SET_VP_STATE require (§2.1)."""

    def __init__(self) -> None:
        self._raw = ctypes.create_string_buffer(2 * abi.VP_STATE_PAGE)
        base = ctypes.addressof(self._raw)
        self.address = (base + abi.VP_STATE_PAGE - 1) & ~(abi.VP_STATE_PAGE - 1)
        self._offset = self.address - base

    def read(self) -> bytes:
        return self._raw.raw[self._offset : self._offset + abi.VP_STATE_PAGE]

    def write(self, data: bytes) -> None:
        ctypes.memmove(self.address, data, len(data))
