"""A built virtual machine: guest memory, buses, devices and vCPU threads, and how it stops.

The VM runs until something requests an exit (:meth:`VirtualMachine.request_exit`): the guest powering off
through the ACPI sleep register, a reset (i8042, 0xCF9, ACPI reset register, triple fault), or an error on a
vCPU thread.  The first request wins; every vCPU is then kicked out of the hypervisor and joined.
"""

from __future__ import annotations

import enum
import signal
import threading
from collections.abc import Callable

from aovisor.arch.x86_64 import layout
from aovisor.devices.bus import Bus
from aovisor.lean_typing import TYPE_CHECKING, NamedTuple
from aovisor.logs import get_logger
from aovisor.vmm.allocators import AddressAllocator, GsiAllocator
from aovisor.vmm.pause import PauseGate

if TYPE_CHECKING:
    from aovisor.config import VmConfig
    from aovisor.hypervisor.base import Vcpu, Vm
    from aovisor.memory import GuestMemory
    from aovisor.vmm.event_loop import Pausable
    from aovisor.vmm.vcpu import VcpuThread

log = get_logger(__name__)

# The signal that kicks a vCPU thread out of KVM_RUN.  Its handler does nothing: the point is that the
# blocking ioctl returns EINTR in that thread.  (A real-time signal, as Cloud Hypervisor uses SIGRTMIN.)
KICK_SIGNAL = signal.SIGRTMIN


def install_kick_handler() -> None:
    """Install the no-op kick handler; must run in the main thread before vCPU threads start."""
    if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(KICK_SIGNAL, lambda _sig, _frame: None)


class ExitReason(enum.Enum):
    POWEROFF = "poweroff"
    RESET = "reset"
    ERROR = "error"


class BusOps(NamedTuple):
    """The VmOps a backend calls: the buses' own bound methods, with no extra call layer in between."""

    pio_read: Callable[[int, int], int]
    pio_write: Callable[[int, int, int], None]
    mmio_read: Callable[[int, int], int]
    mmio_write: Callable[[int, int, int], None]


class VirtualMachine:
    def __init__(self, config: VmConfig, hv_vm: Vm, memory: GuestMemory) -> None:
        self.config = config
        self.hv_vm = hv_vm
        self.memory = memory
        self.pio_bus = Bus("pio")
        self.mmio_bus = Bus("mmio")
        self.ops = BusOps(self.pio_bus.read, self.pio_bus.write, self.mmio_bus.read, self.mmio_bus.write)
        self.vcpus: list[Vcpu] = []
        self.threads: list[VcpuThread] = []
        self.vcpus_released = threading.Event()  # set by start() once every vCPU thread is named
        self.devices: dict[str, object] = {}
        # Objects that own threads (virtio device loops): VM pause/resume calls their pause()/resume().
        self.pausables: list[Pausable] = []
        self.gsis = GsiAllocator(layout.MSI_GSI_START, layout.MSI_GSI_END)  # MSI-X vectors' irqfd GSIs
        self.pci_mmio = AddressAllocator(layout.PCI_MMIO_WINDOW_START, layout.PCI_MMIO_WINDOW_END)  # BARs
        self._exit = threading.Event()
        self._exit_lock = threading.Lock()
        self.exit_reason: ExitReason | None = None
        self.exit_error: BaseException | None = None
        self.stopping = False
        self._closers: list[Callable[[], None]] = []
        # Pause/resume (aovisor.vmm.pause): where vCPU threads park, and the guest clock saved at pause.
        self.pause_gate = PauseGate()
        self.paused_clock: int | None = None
        # Called (from any thread) once an exit is requested: how the VMM's control loop hears of it.
        self.exit_listeners: list[Callable[[], None]] = []

    # --- stopping ------------------------------------------------------------------------------------
    def request_exit(self, reason: ExitReason, error: BaseException | None = None) -> None:
        """Ask the VM to stop (callable from any thread, including a vCPU inside a device callback)."""
        with self._exit_lock:
            if self.exit_reason is not None:
                return
            self.exit_reason = reason
            self.exit_error = error
            self.stopping = True
        log.debug("exit requested: %s", reason.value)
        self.pause_gate.close()  # parked vCPUs must wake to see the stop
        self.kick_all()
        self._exit.set()
        for listener in self.exit_listeners:
            listener()

    def poweroff(self) -> None:
        self.request_exit(ExitReason.POWEROFF)

    def reset(self) -> None:
        self.request_exit(ExitReason.RESET)

    def kick_all(self) -> None:
        for thread in self.threads:
            thread.kick()

    # --- pausing -------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Park every vCPU, freeze the guest clock and pause the device threads (see aovisor.vmm.pause)."""
        from aovisor.vmm.pause import pause_vm

        pause_vm(self)

    def resume(self) -> None:
        from aovisor.vmm.pause import resume_vm

        resume_vm(self)

    def host_cpus_of(self, index: int) -> tuple[int, ...] | None:
        """The host CPUs ``--cpus affinity`` gives vCPU ``index``; None: wherever the scheduler likes."""
        for entry in self.config.cpus.affinity:
            if entry.vcpu == index:
                return entry.host_cpus
        return None

    # --- running -------------------------------------------------------------------------------------
    def start(self) -> None:
        from aovisor.vmm.vcpu import VcpuThread

        install_kick_handler()
        self.threads = [VcpuThread(self, vcpu) for vcpu in self.vcpus]
        for thread in self.threads:
            thread.start()
        # No guest code runs before every vCPU thread has its OS name `vcpuN`: libvirt's ch driver looks
        # the threads up by name once the VM is booted.
        try:
            for thread in self.threads:
                thread.named.wait()
        finally:
            self.vcpus_released.set()

    def wait(self, timeout: float | None = None) -> ExitReason | None:
        """Block until an exit is requested; then stop and join every vCPU thread."""
        if not self._exit.wait(timeout):
            return None
        self.join_vcpus()
        return self.exit_reason

    def join_vcpus(self) -> None:
        for thread in self.threads:
            while thread.is_alive():
                thread.kick()
                thread.join(0.05)

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        if not self.stopping:
            self.request_exit(ExitReason.POWEROFF)
        self.join_vcpus()
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # teardown must go on
                log.exception("error while closing the VM")
        for vcpu in self.vcpus:
            vcpu.close()
        self.hv_vm.close()
        self.memory.close()
