"""The Python API: a VM as a Python object, for guest tests in a few lines.

::

    import aovisor

    with aovisor.VM(kernel="guest.elf", cmdline="count=3", memory="64M") as vm:
        vm.serial.expect(r"tick 2")
        vm.pause()
        vm.resume()
        assert vm.wait(timeout=10) == 0   # the guest powered off

The VM runs in this process: the same :class:`~aovisor.vmm.vmm.Vmm` as the ``aovisor`` command, its control
loop on a background thread, every method below a command on its queue.  ``vm.serial`` is COM1: what the
guest prints accumulates there (:meth:`Console.expect` waits for a regular expression), and
:meth:`Console.write` types into the guest.

The vCPUs are kicked out of the hypervisor with a real-time signal whose handler must be installed by the
main thread, so the first :meth:`VM.start` must happen on the main thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aovisor.config import OutputConfig, OutputMode
from aovisor.errors import ConfigError
from aovisor.vmm.serial_io import SerialEndpoint

if TYPE_CHECKING:
    from aovisor.config import DiskConfig, NetConfig, VmConfig, VsockConfig
    from aovisor.vmm.vmm import Vmm

MAX_CONSOLE_BUFFER = 16 << 20  # bytes of guest output kept for expect(); older output is dropped


class Console(SerialEndpoint):
    """COM1 as a stream: everything the guest prints is kept for :meth:`expect`; :meth:`write` is input."""

    def __init__(self, echo: Any = None) -> None:
        super().__init__(OutputConfig(OutputMode.NULL))
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._offset = 0  # where the next expect() starts searching
        self._dropped = 0
        self._input: Any = None
        self._echo = echo

    # --- the endpoint side (called by the VMM) -----------------------------------------------------
    def write(self, data: bytes) -> None:
        self.tx_bytes += len(data)
        with self._cond:
            self._buffer += data
            excess = len(self._buffer) - MAX_CONSOLE_BUFFER
            if excess > 0:
                del self._buffer[:excess]
                self._dropped += excess
                self._offset = max(0, self._offset - excess)
            self._cond.notify_all()
        if self._echo is not None:
            self._echo.write(data.decode(errors="replace"))

    def attach_input(self, target: Any) -> None:
        self._input = target

    def close(self) -> None:
        return

    # --- the user side ---------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """Everything the guest printed so far (up to the last 16 MiB)."""
        with self._cond:
            return self._buffer.decode(errors="replace")

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Wait until the output after the previous match matches ``pattern``; return the match.

        Raises :class:`TimeoutError` (with the output seen) if it does not appear within ``timeout`` s.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self._buffer[self._offset :].decode(errors="replace")
                match = regex.search(text)
                if match is not None:
                    self._offset += len(text[: match.end()].encode())
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = text[-500:]
                    raise TimeoutError(
                        f"{regex.pattern!r} not seen within {timeout:g} s; output was:\n{tail}"
                    )
                self._cond.wait(remaining)

    def write_input(self, data: str | bytes) -> None:
        self.send(data)

    def send(self, data: str | bytes) -> None:
        """Type ``data`` into the guest's COM1."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        target = self._input
        if target is None:
            raise RuntimeError("the VM has no serial port input yet (start it first)")
        self.rx_bytes += len(raw)
        target(raw)


# ``vm.serial.write(...)`` is the natural spelling for input; the VMM calls ``write`` for output, so the
# user-facing object is a thin view with the input meaning.
class SerialStream:
    """What ``vm.serial`` is: :meth:`expect` guest output, :meth:`write` input, :attr:`text` all output."""

    def __init__(self, console: Console) -> None:
        self._console = console

    @property
    def text(self) -> str:
        return self._console.text

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        return self._console.expect(pattern, timeout)

    def write(self, data: str | bytes) -> None:
        self._console.send(data)


class VM:
    """A virtual machine in this process; see the module docstring.  Usable as a context manager."""

    def __init__(
        self,
        kernel: str | Path,
        *,
        initramfs: str | Path | None = None,
        cmdline: str = "",
        cpus: int = 1,
        memory: int | str = "512M",
        disks: Sequence[str | Path | DiskConfig] = (),
        nets: Sequence[str | NetConfig] = (),
        vsock: str | VsockConfig | None = None,
        rng: bool = True,
        hypervisor: str | None = None,
        echo: Any = None,
    ) -> None:
        """``memory`` in bytes or with a K/M/G suffix; ``disks`` are image paths (read-write) or
        :class:`~aovisor.config.DiskConfig`; ``nets`` and ``vsock`` are in the CLI's grammar
        (``"tap=tap0,mac=..."``, ``"cid=3,socket=/run/v.sock"``) or config records; ``echo``: a text stream
        that also gets the guest's output (``sys.stdout`` to watch it)."""
        self.config = _config(kernel, initramfs, cmdline, cpus, memory, disks, nets, vsock, rng, hypervisor)
        self._console = Console(echo)
        self.serial = SerialStream(self._console)
        self._vmm: Vmm | None = None
        self._thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> VM:
        """Create and boot the VM; raises the configuration or boot error."""
        from aovisor.vmm.definition import VmDefinition
        from aovisor.vmm.vm import install_kick_handler
        from aovisor.vmm.vmm import Vmm

        if self._vmm is not None:
            raise RuntimeError("this VM was already started")
        if threading.current_thread() is not threading.main_thread():
            import signal

            from aovisor.vmm.vm import KICK_SIGNAL

            if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
                raise RuntimeError(
                    "start the first aovisor.VM from the main thread (it installs a signal handler)"
                )
        else:
            install_kick_handler()
        vmm = Vmm(hypervisor=self.config.hypervisor, serial=self._console)
        self._vmm = vmm
        self._thread = threading.Thread(target=self._run_loop, args=(vmm,), name="aovisor-vmm", daemon=True)
        self._thread.start()
        vmm.controller.call(vmm.create, VmDefinition(self.config))
        vmm.controller.call(vmm.boot)
        return self

    def _run_loop(self, vmm: Vmm) -> None:
        try:
            vmm.run()
        except BaseException as e:  # reported by wait()
            self._loop_error = e

    def _call(self, name: str, *args: Any) -> Any:
        if self._vmm is None:
            raise RuntimeError("the VM is not started")
        return self._vmm.controller.call(getattr(self._vmm, name), *args)

    def pause(self) -> None:
        """Stop the vCPUs and device threads; the guest's clock stops too."""
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def reboot(self) -> None:
        self._call("reboot")

    def power_button(self) -> None:
        """Press the ACPI power button (the guest decides what to do; Linux powers off)."""
        self._call("power_button")

    def info(self) -> dict[str, Any]:
        """``vm.info``: ``{"config": ..., "state": "Running", "memory_actual_size": ...}``."""
        result: dict[str, Any] = self._call("info")
        return result

    def counters(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = self._call("counters")
        return result

    @property
    def state(self) -> str | None:
        """``"Running"``, ``"Paused"``...; ``None`` once the VMM has ended."""
        vmm = self._vmm
        if vmm is None or vmm.exit_status is not None:
            return None
        state = vmm.state
        return None if state is None else state.value

    def shutdown(self) -> int:
        """Stop the VM and its VMM (idempotent); returns the exit status (0: clean)."""
        from aovisor.vmm.controller import VmmShutDownError

        if self._vmm is None:
            return 0
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(VmmShutDownError):  # the guest powered off in the meantime
                self._vmm.controller.call(self._vmm.shutdown_vmm)
        return self.wait()

    def wait(self, timeout: float | None = None) -> int:
        """Wait until the VMM ends (the guest powered off, or :meth:`shutdown`); return its exit status
        (0 for a power-off, 1 for a VM error).  Raises :class:`TimeoutError` if still running."""
        if self._vmm is None or self._thread is None:
            raise RuntimeError("the VM is not started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the VM is still running after {timeout} s")
        if self._loop_error is not None:
            raise self._loop_error
        return self._vmm.exit_status or 0

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _config(
    kernel: str | Path,
    initramfs: str | Path | None,
    cmdline: str,
    cpus: int,
    memory: int | str,
    disks: Sequence[str | Path | DiskConfig],
    nets: Sequence[str | NetConfig],
    vsock: str | VsockConfig | None,
    rng: bool,
    hypervisor: str | None,
) -> VmConfig:
    from aovisor.cli.options import parse_size
    from aovisor.config import CpusConfig, DiskConfig, MemoryConfig, PayloadConfig, VmConfig

    for what, path in (("kernel", kernel), ("initramfs", initramfs)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{what}: {str(path)!r} is not a readable file")
    size = parse_size(memory) if isinstance(memory, str) else memory
    disk_configs = tuple(d if isinstance(d, DiskConfig) else DiskConfig(path=os.fspath(d)) for d in disks)
    config = VmConfig(
        payload=PayloadConfig(
            kernel=os.fspath(kernel),
            initramfs=None if initramfs is None else os.fspath(initramfs),
            cmdline=cmdline,
        ),
        cpus=CpusConfig(boot_vcpus=cpus, max_vcpus=cpus),
        memory=MemoryConfig(size=size),
        serial=OutputConfig(OutputMode.NULL),
        hypervisor=hypervisor,
        disks=disk_configs,
    )
    if nets or vsock is not None:  # the CLI's grammar for strings (its errors name --net / --vsock)
        from aovisor.cli.main import net_config, vsock_config

        net_configs = tuple(n if not isinstance(n, str) else net_config(n) for n in nets)
        vsock_cfg = vsock_config(vsock) if isinstance(vsock, str) else vsock
        config = config._replace(nets=net_configs, vsock=vsock_cfg)
    if not rng:
        config = config._replace(rng=None)
    config.validate()
    return config
