"""Boot L2 (Debian under QEMU software emulation, with a real /dev/kvm inside) and run a command in it.

L2 gets three virtio disks, found inside by their serial numbers:
- `lab-root`: the cached root image, copy-on-write (`snapshot=on`), so it stays pristine;
- `lab-work`: an ext4 copy of the caller's work tree, mounted at /work (`PYTHONPATH=/work/src` is set);
- `lab-io`: the command (`/lab/command.sh`), the caller's extra files (`/lab/extra/...`, `$LAB_EXTRA`), and
  the results: `/lab/output` (the command's stdout and stderr), `/lab/status` (its exit status) and
  anything it writes to `$LAB_OUT` (`/lab/out`). They are read back with `debugfs` after L2 powers off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lab import ext4
from lab.builder import LabArtifacts, build
from lab.errors import LabRunError

ConsoleCallback = Callable[[float, str], None]

COMMAND_START_MARKER = "lab: command start"
# Not copied onto the work disk: version control, virtual environments, caches, build leftovers.
WORKTREE_EXCLUDES = (
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "node_modules",
    "*.egg-info",
    "*.pyc",
)
WORK_FREE_MIB = 512
IO_FREE_MIB = 1024
# One L2 vCPU.  With two, L2 dies now and then with "Oops: int3" (in __schedule, sched_clock_cpu,
# kvm_arch_vcpu_ioctl_run...; 4 of about 15 L2 sessions, during its own boot too): Linux patches its text
# (static keys, static calls) under an int3 guard while the other CPUs run, and QEMU 7.2's multi-threaded
# TCG lets another vCPU execute that int3 after the patch is done.  A single vCPU cannot race with itself,
# and it is also faster here (L3 boots in 11-18 s instead of 17-31 s: no IPIs between emulated CPUs on a
# busy 2-core host).  Single-threaded TCG with two vCPUs would avoid the race too, but L3 then never boots.
DEFAULT_CPUS = 1


@dataclass(frozen=True)
class LabResult:
    """What came back from one L2 boot."""

    exit_status: int | None
    """The command's exit status; None when none came back (L2 timed out or died first)."""
    log: str
    """The command's output (stdout and stderr interleaved)."""
    duration: float
    """Seconds from starting QEMU to its exit."""
    boot_seconds: float | None
    """Seconds from starting QEMU to the command's start inside L2."""
    timed_out: bool
    """True when the command ran out of time in L2 (it was killed) or L2 as a whole did (QEMU was killed)."""
    console: str
    """The whole L2 serial console, each line prefixed by host seconds since QEMU started."""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def run(
    command: str,
    *,
    worktree: Path,
    timeout: float,
    cpus: int = DEFAULT_CPUS,
    memory_mib: int = 4096,
    extra_files: Mapping[str, Path] | None = None,
    on_console: ConsoleCallback | None = None,
    console_log: Path | None = None,
    results_dir: Path | None = None,
    artifacts: LabArtifacts | None = None,
    kernel_args: str = "",
) -> LabResult:
    """Boot L2, run `command` with bash in /work (a copy of `worktree`), power off, return the result.

    `extra_files` maps a relative path under /lab/extra to a host file. `timeout` bounds the whole boot:
    the command gets what is left after L2 boots, and QEMU is killed `timeout` seconds after its start
    in any case. `on_console(t, line)` sees each console line as it arrives; `console_log` gets them too.
    Files the command writes to `$LAB_OUT` are copied to `results_dir/` if given.
    """
    artifacts = artifacts or build()
    with tempfile.TemporaryDirectory(prefix="aovisor-lab-") as scratch_name:
        scratch = Path(scratch_name)
        work_image, io_image = _make_disks(scratch, worktree, extra_files or {}, command)
        qemu = _qemu_command(
            artifacts,
            work_image,
            io_image,
            cpus=cpus,
            memory_mib=memory_mib,
            append=f"lab.mode=run lab.deadline={max(int(timeout) - 2, 1)} {kernel_args}",
            interactive=False,
        )
        console = _ConsoleRecorder(on_console, console_log)
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except OSError as error:
            raise LabRunError(f"cannot start {qemu[0]}: {error}") from error
        assert process.stdout is not None
        reader = threading.Thread(target=console.pump, args=(process.stdout, started), daemon=True)
        reader.start()
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        duration = time.monotonic() - started
        reader.join(timeout=5)
        process.stdout.close()
        console.close()
        if process.returncode != 0 and not timed_out:
            raise LabRunError(f"QEMU failed with status {process.returncode}:\n{console.text()[-3000:]}")

        timed_out = timed_out or ext4.read_file(io_image, "/timed-out") is not None
        status_bytes = ext4.read_file(io_image, "/status")
        output_bytes = ext4.read_file(io_image, "/output")
        if results_dir is not None:
            ext4.copy_directory_out(io_image, "/out", results_dir)
    status_text = status_bytes.decode(errors="replace").strip() if status_bytes is not None else ""
    exit_status = int(status_text) if status_text.isdigit() else None
    output = output_bytes.decode("utf-8", "replace") if output_bytes is not None else console.command_output()
    return LabResult(
        exit_status=exit_status,
        log=output,
        duration=duration,
        boot_seconds=console.command_started_at,
        timed_out=timed_out,
        console=console.text(),
    )


def shell(
    *,
    worktree: Path,
    cpus: int = DEFAULT_CPUS,
    memory_mib: int = 4096,
    extra_files: Mapping[str, Path] | None = None,
    artifacts: LabArtifacts | None = None,
) -> int:
    """An interactive root shell in L2 on this terminal (Ctrl-A X kills QEMU); returns QEMU's status."""
    artifacts = artifacts or build()
    columns, rows = shutil.get_terminal_size()
    with tempfile.TemporaryDirectory(prefix="aovisor-lab-") as scratch_name:
        work_image, io_image = _make_disks(Path(scratch_name), worktree, extra_files or {}, None)
        qemu = _qemu_command(
            artifacts,
            work_image,
            io_image,
            cpus=cpus,
            memory_mib=memory_mib,
            append=f"lab.mode=shell lab.rows={rows} lab.cols={columns} lab.term={_terminal_type()}",
            interactive=True,
        )
        return subprocess.call(qemu)


def stage_worktree(worktree: Path, destination: Path) -> None:
    """Copy the work tree without version control, virtual environments and caches."""
    if not (worktree / "src").is_dir():
        raise LabRunError(f"{worktree} does not look like the project work tree (no src/)")
    shutil.copytree(worktree, destination, symlinks=True, ignore=shutil.ignore_patterns(*WORKTREE_EXCLUDES))


def _make_disks(
    scratch: Path, worktree: Path, extra_files: Mapping[str, Path], command: str | None
) -> tuple[Path, Path]:
    tree = scratch / "work"
    stage_worktree(worktree, tree)
    work_image = scratch / "work.ext4"
    ext4.make_ext4(
        work_image, ext4.tree_bytes(tree) * 3 // 2 + WORK_FREE_MIB * 2**20, source=tree, label="lab-work"
    )
    shutil.rmtree(tree)

    io = scratch / "io"
    (io / "out").mkdir(parents=True)
    if command is not None:
        (io / "command.sh").write_text(command + "\n")
    for relative, source in extra_files.items():
        target = (io / "extra" / relative).resolve()
        if not target.is_relative_to((io / "extra").resolve()):
            raise LabRunError(f"extra file destination {relative!r} escapes /lab/extra")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(source.stat().st_mode & 0o777)
    io_image = scratch / "io.ext4"
    ext4.make_ext4(io_image, ext4.tree_bytes(io) * 6 // 5 + IO_FREE_MIB * 2**20, source=io, label="lab-io")
    shutil.rmtree(io)
    return work_image, io_image


def _qemu_command(
    artifacts: LabArtifacts,
    work_image: Path,
    io_image: Path,
    *,
    cpus: int,
    memory_mib: int,
    append: str,
    interactive: bool,
) -> list[str]:
    # tsc_early_khz: the kernel's TSC calibration against the PIT can hang under software emulation
    # (see the guest-kernel notes); TCG's TSC runs at the host's rate, so give that rate up front.
    cmdline = f"console=ttyS0 quiet panic=-1 {_tsc_khz_arg()} {append}".split()
    command = [
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        # TCG emulates AMD SVM with nested paging (not VMX), which is what gives L2 a working kvm_amd.
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mib),
        "-kernel",
        str(artifacts.vmlinux),
        "-initrd",
        str(artifacts.initramfs),
        "-append",
        " ".join(cmdline),
        "-serial",
        "mon:stdio" if interactive else "stdio",
    ]
    disks = (
        (artifacts.root_image, "lab-root", True),
        (work_image, "lab-work", False),
        (io_image, "lab-io", False),
    )
    for index, (image, serial, copy_on_write) in enumerate(disks):
        escaped = str(image).replace(",", ",,")  # QEMU's option syntax: ",," is a literal comma
        drive = f"file={escaped},format=raw,if=none,id=disk{index},cache=unsafe"
        if copy_on_write:
            drive += ",snapshot=on"
        command += ["-drive", drive, "-device", f"virtio-blk-pci,drive=disk{index},serial={serial}"]
    return command


def _tsc_khz_arg() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return f"tsc_early_khz={int(float(line.split(':')[1]) * 1000)}"
    except (OSError, ValueError, IndexError):
        pass
    return ""


class _ConsoleRecorder:
    """Collects console lines with host timestamps; forwards them to a callback and a log file."""

    def __init__(self, callback: ConsoleCallback | None, log_path: Path | None) -> None:
        self._callback = callback
        self._log = log_path.open("w") if log_path is not None else None
        self._lines: list[tuple[float, str]] = []
        self.command_started_at: float | None = None
        self._command_line_index: int | None = None

    def pump(self, stream: IO[bytes], started: float) -> None:
        for raw in iter(stream.readline, b""):
            now = time.monotonic() - started
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if self.command_started_at is None and line.startswith(COMMAND_START_MARKER):
                self.command_started_at = now
                self._command_line_index = len(self._lines) + 1
            self._lines.append((now, line))
            if self._log is not None:
                self._log.write(f"[{now:8.3f}] {line}\n")
                self._log.flush()
            if self._callback is not None:
                self._callback(now, line)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()

    def text(self) -> str:
        return "".join(f"[{t:8.3f}] {line}\n" for t, line in self._lines)

    def command_output(self) -> str:
        """The console after the command-start marker: the output when /lab/output cannot be read."""
        if self._command_line_index is None:
            return ""
        return "".join(f"{line}\n" for _, line in self._lines[self._command_line_index :])


def _terminal_type() -> str:
    """The host's $TERM when it is one plain word (it goes on the kernel command line), else vt100."""
    term = os.environ.get("TERM", "")
    return term if term and all(c.isalnum() or c in "-+._" for c in term) else "vt100"
