"""Smoke test of the nested lab: L2 has a working /dev/kvm, and QEMU/KVM inside L2 boots an L3 Linux."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from aovisor.image import cpio
from lab import LabArtifacts, run

HERE = Path(__file__).resolve().parent

# Inside L2: the KVM probe, then QEMU with KVM boots the Debian kernel with a busybox initramfs whose /init
# prints a marker and powers off. Both report on stdout, which comes back as the command's output.
L2_COMMAND = r"""
set -u
python3 "$LAB_EXTRA/kvm_probe.py" 2000 || exit
start=$(date +%s.%N)
timeout 150 qemu-system-x86_64 -enable-kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config \
    -display none -serial stdio -no-reboot \
    -kernel "$LAB_EXTRA/vmlinuz" -initrd "$LAB_EXTRA/l3-initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1"
qemu_status=$?
end=$(date +%s.%N)
echo "l3-qemu-status: $qemu_status"
python3 -c "import sys; print(f'l3-boot-seconds: {float(sys.argv[2]) - float(sys.argv[1]):.2f}')" \
    "$start" "$end"
"""


def _l3_initramfs(path: Path, busybox: Path, marker: str) -> None:
    init = f"#!/bin/sh\n/bin/busybox echo {marker}\n/bin/busybox poweroff -f\n"
    with path.open("wb") as out:
        archive = cpio.CpioWriter(out)
        for directory in ("bin", "dev", "proc", "sys"):
            archive.directory(directory)
        archive.char_device("dev/console", 5, 1)
        archive.file("bin/busybox", busybox.read_bytes(), 0o755)
        archive.symlink("bin/sh", "busybox")
        archive.file("init", init.encode(), 0o755)
        archive.close()


@pytest.mark.lab
def test_l2_kvm_works_and_qemu_boots_an_l3_linux(
    lab_artifacts: LabArtifacts, repo_root: Path, tmp_path: Path
) -> None:
    # A fresh marker, known only to this run's L3 initramfs: seeing it proves L3's /init ran.
    marker = f"L3-INIT-REACHED-{secrets.token_hex(8)}"
    initramfs = tmp_path / "l3-initramfs.cpio"
    _l3_initramfs(initramfs, lab_artifacts.busybox, marker)
    console_log = tmp_path / "l2-console.log"

    result = run(
        L2_COMMAND,
        worktree=repo_root,
        timeout=300,
        extra_files={
            "kvm_probe.py": HERE / "kvm_probe.py",
            "vmlinuz": lab_artifacts.vmlinuz,
            "l3-initramfs.cpio": initramfs,
        },
        console_log=console_log,
    )

    context = f"command output:\n{result.log[-3000:]}\nL2 console ({console_log}):\n{result.console[-3000:]}"
    assert not result.timed_out, context
    assert result.exit_status == 0, context
    assert result.boot_seconds is not None and result.boot_seconds < result.duration, context

    probe_lines = [line for line in result.log.splitlines() if line.startswith("{")]
    assert len(probe_lines) == 1, context
    probe = json.loads(probe_lines[0])
    assert probe["api_version"] == 12
    assert probe["vm_fd"] >= 0 and probe["vcpu_fd"] >= 0
    # Every exit was the guest's `out 0x10, al` with al = 42, as KVM decoded it in L2.
    assert probe["exits"] == 2000
    assert probe["distinct_writes"] == [probe["expected_write"]]

    assert marker in result.log, context
    assert "l3-qemu-status: 0" in result.log, context
    l3_seconds = float(result.log.split("l3-boot-seconds: ")[1].split()[0])
    print(
        f"\nL2 boot to command {result.boot_seconds:.1f}s, L2 exit round trip {probe['us_per_exit']} us, "
        f"L3 boot under QEMU/KVM {l3_seconds:.1f}s, whole L2 run {result.duration:.1f}s"
    )
