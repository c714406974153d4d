"""The VMM: the process-level object that owns the VM definition, the running VM, its lifecycle state, the
event monitor and the command queue; every front end (CLI, REST API, Python API) drives it the same way.

Threads: the *control thread* runs :meth:`Vmm.run`, a poll loop over two eventfds — the command queue
(:class:`~aovisor.vmm.controller.Controller`) and the running VM's exit notification.  Every public method
below is an operation that must run on the control thread: the CLI calls them directly before
:meth:`run`; other threads go through ``vmm.controller.call(vmm.pause)``.

What ends the VMM, as in Cloud Hypervisor: ``vmm.shutdown``; the guest powering off (status 0); a VM error
(status 1).  A guest reset rebuilds the VM from its definition and boots it again.
"""

from __future__ import annotations

import contextlib
import os
import select

from aovisor import __version__
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger
from aovisor.vmm.controller import Controller
from aovisor.vmm.events import EventMonitor
from aovisor.vmm.lifecycle import (
    ADD_DEVICE,
    ConflictError,
    Lifecycle,
    VmAlreadyCreatedError,
    VmState,
)

if TYPE_CHECKING:
    from typing import Any

    from aovisor.config import DiskConfig, VmConfig
    from aovisor.hypervisor.base import Hypervisor
    from aovisor.vmm.definition import DeviceSpec, VmDefinition
    from aovisor.vmm.serial_io import SerialEndpoint
    from aovisor.vmm.vm import VirtualMachine

log = get_logger(__name__)

EXIT_OK = 0
EXIT_VM_ERROR = 1


class Vmm:
    def __init__(
        self,
        *,
        hypervisor: str | None = None,
        events: EventMonitor | None = None,
        serial: SerialEndpoint | None = None,
    ) -> None:
        """``hypervisor``: the backend for VMs whose config names none; ``serial``: use this endpoint for
        COM1 instead of one made from the config (the Python API captures the console this way)."""
        self.controller = Controller()
        self.events = events if events is not None else EventMonitor()
        self.lifecycle = Lifecycle()
        self.definition: VmDefinition | None = None
        self.vm: VirtualMachine | None = None
        self.boots = 0
        self.exit_status: int | None = None  # set when the VMM has decided to end
        self._default_hypervisor = hypervisor
        self._hypervisor: Hypervisor | None = None
        self._serial_override = serial
        self._serial: SerialEndpoint | None = None
        self._cmos_ram: bytes | None = None  # battery-backed: outlives the VM across a reset (see _stop_vm)
        self._vm_exit_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._termination_signal: int | None = None  # set by request_termination (a signal handler)
        self._closed = False
        self.events.emit("vmm", "starting")

    @property
    def state(self) -> VmState | None:
        return self.lifecycle.state

    # --- the control loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Serve commands and VM events until the VMM ends; return the process exit status."""
        poller = select.poll()
        poller.register(self.controller.fd, select.POLLIN)
        poller.register(self._vm_exit_fd, select.POLLIN)
        try:
            while self.exit_status is None:
                if self._termination_signal is not None:
                    log.info("signal %d: shutting down", self._termination_signal)
                    self.shutdown_vmm()
                    continue  # exit_status is set: the loop ends
                self._handle_vm_exit()
                if self.exit_status is not None:
                    break
                for fd, _ in poller.poll():
                    if fd == self.controller.fd:
                        self.controller.run_pending()
                    else:
                        _drain(self._vm_exit_fd)
        finally:
            self.close()
        return self.exit_status

    def request_termination(self, signum: int) -> None:
        """End the VMM as ``vmm.shutdown`` does, from a signal handler (SIGTERM: how libvirt and Kata stop
        a VMM, and what Cloud Hypervisor turns into its exit event): only a flag and an eventfd write,
        which are safe there; the control loop does the rest."""
        self._termination_signal = signum
        self._on_vm_exit()

    def _on_vm_exit(self) -> None:
        """A VM exit listener (any thread): wake the control loop."""
        # OSError: the VMM is closing and the fd is gone; nobody is waiting any more.
        with contextlib.suppress(OSError):
            os.eventfd_write(self._vm_exit_fd, 1)

    def _handle_vm_exit(self) -> None:
        from aovisor.vmm.vm import ExitReason

        vm = self.vm
        if vm is None or vm.exit_reason is None:
            return  # no VM, or the exit of a VM we stopped ourselves (already handled)
        reason = vm.exit_reason
        if reason is ExitReason.RESET:
            log.info("guest reset: rebooting (boot %d)", self.boots + 1)
            self.events.emit("vm", "rebooting")
            self._stop_vm()
            try:
                self._start_vm()
            except Exception as e:
                log.error("reboot failed: %s", e)
                self._end(EXIT_VM_ERROR)
                return
            self.events.emit("vm", "rebooted")
            return
        if reason is ExitReason.ERROR:
            log.error("VM stopped on error: %s", vm.exit_error)
            self._end(EXIT_VM_ERROR)
        else:
            log.info("guest powered off")
            self._end(EXIT_OK)

    def _end(self, status: int) -> None:
        """The guest is gone: tear down as ``vmm.shutdown`` does (shutdown, delete); end with ``status``."""
        if self.vm is not None:
            self._stop_vm()
            self.lifecycle.state = VmState.SHUTDOWN
            self.events.emit("vm", "shutdown")
        self.delete()
        self.events.emit("vmm", "shutdown")
        self.exit_status = status

    # --- VM operations (control thread only) ------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return {
            "build_version": f"v{__version__}",
            "version": __version__,
            "pid": os.getpid(),
            "features": ["kvm"],
        }

    def create(self, definition: VmDefinition) -> None:
        if self.lifecycle.state is not None:
            raise VmAlreadyCreatedError(self.lifecycle.state)
        definition.boot_config().validate()
        self.definition = definition
        self.lifecycle.state = VmState.CREATED

    def boot(self) -> None:
        self.lifecycle.check("boot")
        self.events.emit("vm", "booting")
        self._start_vm()
        self.lifecycle.state = VmState.RUNNING
        self.events.emit("vm", "booted")

    def pause(self) -> None:
        self.lifecycle.check("pause")
        assert self.vm is not None
        self.events.emit("vm", "pausing")
        self.vm.pause()
        self.lifecycle.state = VmState.PAUSED
        self.events.emit("vm", "paused")

    def resume(self) -> None:
        self.lifecycle.check("resume")
        assert self.vm is not None
        self.events.emit("vm", "resuming")
        self.vm.resume()
        self.lifecycle.state = VmState.RUNNING
        self.events.emit("vm", "resumed")

    def shutdown(self) -> None:
        """Stop the VM (``vm.shutdown``); it can be booted again."""
        self.lifecycle.check("shut down")
        self._stop_vm()
        self.lifecycle.state = VmState.SHUTDOWN
        self.events.emit("vm", "shutdown")

    def reboot(self) -> None:
        self.lifecycle.check("reboot")
        self.events.emit("vm", "rebooting")
        self._stop_vm()
        try:
            self._start_vm()
        except BaseException:
            self.lifecycle.state = VmState.SHUTDOWN
            raise
        self.lifecycle.state = VmState.RUNNING
        self.events.emit("vm", "rebooted")

    def power_button(self) -> None:
        """Press the ACPI power button: the guest decides what to do (Linux powers off)."""
        from aovisor.devices.legacy.ged import AcpiGedDevice, GedEvent

        self.lifecycle.check("press the power button")
        assert self.vm is not None
        ged = self.vm.devices.get("ged")
        if not isinstance(ged, AcpiGedDevice):
            raise RuntimeError("this VM has no ACPI power button device")
        ged.notify(GedEvent.POWER_BUTTON)

    def delete(self) -> None:
        """Forget the VM (shutting it down first); nothing to do when there is none, as in CH."""
        if self.lifecycle.state is None:
            return
        if self.vm is not None:
            self._stop_vm()
            self.events.emit("vm", "shutdown")
        if self.definition is not None:
            self.definition.close()
        self.definition = None
        self._cmos_ram = None
        self.lifecycle.state = None
        self._close_serial()
        self.events.emit("vm", "deleted")

    def shutdown_vmm(self) -> None:
        """``vmm.shutdown``: delete the VM and end the control loop (status 0)."""
        self.delete()
        self.events.emit("vmm", "shutdown")
        self.exit_status = EXIT_OK

    def add_disk(self, disk: DiskConfig) -> None:
        """Cold-plug a disk (``vm.add-disk``) into the definition."""
        self.lifecycle.check(ADD_DEVICE)
        assert self.definition is not None
        self._check_new_id(disk.id)
        config = self.definition.config._replace(disks=(*self.definition.config.disks, disk))
        config.validate()
        self.definition = self.definition._replace(config=config)

    def add_device(self, device: DeviceSpec) -> None:
        """Cold-plug a net or vsock device (``vm.add-net``, ``vm.add-vsock``) into the definition."""
        self.lifecycle.check(ADD_DEVICE)
        assert self.definition is not None
        if device.kind == "vsock" and self.definition.of_kind("vsock"):
            raise ConflictError("the VM already has a vsock device (there can be only one)")
        self._check_new_id(device.id)
        self.definition = self.definition.with_device(device)

    def _check_new_id(self, ident: str | None) -> None:
        assert self.definition is not None
        taken = {d.id for d in self.definition.config.disks} | {d.id for d in self.definition.devices}
        if ident is not None and ident in taken:
            raise ConflictError(f"a device with id {ident!r} already exists")

    def info(self) -> dict[str, Any]:
        from aovisor.api.vm_config import definition_to_json

        state = self.lifecycle.require_vm("get VM info")
        assert self.definition is not None
        config = definition_to_json(self.definition)
        if self._serial is not None and self._serial.pty_path is not None:
            config["serial"]["file"] = self._serial.pty_path  # where a client attaches, as CH reports it
        return {
            "config": config,
            "state": state.value,
            "memory_actual_size": self.definition.config.memory.size,
        }

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-device counters: each vCPU's exits, COM1's bytes, and every device with ``counters()``."""
        self.lifecycle.check("read counters")
        assert self.vm is not None
        result: dict[str, dict[str, int]] = {}
        for vcpu in self.vm.vcpus:
            exits = getattr(vcpu, "exit_counts", None)
            if isinstance(exits, dict):
                result[f"vcpu{vcpu.index}"] = {f"{kind}_exits": int(n) for kind, n in exits.items()}
        if self._serial is not None and "com1" in self.vm.devices:
            result["com1"] = {"tx_bytes": self._serial.tx_bytes, "rx_bytes": self._serial.rx_bytes}
        for name, device in self.vm.devices.items():
            counters = getattr(device, "counters", None)
            if callable(counters):
                values = counters()
                if isinstance(values, dict) and values:
                    result.setdefault(name, {}).update({str(k): int(v) for k, v in values.items()})
        return result

    # --- building and stopping the VM -----------------------------------------------------------------
    def _start_vm(self) -> None:
        from aovisor.vmm.builder import build_vm

        assert self.definition is not None
        config = self.definition.boot_config()
        hypervisor = self._open_hypervisor(config)
        serial = self._serial_endpoint(config)
        vm = build_vm(config, hypervisor, serial)
        _restore_cmos_ram(vm, self._cmos_ram)
        vm.exit_listeners.append(self._on_vm_exit)
        try:
            vm.start()
        except BaseException:
            vm.close()
            raise
        self.vm = vm
        self.boots += 1

    def _stop_vm(self) -> None:
        vm, self.vm = self.vm, None
        if vm is not None:
            self._cmos_ram = _cmos_ram(vm)
            vm.close()

    def _open_hypervisor(self, config: VmConfig) -> Hypervisor:
        from aovisor.hypervisor.probe import open_hypervisor

        if self._hypervisor is None:
            self._hypervisor = open_hypervisor(config.hypervisor or self._default_hypervisor)
        return self._hypervisor

    def _serial_endpoint(self, config: VmConfig) -> SerialEndpoint:
        """The COM1 endpoint: made once per VM definition and kept across reboots."""
        if self._serial is None:
            if self._serial_override is not None:
                self._serial = self._serial_override
            else:
                from aovisor.vmm.serial_io import SerialEndpoint

                self._serial = SerialEndpoint(config.serial)
        return self._serial

    def _close_serial(self) -> None:
        serial, self._serial = self._serial, None
        if serial is not None and serial is not self._serial_override:
            serial.close()

    def close(self) -> None:
        """Release everything (idempotent): pending commands fail, the VM stops, fds close."""
        if self._closed:
            return
        self._closed = True
        self.controller.close()
        self._stop_vm()
        if self.definition is not None:
            self.definition.close()
        self._close_serial()
        if self._hypervisor is not None:
            self._hypervisor.close()
            self._hypervisor = None
        os.close(self._vm_exit_fd)
        self.events.close()
        if self.exit_status is None:
            self.exit_status = EXIT_OK


def _cmos_ram(vm: VirtualMachine) -> bytes | None:
    """The CMOS RAM of ``vm``, which the next boot of the same machine keeps (as a PC's battery does)."""
    from aovisor.devices.legacy.cmos import Cmos

    cmos = vm.devices.get("cmos")
    return cmos.nvram() if isinstance(cmos, Cmos) else None


def _restore_cmos_ram(vm: VirtualMachine, saved: bytes | None) -> None:
    from aovisor.devices.legacy.cmos import Cmos

    cmos = vm.devices.get("cmos")
    if saved is not None and isinstance(cmos, Cmos):
        cmos.restore_nvram(saved)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)
