"""Build (and cache) the default guest: Debian's cloud kernel and a busybox initramfs.

Cache: ``$AOVISOR_IMAGE_CACHE``, else ``~/.cache/aovisor/images/`` (``$XDG_CACHE_HOME`` is honoured), one
directory per key, a hash of every input (the kernel and busybox packages and their versions, the modules,
and this package's source)::

    <cache>/<key>/{vmlinuz, vmlinux, initramfs.cpio, manifest.json}

Asking apt for the versions takes about 2 s; the answer is memoized on the state of apt's configuration
and package lists, so finding a built image costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aovisor.image import debian
from aovisor.image.cache import Log, build_entry, cache_home, memoized
from aovisor.image.errors import ImageBuildError
from aovisor.image.initramfs import write_guest_initramfs
from aovisor.image.vmlinux import extract_vmlinux_file

# Loaded by /init in this order (each after its dependencies, which the build adds): the drivers of the
# virtio devices a VMM gives a guest (virtio_mmio finds the virtio-mmio windows the DSDT describes),
# /dev/nvram (CMOS RAM, which survives a guest reboot), and the ACPI power button with the evdev nodes
# acpid reads it from.  A module the kernel builds in is not in the package and is skipped.
GUEST_MODULES = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_rng",
    "nvram",
    "evdev",
    "button",
)
_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCES = (
    "builder.py",
    "cpio.py",
    "debian.py",
    "init_script.py",
    "initramfs.py",
    "modules.py",
    "vmlinux.py",
)
VMLINUZ, VMLINUX, INITRAMFS, MANIFEST = "vmlinuz", "vmlinux", "initramfs.cpio", "manifest.json"


@dataclass(frozen=True)
class GuestImage:
    """A built image (treat its files as read-only)."""

    directory: Path

    @property
    def vmlinuz(self) -> Path:
        """The kernel as Debian packages it: a bzImage."""
        return self.directory / VMLINUZ

    @property
    def vmlinux(self) -> Path:
        """The same kernel uncompressed: an ELF with a PVH entry note."""
        return self.directory / VMLINUX

    @property
    def initramfs(self) -> Path:
        return self.directory / INITRAMFS

    @property
    def manifest(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.directory / MANIFEST).read_text())
        return result

    @property
    def kernel_release(self) -> str:
        return str(self.manifest["kernel_release"])

    def export(self, destination: Path) -> GuestImage:
        """Copy (hard-link when possible) the kernel files and initramfs into ``destination``."""
        destination.mkdir(parents=True, exist_ok=True)
        for name in (VMLINUZ, VMLINUX, INITRAMFS, MANIFEST):
            target = destination / name
            temporary = destination / f".{name}.{os.getpid()}"
            try:
                os.link(self.directory / name, temporary)
            except OSError:
                shutil.copyfile(self.directory / name, temporary)
            os.replace(temporary, target)
        return GuestImage(destination)


def images_root() -> Path:
    explicit = os.environ.get("AOVISOR_IMAGE_CACHE")
    return Path(explicit) if explicit else cache_home() / "images"


def _stderr_log(message: str) -> None:
    print(f"aovisor image: {message}", file=sys.stderr, flush=True)


def build_guest_image(*, force: bool = False, log: Log = _stderr_log) -> GuestImage:
    """The cached default guest image, built first if needed (a few seconds, plus the download)."""
    root = images_root()
    try:
        inputs = resolve_inputs(log)
    except _NoKernelKnown:
        cached = _newest_cached(root)
        if cached is None or force:
            raise
        log(f"apt knows no cloud kernel (package lists missing?): using the cached {cached.directory}")
        return cached
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    entry = build_entry(
        root, key, lambda work: _build_into(work, inputs, log), done_file=MANIFEST, force=force, log=log
    )
    return GuestImage(entry)


class _NoKernelKnown(ImageBuildError):
    pass


def resolve_inputs(log: Log = _stderr_log) -> dict[str, Any]:
    """What the image is built from: the kernel package and the versions apt would fetch."""
    sources = sources_digest(_PACKAGE_DIR / name for name in _SOURCES)

    def ask_apt() -> dict[str, Any]:
        package = debian.kernel_package()
        if package is None and os.geteuid() == 0:
            log("apt knows no cloud kernel: running apt-get update")
            debian.update_package_lists()
            package = debian.kernel_package()
        if package is None:
            raise _NoKernelKnown(
                f"apt knows none of {', '.join(debian.KERNEL_META_PACKAGES)}: {debian.APT_HINT}"
            )
        versions = debian.candidate_versions([package, debian.BUSYBOX_PACKAGE])
        return {
            "kernel_package": package,
            "versions": versions,
            "modules": list(GUEST_MODULES),
            "sources": sources,
        }

    return memoized(images_root() / "inputs-memo.json", debian.apt_state_fingerprint(sources), ask_apt)


def sources_digest(paths: Iterable[Path]) -> str:
    """A hash of the files' names and contents (what a cache key owes to the code that builds)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _build_into(work: Path, inputs: dict[str, Any], log: Log) -> None:
    started = time.monotonic()
    package = inputs["kernel_package"]
    log(f"building the default guest image from {package} in {work}")
    scratch = work / "scratch"
    unpacked = debian.fetch_kernel_and_busybox(package, scratch)
    shutil.copyfile(unpacked.vmlinuz, work / VMLINUZ)
    extract_vmlinux_file(work / VMLINUZ, work / VMLINUX)
    wanted = [name for name in GUEST_MODULES if name in unpacked.modules]
    modules = unpacked.modules.with_dependencies(wanted)
    write_guest_initramfs(work / INITRAMFS, busybox=unpacked.busybox.read_bytes(), modules=modules)
    shutil.rmtree(scratch)
    manifest = {
        "inputs": inputs,
        "kernel_release": unpacked.release,
        "modules": [module.name for module in modules],
        "modules_not_found": [name for name in GUEST_MODULES if name not in wanted],
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"built in {manifest['build_seconds']}s")


def _newest_cached(root: Path) -> GuestImage | None:
    built = sorted(root.glob(f"*/{MANIFEST}"), key=lambda path: path.stat().st_mtime)
    return GuestImage(built[-1].parent) if built else None
