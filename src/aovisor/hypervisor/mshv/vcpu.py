"""An MSHV virtual processor: registers by hypercall (or the register page), and the MSHV_RUN_VP loop.

``run`` dispatches intercepts to :mod:`.intercepts` so the shared vCPU loop sees the same ``VmOps`` calls as
on KVM: port I/O (including INS/OUTS), MMIO (emulated, since MSHV reports no data or size), the IOAPIC's EOIs;
it returns only for HALT, a triple fault (RESET) or a kick (INTERRUPTED).

Kicking: the hypervisor has no ``immediate_exit`` flag.  ``set_immediate_exit(True)`` sets a flag checked
before every MSHV_RUN_VP, and the kick signal makes a blocked MSHV_RUN_VP return EINTR (§4.3).  A signal that
lands between the check and the ioctl is lost; the VM's join loop re-kicks every 50 ms, which covers it.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from typing import TYPE_CHECKING

from aovisor.errors import HypervisorError
from aovisor.hypervisor.base import CpuidEntry, Regs, SpecialRegs, VcpuExit, VmOps
from aovisor.hypervisor.mshv import abi, intercepts, registers
from aovisor.hypervisor.syscalls import get_errno, raw_ioctl_function
from aovisor.hypervisor.x86_emulator.errors import GuestFault
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.hypervisor.mshv.vm import MshvVm

log = get_logger(__name__)

_GPR_IDS = [abi.HV_X64_REGISTER_RAX + i for i in range(16)]
_PAGE_GP = struct.Struct("<16Q")
_MAX_FAULT_WARNINGS = 10  # a guest can fault on purpose in a loop; do not let it flood the log


class VcpuError(HypervisorError):
    """The VP stopped in a way the VMM cannot continue from."""


class MshvVcpu:
    def __init__(self, vm: MshvVm, index: int) -> None:
        self.vm = vm
        self.index = index
        self._dialect = vm.dialect
        self.fd = self._dialect.create_vp(vm.fd, index)
        os.set_inheritable(self.fd, False)
        self._msg = bytearray(abi.HV_MESSAGE_SIZE)
        self._msg_address = ctypes.addressof((ctypes.c_char * abi.HV_MESSAGE_SIZE).from_buffer(self._msg))
        self._ioctl = raw_ioctl_function()
        self._immediate_exit = False
        self._cpl = 0
        self._fault_warnings = 0
        self.exit_counts: dict[str, int] = {"io": 0, "mmio": 0, "other": 0}
        # The register page (§4.4) saves a hypercall per MMIO exit; encrypted partitions have none (ENODEV).
        try:
            self._reg_page: mmap.mmap | None = mmap.mmap(
                self.fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                offset=abi.MSHV_VP_MMAP_OFFSET_REGISTERS * mmap.PAGESIZE,
            )  # fmt: skip
        except OSError:
            self._reg_page = None

    # --- registers (§4.1) -------------------------------------------------------------------------------
    def get_register_values(self, ids: list[int]) -> list[int]:
        return self._dialect.get_registers(self.fd, self.index, ids)

    def set_register_values(self, values: list[tuple[int, int]]) -> None:
        self._dialect.set_registers(self.fd, self.index, values)

    def get_regs(self) -> Regs:
        return registers.regs_from_values(self.get_register_values(list(registers.REGS_IDS.values())))

    def set_regs(self, regs: Regs) -> None:
        self.set_register_values(registers.regs_to_values(regs))

    def get_sregs(self) -> SpecialRegs:
        return registers.sregs_from_values(self.get_register_values(registers.SREGS_IDS))

    def set_sregs(self, sregs: SpecialRegs) -> None:
        self.set_register_values(registers.sregs_to_values(sregs))

    def set_cpuid(self, entries: list[CpuidEntry]) -> None:
        """Nothing to do: the hypervisor answers CPUID from the partition's features and the VP index
        (including the APIC id and topology leaves the KVM backend must patch in).  Overriding leaves would
        take REGISTER_INTERCEPT_RESULT (§3), whose input layout mshv.md does not give."""
        log.debug("vp%d: CPUID is provided by the hypervisor (%d entries ignored)", self.index, len(entries))

    def set_msrs(self, msrs: dict[int, int]) -> None:
        """MSRs the hypervisor exposes as VP registers (§4.1); others (e.g. IA32_MISC_ENABLE) are
        hypervisor-owned and skipped."""
        values = [
            (registers.MSR_IDS[index], value) for index, value in msrs.items() if index in registers.MSR_IDS
        ]
        skipped = [f"{index:#x}" for index in msrs if index not in registers.MSR_IDS]
        if skipped:
            log.debug(
                "vp%d: MSRs without a hypervisor register, left to the hypervisor: %s", self.index, skipped
            )
        if values:
            self.set_register_values(values)

    def setup_fpu(self) -> None:
        """Nothing to do: a new VP is in the architectural reset state (MXCSR 0x1F80) and guests run FNINIT
        before using the x87 unit."""

    def setup_lapic(self) -> None:
        """LINT0 = ExtINT and LINT1 = NMI, as a PC BIOS leaves them (what QEMU does on MSHV)."""
        state = self._dialect.get_lapic(self.fd)
        if state is None:
            log.debug("vp%d: LAPIC state not available on this ABI; LINT0/LINT1 left as reset", self.index)
            return
        state.apic_lvt_lint0 = (state.apic_lvt_lint0 & ~0x700) | abi.APIC_MODE_EXTINT << 8
        state.apic_lvt_lint1 = (state.apic_lvt_lint1 & ~0x700) | abi.APIC_MODE_NMI << 8
        self._dialect.set_lapic(self.fd, state)

    # --- VpAccess for the intercept handlers ------------------------------------------------------------
    def translate(self, gva: int, write: bool) -> int:
        flags = abi.HV_TRANSLATE_GVA_VALIDATE_READ | (abi.HV_TRANSLATE_GVA_VALIDATE_WRITE if write else 0)
        result, gpa = self._dialect.translate_gva(self.fd, self.index, gva, flags)
        if result in (
            abi.HV_TRANSLATE_GVA_SUCCESS,
            abi.HV_TRANSLATE_GVA_GPA_UNMAPPED,  # the walk worked: an MMIO address
            abi.HV_TRANSLATE_GVA_GPA_NO_READ_ACCESS,
            abi.HV_TRANSLATE_GVA_GPA_NO_WRITE_ACCESS,
        ):
            return gpa
        present = result != abi.HV_TRANSLATE_GVA_PAGE_NOT_PRESENT
        raise intercepts.page_fault(gva, write, self._cpl == 3, present)

    def read_ram(self, gpa: int, length: int) -> bytes | None:
        return self.vm.read_ram(gpa, length)

    def write_ram(self, gpa: int, data: bytes) -> bool:
        return self.vm.write_ram(gpa, data)

    def segment_base(self, name: str) -> int:
        reg_id = registers.SEGMENT_IDS[name]
        return registers.decode_segment(self.get_register_values([reg_id])[0]).base

    # --- running (§4.3) ----------------------------------------------------------------------------------
    def set_immediate_exit(self, value: bool) -> None:
        self._immediate_exit = value

    def run(self, ops: VmOps) -> VcpuExit:
        """Enter the guest until an exit the vCPU loop must see; intercepts are completed here."""
        if self.vm.time_frozen:
            self.vm.start_time()
        msg, fd, address = self._msg, self.fd, ctypes.c_void_p(self._msg_address)
        request = ctypes.c_ulong(self._dialect.run_vp_request)  # see raw_ioctl_function
        run_vp = self._ioctl
        counts = self.exit_counts
        while True:
            if self._immediate_exit:
                return VcpuExit.INTERRUPTED
            if run_vp(fd, request, address) < 0:
                err = get_errno()
                if err in (errno.EINTR, errno.EAGAIN):
                    return VcpuExit.INTERRUPTED
                raise VcpuError(f"vp{self.index}: MSHV_RUN_VP failed: {os.strerror(err)}")
            kind = struct.unpack_from("<I", msg)[0]
            if kind == abi.HVMSG_X64_IO_PORT_INTERCEPT:
                counts["io"] += 1
                self._cpl = msg[abi.MSG_EXECUTION_STATE_OFFSET] & abi.EXECUTION_STATE_CPL_MASK
                self._complete(intercepts.handle_io_port(msg, ops, self))
            elif kind in (abi.HVMSG_UNMAPPED_GPA, abi.HVMSG_GPA_INTERCEPT):
                counts["mmio"] += 1
                self._cpl = msg[abi.MSG_EXECUTION_STATE_OFFSET] & abi.EXECUTION_STATE_CPL_MASK
                self._complete(intercepts.handle_memory(msg, ops, self._intercept_gprs(), self))
            else:
                counts["other"] += 1
                exit_ = self._slow_exit(kind)
                if exit_ is not None:
                    return exit_

    def _slow_exit(self, kind: int) -> VcpuExit | None:
        msg = self._msg
        if kind == abi.HVMSG_X64_APIC_EOI:
            _, vector = intercepts.parse_apic_eoi(msg)
            self.vm.ioapic.end_of_interrupt(vector)
            return None
        if kind == abi.HVMSG_X64_HALT:
            # With the hypervisor's LAPIC an idle HLT waits in the hypervisor; a HALT message means the VP
            # stopped for good (CH resets, rust-vmm calls it "VM halted", §6).
            return VcpuExit.HALT
        if kind == abi.HVMSG_UNRECOVERABLE_EXCEPTION:
            rip = intercepts.parse_header(msg).rip
            log.info("vp%d: triple fault at rip=%#x, resetting", self.index, rip)
            return VcpuExit.RESET
        raise VcpuError(f"vp{self.index}: unexpected hypervisor message {kind:#x}")

    def _intercept_gprs(self) -> list[int]:
        """The 16 GPRs at the intercept: from the register page when the hypervisor marked it valid."""
        page = self._reg_page
        if page is not None and page[abi.REG_PAGE_ISVALID_OFFSET]:
            return list(_PAGE_GP.unpack_from(page, abi.REG_PAGE_GP_OFFSET))
        return self.get_register_values(_GPR_IDS)

    def _complete(self, result: intercepts.InterceptResult) -> None:
        """Write the handler's register results (and a fault to inject) in one SET_VP_REGISTERS."""
        values = [(registers.REGS_IDS[name], value) for name, value in result.registers.items()]
        fault = result.fault
        if fault is not None:
            values.append(
                (
                    abi.HV_REGISTER_PENDING_INTERRUPTION,
                    registers.pending_exception(fault.vector, fault.error_code),
                )
            )
            if isinstance(fault, GuestFault) and fault.cr2 is not None:
                values.append((abi.HV_X64_REGISTER_CR2, fault.cr2))
            if self._fault_warnings < _MAX_FAULT_WARNINGS:
                self._fault_warnings += 1
                log.warning("vp%d: injecting exception %d: %s", self.index, fault.vector, fault)
        if values:
            self.set_register_values(values)

    def close(self) -> None:
        if self._reg_page is not None:
            self._reg_page.close()
        os.close(self.fd)
