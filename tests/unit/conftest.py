"""Fixtures of the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def kernel(tmp_path: Path) -> str:
    """A file that passes the CLI's payload checks (it exists; it is not a bootable kernel)."""
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF" + bytes(60))
    return str(path)
