"""Run a VM from a config until the guest powers off: build, start, wait, and rebuild on reset."""

from __future__ import annotations

import logging

from aovisor.config import VmConfig

log = logging.getLogger(__name__)


def run_vm(config: VmConfig) -> int:
    """Boot ``config`` and return the process exit status: 0 when the guest powers off, 1 on a VM error."""
    from aovisor.hypervisor.probe import open_hypervisor
    from aovisor.vmm.builder import build_vm
    from aovisor.vmm.serial_io import SerialEndpoint
    from aovisor.vmm.vm import ExitReason

    config.validate()
    hypervisor = open_hypervisor(config.hypervisor)
    serial = SerialEndpoint(config.serial)
    boots = 0
    try:
        while True:
            boots += 1
            vm = build_vm(config, hypervisor, serial)
            try:
                vm.start()
                reason = vm.wait()
            finally:
                vm.close()
            if reason is ExitReason.RESET:
                log.info("guest reset: rebooting (boot %d)", boots + 1)
                continue
            if reason is ExitReason.ERROR:
                log.error("VM stopped on error: %s", vm.exit_error)
                return 1
            log.info("guest powered off")
            return 0
    finally:
        serial.close()
        hypervisor.close()
