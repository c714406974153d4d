"""The command line's control options: --api-socket with a payload, --version under CH's name, mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from api.helpers import REPO, start_api_vmm, wait_for


def test_payload_with_api_socket_boots_at_once_and_serves_the_api(
    tmp_path: Path, guest: Callable[[str], Path]
) -> None:
    vmm = start_api_vmm(
        tmp_path, "--kernel", str(guest("ticker")), "--memory", "size=64M", "--cmdline", "period_ms=20"
    )
    try:
        wait_for(lambda: "tick 2" in (tmp_path / "stdout").read_text(), what="ticks")
        assert vmm.call("GET", "vm.info").json()["state"] == "Running"
        assert vmm.call("PUT", "vm.power-button").status == 204
        assert vmm.wait_exit() == 0
    finally:
        if vmm.proc.poll() is None:
            vmm.proc.kill()
    assert vmm.event_names()[:3] == ["vmm:starting", "vm:booting", "vm:booted"]


def test_version_as_cloud_hypervisor_claims_the_compatible_release(tmp_path: Path) -> None:
    link = tmp_path / "cloud-hypervisor"
    link.write_text(f"#!{sys.executable}\nimport sys\nfrom aovisor.cli.main import main\nsys.exit(main())\n")
    link.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [str(link), "--version"], capture_output=True, text=True, env=env, timeout=30, check=True
    )
    assert out.stdout.startswith("cloud-hypervisor v28.0.0 ")  # what libvirt's ch driver parses
    own = subprocess.run(
        [sys.executable, "-m", "aovisor", "--version"], capture_output=True, text=True, timeout=30
    )
    assert own.stdout.startswith("aovisor v")


def test_vm_options_without_kernel_in_api_mode_are_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aovisor", "--api-socket", str(tmp_path / "s"), "--cpus", "boot=2"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--cpus needs --kernel" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "aovisor", "--api-socket", "fd=abc"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--api-socket: fd" in proc.stderr
