"""A real Linux kernel for tests: Debian's cloud kernel, downloaded once and cached outside the repository.

``debian_cloud_kernel()`` returns the path of the ``vmlinuz`` (a bzImage) from Debian's
``linux-image-<version>-cloud-amd64`` package, resolved through the newest cloud meta-package apt knows
(6.12 from bookworm's security/backports archive when present, else the stable one).  The package is
fetched with ``apt-get download`` and only ``/boot/vmlinuz-*`` is taken out of it.
``extract_vmlinux()`` unpacks the ELF ``vmlinux`` that the bzImage carries as its compressed payload.

Cache: ``$AOVISOR_KERNEL_CACHE`` or ``~/.cache/aovisor/kernels/<package>/``.  Failures raise
``KernelCacheError`` with a message that says what to do; tests turn it into a failure, never a skip.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Preferred first.  Each is a meta-package that depends on exactly one versioned kernel package.
META_PACKAGES = ("linux-image-6.12-cloud-amd64", "linux-image-cloud-amd64")


class KernelCacheError(RuntimeError):
    pass


def cache_root() -> Path:
    override = os.environ.get("AOVISOR_KERNEL_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "aovisor" / "kernels"


@functools.cache
def debian_cloud_kernel() -> Path:
    """Path of a cached Debian cloud-amd64 ``vmlinuz``, downloading it on first use."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        package = _resolve_kernel_package()
        if package is None and os.geteuid() == 0:
            # A fresh machine may have no package lists yet; as root we can fetch them (as `make sysdeps`).
            _run(["apt-get", "update", "-qq"], b"", "check access to the Debian archive")
            package = _resolve_kernel_package()
        if package is None:
            cached = sorted(root.glob("*/vmlinuz-*"))
            if cached:  # apt knows no kernel (lists not updated?), but an earlier download is here
                return cached[-1]
            raise KernelCacheError(
                f"apt knows none of {', '.join(META_PACKAGES)}: run 'apt-get update' (Debian bookworm "
                "or newer is needed) so that the test kernel can be downloaded"
            )
        target = root / package
        found = sorted(target.glob("vmlinuz-*"))
        if found:
            return found[-1]
        return _download(package, target)


def extract_vmlinux(bzimage: Path) -> Path:
    """The ELF ``vmlinux`` inside ``bzimage`` (cached beside it as ``vmlinux-<version>``)."""
    out = bzimage.with_name(bzimage.name.replace("vmlinuz", "vmlinux", 1))
    if out == bzimage:
        out = bzimage.with_name(bzimage.name + ".vmlinux")
    with _locked(bzimage.parent):
        if out.exists():
            return out
        data = bzimage.read_bytes()
        setup_sects = data[0x1F1] or 4
        payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
        start = (setup_sects + 1) * 512 + payload_offset
        payload = data[start : start + payload_length]
        # arch/x86/boot/compressed/Makefile appends the uncompressed size (4 bytes, LE) to the payload.
        compressed, expected_size = payload[:-4], struct.unpack("<I", payload[-4:])[0]
        if compressed[:4] == b"\x28\xb5\x2f\xfd":
            raw = _run(["zstd", "-d", "-q", "-c"], compressed, "install the zstd package")
        elif compressed[:2] in (b"\x1f\x8b", b"\x1f\x9e"):
            import gzip

            raw = gzip.decompress(compressed)
        elif compressed[:2] == b"\xfd\x37":
            import lzma

            raw = lzma.decompress(compressed)
        else:
            raise KernelCacheError(f"{bzimage}: unsupported payload compression {compressed[:4].hex()}")
        if len(raw) != expected_size or raw[:4] != b"\x7fELF":
            raise KernelCacheError(f"{bzimage}: payload did not decompress to the announced ELF vmlinux")
        _atomic_write(out, raw)
        return out


def _resolve_kernel_package() -> str | None:
    for meta in META_PACKAGES:
        try:
            out = subprocess.run(
                ["apt-cache", "depends", meta], capture_output=True, text=True, check=False
            ).stdout
        except FileNotFoundError as exc:
            raise KernelCacheError(
                "apt-cache not found: the test kernel comes from Debian's archive"
            ) from exc
        for line in out.splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "Depends" and value.startswith("linux-image-") and "cloud-amd64" in value:
                return value.strip()
    return None


def _download(package: str, target: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        # Sandbox user root: the work dir is not readable by apt's usual '_apt' download user.
        _run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
            b"",
            "check network access to the Debian archive and run 'apt-get update'",
            cwd=work,
        )
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise KernelCacheError(f"apt-get download {package} produced {len(debs)} .deb files, not one")
        extracted = work / "out"
        extracted.mkdir()
        vmlinuz = _extract_vmlinuz(debs[0], extracted)
        target.mkdir(exist_ok=True)
        final = target / vmlinuz.name
        os.replace(vmlinuz, final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract_vmlinuz(deb: Path, into: Path) -> Path:
    """Stream the package's data archive through ``dpkg-deb --fsys-tarfile`` and keep /boot/vmlinuz-*."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        found: Path | None = None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isfile() and name.startswith("boot/vmlinuz-") and "/" not in name[5:]:
                    source = tar.extractfile(member)
                    assert source is not None
                    found = into / name[5:]
                    with found.open("wb") as dest:
                        shutil.copyfileobj(source, dest)
        if proc.wait() != 0:
            raise KernelCacheError(f"dpkg-deb --fsys-tarfile {deb} failed")
    if found is None:
        raise KernelCacheError(f"{deb} contains no /boot/vmlinuz-*")
    return found


def _run(cmd: list[str], stdin: bytes, hint: str, cwd: Path | None = None) -> bytes:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, cwd=cwd, check=False)
    except FileNotFoundError as exc:
        raise KernelCacheError(f"{cmd[0]} not found: {hint}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise KernelCacheError(f"{' '.join(cmd)} failed ({err}); {hint}")
    return proc.stdout


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise concurrent test processes on one cache directory."""
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
