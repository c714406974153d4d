"""The virtio devices under real Linux: Debian's cloud kernel and the default initramfs (``aovisor image
build``) in the nested lab, with a disk, a NIC on a TAP, the virtio console, the rng and vsock at once.

One L2 boot, one aovisor boot of the guest (each costs seconds): the guest's command mounts the ext4 disk
and writes a file, exchanges a line over TCP with a peer in L2 through the TAP, writes to /dev/hvc0, reads
/dev/hwrng, and talks vsock both ways (with a small static helper appended to the initramfs: busybox has
no vsock); the L2 side then finds the file in the image (``debugfs``) and the line in the console's file.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import subprocess
from pathlib import Path

import pytest
from lab.vmm_runs import L2_EXTRA, VmmRun, VmmRunResult, VmmRunsResult, run_vmms

from aovisor.image.builder import GuestImage
from aovisor.image.cpio import CpioWriter
from aovisor.image.init_script import EXIT_MARKER, READY_MARKER, command_line_parameter
from lab import LabArtifacts

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
HELPER_SOURCE = HERE / "vsock_helper.c"
INITRAMFS = "initramfs-virtio.cpio"
TCP_PORT, TO_HOST_PORT, TO_GUEST_PORT = 5000, 6000, 6001
HOST_IP, GUEST_IP = "192.168.100.1", "192.168.100.2"
GUEST_CID = 3
FILE_TEXT = "written by the guest on ext4"

# The guest's command (busybox sh; one line; no double quotes: the kernel command line strips them).
GUEST_COMMAND = "; ".join(
    [
        "mkdir -p /mnt && mount -t ext4 /dev/vda /mnt"
        f" && echo {FILE_TEXT} > /mnt/hello.txt && sync && umount /mnt"
        " && echo guest: disk written",
        f"ip addr add {GUEST_IP}/24 dev eth0 && ip link set eth0 up && echo guest: eth0 up",
        f"echo hello over tcp | nc {HOST_IP} {TCP_PORT} | sed 's/^/guest: tcp reply: /'",
        "echo hvc0 says hello > /dev/hvc0 && echo guest: hvc0 written",
        "echo guest: rng $(cat /sys/class/misc/hw_random/rng_current)",
        "echo guest: hwrng $(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \\n')",
        f"vsock-helper connect 2 {TO_HOST_PORT} hello-from-guest | sed 's/^/guest: vsock reply: /'",
        f"vsock-helper serve {TO_GUEST_PORT} | sed 's/^/guest: vsock /'",
    ]
)

L2_SCRIPT = f"""
modprobe tun  # L2 has no udev: /dev/net/tun appears when the module is loaded
truncate -s 64M /tmp/disk.ext4 && mkfs.ext4 -q -F /tmp/disk.ext4
python3 /work/tests/lab/l2_virtio_peer.py {TCP_PORT} /tmp/v.sock {TO_HOST_PORT} {TO_GUEST_PORT} \\
    >/tmp/peer.log &
peer=$!
python3 -m aovisor --kernel {L2_EXTRA}/vmlinuz --initramfs {L2_EXTRA}/{INITRAMFS} --memory size=256M \\
    --serial tty --console file=/tmp/hvc0.log --disk path=/tmp/disk.ext4 \\
    --net tap=vtap0,ip={HOST_IP},mask=255.255.255.0 --vsock cid={GUEST_CID},socket=/tmp/v.sock \\
    --cmdline {shlex.quote("console=ttyS0 quiet " + command_line_parameter(GUEST_COMMAND))}
echo "l2: aovisor status $?"
(sleep 20; kill $peer 2>/dev/null) &
wait $peer
cat /tmp/peer.log
echo "l2: hvc0 log: $(cat /tmp/hvc0.log)"
echo "l2: file in the image: $(debugfs -R 'cat /hello.txt' /tmp/disk.ext4 2>/dev/null)"
"""


def build_helper(out_dir: Path) -> Path:
    """The static vsock helper (gcc and a static libc on the host), cached by the source's hash."""
    digest = hashlib.sha256(HELPER_SOURCE.read_bytes()).hexdigest()[:12]
    binary = out_dir / f"vsock-helper-{digest}"
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(".tmp")
        proc = subprocess.run(
            ["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(HELPER_SOURCE)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"cannot build the vsock helper (gcc with a static libc): {proc.stderr}", pytrace=False
            )
        tmp.replace(binary)
    return binary


def initramfs_with_helper(image: GuestImage, helper: Path, out: Path) -> Path:
    """The default initramfs with a second archive appended (Linux unpacks both): /bin/vsock-helper."""
    extra = io.BytesIO()
    writer = CpioWriter(extra)
    writer.file("bin/vsock-helper", helper.read_bytes(), mode=0o755)
    writer.close()
    out.write_bytes(image.initramfs.read_bytes() + extra.getvalue())
    return out


@pytest.fixture(scope="module")
def run(
    default_guest_image: GuestImage,
    lab_artifacts: LabArtifacts,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> VmmRunResult:
    scratch = tmp_path_factory.mktemp("virtio-linux")
    helper = build_helper(repo_root / "build" / "lab")
    initramfs = initramfs_with_helper(default_guest_image, helper, scratch / INITRAMFS)
    result: VmmRunsResult = run_vmms(
        [VmmRun("virtio-devices", ["bash", "-c", L2_SCRIPT], timeout=300)],
        worktree=repo_root,
        timeout=600,
        extra_files={"vmlinuz": default_guest_image.vmlinuz, INITRAMFS: initramfs},
        console_log=scratch / "l2-console.log",
        artifacts=lab_artifacts,
    )
    found = result.runs.get("virtio-devices")
    if found is None:
        pytest.fail(f"the run did not finish in L2\n{result.describe()}", pytrace=False)
    return found


def lines(run: VmmRunResult, prefix: str) -> list[str]:
    return [text[len(prefix) :].strip() for _, text in run.lines if text.startswith(prefix)]


def test_guest_booted_ran_its_command_and_aovisor_exited_cleanly(run: VmmRunResult) -> None:
    assert run.times(READY_MARKER) and run.times(f"{EXIT_MARKER} 0"), run.describe()
    assert lines(run, "l2: aovisor status") == ["0"], run.describe()


def test_ext4_file_written_by_the_guest_is_in_the_image(run: VmmRunResult) -> None:
    assert lines(run, "guest: disk written") == [""], run.describe()
    assert lines(run, "l2: file in the image:") == [FILE_TEXT], run.describe()


def test_tcp_over_the_tap_with_a_peer_in_l2(run: VmmRunResult) -> None:
    assert lines(run, "guest: eth0 up") == [""], run.describe()
    assert lines(run, "peer: tcp from") == [f"{GUEST_IP}: hello over tcp"], run.describe()
    assert lines(run, "guest: tcp reply:") == ["L2 GOT: HELLO OVER TCP"], run.describe()


def test_hvc0_output_reaches_the_console_file(run: VmmRunResult) -> None:
    assert lines(run, "guest: hvc0 written") == [""], run.describe()
    assert lines(run, "l2: hvc0 log:") == ["hvc0 says hello"], run.describe()


def test_hwrng_is_the_virtio_rng(run: VmmRunResult) -> None:
    assert lines(run, "guest: rng") == ["virtio_rng.0"], run.describe()
    (random_hex,) = lines(run, "guest: hwrng")
    assert len(random_hex) == 64 and len(set(random_hex)) > 4, run.describe()


def test_vsock_both_ways(run: VmmRunResult) -> None:
    # Guest to host: the guest's connection to CID 2 port 6000 reached the Unix socket /tmp/v.sock_6000.
    assert lines(run, "peer: vsock from the guest:") == ["hello-from-guest"], run.describe()
    assert lines(run, "guest: vsock reply:") == ["l2 vsock got: hello-from-guest"], run.describe()
    # Host to guest: CONNECT 6001 on /tmp/v.sock reached the guest's listening socket.
    assert [line.split()[0] for line in lines(run, "peer: vsock connected:")] == ["OK"], run.describe()
    assert lines(run, "guest: vsock served:") == ["hello from l2"], run.describe()
    assert lines(run, "peer: vsock answer from the guest:") == ["HELLO FROM L2"], run.describe()
