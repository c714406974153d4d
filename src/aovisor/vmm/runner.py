"""Run the VMM from the command line: boot a config and/or serve the API until the VMM ends (see vmm.vmm)."""

from __future__ import annotations

import gc
import signal
import threading

from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger

if TYPE_CHECKING:
    from aovisor.api.server import ApiSocketSpec
    from aovisor.config import VmConfig
    from aovisor.vmm.events import EventMonitor

log = get_logger(__name__)


def run_vm(config: VmConfig) -> int:
    """Boot ``config`` and return the process exit status: 0 when the guest powers off, 1 on a VM error."""
    return run_vmm(config)


def run_vmm(
    config: VmConfig | None,
    *,
    api_socket: ApiSocketSpec | None = None,
    events: EventMonitor | None = None,
    hypervisor: str | None = None,
) -> int:
    """The whole VMM process: with ``config`` boot it at once; with ``api_socket`` serve the REST API too
    (without ``config``, wait for ``vm.create``/``vm.boot``).  Returns the process exit status.

    A configuration or boot error of ``config`` is raised (the CLI prints it as one line).
    """
    from aovisor.vmm.definition import VmDefinition
    from aovisor.vmm.vmm import Vmm

    vmm = Vmm(hypervisor=hypervisor, events=events)
    # SIGTERM stops the VM and the VMM in order (events, terminal mode, API socket file) instead of killing
    # the process; the handler runs on the main thread between bytecodes, never inside a device.  Only the
    # main thread may set handlers: run elsewhere, signals stay the embedding program's business.
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        previous_sigterm = signal.signal(signal.SIGTERM, lambda sig, _frame: vmm.request_termination(sig))
    server = None
    try:
        if api_socket is not None:
            from aovisor.api.server import ApiServer

            server = ApiServer.open(api_socket, vmm)
            server.start()
        # The CLI starts with the cyclic GC off (see aovisor.cli.main).  What start-up has loaded so far
        # (modules, classes, the configuration) lives as long as the process: frozen, no later collection
        # scans it.  The VM is not frozen: a guest reset replaces it, and its cycles must be collectable.
        gc.freeze()
        if config is not None:
            vmm.create(VmDefinition(config))
            vmm.boot()
        gc.enable()
        return vmm.run()
    finally:
        vmm.close()
        if server is not None:
            server.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
