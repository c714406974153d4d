"""aovisor-remote: ch-remote's commands against a live VMM, readable output and exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from api.helpers import (
    ApiVmm,
    api_vmm_fixture,  # noqa: F401  (the api_vmm fixture)
)


def remote(vmm_socket: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aovisor.cli.remote", "--api-socket", str(vmm_socket), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_remote_commands(api_vmm: ApiVmm, guest: Callable[[str], Path], tmp_path: Path) -> None:
    ping = remote(api_vmm.socket, "ping")
    assert ping.returncode == 0 and json.loads(ping.stdout)["pid"] == api_vmm.proc.pid

    refused = remote(api_vmm.socket, "boot")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "0: Server responded with 404 Not Found" in refused.stderr
    assert "cannot boot: no VM has been created" in refused.stderr

    config = {
        "payload": {"kernel": str(guest("ticker"))},
        "memory": {"size": 64 << 20},
        "serial": {"mode": "Null"},
    }
    assert remote(api_vmm.socket, "create", "-", stdin=json.dumps(config)).returncode == 0
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(65536))
    assert remote(api_vmm.socket, "add-disk", f"path={image},readonly=on,id=d0").returncode == 0
    assert remote(api_vmm.socket, "add-vsock", "cid=5,socket=/tmp/vs.sock").returncode == 0
    info = json.loads(remote(api_vmm.socket, "info").stdout)
    assert info["state"] == "Created" and info["config"]["disks"][0]["id"] == "d0"
    assert info["config"]["vsock"]["cid"] == 5

    bad = remote(api_vmm.socket, "add-disk", "readonly=on")
    assert bad.returncode == 2 and "path=PATH is required" in bad.stderr
    assert remote(api_vmm.socket, "delete").returncode == 0
    assert remote(api_vmm.socket, "shutdown-vmm").returncode == 0
    assert api_vmm.wait_exit() == 0
    gone = remote(api_vmm.socket, "ping")
    assert gone.returncode == 1 and "cannot connect" in gone.stderr
