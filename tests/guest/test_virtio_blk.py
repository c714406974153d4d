"""Boot the virtio_blk guest through the `aovisor` command with a real disk image: the guest's driver runs at
CPL3, takes one MSI-X interrupt, reads sectors the test wrote and writes sectors the test then reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_aovisor

Guest = Callable[[str], Path]
SECTORS = 2048  # a 1 MiB image


def boot(hypervisor: str, kernel: Path, *args: str) -> tuple[int, str, str]:
    proc = run_aovisor(["--hypervisor", hypervisor, "--kernel", str(kernel), "--memory", "size=128M", *args])
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    return h


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 13 + (i >> 9) * 7 + seed) & 0xFF for i in range(n))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SECTORS * 512))
    return path


PREAMBLE = f"virtio-blk: capacity {SECTORS} sectors\n"


def test_guest_reads_what_the_host_wrote(hypervisor: str, guest: Guest, image: Path) -> None:
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image},serial=TESTDISK-7",
        "--cmdline", "op=read start=100 sectors=300",
    )  # fmt: skip
    assert rc == 0, err
    expected = fnv1a(image.read_bytes()[100 * 512 : 400 * 512])
    assert out == (
        PREAMBLE + "virtio-blk: serial TESTDISK-7\nvirtio-blk: msi-x interrupt ok\n"
        f"read 300 sectors at 100: fnv 0x{expected:016x}\nvirtio-blk done\n"
    )


def test_host_reads_what_the_guest_wrote(hypervisor: str, guest: Guest, image: Path) -> None:
    before = image.read_bytes()
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image},id=data",
        "--cmdline", "op=write start=7 sectors=33 seed=5",
    )  # fmt: skip
    assert rc == 0, err
    assert "write 33 sectors at 7: status 0\nflush: status 0\nverify: ok\n" in out, out
    after = image.read_bytes()
    assert after[7 * 512 : 40 * 512] == pattern(33 * 512, 5)
    assert after[: 7 * 512] == before[: 7 * 512] and after[40 * 512 :] == before[40 * 512 :]
    assert "virtio-blk: serial data\n" in out  # the id is the default serial


def test_read_only_disk_refuses_the_guest_write(hypervisor: str, guest: Guest, image: Path) -> None:
    before = image.read_bytes()
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image},readonly=on",
        "--cmdline", "op=write start=0 sectors=8",
    )  # fmt: skip
    assert rc == 0, err
    assert "write 8 sectors at 0: status 1\n" in out  # VIRTIO_BLK_S_IOERR
    assert image.read_bytes() == before


def test_out_of_range_read_is_an_io_error_not_a_crash(hypervisor: str, guest: Guest, image: Path) -> None:
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image}",
        "--cmdline", f"op=read start={SECTORS - 4} sectors=8",
    )  # fmt: skip
    assert rc == 0, err
    assert f"read 8 sectors at {SECTORS - 4}: status 1\nvirtio-blk done\n" in out


def test_guest_benchmark_mode_runs(hypervisor: str, guest: Guest, image: Path) -> None:
    rc, out, err = boot(
        hypervisor, guest("virtio_blk"), "--disk", f"path={image}",
        "--cmdline", "op=bench pattern=rand size=4096 count=500 qd=8 event_idx=0",
    )  # fmt: skip
    assert rc == 0, err
    assert "bench: rand 500 x 4096 bytes qd 8: " in out, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--disk", "path=/nonexistent/disk.img"], "--disk: path: cannot open '/nonexistent/disk.img'"),
        (["--disk", "path=IMG,bogus=1"], "--disk: unknown key 'bogus'"),
        (["--disk", "readonly=on"], "--disk: path: missing"),
        (["--disk", "path=IMG,readonly=maybe"], "--disk: readonly: 'maybe' is not on/off"),
        (["--disk", "path=IMG,image_type=qcow2"], "--disk: image_type: only raw images"),
        (["--rng", "src=/nonexistent"], "--rng: src: cannot read '/nonexistent'"),
    ],
)
def test_bad_disk_options_are_one_line_errors(
    guest: Guest, image: Path, args: list[str], message: str
) -> None:
    args = [a.replace("IMG", str(image)) for a in args]
    proc = run_aovisor(["--kernel", str(guest("hello")), *args])
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("aovisor: error: ") and message in err, err


def test_two_vms_cannot_write_one_image(guest: Guest, image: Path) -> None:
    from aovisor.config import DiskConfig
    from aovisor.virtio.devices.block import BlockDevice

    holder = BlockDevice("other-vm", DiskConfig(image))  # the image is in use by another VMM
    try:
        proc = run_aovisor(
            ["--kernel", str(guest("hello")), "--memory", "size=64M", "--disk", f"path={image}"]
        )
    finally:
        holder.close()
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and "is locked: another VM is using it" in err, err
