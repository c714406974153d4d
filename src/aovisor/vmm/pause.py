"""Pausing a running VM: park every vCPU thread, freeze the guest clock, pause the device threads.

A pause is a request plus a kick: the control thread sets :attr:`PauseGate.requested`, kicks each vCPU out
of ``KVM_RUN`` (``immediate_exit`` + signal, see :meth:`VcpuThread.kick`), and each vCPU loop, seeing the
request at the top of its next iteration, parks in :meth:`PauseGate.park` until resumed.  Only once every
live vCPU is parked is the VM paused: the clock is read and the device threads (``vm.pausables``) are paused.

The guest clock: KVM's kvmclock keeps counting host time while no vCPU runs, so a guest resumed after a
10 s pause would see 10 s jump past.  ``KVM_GET_CLOCK`` at pause and ``KVM_SET_CLOCK`` with the same value at
resume (Documentation/virt/kvm/api.rst §4.60-4.61, as Cloud Hypervisor does) make the kvmclock continue
where it stopped.  The TSC itself is not rewound (neither CH nor QEMU do by default); guests that time with
kvmclock (Linux) see no jump.
"""

from __future__ import annotations

import threading
import time

from aovisor.errors import AovisorError
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.vmm.vm import VirtualMachine

log = get_logger(__name__)

PAUSE_TIMEOUT = 5.0  # seconds for every vCPU to park; a vCPU stuck in a device callback fails the pause


class PauseError(AovisorError):
    """The VM could not be paused (a vCPU did not park in time)."""


class PauseGate:
    """Where vCPU threads park while a pause is requested.

    ``requested`` is read by the vCPU loop without the lock on every iteration (one attribute load); it is
    only written under the lock, and a pause always kicks the vCPUs after setting it, so a vCPU cannot
    miss it for longer than one trip through its loop.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.requested = False
        self._parked = 0
        self._closed = False  # the VM is stopping: never park again

    # --- vCPU side -----------------------------------------------------------------------------------
    def park(self) -> None:
        """Block the calling vCPU thread while a pause is requested (returns at once otherwise)."""
        with self._cond:
            self._parked += 1
            self._cond.notify_all()
            try:
                while self.requested and not self._closed:
                    self._cond.wait()
            finally:
                self._parked -= 1

    # --- control side --------------------------------------------------------------------------------
    def request(self) -> None:
        with self._cond:
            if not self._closed:
                self.requested = True

    def wait_parked(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` vCPUs are parked (True), or the gate closes or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or self._parked >= count, timeout) and not (
                self._closed
            )

    def release(self) -> None:
        """End the pause: every parked vCPU goes back to running the guest."""
        with self._cond:
            self.requested = False
            self._cond.notify_all()

    def close(self) -> None:
        """The VM is stopping: wake every parked vCPU (it then sees ``vm.stopping``) and park none again."""
        with self._cond:
            self._closed = True
            self.requested = False
            self._cond.notify_all()

    @property
    def parked(self) -> int:
        with self._cond:
            return self._parked


def pause_vm(vm: VirtualMachine, timeout: float = PAUSE_TIMEOUT) -> None:
    """Park every vCPU, save the guest clock, then pause the device threads; raises :class:`PauseError`."""
    gate = vm.pause_gate
    gate.request()
    deadline = time.monotonic() + timeout
    while True:
        alive = sum(1 for thread in vm.threads if thread.is_alive())
        vm.kick_all()  # again on each round: harmless, and covers a vCPU that was starting up
        if gate.wait_parked(alive, 0.05):
            break
        if vm.stopping:
            raise PauseError("the VM stopped while it was being paused")
        if time.monotonic() > deadline:
            gate.release()
            raise PauseError(f"{alive - gate.parked} vCPU(s) did not stop within {timeout:g} s")
    try:
        vm.paused_clock = vm.hv_vm.get_clock()
    except (AovisorError, OSError, NotImplementedError) as e:  # a backend without a clock API
        log.warning("guest clock not saved at pause (%s): it will jump at resume", e)
        vm.paused_clock = None
    paused: list[object] = []
    try:
        for device in vm.pausables:
            device.pause()
            paused.append(device)
    except BaseException:
        for device in reversed(vm.pausables[: len(paused)]):
            device.resume()
        gate.release()
        raise
    log.info("VM paused (%d vCPUs parked)", gate.parked)


def resume_vm(vm: VirtualMachine) -> None:
    """Resume the device threads, restore the guest clock, then let the vCPUs run again."""
    for device in reversed(vm.pausables):
        device.resume()
    if vm.paused_clock is not None:
        try:
            vm.hv_vm.set_clock(vm.paused_clock)
        except (AovisorError, OSError, NotImplementedError) as e:
            log.warning("guest clock not restored at resume: %s", e)
        vm.paused_clock = None
    vm.pause_gate.release()
    log.info("VM resumed")
