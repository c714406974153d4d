"""Build (and cache) the L2 images of the nested lab: kernel, initramfs, root file system image.

The cache lives outside the repository, in `cache_root()`, keyed by hashes of every input: the host's
Debian release and mirror, the candidate versions of the packages that go in, and the source of the build
code itself. The root image (the slow part: debootstrap) has its own key, over only what shapes it, so
changing the boot scripts rebuilds the initramfs in a second and reuses the root image:

    <cache>/roots/<root key>/root.ext4
    <cache>/<key>/{vmlinuz,vmlinux,config,initramfs.cpio,root.ext4 (hard link),manifest.json}

Every entry is built in a temporary directory and renamed into place, under an exclusive lock, so an
interrupted build leaves nothing half-made behind and two builds never race.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from aovisor.image import builder as image_builder
from aovisor.image import debian
from aovisor.image.cache import build_entry, cache_home, exclusive_lock, memoized
from aovisor.image.errors import ImageBuildError
from aovisor.image.vmlinux import extract_vmlinux_file
from lab.apt_source import debian_mirror, host_codename
from lab.errors import LabBuildError
from lab.initramfs import write_initramfs
from lab.root_image import ROOT_PACKAGES, build_root_image

LAB_DIR = Path(__file__).resolve().parent
IMAGE_DIR = Path(image_builder.__file__).resolve().parent

# The kernel for L2 and L3 is the default guest's (aovisor.image.debian): the newest 6.12 cloud kernel.
BUSYBOX_PACKAGE = debian.BUSYBOX_PACKAGE
# Loaded by the initramfs (after their dependencies), with these parameters: the disks.
BOOT_MODULES = {"virtio_blk": ""}
# On the root image, uncompressed and with modules.dep, for `modprobe` in L2. /sbin/lab-init loads kvm_amd
# (TCG's `-cpu max` emulates AMD SVM with nested paging; it does not emulate VMX) while it mounts the disks:
# loading it takes L2 about 2 s, and overlapping it with the rest of the boot saves part of that.
ROOT_MODULES = (
    "virtio_blk",
    "kvm_amd",
    "virtio_net",
    "virtio_rng",
    "tun",
    "vhost_net",
    "vhost_vsock",
    "vmw_vsock_virtio_transport",
)
HOST_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "zstd": "zstd",
    "qemu-system-x86_64": "qemu-system-x86",
}
# Debian packages the host needs for building and running the lab.
HOST_PACKAGES = tuple(sorted(set(HOST_TOOLS.values())))
# The code that shapes the root image and the rest (the product's image modules fetch, unpack, extract).
ROOT_SOURCES = (
    LAB_DIR / "root_image.py",
    LAB_DIR / "ext4.py",
    IMAGE_DIR / "modules.py",
    IMAGE_DIR / "tools.py",
)
BOOT_SOURCES = (
    *(LAB_DIR / name for name in ("builder.py", "apt_source.py", "initramfs.py")),
    *(LAB_DIR / "l2" / name for name in ("initramfs_init.sh", "lab_init.sh", "fstab")),
    *(IMAGE_DIR / name for name in ("debian.py", "cpio.py", "vmlinux.py")),
)

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuildInputs:
    """Everything a build depends on; hashes of it name the cache directories."""

    codename: str
    mirror: str
    keyring: str | None
    kernel_package: str
    package_versions: dict[str, str]
    root_source_digest: str
    boot_source_digest: str

    def root_key(self) -> str:
        root_versions = {name: self.package_versions[name] for name in (*ROOT_PACKAGES, self.kernel_package)}
        shaping = [
            self.codename,
            self.mirror,
            self.keyring,
            root_versions,
            ROOT_MODULES,
            self.root_source_digest,
        ]
        return _digest(json.dumps(shaping, sort_keys=True).encode())[:16]

    def key(self) -> str:
        return _digest(json.dumps(asdict(self), sort_keys=True).encode())[:16]


@dataclass(frozen=True)
class LabArtifacts:
    """A finished build: the files L2 boots from (treat them as read-only)."""

    directory: Path

    @property
    def vmlinuz(self) -> Path:
        """The Debian cloud kernel as packaged (bzImage)."""
        return self.directory / "vmlinuz"

    @property
    def vmlinux(self) -> Path:
        """The same kernel uncompressed: an ELF with a PVH entry note, booted without decompression."""
        return self.directory / "vmlinux"

    @property
    def busybox(self) -> Path:
        """The static busybox of the L2 initramfs (Debian's busybox-static)."""
        return self.directory / "busybox"

    @property
    def config(self) -> Path:
        return self.directory / "config"

    @property
    def initramfs(self) -> Path:
        return self.directory / "initramfs.cpio"

    @property
    def root_image(self) -> Path:
        """ext4 image of the L2 root file system; boot it copy-on-write so that it stays pristine."""
        return self.directory / "root.ext4"

    @property
    def manifest(self) -> dict[str, object]:
        result: dict[str, object] = json.loads((self.directory / "manifest.json").read_text())
        return result

    @property
    def kernel_release(self) -> str:
        return str(self.manifest["kernel_release"])


def cache_root() -> Path:
    """`$AOVISOR_LAB_CACHE`, else `$XDG_CACHE_HOME/aovisor/lab`, else `~/.cache/aovisor/lab`."""
    explicit = os.environ.get("AOVISOR_LAB_CACHE")
    return Path(explicit) if explicit else cache_home() / "lab"


def build(*, log: Log = _stderr_log, force: bool = False) -> LabArtifacts:
    """The cached lab images for the current inputs, built first if needed (about 80 s from scratch)."""
    try:
        return _build(log=log, force=force)
    except ImageBuildError as error:  # from the product's image code: the lab's callers expect lab errors
        raise LabBuildError(str(error)) from error


def _build(*, log: Log, force: bool) -> LabArtifacts:
    check_host()
    inputs = resolve_inputs()
    root = cache_root()
    entry = build_entry(
        root,
        inputs.key(),
        lambda work: _build_into(work, inputs, root, force=force, log=log),
        done_file="manifest.json",
        force=force,
        log=log,
        stale=(".build-*", "roots/.build-*"),
    )
    return LabArtifacts(entry)


def check_host() -> None:
    """Fail with what to install when a tool the lab needs is missing."""
    missing = sorted({package for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabBuildError(
            "the nested lab needs Debian packages that are not installed: "
            f"apt-get install {' '.join(missing)}"
        )
    if os.geteuid() != 0:
        raise LabBuildError("building the lab needs root (debootstrap and chroot)")


def resolve_inputs() -> BuildInputs:
    """The build inputs; asks apt (about 2 s) only when its configuration or lists or the lab changed."""
    root_digest = image_builder.sources_digest(ROOT_SOURCES)
    boot_digest = image_builder.sources_digest(BOOT_SOURCES)

    def ask_apt() -> dict[str, object]:
        codename = host_codename()
        mirror = debian_mirror(codename)
        kernel_package = debian.kernel_package()
        if kernel_package is None:
            raise LabBuildError(
                f"apt knows none of {', '.join(debian.KERNEL_META_PACKAGES)}: {debian.APT_HINT}"
            )
        versions = debian.candidate_versions([kernel_package, BUSYBOX_PACKAGE, *ROOT_PACKAGES])
        inputs = BuildInputs(
            codename, mirror.uri, mirror.signed_by, kernel_package, versions, root_digest, boot_digest
        )
        return asdict(inputs)

    fingerprint = debian.apt_state_fingerprint(root_digest + boot_digest)
    return BuildInputs(**memoized(cache_root() / "inputs-memo.json", fingerprint, ask_apt))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def exclusive_cache_lock(log: Log = _stderr_log) -> Iterator[None]:
    """Held while the cache changes: by a build, or by pruning."""
    with exclusive_lock(cache_root() / ".lock", log):
        yield


def _build_into(work: Path, inputs: BuildInputs, cache: Path, *, force: bool, log: Log) -> None:
    started = last = time.monotonic()
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        timings[name] = round(now - last, 1)
        log(f"build: {name} {now - last:.1f}s")
        last = now

    log(f"building lab images (kernel {inputs.kernel_package}, {inputs.codename}) in {work}")
    scratch = work / "scratch"
    unpacked = debian.fetch_kernel_and_busybox(inputs.kernel_package, scratch)
    release = unpacked.release
    shutil.copyfile(unpacked.vmlinuz, work / "vmlinuz")
    shutil.copyfile(unpacked.config, work / "config")
    extract_vmlinux_file(work / "vmlinuz", work / "vmlinux")
    step("kernel")

    modules = unpacked.modules
    boot_modules = modules.with_dependencies(list(BOOT_MODULES))
    shutil.copyfile(unpacked.busybox, work / "busybox")
    (work / "busybox").chmod(0o755)
    write_initramfs(
        work / "initramfs.cpio",
        busybox=(work / "busybox").read_bytes(),
        modules=boot_modules,
        module_params=BOOT_MODULES,
    )
    step("initramfs")

    root_entry = cache / "roots" / inputs.root_key()
    if force or not (root_entry / "root.ext4").is_file():
        root_work = cache / "roots" / f".build-{inputs.root_key()}"
        root_work.mkdir(parents=True)
        try:
            used = build_root_image(
                root_work / "root.ext4",
                scratch=scratch,
                codename=inputs.codename,
                mirror=inputs.mirror,
                keyring=inputs.keyring,
                deb_cache=cache / "debs",
                kernel_release=release,
                modules=modules,
                module_names=list(ROOT_MODULES),
                log=log,
            )
            (root_work / "used-bytes").write_text(f"{used}\n")
            if root_entry.exists():
                shutil.rmtree(root_entry)
            os.rename(root_work, root_entry)
        finally:
            shutil.rmtree(root_work, ignore_errors=True)
        step("root image")
    os.link(root_entry / "root.ext4", work / "root.ext4")

    shutil.rmtree(scratch)
    manifest = {
        "inputs": asdict(inputs),
        "root_key": inputs.root_key(),
        "kernel_release": release,
        "boot_modules": [module.name for module in boot_modules],
        "root_used_bytes": int((root_entry / "used-bytes").read_text()),
        "build_seconds": round(time.monotonic() - started, 1),
        "step_seconds": timings,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"build done in {manifest['build_seconds']}s")
