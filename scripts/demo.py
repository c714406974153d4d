"""``make demo``: boot the built-in default Linux guest with aovisor and show what it prints.

The guest is Debian's cloud kernel with aovisor's busybox initramfs (``aovisor image build``); its command
prints the kernel and the processors it sees, then it powers off.  Where ``/dev/kvm`` can run a guest
kernel (at CPL0), aovisor boots it right here.  Where it cannot -- PVM, KVM for guests whose kernel runs
deprivileged (the ``kvm_pvm`` module), on which a stock kernel fails -- or where there is no ``/dev/kvm``,
one line says so and the same boot runs inside the nested lab (lab/README.md): a Debian L2 under QEMU's
software emulation, whose own KVM gives aovisor a real ``/dev/kvm``.

    .venv/bin/python scripts/demo.py [--lab | --direct]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[0] = str(REPO)  # `lab` is a package at the repository root

from aovisor.image.builder import GuestImage, build_guest_image  # noqa: E402
from aovisor.image.errors import ImageBuildError  # noqa: E402
from aovisor.image.init_script import command_line_parameter  # noqa: E402

DEMO_COMMAND = (
    "uname -a; echo processors: $(grep -c ^processor /proc/cpuinfo); "
    "echo memory: $(grep MemTotal /proc/meminfo); echo; echo Hello from Linux on aovisor"
)
CPUS = 2
MEMORY = "size=256M"
CMDLINE = f"console=ttyS0 quiet {command_line_parameter(DEMO_COMMAND)}"
PVM_MODULE = Path("/sys/module/kvm_pvm")
# L2's own kernel chatter on the shared console (its KVM logging the guest's PMU probe): not the demo's.
_L2_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] kvm: ")


def kvm_unfit_reason() -> str | None:
    """Why this host's /dev/kvm cannot boot a stock Linux guest, or None when it can."""
    if not os.path.exists("/dev/kvm"):
        return "there is no /dev/kvm here"
    if PVM_MODULE.is_dir():
        return "/dev/kvm here is PVM (kvm_pvm), which cannot run a stock Linux kernel at CPL0"
    return None


def aovisor_argv(image_dir: str, python: str) -> list[str]:
    return [
        *(python, "-m", "aovisor", "--kernel", f"{image_dir}/vmlinuz", "--initramfs"),
        *(f"{image_dir}/initramfs.cpio", "--cpus", f"boot={CPUS}", "--memory", MEMORY),
        *("--serial", "tty", "--cmdline", CMDLINE),
    ]


def boot_directly(image: GuestImage) -> int:
    return subprocess.call(aovisor_argv(str(image.directory), sys.executable))


def boot_in_lab(image: GuestImage) -> int:
    import shlex

    from lab.runner import COMMAND_START_MARKER
    from lab.vmm_runs import L2_EXTRA, guest_files

    import lab

    showing = False

    def show(_: float, line: str) -> None:
        nonlocal showing
        if line.startswith(COMMAND_START_MARKER):
            showing = True
            print("demo: L2 is up; aovisor boots the guest in it:", flush=True)
        elif line.startswith("lab: command exit"):
            showing = False
        elif showing and not _L2_KERNEL_LINE.match(line):
            print(line, flush=True)

    result = lab.run(
        shlex.join(aovisor_argv(L2_EXTRA, "python3")),
        worktree=REPO,
        timeout=600,
        extra_files=guest_files(image.vmlinuz, image.vmlinux, image.initramfs),
        on_console=show,
    )
    status = result.exit_status
    print(f"demo: aovisor in the lab exited with status {status}", flush=True)
    return 1 if status is None else status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--lab", action="store_true", help="boot inside the nested lab even if /dev/kvm works")
    where.add_argument("--direct", action="store_true", help="boot on this /dev/kvm whatever it is")
    args = parser.parse_args(argv)
    try:
        image = build_guest_image()
    except ImageBuildError as error:
        print(f"demo: cannot build the default guest: {error}", file=sys.stderr)
        return 1
    reason = None if args.direct else "asked for the lab" if args.lab else kvm_unfit_reason()
    if reason is None:
        return boot_directly(image)
    print(f"demo: {reason}: booting the same guest inside the nested lab instead", flush=True)
    from lab import LabError

    try:
        return boot_in_lab(image)
    except LabError as error:
        print(f"demo: the lab failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
