"""Fixtures for the nested-lab tests: the lab package (at the repo root) and its cached build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lab import LabArtifacts, LabBuildError, build  # noqa: E402  (needs the path above)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: boots the nested lab (L2 under QEMU/TCG); minutes, not seconds")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def lab_artifacts() -> LabArtifacts:
    """The lab images; a machine that cannot build them fails here, loudly (the message says why)."""
    try:
        return build()
    except LabBuildError as error:
        pytest.fail(f"cannot build the nested lab: {error}", pytrace=False)
