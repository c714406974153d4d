"""The default guest image's parts: the newc writer, module dependencies, the vmlinux inside a bzImage,
the guest command parameter and the /init script."""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from aovisor.image.cpio import CpioWriter
from aovisor.image.errors import ImageBuildError
from aovisor.image.init_script import (
    COMMAND_PARAMETER,
    EXIT_MARKER,
    INIT_SCRIPT,
    POWER_BUTTON_HANDLER,
    POWER_BUTTON_SCRIPT,
    READY_MARKER,
    command_line_parameter,
)
from aovisor.image.initramfs import write_guest_initramfs
from aovisor.image.modules import KernelModule, ModuleTree
from aovisor.image.vmlinux import extract_vmlinux
from newc import read_newc

# --- cpio -----------------------------------------------------------------------------------------------


def test_newc_archive_reads_back_entry_by_entry() -> None:
    out = io.BytesIO()
    cpio = CpioWriter(out)
    cpio.directory("bin")
    cpio.file("bin/tool", b"\x7fELF-odd-length", 0o755)
    cpio.symlink("bin/sh", "tool")
    cpio.char_device("dev/console", 5, 1)
    cpio.close()
    data = out.getvalue()
    assert len(data) % 4 == 0
    entries = {entry.name: entry for entry in read_newc(data)}
    assert list(entries) == ["bin", "bin/tool", "bin/sh", "dev/console"]
    assert stat.S_ISDIR(entries["bin"].mode)
    assert entries["bin/tool"].data == b"\x7fELF-odd-length" and entries["bin/tool"].mode & 0o777 == 0o755
    assert stat.S_ISLNK(entries["bin/sh"].mode) and entries["bin/sh"].data == b"tool"
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (Debian busybox-static) to list")
def test_busybox_cpio_lists_what_we_wrote(tmp_path: Path) -> None:
    """An independent reader agrees (busybox's cpio is what `make sysdeps` installs)."""
    archive = tmp_path / "a.cpio"
    with archive.open("wb") as out:
        cpio = CpioWriter(out)
        cpio.directory("etc")
        cpio.file("etc/hostname", b"guest\n")
        cpio.close()
    listing = subprocess.run(
        ["busybox", "cpio", "-t", "-F", str(archive)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing == ["etc", "etc/hostname"]


# --- modules ------------------------------------------------------------------------------------------


def _module(directory: Path, name: str, depends: str, *, compressed: bool = True) -> None:
    image = b"\x7fELF....\0name=" + name.encode() + b"\0depends=" + depends.encode() + b"\0vermagic=6.12\0"
    path = directory / f"{name}.ko{'.xz' if compressed else ''}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(image) if compressed else image)


def test_dependencies_come_first_and_images_are_decompressed(tmp_path: Path) -> None:
    _module(tmp_path / "drivers/net", "virtio_net", "net_failover")
    _module(tmp_path / "drivers/net", "net_failover", "failover")
    _module(tmp_path / "net/core", "failover", "", compressed=False)
    _module(tmp_path / "drivers/block", "virtio_blk", "")
    tree = ModuleTree(tmp_path)
    ordered = tree.with_dependencies(["virtio_net", "virtio_blk", "failover"])
    assert [m.name for m in ordered] == ["failover", "net_failover", "virtio_net", "virtio_blk"]
    net: KernelModule = ordered[2]
    assert net.image.startswith(b"\x7fELF") and net.relative_path == "drivers/net/virtio_net.ko"
    assert net.depends == ("net_failover",)


def test_dashes_and_underscores_name_the_same_module(tmp_path: Path) -> None:
    _module(tmp_path, "vmw_vsock_virtio_transport_common", "vsock")
    _module(tmp_path, "vsock", "")
    tree = ModuleTree(tmp_path)
    assert "vmw-vsock-virtio-transport-common" in tree
    assert [m.name for m in tree.with_dependencies(["vmw-vsock-virtio-transport-common"])] == [
        "vsock",
        "vmw_vsock_virtio_transport_common",
    ]


def test_a_missing_module_or_a_cycle_is_an_error(tmp_path: Path) -> None:
    _module(tmp_path, "a", "b")
    _module(tmp_path, "b", "a")
    tree = ModuleTree(tmp_path)
    assert "nvram" not in tree
    with pytest.raises(ImageBuildError, match="nvram"):
        tree.with_dependencies(["nvram"])
    with pytest.raises(ImageBuildError, match="cycle"):
        tree.with_dependencies(["a"])


# --- vmlinux ------------------------------------------------------------------------------------------

ELF = b"\x7fELF" + bytes(range(256)) * 64


def _bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    """The boot-protocol fields extract_vmlinux reads: setup_sects, "HdrS", payload offset and length."""
    header = bytearray((setup_sects + 1) * 512)
    header[0x1F1] = setup_sects
    header[0x202:0x206] = b"HdrS"
    payload_offset = 0x40  # into the protected-mode code
    header[0x248:0x24C] = payload_offset.to_bytes(4, "little")
    header[0x24C:0x250] = len(payload).to_bytes(4, "little")
    return bytes(header) + bytes(payload_offset) + payload + b"\xcc" * 100


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lzma.compress(ELF, format=lzma.FORMAT_XZ) + len(ELF).to_bytes(4, "little"), id="xz"),
        pytest.param(gzip.compress(ELF), id="gzip"),  # gzip's own trailer ends with the size
    ],
)
def test_vmlinux_is_unpacked_from_the_payload(payload: bytes) -> None:
    assert extract_vmlinux(_bzimage(payload)) == ELF


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd tool (Debian zstd)")
def test_zstd_payload_goes_through_the_zstd_tool() -> None:
    compressed = subprocess.run(["zstd", "-q", "-c"], input=ELF, capture_output=True, check=True).stdout
    assert extract_vmlinux(_bzimage(compressed + len(ELF).to_bytes(4, "little"))) == ELF


def test_not_a_bzimage_or_a_wrong_size_is_an_error() -> None:
    with pytest.raises(ImageBuildError, match="not a bzImage"):
        extract_vmlinux(b"\x7fELF" + bytes(4096))
    lying = lzma.compress(ELF, format=lzma.FORMAT_XZ) + (len(ELF) + 1).to_bytes(4, "little")
    with pytest.raises(ImageBuildError, match="announced"):
        extract_vmlinux(_bzimage(lying))
    with pytest.raises(ImageBuildError, match="compression"):
        extract_vmlinux(_bzimage(b"\x00\x01\x02\x03\x04\x05\x06\x07"))


# --- the guest command and /init ----------------------------------------------------------------------


def test_the_command_parameter_quotes_spaces_and_refuses_what_the_kernel_cannot_pass() -> None:
    assert command_line_parameter("uname -r; nproc") == f'{COMMAND_PARAMETER}="uname -r; nproc"'
    # A dotted name would be taken for a module parameter and never reach init.
    assert "." not in COMMAND_PARAMETER
    with pytest.raises(ValueError, match="double quote"):
        command_line_parameter('echo "hi"')
    with pytest.raises(ValueError, match="one line"):
        command_line_parameter("echo a\necho b")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (Debian busybox-static)")
def test_init_is_valid_busybox_sh_and_prints_the_markers(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_text(INIT_SCRIPT)
    subprocess.run(["busybox", "sh", "-n", str(init)], check=True)
    assert f"echo {READY_MARKER}" in INIT_SCRIPT
    assert f'echo "{EXIT_MARKER} $?"' in INIT_SCRIPT
    assert INIT_SCRIPT.rstrip().endswith("poweroff -f")
    handler = tmp_path / "power-button"
    handler.write_text(POWER_BUTTON_SCRIPT)
    subprocess.run(["busybox", "sh", "-n", str(handler)], check=True)
    assert "acpid -c /etc/acpi" in INIT_SCRIPT and POWER_BUTTON_HANDLER.startswith("etc/acpi/")


def test_initramfs_holds_init_busybox_and_the_modules_in_load_order(tmp_path: Path) -> None:
    modules = [KernelModule("failover", "net/core/failover.ko", b"\x7fELF1", ()), KernelModule(
        "net_failover", "drivers/net/net_failover.ko", b"\x7fELF2", ("failover",))]  # fmt: skip
    path = tmp_path / "initramfs.cpio"
    write_guest_initramfs(path, busybox=b"\x7fELF-busybox", modules=modules)
    entries = {entry.name: entry for entry in read_newc(path.read_bytes())}
    assert entries["init"].data.decode() == INIT_SCRIPT and entries["init"].mode & 0o111
    assert entries["bin/busybox"].data == b"\x7fELF-busybox"
    handler = entries[POWER_BUTTON_HANDLER]  # what acpid runs on the power button
    assert handler.data.decode() == POWER_BUTTON_SCRIPT and handler.mode & 0o111
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["lib/modules/net_failover.ko"].data == b"\x7fELF2"
    assert entries["lib/modules/load"].data == b"failover\nnet_failover\n"
