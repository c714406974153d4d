"""An MSHV partition: guest memory, the user-space IOAPIC, MSI routing, irqfd/ioeventfd, VPs and the clock.

The partition is created frozen (its reference time stands still, as CH and QEMU do, mshv.md §5 step 5) and
the clock starts when the first VP first runs.  MSHV has no in-kernel IOAPIC or PIC: wired interrupts go
through :class:`~aovisor.devices.ioapic.IoApic`, which the builder puts on the MMIO bus at
``layout.IOAPIC_START`` (``create_irqchip()``, see ``vmm/builder.py: attach_irqchip``), and
which delivers each pin as an MSI through :meth:`MshvVm.send_msi`.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aovisor.arch.x86_64 import layout
from aovisor.devices.ioapic import IoApic
from aovisor.errors import HypervisorError
from aovisor.hypervisor.base import CpuidEntry
from aovisor.hypervisor.mshv import abi
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.hypervisor.mshv.system import Mshv
    from aovisor.hypervisor.mshv.vcpu import MshvVcpu

log = get_logger(__name__)

PAGE_SIZE = 4096


@dataclass(frozen=True)
class _Region:
    gpa: int
    size: int
    host_address: int
    readonly: bool


def decode_msi(address: int, data: int) -> tuple[int, int, int, bool, bool]:
    """(interrupt type, vector, APIC id, level-triggered, logical destination) of an x86 MSI (§8)."""
    return (
        (data >> 8) & 7,
        data & 0xFF,
        (address >> 12) & 0xFF,
        bool(data & (1 << 15)),
        bool(address & (1 << 2)),
    )


class MshvVm:
    cpuid_is_programmable = False  # the hypervisor answers CPUID (see supported_cpuid)

    def __init__(self, mshv: Mshv) -> None:
        self.mshv = mshv
        self.dialect = mshv.dialect
        self.fd = self.dialect.create_partition(mshv.fd, abi.HV_SYNTHETIC_PROC_FEATURES_LINUX)
        try:
            os.set_inheritable(self.fd, False)
            # Unknown MSRs read as zero and ignore writes, as on KVM with ignore_msrs (CH, QEMU: §5 step 5).
            self.dialect.set_property(
                self.fd,
                abi.HV_PARTITION_PROPERTY_UNIMPLEMENTED_MSR_ACTION,
                abi.HV_UNIMPLEMENTED_MSR_ACTION_IGNORE_WRITE_READ_ZERO,
            )
            self.dialect.set_property(self.fd, abi.HV_PARTITION_PROPERTY_TIME_FREEZE, 1)
        except BaseException:
            os.close(self.fd)
            raise
        self._time_frozen = True
        self._time_lock = threading.Lock()
        self._ran_ns = 0  # how long the partition clock has run, up to the last freeze
        self._unfrozen_at = 0
        self._regions: list[_Region] = []
        self._region_starts: list[int] = []
        self._msi_routes: dict[int, tuple[int, int]] = {}
        self._routes_lock = threading.Lock()
        self.ioapic = IoApic(self.send_msi, pins=layout.IOAPIC_PINS)

    # --- memory (§7) -----------------------------------------------------------------------------------
    def map_memory(self, slot: int, gpa: int, size: int, host_address: int, readonly: bool = False) -> None:
        """Map ``[host_address, +size)`` at ``gpa``.  MSHV has no slots: ``slot`` is accepted for the
        interface and ignored; overlapping GPA ranges are refused by the kernel (EEXIST)."""
        if gpa % PAGE_SIZE or size % PAGE_SIZE or host_address % PAGE_SIZE or size <= 0:
            raise HypervisorError(f"MSHV memory region {gpa:#x}+{size:#x} is not page aligned")
        self.dialect.map_memory(self.fd, gpa, size, host_address, writable=not readonly)
        region = _Region(gpa, size, host_address, readonly)
        i = bisect.bisect(self._region_starts, gpa)
        self._regions.insert(i, region)
        self._region_starts.insert(i, gpa)

    def unmap_memory(self, gpa: int) -> None:
        i = self._region_starts.index(gpa)
        r = self._regions[i]
        self.dialect.unmap_memory(self.fd, r.gpa, r.size, r.host_address, writable=not r.readonly)
        del self._regions[i]
        del self._region_starts[i]

    def _region(self, gpa: int, length: int) -> _Region | None:
        i = bisect.bisect_right(self._region_starts, gpa) - 1
        if i >= 0 and length >= 0:
            r = self._regions[i]
            if gpa + length <= r.gpa + r.size:
                return r
        return None

    def read_ram(self, gpa: int, length: int) -> bytes | None:
        """Bytes of guest RAM, or None when ``[gpa, +length)`` is not inside one mapped region."""
        r = self._region(gpa, length)
        if r is None:
            return None
        return ctypes.string_at(r.host_address + (gpa - r.gpa), length)

    def write_ram(self, gpa: int, data: bytes) -> bool:
        """Store into writable guest RAM; False (nothing written) for read-only regions and non-RAM."""
        r = self._region(gpa, len(data))
        if r is None or r.readonly:
            return False
        ctypes.memmove(r.host_address + (gpa - r.gpa), data, len(data))
        return True

    # --- interrupts (§8) ---------------------------------------------------------------------------------
    def irq_line(self, gsi: int) -> Callable[[bool], None]:
        """Wired interrupt ``gsi`` is a pin of the user-space IOAPIC."""
        return self.ioapic.line(gsi)

    def send_msi(self, address: int, data: int) -> None:
        """Deliver one MSI by ASSERT_VIRTUAL_INTERRUPT (decoded as the kernel decodes routes, §8)."""
        interrupt_type, vector, apic_id, level, logical = decode_msi(address, data)
        self.dialect.assert_interrupt(self.fd, interrupt_type, vector, apic_id, level, logical)

    def set_msi_routes(self, routes: Mapping[int, tuple[int, int]]) -> None:
        """Replace the whole GSI -> (MSI address, data) table the kernel uses for irqfds (§8)."""
        for gsi, (address, _) in routes.items():
            if not 0 <= gsi < abi.MSHV_MAX_GSI:
                raise HypervisorError(f"GSI {gsi} out of range (MSHV allows 0..{abi.MSHV_MAX_GSI - 1})")
            if address >> 32:
                raise HypervisorError(f"MSI address {address:#x} for GSI {gsi}: MSHV needs address_hi == 0")
        with self._routes_lock:
            entries = sorted(routes.items())
            n = len(entries)

            class Table(ctypes.Structure):
                _pack_ = 1
                _fields_ = [("header", abi.mshv_user_irq_table), ("entries", abi.mshv_user_irq_entry * n)]

            table = Table()
            table.header.nr = n
            for e, (gsi, (address, data)) in zip(table.entries, entries, strict=True):
                e.gsi, e.address_lo, e.address_hi, e.data = gsi, address & 0xFFFF_FFFF, 0, data & 0xFFFF_FFFF
            self._ioctl(self.dialect.msi_routing_request, table)
            self._msi_routes = dict(routes)

    def set_msi_route(self, gsi: int, address: int, data: int) -> None:
        with self._routes_lock:
            routes = dict(self._msi_routes)
        routes[gsi] = (address, data)
        self.set_msi_routes(routes)

    def register_irqfd(self, eventfd: int, gsi: int, resamplefd: int | None = None) -> None:
        """Signalling ``eventfd`` asserts GSI ``gsi``'s routed MSI in the kernel, with no exit (§8)."""
        flags = 1 << abi.MSHV_IRQFD_BIT_RESAMPLE if resamplefd is not None else 0
        args = abi.mshv_user_irqfd(fd=eventfd, resamplefd=resamplefd or 0, gsi=gsi, flags=flags)
        self._ioctl(self.dialect.irqfd_request, args)

    def unregister_irqfd(self, eventfd: int, gsi: int) -> None:
        args = abi.mshv_user_irqfd(fd=eventfd, gsi=gsi, flags=1 << abi.MSHV_IRQFD_BIT_DEASSIGN)
        self._ioctl(self.dialect.irqfd_request, args)

    def register_ioeventfd(
        self, eventfd: int, addr: int, length: int, *, pio: bool = False, datamatch: int | None = None
    ) -> None:
        """A guest write of ``length`` bytes (0: any) to MMIO ``addr`` signals ``eventfd`` without an exit.

        MSHV implements these as hypervisor doorbells, for MMIO only: a port-I/O ioeventfd is refused (§8),
        so callers must keep handling such ports on the PIO bus.
        """
        if pio:
            raise HypervisorError("MSHV has no port-I/O ioeventfd: port I/O always exits to the VMM")
        self._ioctl(self.dialect.ioeventfd_request, self._ioeventfd(eventfd, addr, length, datamatch, 0))

    def unregister_ioeventfd(
        self, eventfd: int, addr: int, length: int, *, datamatch: int | None = None
    ) -> None:
        deassign = 1 << abi.MSHV_IOEVENTFD_BIT_DEASSIGN
        self._ioctl(
            self.dialect.ioeventfd_request, self._ioeventfd(eventfd, addr, length, datamatch, deassign)
        )

    @staticmethod
    def _ioeventfd(
        eventfd: int, addr: int, length: int, datamatch: int | None, flags: int
    ) -> abi.mshv_user_ioeventfd:
        if length not in (0, 1, 2, 4, 8):
            raise HypervisorError(f"ioeventfd length {length} (MSHV allows 0, 1, 2, 4, 8)")
        if datamatch is not None:
            flags |= 1 << abi.MSHV_IOEVENTFD_BIT_DATAMATCH
        return abi.mshv_user_ioeventfd(
            datamatch=datamatch or 0, addr=addr, len=length, fd=eventfd, flags=flags
        )

    def _ioctl(self, request: int, arg: object) -> None:
        self.dialect.ioctl(self.fd, request, arg)

    # --- time (§5) -----------------------------------------------------------------------------------
    def start_time(self) -> None:
        """Let the partition's reference time run (the first VP entry does this; so does a resume)."""
        with self._time_lock:
            if self._time_frozen:
                self.dialect.set_property(self.fd, abi.HV_PARTITION_PROPERTY_TIME_FREEZE, 0)
                self._time_frozen = False
                self._unfrozen_at = time.monotonic_ns()

    def freeze_time(self) -> None:
        """Stop the guest's clock: reference time, TSC and timers stand still until :meth:`start_time`."""
        with self._time_lock:
            if not self._time_frozen:
                self.dialect.set_property(self.fd, abi.HV_PARTITION_PROPERTY_TIME_FREEZE, 1)
                self._time_frozen = True
                self._ran_ns += time.monotonic_ns() - self._unfrozen_at

    def get_clock(self) -> int:
        """Pause support: freeze the partition's time and return how long (ns) it has run.

        KVM's kvmclock keeps counting while the VM is paused, hence KVM_GET/SET_CLOCK around a pause; the
        Microsoft hypervisor instead stops the partition's time altogether (TIME_FREEZE, §3), which is what
        a pause needs.  mshv.md names no property to *set* the reference time, so the value is the VMM's
        account of running time, not a guest-visible counter.
        """
        self.freeze_time()
        return self._ran_ns

    def set_clock(self, clock: int) -> None:
        """Resume after :meth:`get_clock`: unfreeze the partition's time, which continues where it stopped."""
        if clock != self._ran_ns:
            log.warning("MSHV cannot set the guest clock: continuing from where it was frozen")
        self.start_time()

    @property
    def time_frozen(self) -> bool:
        return self._time_frozen

    # --- VPs -------------------------------------------------------------------------------------------
    def supported_cpuid(self) -> list[CpuidEntry]:
        """Empty: on MSHV the hypervisor answers CPUID itself from the partition's processor features and
        the VP index, so there is no table to start from (and ``MshvVcpu.set_cpuid`` ignores the result)."""
        return []

    def create_irqchip(self) -> IoApic:
        """MSHV has no in-kernel IOAPIC: wired interrupts go through this user-space one, as MSIs."""
        return self.ioapic

    def create_vcpu(self, index: int, apic_id: int | None = None) -> MshvVcpu:
        from aovisor.hypervisor.mshv.vcpu import MshvVcpu

        if apic_id not in (None, index):
            raise HypervisorError(
                f"VP {index}: APIC id {apic_id}: MSHV gives each VP the APIC id of its index"
            )
        if not 0 <= index < abi.MSHV_MAX_VPS:
            raise HypervisorError(f"VP index {index} out of range (MSHV allows 0..{abi.MSHV_MAX_VPS - 1})")
        return MshvVcpu(self, index)

    def close(self) -> None:
        """Closing the partition fd makes the kernel delete the partition, unpin memory and drop irqfds and
        ioeventfds (§5 step 11); VP fds are closed first by their owners."""
        self._regions.clear()
        self._region_starts.clear()
        os.close(self.fd)
