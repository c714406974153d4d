"""What start-up pays for (startup time is benchmarked against QEMU): the modules a command loads, the cyclic
GC during start-up, and the program ending its process without the interpreter's teardown."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import types
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from aovisor.cli.main import main
from aovisor.config import PayloadConfig, VmConfig
from aovisor.vmm import runner


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    # As a user's shell runs it: no PYTHONUNBUFFERED (set on this machine), so stdout to a pipe is buffered.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "AOVISOR_HYPERVISOR"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(autouse=True)
def restore_collector() -> object:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # a frozen test process would never collect pytest's garbage again
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_version_loads_nothing_beyond_the_cli() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from aovisor.cli.main import main\n"
        "assert main(['--version']) == 0\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    version_line, loaded = result.stdout.splitlines()
    assert version_line.startswith("aovisor v")
    outside = [m for m in eval(loaded) if m.split(".")[0] not in ("aovisor", "__future__", "gc")]
    assert outside == []  # not even typing: `aovisor` itself must stay import-free


def test_devices_absent_from_the_config_are_not_imported() -> None:
    # The default VM has no disk and no net: their modules (and socket, for TAP) stay unloaded.
    code = (
        "import sys, types\n"
        "from pathlib import Path\n"
        "from aovisor.config import PayloadConfig, VmConfig\n"
        "from aovisor.vmm import builder\n"
        "vm = types.SimpleNamespace(config=VmConfig(PayloadConfig(Path('vmlinux')), rng=None))\n"
        "builder.attach_virtio_devices(vm)\n"
        "print(sorted(m for m in sys.modules if m.startswith('aovisor.virtio.devices.') or m == 'socket'))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def _imported_by(importtime: str, module: str) -> list[str]:
    """The import chains (``a <- b <- c``) through which ``python -X importtime`` output loaded ``module``.

    Each output line is ``import time: self | cumulative | <indent>name``, printed when the import ends: a
    module's imports come before it, one level deeper."""
    rows = [line.split("|")[2] for line in importtime.splitlines() if line.startswith("import time:")]
    entries = [(len(row) - len(row.lstrip()), row.strip()) for row in rows]
    chains = []
    for i, (depth, name) in enumerate(entries):
        if name == module:
            chain = [name]
            for later_depth, later_name in entries[i + 1 :]:
                if later_depth < depth:
                    chain.append(later_name)
                    depth = later_depth
            chains.append(" <- ".join(chain))
    return chains


@pytest.mark.skipif(
    not (os.path.exists("/dev/kvm") or os.path.exists("/dev/mshv")),
    reason="booting a guest needs a hypervisor",
)
def test_booting_a_guest_leaves_the_heavy_standard_modules_unloaded(guest: Callable[[str], Path]) -> None:
    # dataclasses imports inspect (and with it ast, dis, tokenize...): ~12 ms of a ~80 ms budget, plus the
    # time to create each dataclass.  Records on the start path are NamedTuples or slotted classes instead.
    # logging (with traceback, tokenize, string...) ~10 ms: aovisor.logs imports it for the first record
    # that can be shown, and a plain boot has none.  argparse ~10 ms: only for --help and errors
    # (aovisor.cli.arguments).  typing (with re, contextlib...) ~9 ms: aovisor.lean_typing.  pathlib (with
    # urllib.parse, ipaddress, fnmatch and re) ~5 ms: the config records hold paths as str.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    command = [sys.executable, "-X", "importtime", "-m", "aovisor", "--memory", "size=128M"]
    result = subprocess.run(
        [*command, "--kernel", str(guest("hello"))],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "Hello, world! from aovisor guest\n"), result.stderr
    assert _imported_by(result.stderr, "aovisor.virtio.devices.rng")  # the default device was made
    assert _imported_by(result.stderr, "dataclasses") == []
    assert _imported_by(result.stderr, "inspect") == []
    assert _imported_by(result.stderr, "logging") == []
    assert _imported_by(result.stderr, "argparse") == []
    assert _imported_by(result.stderr, "typing") == []
    assert _imported_by(result.stderr, "pathlib") == []
    assert _imported_by(result.stderr, "re") == []


@pytest.mark.parametrize("enabled", [True, False])
def test_main_leaves_the_collector_as_it_found_it(kernel: str, enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    assert main(["--kernel", kernel, "--memory", "size=1Q"]) == 2
    assert gc.isenabled() is enabled


def test_start_up_runs_without_the_collector(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    seen: list[bool] = []

    def run_vm(config: VmConfig) -> int:
        seen.append(gc.isenabled())
        return 0

    fake = types.ModuleType("aovisor.vmm.runner")
    fake.run_vm = run_vm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aovisor.vmm.runner", fake)
    gc.enable()
    assert main(["--kernel", kernel]) == 0
    assert seen == [False]
    assert gc.isenabled()


class _Cycle:
    """Stands in for a VM: its devices and the VM refer to each other."""

    def __init__(self) -> None:
        self.me = self


class _FakeVmm:
    """Stands in for aovisor.vmm.vmm.Vmm: boot builds a "VM", run reports the collector's state."""

    built: weakref.ref[_Cycle] | None = None
    collecting_at_run: bool | None = None

    def __init__(self, **_: object) -> None:
        pass

    def create(self, definition: object) -> None:
        pass

    def boot(self) -> None:
        _FakeVmm.built = weakref.ref(_Cycle())  # garbage at once, as a VM a guest reset replaced

    def run(self) -> int:
        _FakeVmm.collecting_at_run = gc.isenabled()
        return 0

    def close(self) -> None:
        pass


def test_collector_runs_again_once_booted_and_the_vm_is_not_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    from aovisor.vmm import vmm

    monkeypatch.setattr(vmm, "Vmm", _FakeVmm)
    gc.disable()  # as the CLI leaves it
    assert runner.run_vmm(VmConfig(PayloadConfig(Path("vmlinux")))) == 0
    assert _FakeVmm.collecting_at_run is True
    assert gc.get_freeze_count() > 0  # what start-up loaded is out of the collector's way
    assert _FakeVmm.built is not None
    gc.collect()
    assert _FakeVmm.built() is None  # the VM's cycles are collectable (it was built after the freeze)


def test_the_program_ends_its_process_with_the_status_and_the_output_flushed() -> None:
    code = (
        "import atexit, sys\n"
        "atexit.register(print, 'teardown')\n"
        "sys.argv = ['aovisor', '--bogus']\n"
        "from aovisor.cli.main import main\n"
        "print('buffered', end='')\n"
        "main()\n"
        "print('returned')\n"
    )
    result = run_python(code)
    assert result.returncode == 2
    assert result.stdout == "buffered"  # flushed; main() did not return, and no interpreter teardown ran
    assert result.stderr.startswith("aovisor: error: ") and result.stderr.count("\n") == 1
