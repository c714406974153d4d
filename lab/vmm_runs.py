"""Several VMM runs inside one L2 boot (L2 boots cost seconds), their timed console lines parsed back.

The runs go to ``l2/vmm_runner.py`` (copied into L2 with them) as JSON and run one after another; see
that file for what is measured.  Paths in a run's ``argv`` are L2's: the files given as ``extra_files``
are under :data:`L2_EXTRA`, the work tree is ``/work`` (the current directory, ``PYTHONPATH=/work/src``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.builder import LabArtifacts
from lab.errors import LabRunError
from lab.runner import DEFAULT_CPUS, ConsoleCallback, LabResult, run

L2_EXTRA = "/lab/extra"
_SPEC = "vmm-runs.json"
_RESULTS = "vmm-results.json"
_RUNNER = Path(__file__).resolve().parent / "l2" / "vmm_runner.py"
_CRASH_SIGNS = ("Oops:", "BUG:", "Kernel panic", "general protection fault")
_COMMAND = f'python3 "$LAB_EXTRA/{_RUNNER.name}" "$LAB_EXTRA/{_SPEC}" "$LAB_OUT/{_RESULTS}"'


@dataclass(frozen=True)
class VmmRun:
    """One VMM command to run in L2."""

    name: str
    argv: Sequence[str]
    timeout: float = 240.0
    trace_exits: bool = False
    """Count KVM exits by reason during this run (tracefs histograms; slows the run a little)."""


@dataclass(frozen=True)
class VmmRunResult:
    name: str
    status: int | None
    """The exit status; None when the run timed out (it was killed)."""
    timed_out: bool
    seconds: float
    """From the spawn to the exit."""
    lines: list[tuple[float, str]]
    """The command's stdout lines (the guest console), each with the seconds since the spawn."""
    stderr: str
    exits: dict[str, Any] = field(default_factory=dict)
    """With ``trace_exits``: histogram name -> entries (``{"count": N, <key>: value...}``)."""

    @property
    def output(self) -> str:
        return "".join(f"{text}\n" for _, text in self.lines)

    def times(self, text: str) -> list[float]:
        """The arrival times of the lines that contain ``text``."""
        return [t for t, line in self.lines if text in line]

    def describe(self, tail: int = 3000) -> str:
        """The run's outcome and output, for an assertion message."""
        timed_out = " (timed out)" if self.timed_out else ""
        return (
            f"{self.name}: status {self.status}, {self.seconds:.1f}s{timed_out}\n"
            f"--- console\n{self.output[-tail:]}--- stderr\n{self.stderr[-tail:]}"
        )


@dataclass(frozen=True)
class VmmRunsResult:
    lab: LabResult
    kvm_isa: str
    """``svm`` or ``vmx``: L2's KVM flavour (the exit reason codes depend on it)."""
    runs: dict[str, VmmRunResult]

    def describe(self) -> str:
        """What came back, for an assertion message when something is missing: the runs that finished,
        and L2's console from its first kernel crash report if it has one, else its tail."""
        done = ", ".join(self.runs) or "none"
        timed_out = " (timed out)" if self.lab.timed_out else ""
        console = self.lab.console
        crash = min((i for i in (console.find(s) for s in _CRASH_SIGNS) if i >= 0), default=-1)
        shown = console[console.rfind("\n", 0, crash) + 1 :][:3000] if crash >= 0 else console[-3000:]
        return (
            f"L2 runs finished: {done}; L2 command status {self.lab.exit_status}{timed_out}\n"
            f"--- L2 console ({'from its crash report' if crash >= 0 else 'tail'})\n{shown}"
        )


def run_vmms(
    runs: Sequence[VmmRun],
    *,
    worktree: Path,
    timeout: float,
    extra_files: Mapping[str, Path] | None = None,
    on_console: ConsoleCallback | None = None,
    console_log: Path | None = None,
    artifacts: LabArtifacts | None = None,
    cpus: int = DEFAULT_CPUS,
) -> VmmRunsResult:
    """Boot L2 once and run ``runs`` in order; the runs that finished (all of them, unless L2 died)."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise LabRunError(f"run names must differ: {names}")
    with tempfile.TemporaryDirectory(prefix="aovisor-vmm-runs-") as scratch_name:
        scratch = Path(scratch_name)
        spec = scratch / _SPEC
        spec.write_text(json.dumps({"runs": [{**asdict(r), "argv": list(r.argv)} for r in runs]}))
        lab = run(
            _COMMAND,
            worktree=worktree,
            timeout=timeout,
            extra_files={**(extra_files or {}), _SPEC: spec, _RUNNER.name: _RUNNER},
            on_console=on_console,
            console_log=console_log,
            results_dir=scratch / "out",
            artifacts=artifacts,
            cpus=cpus,
        )
        results_file = scratch / "out" / _RESULTS
        data = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": []}
    parsed = {
        item["name"]: VmmRunResult(
            name=item["name"],
            status=item["status"],
            timed_out=item["timed_out"],
            seconds=item["seconds"],
            lines=[(float(t), str(text)) for t, text in item["lines"]],
            stderr=item["stderr"],
            exits=item.get("exits", {}),
        )
        for item in data["runs"]
    }
    return VmmRunsResult(lab=lab, kvm_isa=str(data.get("kvm_isa", "unknown")), runs=parsed)


# --- booting the default guest (aovisor.image) in L2 ------------------------------------------------------

GUEST_MEMORY_MIB = 256
GUEST_CMDLINE = "console=ttyS0 quiet"
INITRAMFS = "initramfs.cpio"


def guest_files(vmlinuz: Path, vmlinux: Path, initramfs: Path) -> dict[str, Path]:
    """``extra_files`` for the guest's kernel (as bzImage ``vmlinuz`` and PVH ``vmlinux``) and initramfs."""
    return {"vmlinuz": vmlinuz, "vmlinux": vmlinux, INITRAMFS: initramfs}


def aovisor_boot(
    kernel: str, cmdline: str, *, cpus: int = 1, topology: str | None = None, options: Sequence[str] = ()
) -> list[str]:
    """aovisor (the work tree's, on L2's Python) booting ``kernel`` (a name from :func:`guest_files`);
    ``topology`` is ``--cpus topology=`` (threads:cores:dies:packages)."""
    cpus_option = f"boot={cpus}" if topology is None else f"boot={cpus},topology={topology}"
    return [
        *("python3", "-m", "aovisor", *options),
        *("--kernel", f"{L2_EXTRA}/{kernel}", "--initramfs", f"{L2_EXTRA}/{INITRAMFS}"),
        *("--cpus", cpus_option, "--memory", f"size={GUEST_MEMORY_MIB}M", "--serial", "tty"),
        *("--cmdline", cmdline),
    ]


def qemu_boot(machine: str, kernel: str, cmdline: str, *, cpus: int = 1) -> list[str]:
    """L2's QEMU with KVM booting the same guest: ``machine`` is ``microvm`` or ``q35``; no devices beyond
    the machine's own, the serial console on stdout; a reset ends QEMU (``-no-reboot``)."""
    return [
        *("qemu-system-x86_64", "-M", machine, "-enable-kvm", "-cpu", "host"),
        *("-smp", str(cpus), "-m", f"{GUEST_MEMORY_MIB}M"),
        *("-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"),
        *("-kernel", f"{L2_EXTRA}/{kernel}", "-initrd", f"{L2_EXTRA}/{INITRAMFS}", "-append", cmdline),
    ]
