"""virtio data paths: virtio-blk sequential and random reads, virtio-net transmit to a TAP.

Both VMMs run the same guest programs (``virtio_blk``, ``virtio_net``, which drive the device at CPL3 by
polling and time themselves with the TSC) against the same backing: one raw image in the host's page cache,
or one persistent TAP (``vnet_hdr``, up) in a network namespace the row creates.  The sample is the guest's
own rate line.  QEMU runs with ``-M pc,acpi=off``, not microvm: the guests find virtio-pci functions
through configuration mechanism #1 (ports 0xCF8/0xCFC), which microvm does not have (``pcie=on`` gives it an
ECAM host bridge only); ``acpi=off`` keeps SeaBIOS's PM block off port 0x600, where ``isa-debug-exit`` turns
the guests' power-off write into QEMU's exit.  The devices: ``-device virtio-blk-pci,disable-legacy=on``
on ``-drive format=raw`` (default cache: the page cache, as aovisor), and ``-netdev tap,vhost=off -device
virtio-net-pci,disable-legacy=on``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.harness import Benchmark, Goal, register
from bench.testbed import REPO, RunFailed, Vmm

IMAGE = REPO / "build" / "bench" / "virtio-blk.img"
IMAGE_MIB = 256
BLK_DONE = "virtio-blk done\n"
NET_DONE = "virtio-net done\n"
_BLK_RATE = re.compile(r"bench: \w+ \d+ x \d+ bytes qd \d+: \d+ us, (\d+) MiB/s, (\d+) IOPS")
_NET_RATE = re.compile(r"bench: tx \d+ x \d+ bytes, batch \d+: \d+ us, (\d+) MiB/s")
MAC = "52:54:00:be:ec:01"
TAP = "benchtap0"


def qemu_pc_argv(vmm: Vmm, kernel: Path, cmdline: str, devices: list[str]) -> list[str]:
    """QEMU's command line of the testbed with ``-M pc,acpi=off`` instead of microvm, plus ``devices``."""
    argv = vmm.argv(kernel, cmdline)
    at = argv.index("-M")
    argv[at + 1] = "pc,acpi=off"
    return argv + devices


def ensure_image() -> Path:
    """A 256 MiB image of random bytes (made once), read into the page cache for both VMMs alike."""
    if not IMAGE.exists() or IMAGE.stat().st_size != IMAGE_MIB << 20:
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        tmp = IMAGE.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(IMAGE_MIB):
                f.write(os.urandom(1 << 20))
        tmp.replace(IMAGE)
    with open(IMAGE, "rb") as f:
        while f.read(8 << 20):
            pass
    return IMAGE


class BlkRead(Benchmark):
    """A virtio-blk read benchmark of the ``virtio_blk`` guest; subclasses give its command line."""

    warmup_runs = 1
    cmdline = ""
    rate_group = 1  # 1: MiB/s, 2: IOPS

    def prepare(self) -> None:
        self.kernel = self.testbed.guest("virtio_blk")
        self.image = ensure_image()

    def _rate(self, stdout: str) -> float:
        match = _BLK_RATE.search(stdout)
        if match is None:
            raise RunFailed(f"no bench line in {stdout[-300:]!r}")
        return float(match.group(self.rate_group))

    def run_aovisor(self) -> float:
        aovisor = self.testbed.aovisor
        argv = aovisor.argv(self.kernel, self.cmdline, options=["--disk", f"path={self.image}"])
        return self._rate(
            self.testbed.boot(aovisor, self.kernel, expect=BLK_DONE, argv=argv, timeout=120).stdout
        )

    def run_qemu(self) -> float:
        qemu = self.testbed.qemu
        devices = [
            "-drive", f"file={self.image},format=raw,if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
        ]  # fmt: skip
        argv = qemu_pc_argv(qemu, self.kernel, self.cmdline, devices)
        return self._rate(
            self.testbed.boot(qemu, self.kernel, expect=BLK_DONE, argv=argv, timeout=120).stdout
        )


@register
class BlkSeqRead(BlkRead):
    name = "blk-seq"
    title = "virtio-blk: sequential read, 1 MiB requests, QD 1 (MiB/s)"
    unit = "MiB/s"
    goal = Goal(min_ratio=1.0)
    cmdline = "op=bench pattern=seq size=1048576 count=1000 qd=1"


@register
class BlkRandRead(BlkRead):
    name = "blk-rand"
    title = "virtio-blk: 4 KiB random reads, QD 32 (IOPS)"
    unit = "IOPS"
    goal = Goal(min_ratio=0.8)
    cmdline = "op=bench pattern=rand size=4096 count=30000 qd=32"
    rate_group = 2


@register
class NetTx(Benchmark):
    name = "net-tx"
    title = "virtio-net → TAP: 1514-byte frames, 64 KiB per kick (MiB/s)"
    unit = "MiB/s"
    goal = Goal(min_ratio=1.0)
    warmup_runs = 1
    cmdline = "op=bench count=30000 size=1514 batch=65536"

    def prepare(self) -> None:
        self.kernel = self.testbed.guest("virtio_net")

    @contextlib.contextmanager
    def _netns(self) -> Iterator[list[str]]:
        """A fresh namespace with the TAP, up; yields the ``ip netns exec`` prefix (it is deleted after)."""
        name = f"aovbench-{uuid.uuid4().hex[:6]}"
        ip = shutil.which("ip") or "/usr/sbin/ip"  # a full path: the harness spawns without a PATH search
        try:
            subprocess.run([ip, "netns", "add", name], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise RunFailed(f"cannot make a network namespace (needs root and iproute2): {e}") from None
        try:
            ns = [ip, "-n", name]
            for args in (["tuntap", "add", TAP, "mode", "tap", "vnet_hdr"], ["link", "set", TAP, "up"]):
                subprocess.run([*ns, *args], check=True, capture_output=True)
            yield [ip, "netns", "exec", name]
        except subprocess.CalledProcessError as e:
            raise RunFailed(f"cannot make the TAP: {e.stderr!r}") from None
        finally:
            subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)

    def _rate(self, stdout: str) -> float:
        match = _NET_RATE.search(stdout)
        if match is None:
            raise RunFailed(f"no bench line in {stdout[-300:]!r}")
        return float(match.group(1))

    def run_aovisor(self) -> float:
        aovisor = self.testbed.aovisor
        with self._netns() as prefix:
            argv = prefix + aovisor.argv(self.kernel, self.cmdline, options=["--net", f"tap={TAP},mac={MAC}"])
            result = self.testbed.boot(aovisor, self.kernel, expect=NET_DONE, argv=argv, timeout=120)
        return self._rate(result.stdout)

    def run_qemu(self) -> float:
        qemu = self.testbed.qemu
        devices = [
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
            "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,mac={MAC}",
        ]  # fmt: skip
        with self._netns() as prefix:
            argv = prefix + qemu_pc_argv(qemu, self.kernel, self.cmdline, devices)
            result = self.testbed.boot(qemu, self.kernel, expect=NET_DONE, argv=argv, timeout=120)
        return self._rate(result.stdout)
