"""A KVM vCPU fd: register access, CPUID/MSR/FPU/LAPIC setup, and the ``KVM_RUN`` loop.

The run loop is the hottest Python in the VMM: every port-I/O or MMIO exit passes through it.  It therefore
reads ``struct kvm_run`` through one long-lived memoryview with ``struct.unpack_from`` at fixed offsets
(see :mod:`abi`), calls libc ``ioctl`` directly, and only returns to the caller for the rare events the vCPU
loop must act on.
"""

from __future__ import annotations

import ctypes
import mmap
import struct

from aovisor.errors import HypervisorError
from aovisor.hypervisor.base import (
    CpuidEntry,
    DescriptorTable,
    Regs,
    Segment,
    SpecialRegs,
    VcpuExit,
    VmOps,
)
from aovisor.hypervisor.kvm import abi
from aovisor.hypervisor.syscalls import get_errno, ioctl, raw_ioctl_function
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.hypervisor.kvm.vm import KvmVm

log = get_logger(__name__)

_EINTR = 4
_EAGAIN = 11
_REG_NAMES = [field[0] for field in abi.kvm_regs._fields_]
_SEG_NAMES = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
_IO_STRUCT = struct.Struct(abi.KVM_RUN_IO_FORMAT)
_MMIO_STRUCT = struct.Struct(abi.KVM_RUN_MMIO_FORMAT)
_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: (1 << 64) - 1}  # access size -> value mask


class VcpuError(HypervisorError):
    """The vCPU stopped in a way the VMM cannot continue from (internal error, failed entry...)."""


class KvmVcpu:
    def __init__(self, vm: KvmVm, index: int, vcpu_id: int | None = None) -> None:
        self.vm = vm
        self.index = index
        self.fd = ioctl(vm.fd, abi.KVM_CREATE_VCPU, index if vcpu_id is None else vcpu_id)
        self._run_map = mmap.mmap(
            self.fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._run = memoryview(self._run_map)
        # exit_reason as a u32 view: one index instead of a struct unpack on every exit.
        reason_at = abi.KVM_RUN_EXIT_REASON_OFFSET
        self._exit_reason = self._run[reason_at : reason_at + 4].cast("I")
        self._ioctl = raw_ioctl_function()
        self.exit_counts: dict[str, int] = {"io": 0, "mmio": 0, "other": 0}

    # --- registers ---------------------------------------------------------------------------------
    def get_regs(self) -> Regs:
        r = abi.kvm_regs()
        ioctl(self.fd, abi.KVM_GET_REGS, r)
        return Regs(**{name: getattr(r, name) for name in _REG_NAMES})

    def set_regs(self, regs: Regs) -> None:
        r = abi.kvm_regs(**{name: getattr(regs, name) for name in _REG_NAMES})
        ioctl(self.fd, abi.KVM_SET_REGS, r)

    def get_sregs(self) -> SpecialRegs:
        s = abi.kvm_sregs()
        ioctl(self.fd, abi.KVM_GET_SREGS, s)
        out = SpecialRegs(
            gdt=DescriptorTable(s.gdt.base, s.gdt.limit),
            idt=DescriptorTable(s.idt.base, s.idt.limit),
            cr0=s.cr0,
            cr2=s.cr2,
            cr3=s.cr3,
            cr4=s.cr4,
            cr8=s.cr8,
            efer=s.efer,
            apic_base=s.apic_base,
        )
        for name in _SEG_NAMES:
            k = getattr(s, name)
            setattr(
                out,
                name,
                Segment(
                    base=k.base,
                    limit=k.limit,
                    selector=k.selector,
                    type=k.type,
                    present=bool(k.present),
                    dpl=k.dpl,
                    db=bool(k.db),
                    s=bool(k.s),
                    l=bool(k.l),
                    g=bool(k.g),
                    avl=bool(k.avl),
                    unusable=bool(k.unusable),
                ),
            )
        return out

    def set_sregs(self, sregs: SpecialRegs) -> None:
        # Start from the current state so fields we do not model (interrupt bitmap) keep their values.
        s = abi.kvm_sregs()
        ioctl(self.fd, abi.KVM_GET_SREGS, s)
        for name in _SEG_NAMES:
            seg: Segment = getattr(sregs, name)
            k = getattr(s, name)
            k.base, k.limit, k.selector, k.type = seg.base, seg.limit, seg.selector, seg.type
            k.present, k.dpl, k.db, k.s = int(seg.present), seg.dpl, int(seg.db), int(seg.s)
            k.l, k.g, k.avl, k.unusable = int(seg.l), int(seg.g), int(seg.avl), int(seg.unusable)
        s.gdt.base, s.gdt.limit = sregs.gdt.base, sregs.gdt.limit
        s.idt.base, s.idt.limit = sregs.idt.base, sregs.idt.limit
        s.cr0, s.cr2, s.cr3, s.cr4, s.cr8 = sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.cr8
        s.efer, s.apic_base = sregs.efer, sregs.apic_base
        ioctl(self.fd, abi.KVM_SET_SREGS, s)

    def set_cpuid(self, entries: list[CpuidEntry]) -> None:
        n = len(entries)

        class Buffer(ctypes.Structure):
            _fields_ = [("header", abi.kvm_cpuid2), ("entries", abi.kvm_cpuid_entry2 * n)]

        buf = Buffer()
        buf.header.nent = n
        for k, e in zip(buf.entries, entries, strict=True):
            k.function, k.index, k.flags = e.function, e.index, e.flags
            k.eax, k.ebx, k.ecx, k.edx = e.eax, e.ebx, e.ecx, e.edx
        ioctl(self.fd, abi.KVM_SET_CPUID2, buf)

    def set_msrs(self, msrs: dict[int, int]) -> None:
        n = len(msrs)

        class Buffer(ctypes.Structure):
            _fields_ = [("header", abi.kvm_msrs), ("entries", abi.kvm_msr_entry * n)]

        buf = Buffer()
        buf.header.nmsrs = n
        for k, (index, value) in zip(buf.entries, msrs.items(), strict=True):
            k.index, k.data = index, value
        done = ioctl(self.fd, abi.KVM_SET_MSRS, buf)
        if done != n:
            failed = list(msrs)[done]
            raise HypervisorError(f"KVM_SET_MSRS: MSR {failed:#x} was refused")

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        n = len(indices)

        class Buffer(ctypes.Structure):
            _fields_ = [("header", abi.kvm_msrs), ("entries", abi.kvm_msr_entry * n)]

        buf = Buffer()
        buf.header.nmsrs = n
        for k, index in zip(buf.entries, indices, strict=True):
            k.index = index
        done = ioctl(self.fd, abi.KVM_GET_MSRS, buf)
        return {int(k.index): int(k.data) for k in buf.entries[:done]}

    def setup_fpu(self) -> None:
        # The x87 control word and MXCSR as after FNINIT/reset (SDM Vol. 1 §8.1.5, §10.2.3.1).
        fpu = abi.kvm_fpu(fcw=0x37F, mxcsr=0x1F80)
        ioctl(self.fd, abi.KVM_SET_FPU, fpu)

    def setup_lapic(self) -> None:
        """LINT0 = ExtINT (the legacy PIC's output) and LINT1 = NMI, as a PC BIOS leaves them."""
        lapic = abi.kvm_lapic_state()
        ioctl(self.fd, abi.KVM_GET_LAPIC, lapic)
        regs = (ctypes.c_char * 1024).from_buffer(lapic)
        for offset, mode in (
            (abi.APIC_LVT_LINT0, abi.APIC_MODE_EXTINT),
            (abi.APIC_LVT_LINT1, abi.APIC_MODE_NMI),
        ):
            value = struct.unpack_from("<I", regs, offset)[0]
            value = (value & ~0x700) | (mode << 8)  # delivery mode, bits 10:8
            struct.pack_into("<I", regs, offset, value)
        ioctl(self.fd, abi.KVM_SET_LAPIC, lapic)

    # --- running -------------------------------------------------------------------------------------
    def set_immediate_exit(self, value: bool) -> None:
        self._run[abi.KVM_RUN_IMMEDIATE_EXIT_OFFSET] = int(value)

    def run(self, ops: VmOps) -> VcpuExit:
        """Enter the guest until an exit the vCPU loop must see; PIO and MMIO are handled here.

        Written for speed (every guest port or MMIO access passes here): locals instead of attributes,
        precompiled structs, and the common single-access case without a loop.
        """
        run = self._run
        fd = self.fd
        kvm_ioctl, request = self._ioctl, ctypes.c_ulong(abi.KVM_RUN)  # see raw_ioctl_function
        exit_reason = self._exit_reason
        io_fields = _IO_STRUCT.unpack_from
        mmio_fields = _MMIO_STRUCT.unpack_from
        from_bytes = int.from_bytes
        masks = _MASKS
        pio_read, pio_write = ops.pio_read, ops.pio_write
        mmio_read, mmio_write = ops.mmio_read, ops.mmio_write
        counts = self.exit_counts
        exit_io, exit_mmio = abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO
        union, mmio_data = abi.KVM_RUN_EXIT_UNION_OFFSET, abi.KVM_RUN_MMIO_DATA_OFFSET
        while True:
            if kvm_ioctl(fd, request, None) < 0:
                err = get_errno()
                if err in (_EINTR, _EAGAIN):
                    return VcpuExit.INTERRUPTED
                raise VcpuError(f"vcpu{self.index}: KVM_RUN failed: errno {err}")
            reason = exit_reason[0]
            if reason == exit_io:
                counts["io"] += 1
                direction, size, port, count, offset = io_fields(run, union)
                if count == 1:  # the common case: one access, no loop
                    if direction:  # KVM_EXIT_IO_OUT
                        pio_write(port, size, from_bytes(run[offset : offset + size], "little"))
                    else:
                        run[offset : offset + size] = (pio_read(port, size) & masks[size]).to_bytes(
                            size, "little"
                        )
                    continue
                # String I/O (rep ins/outs): `count` accesses, their data one after the other.
                for at in range(offset, offset + count * size, size):
                    if direction:
                        pio_write(port, size, from_bytes(run[at : at + size], "little"))
                    else:
                        run[at : at + size] = (pio_read(port, size) & masks[size]).to_bytes(size, "little")
            elif reason == exit_mmio:
                counts["mmio"] += 1
                addr, data, size, is_write = mmio_fields(run, union)
                if size not in (1, 2, 4, 8):
                    raise VcpuError(f"vcpu{self.index}: MMIO access of {size} bytes at {addr:#x}")
                if is_write:
                    mmio_write(addr, size, data & masks[size])
                else:
                    run[mmio_data : mmio_data + size] = (mmio_read(addr, size) & masks[size]).to_bytes(
                        size, "little"
                    )
            else:
                counts["other"] += 1
                return self._slow_exit(reason)

    def _slow_exit(self, reason: int) -> VcpuExit:
        run = self._run
        union = abi.KVM_RUN_EXIT_UNION_OFFSET
        if reason == abi.KVM_EXIT_INTR:
            return VcpuExit.INTERRUPTED
        if reason == abi.KVM_EXIT_HLT:
            return VcpuExit.HALT
        if reason == abi.KVM_EXIT_SHUTDOWN:
            # A triple fault: a PC resets (SDM Vol. 3A §6.15, "Interrupt 8—Double Fault Exception").
            log.info("vcpu%d: triple fault at rip=%#x, resetting", self.index, self._rip())
            return VcpuExit.RESET
        if reason == abi.KVM_EXIT_SYSTEM_EVENT:
            kind, _ = struct.unpack_from(abi.KVM_RUN_SYSTEM_EVENT_FORMAT, run, union)
            if kind == abi.KVM_SYSTEM_EVENT_RESET:
                return VcpuExit.RESET
            if kind in (abi.KVM_SYSTEM_EVENT_SHUTDOWN, abi.KVM_SYSTEM_EVENT_CRASH):
                return VcpuExit.SHUTDOWN
            raise VcpuError(f"vcpu{self.index}: unknown system event {kind}")
        if reason == abi.KVM_EXIT_INTERNAL_ERROR:
            suberror, ndata = struct.unpack_from(abi.KVM_RUN_INTERNAL_FORMAT, run, union)
            data = struct.unpack_from(f"<{min(ndata, 16)}Q", run, union + 8)
            raise VcpuError(
                f"vcpu{self.index}: KVM internal error {suberror} at rip={self._rip():#x} "
                f"data={[hex(d) for d in data]}"
            )
        if reason == abi.KVM_EXIT_FAIL_ENTRY:
            hw_reason, cpu = struct.unpack_from(abi.KVM_RUN_FAIL_ENTRY_FORMAT, run, union)
            raise VcpuError(f"vcpu{self.index}: VM entry failed: hardware reason {hw_reason:#x} on cpu {cpu}")
        raise VcpuError(f"vcpu{self.index}: unexpected KVM exit reason {reason} at rip={self._rip():#x}")

    def _rip(self) -> int:
        try:
            return self.get_regs().rip
        except OSError:
            return -1

    def close(self) -> None:
        self._exit_reason.release()
        self._run.release()
        self._run_map.close()
        import os

        os.close(self.fd)
