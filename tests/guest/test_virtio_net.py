"""virtio-net on a real TAP: the virtio_net guest (at CPL3) and the test exchange frames through a TAP that
aovisor creates inside a network namespace made for the test (the host's interfaces are never touched).

The test's side of the TAP is an AF_PACKET socket bound to it (raw frames of the test ethertype) and a UDP
socket on the TAP's address, both created inside the namespace.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import run_aovisor
from netns import BROADCAST, GuestRun, NetNamespace, Wire

Guest = Callable[[str], Path]
TAP = "aovtap0"
HOST_IP, GUEST_IP = "10.77.0.1", "10.77.0.2"
GUEST_MAC = "52:54:00:aa:bb:01"


def start(ns: NetNamespace, hypervisor: str, guest: Guest, cmdline: str, net: str = "") -> GuestRun:
    run = GuestRun(
        ns,
        ["--hypervisor", hypervisor, "--kernel", str(guest("virtio_net")), "--memory", "size=64M",
         "--net", f"tap={TAP},mac={GUEST_MAC},ip={HOST_IP},mask=255.255.255.0{net}",
         "--cmdline", f"ip={GUEST_IP} {cmdline}"],
    )  # fmt: skip
    return run


@pytest.fixture
def session(netns: NetNamespace) -> Iterator[list[object]]:
    """Closes whatever the test registers (guest runs, wires, sockets)."""
    owned: list[object] = []
    yield owned
    for thing in reversed(owned):
        thing.close()  # type: ignore[attr-defined]


def mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def test_frames_both_ways(hypervisor: str, guest: Guest, netns: NetNamespace, session: list[object]) -> None:
    run = start(netns, hypervisor, guest, "")
    session.append(run)
    run.expect(r"virtio-net: mac 52:54:00:aa:bb:01, features mrg 1 csum 1")
    run.expect(r"virtio-net: ready")
    # aovisor created the TAP in the namespace, gave it the address and brought it up.
    addr = netns.run("ip", "-o", "-4", "addr", "show", TAP)
    assert f"inet {HOST_IP}/24" in addr, addr
    assert ",UP" in netns.run("ip", "-o", "link", "show", TAP)
    wire = Wire(netns, TAP)
    session.append(wire)

    wire.send(b"PING hello from the host " + bytes(range(100)))
    pong = wire.receive()
    assert pong[:6] == wire.mac and pong[6:12] == mac_bytes(GUEST_MAC)
    assert pong[14:] == b"PONG hello from the host " + bytes(range(100))

    wire.send(b"SEND 5 200")
    frames = [wire.receive() for _ in range(5)]
    for i, frame in enumerate(frames):
        assert len(frame) == 200 and frame[:6] == BROADCAST and frame[6:12] == mac_bytes(GUEST_MAC)
        label = f"FRAME {i} ".encode()
        assert frame[14 : 14 + len(label)] == label
        assert frame[14 + len(label) :] == bytes((i + j) & 0xFF for j in range(len(label), 186))

    # The header the guest got: no offload flags on a frame the host sent as it is, one buffer.
    wire.send(b"SHOW" + bytes(42))
    run.expect(r"rx: len 60 flags 0 gso 0 csum_start 0 csum_offset 0 num_buffers 1")
    wire.send(b"BYE")
    run.expect(r"virtio-net: rx \d+ frames, tx 6 frames")
    assert run.wait() == 0


@pytest.mark.parametrize(
    ("cmdline", "num_buffers"), [("mrg=1 rxbuf=256", 4), ("mrg=0 rxbuf=2048", 1), ("mrg=1 rxbuf=2048", 1)]
)
def test_large_frame_is_spread_over_merged_buffers(
    hypervisor: str, guest: Guest, netns: NetNamespace, session: list[object], cmdline: str, num_buffers: int
) -> None:
    run = start(netns, hypervisor, guest, cmdline)
    session.append(run)
    run.expect(r"virtio-net: ready")
    wire = Wire(netns, TAP)
    session.append(wire)
    wire.send(b"SHOW" + bytes(982))  # 1000 bytes + the 12-byte header: four 256-byte buffers
    run.expect(rf"rx: len 1000 flags 0 gso 0 csum_start 0 csum_offset 0 num_buffers {num_buffers}\n")
    payload = b"PING" + bytes((7 * i) & 0xFF for i in range(1400))
    wire.send(payload)
    assert wire.receive()[14:] == b"PONG" + payload[4:]  # reassembled from several buffers intact
    wire.send(b"BYE")
    assert run.wait() == 0


def test_frame_larger_than_a_buffer_without_merging_is_dropped(
    hypervisor: str, guest: Guest, netns: NetNamespace, session: list[object]
) -> None:
    run = start(netns, hypervisor, guest, "mrg=0 rxbuf=256")
    session.append(run)
    run.expect(r"virtio-net: ready")
    wire = Wire(netns, TAP)
    session.append(wire)
    wire.send(b"SHOW" + bytes(982))  # cannot fit one 256-byte buffer: dropped, the device goes on
    wire.send(b"SHOW small")
    run.expect(r"rx: len 24 flags 0 gso 0 csum_start 0 csum_offset 0 num_buffers 1")
    wire.send(b"BYE")
    assert run.wait() == 0
    assert not any("len 1000" in line for line in run.lines)


@pytest.mark.parametrize(("csum", "flags", "start_offset"), [(1, 1, (34, 6)), (0, 0, (0, 0))])
def test_udp_checksum_offload_follows_negotiation(
    hypervisor: str,
    guest: Guest,
    netns: NetNamespace,
    session: list[object],
    csum: int,
    flags: int,
    start_offset: tuple[int, int],
) -> None:
    """With CSUM/GUEST_CSUM the host's UDP datagram reaches the guest with a partial checksum (NEEDS_CSUM,
    csum_start 34, csum_offset 6) and the guest's answer leaves with one, which the host's UDP stack only
    accepts if the header's offsets reached the kernel; without them, every checksum is complete."""
    run = start(netns, hypervisor, guest, f"csum={csum}")
    session.append(run)
    run.expect(r"virtio-net: ready")
    udp = netns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    session.append(udp)
    udp.bind((HOST_IP, 5000))
    udp.settimeout(10)
    udp.sendto(b"hello, guest", (GUEST_IP, 7))  # the guest answers the ARP request first
    data, sender = udp.recvfrom(2048)
    assert (data, sender) == (b"HELLO, GUEST", (GUEST_IP, 7))
    start_at, offset = start_offset
    run.expect(rf"udp: from 5000 len 12 flags {flags} csum_start {start_at} csum_offset {offset} checksum ok")
    wire = Wire(netns, TAP)
    session.append(wire)
    wire.send(b"BYE")
    assert run.wait() == 0


@pytest.mark.parametrize("csum", [0, 1])
def test_hostile_guest_frames_are_dropped_and_the_device_goes_on(
    hypervisor: str, guest: Guest, netns: NetNamespace, session: list[object], csum: int
) -> None:
    run = start(netns, hypervisor, guest, f"op=hostile csum={csum}")
    session.append(run)
    run.expect(r"virtio-net: mac")
    netns.wait_for_link(TAP)
    wire = Wire(netns, TAP)
    session.append(wire)
    run.expect(r"hostile: waiting for a frame")
    wire.send(b"nudge")
    run.expect(r"hostile: rx readable buffer: len 0, untouched")
    run.expect(r"hostile: rx short buffer: len 0")
    run.expect(r"hostile: device status 0xf\n")  # no DEVICE_NEEDS_RESET (0x40)
    run.expect(r"virtio-net: ready")
    wire.send(b"PING still there")
    received = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = wire.receive()
        received.append(frame[14:].rstrip(b"\0"))
        if frame[14:18] == b"PONG":
            break
    assert received == [b"ALIVE 1", b"ALIVE 2", b"ALIVE 3", b"ALIVE 4", b"PONG still there"]
    wire.send(b"BYE")
    assert run.wait() == 0


def test_bench_mode_sends_at_full_speed(
    hypervisor: str, guest: Guest, netns: NetNamespace, session: list[object]
) -> None:
    run = start(netns, hypervisor, guest, "op=bench count=2000 size=1514 batch=65536")
    session.append(run)
    run.expect(r"bench: tx 2000 x 1514 bytes, batch 65536: \d+ us, \d+ MiB/s, \d+ frames/s, \d+ kicks")
    assert run.wait() == 0
    # aovisor's TAP was not persistent: it goes away with the VMM.
    assert netns.link_disappears(TAP), netns.run("ip", "-o", "link", "show")


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ("tap=t0,mac=52:54:00:zz:00:01", "--net: mac: '52:54:00:zz:00:01' is not a MAC address"),
        ("tap=t0,mac=01:00:5e:00:00:01", "--net: mac: 01:00:5e:00:00:01 is a multicast address"),
        ("tap=t0,mac=+2:54:00:12:34:56", "--net: mac: '+2:54:00:12:34:56' is not a MAC address"),
        ("tap=t0,ip=10.0.0.300", "--net: ip: '10.0.0.300' is not an IPv4 address"),
        ("tap=t0,mask=255.0.255.0", "--net: mask: 255.0.255.0 is not a contiguous netmask"),
        ("tap=this-name-is-too-long", "--net: tap: 'this-name-is-too-long' is not a valid interface name"),
        ("tap=t0,num_queues=4", "--net: num_queues: only one queue pair"),
        ("tap=t0,vhost_user=on", "--net: vhost_user=on is not yet supported"),
        ("tap=t0,tapp=1", "--net: unknown key 'tapp'"),
    ],
)
def test_bad_net_options_are_one_line_errors(guest: Guest, net: str, message: str) -> None:
    proc = run_aovisor(["--kernel", str(guest("hello")), "--net", net])
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("aovisor: error: ") and message in err, err


def _drop_net_admin() -> None:
    """In the child before exec: remove CAP_NET_ADMIN from the bounding set, so root's new program runs
    without it (PR_CAPBSET_DROP)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(24, 12, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_NET_ADMIN
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_tap_without_permission_is_one_line_error(
    hypervisor: str, guest: Guest, netns: NetNamespace, session: list[object]
) -> None:
    run = GuestRun(
        netns,
        ["--hypervisor", hypervisor, "--kernel", str(guest("hello")), "--memory", "size=64M",
         "--net", f"tap={TAP}"],
        preexec=_drop_net_admin,
    )  # fmt: skip
    session.append(run)
    assert run.wait() == 1
    err = run.stderr()
    assert err.count("\n") == 1, err
    assert err.startswith(f"aovisor: error: --net: tap={TAP}: permission denied"), err
    assert "CAP_NET_ADMIN" in err
