"""Fixtures shared by all tests: the repository paths, guest programs, and running the `aovisor` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aovisor.image.builder import GuestImage
    from netns import NetNamespace

REPO = Path(__file__).resolve().parent.parent
GUEST_BUILD_DIR = REPO / "build" / "guests"
BACKENDS = ("kvm", "mshv")
BACKEND_DEVICES = {"kvm": "/dev/kvm", "mshv": "/dev/mshv"}


@pytest.fixture
def kernel(tmp_path: Path) -> str:
    """A file that passes the CLI's payload checks (it exists; it is not a bootable kernel)."""
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF" + bytes(60))
    return str(path)


@pytest.fixture(scope="session")
def guest() -> Callable[[str], Path]:
    """Build (cached) and return the path of a guest program from guests/ by name."""
    from guests.build import build_guest

    def get(name: str) -> Path:
        return build_guest(name, GUEST_BUILD_DIR)

    return get


@pytest.fixture(scope="session")
def default_guest_image() -> GuestImage:
    """The default Linux guest (``aovisor image build``), built on first use (a download the first time)."""
    from aovisor.image.builder import build_guest_image
    from aovisor.image.errors import ImageBuildError

    try:
        return build_guest_image()
    except ImageBuildError as error:
        pytest.fail(f"cannot build the default guest image: {error}", pytrace=False)


@pytest.fixture(scope="session")
def bzimage_guest() -> Path:
    from guests.build import build_bzimage_guest

    return build_bzimage_guest(GUEST_BUILD_DIR)


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    """A network namespace of the test's own (deleted afterwards), for TAPs that never touch the host's."""
    from netns import NetNamespace

    ns = NetNamespace()
    try:
        yield ns
    finally:
        ns.close()


def selected_backends() -> list[str]:
    wanted = os.environ.get("AOVISOR_HYPERVISOR")
    return [wanted] if wanted else list(BACKENDS)


@pytest.fixture(params=selected_backends())
def hypervisor(request: pytest.FixtureRequest) -> str:
    """Each hypervisor backend; KVM must exist (CI runs on it), MSHV is reported when absent."""
    name: str = request.param
    if not os.path.exists(BACKEND_DEVICES[name]):
        if name == "kvm":
            pytest.fail("/dev/kvm does not exist: the guest tests need KVM")
        pytest.skip(f"{name}: not available on this host ({BACKEND_DEVICES[name]} does not exist)")
    return name


def run_aovisor(
    args: list[str], *, timeout: float = 60, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m aovisor ARGS`` as a user would, with a hard timeout (a hung guest fails the test)."""
    return subprocess.run(
        [sys.executable, "-m", "aovisor", *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def host_model_name() -> str:
    """The host CPU's ``model name`` in /proc/cpuinfo: its CPUID brand string, as Linux trimmed it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    raise AssertionError("no model name in /proc/cpuinfo")
