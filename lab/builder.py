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

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.apt_source import debian_mirror, host_codename
from lab.errors import LabBuildError
from lab.initramfs import write_initramfs
from lab.kernel_image import extract_vmlinux
from lab.kernel_modules import ModuleTree
from lab.process import run_checked
from lab.root_image import ROOT_PACKAGES, build_root_image

LAB_DIR = Path(__file__).resolve().parent

# The kernel for L2 (and the reference L3): the newest 6.12 cloud kernel, else the release's default one.
KERNEL_META_PACKAGES = ("linux-image-6.12-cloud-amd64", "linux-image-cloud-amd64")
BUSYBOX_PACKAGE = "busybox-static"
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
ROOT_SOURCES = ("root_image.py", "ext4.py", "kernel_modules.py", "process.py")
BOOT_SOURCES = (
    "builder.py",
    "apt_source.py",
    "cpio.py",
    "initramfs.py",
    "kernel_image.py",
    "l2/initramfs_init.sh",
    "l2/lab_init.sh",
    "l2/fstab",
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
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aovisor" / "lab"


def build(*, log: Log = _stderr_log, force: bool = False) -> LabArtifacts:
    """The cached lab images for the current inputs, built first if needed (about 80 s from scratch)."""
    check_host()
    inputs = resolve_inputs()
    root = cache_root()
    final = root / inputs.key()
    if (final / "manifest.json").is_file() and not force:
        return LabArtifacts(final)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_cache_lock(log):
        if (final / "manifest.json").is_file() and not force:
            return LabArtifacts(final)
        for stale in [*root.glob(".build-*"), *root.glob("roots/.build-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a build that died: we hold the lock
        work = root / f".build-{inputs.key()}"
        work.mkdir()
        try:
            _build_into(work, inputs, root, force=force, log=log)
            if final.exists():
                shutil.rmtree(final)
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return LabArtifacts(final)


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
    root_digest = _sources_digest(ROOT_SOURCES)
    boot_digest = _sources_digest(BOOT_SOURCES)
    fingerprint = _apt_state_fingerprint(root_digest + boot_digest)
    memo = cache_root() / "inputs-memo.json"
    try:
        remembered = json.loads(memo.read_text())
        if remembered["fingerprint"] == fingerprint:
            return BuildInputs(**remembered["inputs"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    codename = host_codename()
    mirror = debian_mirror(codename)
    kernel_package = _kernel_package()
    packages = [kernel_package, BUSYBOX_PACKAGE, *ROOT_PACKAGES]
    shown = _apt_show(packages)
    missing = [package for package in packages if "Version" not in shown.get(package, {})]
    if missing:
        raise LabBuildError(f"apt has no candidate for {', '.join(missing)}: run 'apt-get update'")
    versions = {package: shown[package]["Version"] for package in packages}
    inputs = BuildInputs(
        codename, mirror.uri, mirror.signed_by, kernel_package, versions, root_digest, boot_digest
    )
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        temporary = memo.with_name(f".{memo.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"fingerprint": fingerprint, "inputs": asdict(inputs)}))
        os.replace(temporary, memo)
    except OSError:
        pass  # the memo only saves time
    return inputs


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sources_digest(names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (LAB_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _apt_state_fingerprint(salt: str) -> str:
    """Changes whenever apt's configuration or package lists (`apt-get update`) change."""
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


def _kernel_package() -> str:
    shown = _apt_show(list(KERNEL_META_PACKAGES))
    for meta in KERNEL_META_PACKAGES:
        for alternative in shown.get(meta, {}).get("Depends", "").split(","):
            name = alternative.split("|")[0].split("(")[0].strip()
            if name.startswith("linux-image-"):
                return name
    raise LabBuildError(
        f"apt knows none of {', '.join(KERNEL_META_PACKAGES)}: run 'apt-get update' "
        "(with the Debian archive and its -security suite in the apt sources)"
    )


def _apt_show(packages: list[str]) -> dict[str, dict[str, str]]:
    """Control fields of the candidate version of each package apt knows (one apt-cache call)."""
    import subprocess

    completed = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages], capture_output=True, text=True, check=False
    )
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


@contextmanager
def exclusive_cache_lock(log: Log = _stderr_log) -> Iterator[None]:
    """Held while the cache changes: by a build, or by pruning."""
    path = cache_root() / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another lab build to finish (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    debs = scratch / "debs"
    debs.mkdir(parents=True)
    run_checked(
        [
            "apt-get",
            "download",
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            inputs.kernel_package,
            BUSYBOX_PACKAGE,
        ],
        cwd=debs,
    )
    kernel_tree = scratch / "kernel"
    busybox_tree = scratch / "busybox"
    run_checked(["dpkg-deb", "-x", str(_one(debs.glob("linux-image-*.deb"))), str(kernel_tree)])
    run_checked(["dpkg-deb", "-x", str(_one(debs.glob(f"{BUSYBOX_PACKAGE}_*.deb"))), str(busybox_tree)])
    release_dir = _one((kernel_tree / "lib" / "modules").iterdir())
    release = release_dir.name
    shutil.copyfile(_one((kernel_tree / "boot").glob("vmlinuz-*")), work / "vmlinuz")
    shutil.copyfile(_one((kernel_tree / "boot").glob("config-*")), work / "config")
    extract_vmlinux(work / "vmlinuz", work / "vmlinux")
    step("kernel")

    modules = ModuleTree(release_dir / "kernel")
    boot_modules = modules.with_dependencies(list(BOOT_MODULES))
    shutil.copyfile(busybox_tree / "bin" / "busybox", work / "busybox")
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


def _one(paths: Iterator[Path]) -> Path:
    found = list(paths)
    if len(found) != 1:
        raise LabBuildError(f"expected exactly one match, found {[str(path) for path in found]}")
    return found[0]
