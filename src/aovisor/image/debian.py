"""Debian packages through the host's apt: which cloud kernel is newest, and fetching and unpacking .debs.

The kernel is the newest ``linux-image-6.12.*-cloud-amd64`` that apt knows, found through the meta package
that depends on it (bookworm-security carries 6.12 for bookworm); the release's own cloud kernel (6.1) is the
fallback.  ``apt-get download`` needs no root; the packages are unpacked with ``dpkg-deb -x``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from aovisor.image.errors import ImageBuildError
from aovisor.image.modules import ModuleTree
from aovisor.image.tools import run_tool

# Preferred first; each depends on exactly one versioned kernel package.
KERNEL_META_PACKAGES = ("linux-image-6.12-cloud-amd64", "linux-image-cloud-amd64")
BUSYBOX_PACKAGE = "busybox-static"
APT_HINT = "run 'apt-get update' (Debian bookworm or newer, with its -security suite in the apt sources)"


def apt_show(packages: list[str]) -> dict[str, dict[str, str]]:
    """The control fields of the candidate version of each package apt knows (one ``apt-cache`` call)."""
    try:
        completed = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", *packages], capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise ImageBuildError(
            f"cannot run apt-cache ({exc.strerror}): the guest kernel comes from Debian"
        ) from exc
    result: dict[str, dict[str, str]] = {}
    for stanza in completed.stdout.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            result.setdefault(fields["Package"], fields)
    return result


def kernel_package() -> str | None:
    """The versioned cloud kernel package of the first meta package apt knows, e.g.
    ``linux-image-6.12.117+deb12-cloud-amd64``; None when apt knows none (package lists missing)."""
    shown = apt_show(list(KERNEL_META_PACKAGES))
    for meta in KERNEL_META_PACKAGES:
        for alternative in shown.get(meta, {}).get("Depends", "").split(","):
            name = alternative.split("|")[0].split("(")[0].strip()
            if name.startswith("linux-image-"):
                return name
    return None


def candidate_versions(packages: list[str]) -> dict[str, str]:
    """The version apt would fetch of each package; raises when apt has no candidate for one."""
    shown = apt_show(packages)
    missing = [package for package in packages if "Version" not in shown.get(package, {})]
    if missing:
        raise ImageBuildError(f"apt has no candidate for {', '.join(missing)}: {APT_HINT}")
    return {package: shown[package]["Version"] for package in packages}


def apt_state_fingerprint(salt: str) -> str:
    """Changes whenever apt's configuration or package lists change (``apt-get update``): what a memo of
    apt's answers is valid for."""
    digest = hashlib.sha256(salt.encode())
    for path in sorted([*Path("/etc/apt").rglob("*"), *Path("/var/lib/apt/lists").glob("*")]):
        try:
            info = path.stat()
        except OSError:
            continue
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    with suppress(OSError):
        digest.update(Path("/etc/os-release").read_bytes())
    return digest.hexdigest()


def update_package_lists() -> None:
    """``apt-get update`` (root only): a fresh machine may have no package lists yet."""
    run_tool(["apt-get", "update", "-qq"], hint=f"check access to the Debian archive; {APT_HINT}")


def download(packages: list[str], into: Path) -> dict[str, Path]:
    """``apt-get download`` the candidate of each package into ``into``; the .deb of each package."""
    into.mkdir(parents=True, exist_ok=True)
    # As root, apt drops to the '_apt' user to download, which may not write here: keep root.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    run_tool(
        ["apt-get", "download", "-q", *sandbox, *packages],
        cwd=into,
        hint=f"check network access to the Debian archive; {APT_HINT}",
    )
    debs: dict[str, Path] = {}
    for package in packages:
        found = sorted(into.glob(f"{package}_*.deb"))
        if len(found) != 1:
            raise ImageBuildError(f"apt-get download {package} left {len(found)} .deb files, not one")
        debs[package] = found[0]
    return debs


def unpack(deb: Path, into: Path) -> None:
    """Unpack the files of ``deb`` below ``into`` (no maintainer scripts run)."""
    run_tool(["dpkg-deb", "-x", str(deb), str(into)], hint="install Debian's dpkg package")


@dataclass(frozen=True)
class UnpackedKernel:
    """A Debian kernel package and busybox-static, unpacked: what a guest image is made of."""

    release: str
    """``uname -r`` of the kernel, e.g. ``6.12.117+deb12-cloud-amd64``."""
    vmlinuz: Path
    config: Path
    modules: ModuleTree
    busybox: Path


def fetch_kernel_and_busybox(kernel: str, scratch: Path) -> UnpackedKernel:
    """Download the kernel package ``kernel`` and busybox-static, and unpack both below ``scratch``."""
    debs = download([kernel, BUSYBOX_PACKAGE], scratch / "debs")
    kernel_tree, busybox_tree = scratch / "kernel", scratch / "busybox"
    unpack(debs[kernel], kernel_tree)
    unpack(debs[BUSYBOX_PACKAGE], busybox_tree)
    release_dir = _one(list((kernel_tree / "lib" / "modules").iterdir()), f"{kernel}: lib/modules/*")
    return UnpackedKernel(
        release=release_dir.name,
        vmlinuz=_one(sorted((kernel_tree / "boot").glob("vmlinuz-*")), f"{kernel}: /boot/vmlinuz-*"),
        config=_one(sorted((kernel_tree / "boot").glob("config-*")), f"{kernel}: /boot/config-*"),
        modules=ModuleTree(release_dir / "kernel"),
        busybox=busybox_tree / "bin" / "busybox",
    )


def _one(paths: list[Path], what: str) -> Path:
    if len(paths) != 1:
        raise ImageBuildError(f"expected exactly one {what}, found {[str(path) for path in paths]}")
    return paths[0]
