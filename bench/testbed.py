"""The two VMMs under test, the guest programs they boot, and one checked boot of a guest.

Both VMMs get the same guest, the same RAM size and one vCPU. aovisor is started through the venv's console
script (``.venv/bin/aovisor``, what a user runs); QEMU as ``-M microvm`` with an ``isa-debug-exit`` device on
the guests' power-off port, so that power-off ends QEMU too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from bench.process import ProcessResult, run_process

REPO = Path(__file__).resolve().parent.parent
GUEST_MEMORY_MIB = 128

# The guests power off by writing SLP_TYP=5|SLP_EN = 0x34 to port 0x600 (guests/README.md); QEMU's
# isa-debug-exit turns a write of V into exit status (V << 1) | 1.
GUEST_POWEROFF_VALUE = 0x34
QEMU_POWEROFF_STATUS = (GUEST_POWEROFF_VALUE << 1) | 1
AOVISOR_POWEROFF_STATUS = 0


class RunFailed(Exception):
    """A run that did not do what it should (wrong exit status, missing output, timeout): no number."""


class Vmm(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def poweroff_status(self) -> int: ...

    def argv(self, kernel: Path, cmdline: str = "") -> list[str]: ...


@dataclass(frozen=True)
class Aovisor:
    script: Path  # the console script, .venv/bin/aovisor
    label: str = "aovisor"
    poweroff_status: int = AOVISOR_POWEROFF_STATUS

    def argv(
        self,
        kernel: Path,
        cmdline: str = "",
        *,
        memory_mib: int = GUEST_MEMORY_MIB,
        options: Sequence[str] = (),
        python_flags: Sequence[str] = (),
    ) -> list[str]:
        """The command line; with ``python_flags`` (``-X importtime``...) via the script's interpreter."""
        command = [str(self.script)]
        if python_flags:
            command = [str(self.interpreter()), *python_flags, str(self.script)]
        command += [*options, "--kernel", str(kernel), "--memory", f"size={memory_mib}M"]
        return command + (["--cmdline", cmdline] if cmdline else [])

    def interpreter(self) -> Path:
        """The Python of the console script's ``#!`` line (the venv's)."""
        with open(self.script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
        if not first.startswith("#!"):
            raise RunFailed(f"{self.script}: not a script (no #! line)")
        return Path(first[2:].split()[0])


@dataclass(frozen=True)
class Qemu:
    binary: Path
    label: str = "QEMU"
    poweroff_status: int = QEMU_POWEROFF_STATUS

    def argv(self, kernel: Path, cmdline: str = "", *, memory_mib: int = GUEST_MEMORY_MIB) -> list[str]:
        command = [
            str(self.binary),
            "-M", "microvm",
            "-enable-kvm",
            # PVM's KVM rejects the ARCH_CAPABILITIES MSR value QEMU would set from `host`.
            "-cpu", "host,-arch-capabilities",
            "-m", f"{memory_mib}M",
            "-nodefaults", "-no-user-config", "-nographic",
            "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0x600,iosize=1",
            "-kernel", str(kernel),
        ]  # fmt: skip
        return command + (["-append", cmdline] if cmdline else [])

    def version(self) -> str:
        try:
            out = subprocess.run(
                [str(self.binary), "--version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as e:
            return f"unknown ({e})"
        return out.splitlines()[0].strip() if out.strip() else "unknown"


def clean_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the ``PYTHON*`` variables, which change how Python runs (e.g. this environment's
    ``PYTHONDONTWRITEBYTECODE=1`` and ``PYTHONUNBUFFERED=1``): aovisor runs as a user's shell starts it."""
    return {key: value for key, value in environ.items() if not key.startswith("PYTHON")}


@dataclass
class Testbed:
    __test__: ClassVar[bool] = False  # not a pytest test class, whatever its name

    aovisor: Aovisor
    qemu: Qemu
    guests_dir: Path
    env: dict[str, str]
    repo: Path = REPO
    _guests: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def discover(cls, repo: Path = REPO) -> Testbed:
        """The VMMs of this machine: the venv's aovisor script and ``qemu-system-x86_64`` from PATH."""
        script = repo / ".venv" / "bin" / "aovisor"
        if not os.access(script, os.X_OK):
            raise RunFailed(f"{script} is missing: run `make venv` first")
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise RunFailed("qemu-system-x86_64 is not on PATH (Debian: apt-get install qemu-system-x86)")
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise RunFailed("/dev/kvm is not usable: both VMMs need KVM")
        return cls(
            aovisor=Aovisor(script),
            qemu=Qemu(Path(qemu)),
            guests_dir=repo / "build" / "guests",
            env=clean_environment(os.environ),
            repo=repo,
        )

    def guest(self, name: str) -> Path:
        """The guest program ``name`` from guests/, built (and cached) on first use."""
        if name not in self._guests:
            from guests.build import GuestBuildError, build_guest

            try:
                self._guests[name] = build_guest(name, self.guests_dir)
            except GuestBuildError as e:
                raise RunFailed(f"building guest {name!r}: {e}") from None
        return self._guests[name]

    def boot(
        self,
        vmm: Vmm,
        kernel: Path,
        cmdline: str = "",
        *,
        expect: str,
        timeout: float = 60.0,
        sample_rss: bool = False,
        argv: Sequence[str] | None = None,
    ) -> ProcessResult:
        """Boot ``kernel`` on ``vmm`` (or run ``argv``, a variant of its command line); it must print
        ``expect`` and power off with the VMM's power-off status, else :class:`RunFailed`."""
        command = vmm.argv(kernel, cmdline) if argv is None else argv
        result = run_process(command, env=self.env, timeout=timeout, sample_rss=sample_rss)
        check_run(
            result, label=vmm.label, poweroff_status=vmm.poweroff_status, expect=expect, timeout=timeout
        )
        return result


def check_run(
    result: ProcessResult, *, label: str, poweroff_status: int, expect: str, timeout: float
) -> None:
    """Raise :class:`RunFailed` unless ``result`` printed ``expect`` and exited with ``poweroff_status``."""
    if result.timed_out:
        raise RunFailed(f"{label} did not exit within {timeout:g} s: {describe(result)}")
    if result.exit_status != poweroff_status:
        raise RunFailed(
            f"{label} exited with status {result.exit_status}, not {poweroff_status}: {describe(result)}"
        )
    if expect not in result.stdout:
        raise RunFailed(f"{label} did not print {expect!r}: {describe(result)}")


def describe(result: ProcessResult, tail: int = 300) -> str:
    """The command and the end of its output, on one line, for an error message."""
    output = " | ".join(line.text.rstrip("\n") for line in result.lines if line.text.strip())
    if len(output) > tail:
        output = "..." + output[-tail:]
    return f"`{' '.join(result.argv)}` output: {output or '(none)'}"
