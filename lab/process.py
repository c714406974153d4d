"""Running host tools with failures that say what went wrong."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.errors import LabBuildError, LabError


def run_checked(command: list[str], *, cwd: Path | None = None, error: type[LabError] = LabBuildError) -> str:
    """Run `command`; return its stdout, or raise `error` with the tail of its output."""
    try:
        completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise error(f"cannot run {command[0]}: {exc}") from exc
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr)[-3000:]
        raise error(f"{' '.join(command)} failed with status {completed.returncode}:\n{output}")
    return completed.stdout
