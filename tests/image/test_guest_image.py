"""`aovisor image build`: the default guest (Debian's cloud kernel + busybox initramfs), built and cached."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aovisor.image.builder import GUEST_MODULES, GuestImage, build_guest_image
from aovisor.image.init_script import INIT_SCRIPT
from conftest import REPO, run_aovisor
from newc import read_newc


@pytest.fixture(scope="module")
def image(default_guest_image: GuestImage) -> GuestImage:
    return default_guest_image


def test_build_prints_the_three_files_copied_into_the_output_directory(
    image: GuestImage, tmp_path: Path
) -> None:
    result = run_aovisor(["image", "build", "--output", str(tmp_path / "out")], timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    printed = dict(line.split(" ", 1) for line in result.stdout.decode().splitlines())
    assert printed == {
        "vmlinuz": str(tmp_path / "out" / "vmlinuz"),
        "vmlinux": str(tmp_path / "out" / "vmlinux"),
        "initramfs": str(tmp_path / "out" / "initramfs.cpio"),
    }
    for name, path in printed.items():
        original = {"vmlinuz": image.vmlinuz, "vmlinux": image.vmlinux, "initramfs": image.initramfs}[name]
        assert Path(path).read_bytes() == original.read_bytes()


XEN_ELFNOTE_PHYS32_ENTRY = 18


def test_kernel_files_are_a_bzimage_and_its_pvh_elf(image: GuestImage) -> None:
    from elftools.elf.elffile import ELFFile

    assert image.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"
    assert image.kernel_release.endswith("-cloud-amd64")
    with image.vmlinux.open("rb") as f:
        notes = [
            (note["n_name"], note["n_type"])
            for segment in ELFFile(f).iter_segments()
            if segment.header.p_type == "PT_NOTE"
            for note in segment.iter_notes()
        ]
    assert ("Xen", XEN_ELFNOTE_PHYS32_ENTRY) in notes


def test_initramfs_has_init_and_the_virtio_modules_after_their_dependencies(image: GuestImage) -> None:
    entries = {entry.name: entry for entry in read_newc(image.initramfs.read_bytes())}
    assert entries["init"].data.decode() == INIT_SCRIPT
    assert entries["bin/busybox"].data.startswith(b"\x7fELF")
    order = entries["lib/modules/load"].data.decode().split()
    assert set(GUEST_MODULES) <= set(order)
    assert image.manifest["modules_not_found"] == []
    for before, after in [
        ("failover", "net_failover"),
        ("net_failover", "virtio_net"),
        ("vsock", "vmw_vsock_virtio_transport_common"),
        ("vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"),
    ]:
        assert order.index(before) < order.index(after)
    for name in order:
        module = entries[f"lib/modules/{name}.ko"].data
        assert module.startswith(b"\x7fELF"), f"{name}.ko is not an uncompressed ELF"


def test_a_second_build_finds_the_cached_image(image: GuestImage) -> None:
    stamp = image.manifest["built_at"]
    again = build_guest_image()
    assert again.directory == image.directory and again.manifest["built_at"] == stamp


def test_booting_a_kernel_does_not_load_the_image_builder(guest: Callable[[str], Path]) -> None:
    """The VMM's own path stays lean: `aovisor --kernel` never imports aovisor.image."""
    code = (
        "import sys; from aovisor.cli.main import main; "
        f"status = main(['--kernel', {str(guest('hello'))!r}, '--memory', 'size=64M', '--serial', 'null']); "
        "print(status, sorted(m for m in sys.modules if m.startswith('aovisor.image')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert result.stdout.strip() == "0 []", result.stderr
