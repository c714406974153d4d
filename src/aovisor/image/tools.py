"""Running the host tools the image builder needs (apt-get, dpkg-deb, zstd), with errors that say why."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aovisor.image.errors import ImageBuildError


def run_tool(
    command: list[str],
    *,
    cwd: Path | None = None,
    input: bytes | None = None,
    hint: str = "",
    error: type[Exception] = ImageBuildError,
) -> bytes:
    """Run ``command`` and return its stdout; raise ``error`` with the tail of its output (and ``hint``,
    what the user can do about it) when it cannot be started or fails."""
    try:
        completed = subprocess.run(command, cwd=cwd, input=input, capture_output=True, check=False)
    except OSError as exc:
        raise error(f"cannot run {command[0]}: {exc.strerror or exc}{f' ({hint})' if hint else ''}") from exc
    if completed.returncode != 0:
        output = (completed.stdout[-1500:] + completed.stderr[-1500:]).decode(errors="replace").strip()
        suffix = f"\n{hint}" if hint else ""
        raise error(f"{' '.join(command)} failed with status {completed.returncode}:\n{output}{suffix}")
    return completed.stdout
