"""The vCPU loop: one OS thread per vCPU, named ``vcpuN``, running the backend's ``run`` until stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from aovisor.hypervisor.base import VcpuExit
from aovisor.hypervisor.syscalls import set_thread_name
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.hypervisor.base import Vcpu
    from aovisor.vmm.vm import VirtualMachine

log = get_logger(__name__)


class VcpuThread(threading.Thread):
    def __init__(self, vm: VirtualMachine, vcpu: Vcpu) -> None:
        super().__init__(name=f"vcpu{vcpu.index}", daemon=True)
        self.vm = vm
        self.vcpu = vcpu
        self.named = threading.Event()  # set once the OS thread carries its name

    def kick(self) -> None:
        """Make the vCPU leave the hypervisor: ``immediate_exit`` covers the window before KVM_RUN is
        entered, the signal interrupts a KVM_RUN already running (Documentation/virt/kvm/api.rst)."""
        from aovisor.vmm.vm import KICK_SIGNAL

        self.vcpu.set_immediate_exit(True)
        ident = self.ident
        if ident is not None and self.is_alive() and threading.get_ident() != ident:
            with contextlib.suppress(ProcessLookupError):
                signal.pthread_kill(ident, KICK_SIGNAL)

    def run(self) -> None:
        set_thread_name(self.name)
        host_cpus = self.vm.host_cpus_of(self.vcpu.index)
        if host_cpus is not None:
            # pid 0 is the calling thread: sched_setaffinity(2) pins threads, not processes.
            os.sched_setaffinity(0, host_cpus)
        self.named.set()
        self.vm.vcpus_released.wait()
        vm, vcpu, ops, gate = self.vm, self.vcpu, self.vm.ops, self.vm.pause_gate
        try:
            while not vm.stopping:
                if gate.requested:  # VM pause: wait here, outside the guest, until resumed
                    gate.park()
                    continue
                exit_ = vcpu.run(ops)
                if exit_ is VcpuExit.INTERRUPTED:
                    # Clear before re-checking the stop flag: a kick arriving after the check sets it again.
                    vcpu.set_immediate_exit(False)
                elif exit_ is VcpuExit.RESET:
                    vm.reset()
                elif exit_ is VcpuExit.SHUTDOWN:
                    vm.poweroff()
                elif exit_ is VcpuExit.HALT:
                    # Only without an in-kernel irqchip; ours always has one, so a HALT exit means the
                    # guest halted with nothing that could wake it.
                    log.warning("vcpu%d halted with no way to wake up", vcpu.index)
                    vm.poweroff()
        except BaseException as e:  # a vCPU error stops the VM, never hangs it
            log.error("vcpu%d: %s", vcpu.index, e)
            from aovisor.vmm.vm import ExitReason

            vm.request_exit(ExitReason.ERROR, e)
