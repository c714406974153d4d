"""The L2 root file system: Debian minbase by debootstrap, plus Python, QEMU and the kernel's modules."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from aovisor.image.modules import ModuleTree
from aovisor.image.tools import run_tool
from lab.errors import LabBuildError
from lab.ext4 import make_ext4, tree_bytes

# Beyond debootstrap's minbase. python3 (not just python3-minimal): the VMM needs ctypes.  python3-h11:
# the REST API's HTTP/1.1 (the VMM's one runtime dependency).  python3-pyelftools: for the tests' ELF
# cross-checks.  qemu-system-x86: the L2-side reference VMM.
ROOT_PACKAGES = (
    "python3",
    "python3-h11",
    "python3-pyelftools",
    "kmod",
    "e2fsprogs",
    "busybox",
    "iproute2",
    "qemu-system-x86",
)
# Spare room for whatever a command writes to the root (the image file itself stays sparse).
ROOT_FREE_MIB = 1024
# Removed: documentation, translations, apt's package lists and caches.
ROOT_PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bash-completion",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf",
    "var/log",
)
MOUNT_POINTS = ("work", "lab", "dev/pts", "dev/shm")


def build_root_image(
    image: Path,
    *,
    scratch: Path,
    codename: str,
    mirror: str,
    keyring: str | None,
    deb_cache: Path,
    kernel_release: str,
    modules: ModuleTree,
    module_names: list[str],
    log: Callable[[str], None],
) -> int:
    """Build the root image at `image`; return the bytes its files use."""
    rootfs = scratch / "rootfs"
    deb_cache.mkdir(parents=True, exist_ok=True)
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={deb_cache.resolve()}",  # keeps the downloaded .debs for the next build
        f"--include={','.join(ROOT_PACKAGES)}",
    ]
    if keyring:
        command.append(f"--keyring={keyring}")
    command += [codename, str(rootfs), mirror]
    log(f"debootstrap {codename} from {mirror} (about a minute)")
    try:
        run_tool(command, error=LabBuildError)
    except LabBuildError as error:
        debootstrap_log = rootfs / "debootstrap" / "debootstrap.log"
        tail = debootstrap_log.read_text(errors="replace")[-3000:] if debootstrap_log.exists() else ""
        raise LabBuildError(f"{error}\n--- debootstrap.log (tail) ---\n{tail}") from error

    for relative in ROOT_PRUNE:
        target = rootfs / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    for mount_point in MOUNT_POINTS:
        (rootfs / mount_point).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "hostname").write_text("lab-l2\n")
    # Uncompressed modules with modules.dep from the image's own depmod, so that `modprobe` works in L2
    # (e.g. `modprobe -r kvm_amd; modprobe kvm_amd nested=0`).
    module_dir = rootfs / "lib" / "modules" / kernel_release / "kernel"
    for module in modules.with_dependencies(module_names):
        path = module_dir / module.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(module.image)
    run_tool(["chroot", str(rootfs), "depmod", kernel_release], error=LabBuildError)

    used = tree_bytes(rootfs)
    make_ext4(image, used + used // 4 + ROOT_FREE_MIB * 2**20, source=rootfs, label="lab-root")
    shutil.rmtree(rootfs)
    return used
