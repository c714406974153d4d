"""A Linux TAP interface for virtio-net: every TUN/TAP and interface ioctl in one place (linux/if_tun.h,
linux/sockios.h, linux/if.h).

The TAP is opened with ``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR``: each frame read or written on the fd is
preceded by a ``struct virtio_net_hdr``, which ``TUNSETVNETHDRSZ`` makes 12 bytes long — the size of a
virtio 1.x header (``virtio_net_hdr_v1`` with ``num_buffers``).  So a guest's TX buffers go to the kernel
as they are, and frames the kernel gives us land in the guest's RX buffers as they are; only
``num_buffers`` is ours to fill (the kernel writes the first 10 bytes and skips the last two).

``TUNSETOFFLOAD`` tells the kernel which offloads the *reader* (the guest) accepts: partial checksums
(``TUN_F_CSUM``) and TSO/UFO frames.  Without them, the kernel completes checksums and segments frames
before handing them to us.

Address configuration (``ip=``/``mask=``) uses the classic ``SIOCSIFADDR``/``SIOCSIFNETMASK`` ioctls on a
datagram socket, as Cloud Hypervisor does, so no netlink library is loaded.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct

from aovisor.errors import AovisorError

TUN_DEVICE = "/dev/net/tun"
IFNAMSIZ = 16

# ioctl numbers (_IOW('T', n, int) = 0x400454nn, _IOR('T', n, unsigned int) = 0x800454nn).
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNSETVNETHDRSZ = 0x400454D8

# struct ifreq ifr_flags for TUNSETIFF.
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

# TUNSETOFFLOAD bits.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10

# Interface ioctls on a socket (linux/sockios.h).
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCGIFMTU = 0x8921
IFF_UP = 0x1

VNET_HDR_SIZE = 12  # struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
# num_buffers

_IFREQ_SIZE = 40  # char ifr_name[16] + a 24-byte union


class TapError(AovisorError):
    """The TAP cannot be opened or configured; the message names the interface and what to do."""


def _ifreq(name: str, payload: bytes = b"") -> bytearray:
    req = bytearray(_IFREQ_SIZE)
    encoded = name.encode()
    req[: len(encoded)] = encoded
    req[IFNAMSIZ : IFNAMSIZ + len(payload)] = payload
    return req


def valid_interface_name(name: str) -> bool:
    """What the kernel accepts as an interface name (dev_valid_name): 1-15 bytes, no '/', ':' or spaces."""
    encoded = name.encode(errors="replace")
    return (
        0 < len(encoded) < IFNAMSIZ
        and name not in (".", "..")
        and not any(c in name for c in "/: \t\n\0")
        and name.isprintable()
    )


class Tap:
    """An open TAP interface (non-blocking fd), with a 12-byte virtio-net header on every frame."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    @classmethod
    def open(cls, name: str) -> Tap:
        """Attach to TAP ``name``, creating it if it does not exist (needs CAP_NET_ADMIN, or a persistent
        TAP owned by this user)."""
        if not valid_interface_name(name):
            raise TapError(f"--net: tap: {name!r} is not a valid interface name (1-15 characters)")
        try:
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            hint = " (is the tun module loaded? modprobe tun)" if e.errno == errno.ENOENT else ""
            raise TapError(f"--net: tap={name}: cannot open {TUN_DEVICE}: {e.strerror}{hint}") from None
        try:
            features = struct.unpack("I", fcntl.ioctl(fd, TUNGETFEATURES, bytes(4)))[0]
            if not features & IFF_VNET_HDR:
                raise TapError(f"--net: tap={name}: this kernel's TAP has no virtio-net header support")
            flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
            try:
                fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", flags)))
            except OSError as e:
                raise TapError(_attach_error(name, e)) from None
            tap = cls(fd, name)
            tap._setup_header()
        except BaseException:
            os.close(fd)
            raise
        return tap

    @classmethod
    def from_fd(cls, fd: int) -> Tap:
        """Use an already attached TAP fd (``fd=`` / an fd passed over the API); it is duplicated, so the
        caller keeps its own."""
        try:
            own = os.dup(fd)
        except OSError as e:
            raise TapError(f"--net: fd={fd}: {e.strerror}") from None
        try:
            os.set_inheritable(own, False)
            try:
                req = bytearray(_IFREQ_SIZE)
                fcntl.ioctl(own, TUNGETIFF, req)
            except OSError:
                raise TapError(f"--net: fd={fd} is not a TAP device") from None
            name = bytes(req[:IFNAMSIZ]).split(b"\0", 1)[0].decode(errors="replace")
            flags = struct.unpack_from("H", req, IFNAMSIZ)[0]
            if not flags & IFF_TAP or not flags & IFF_NO_PI or not flags & IFF_VNET_HDR:
                raise TapError(
                    f"--net: fd={fd} ({name}): must be a TAP opened with IFF_NO_PI and IFF_VNET_HDR"
                )
            os.set_blocking(own, False)
            tap = cls(own, name)
            tap._setup_header()
        except BaseException:
            os.close(own)
            raise
        return tap

    def _setup_header(self) -> None:
        fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
        self.set_offload(0)

    def set_offload(self, flags: int) -> None:
        """The offloads (TUN_F_*) the guest accepts on frames it receives."""
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)

    # --- Interface configuration ---------------------------------------------------------------------
    def configure(self, ip: str | None, mask: str | None) -> None:
        """Give the interface an IPv4 address and netmask (when given) and bring it up."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                if ip is not None:
                    fcntl.ioctl(sock, SIOCSIFADDR, _ifreq(self.name, _sockaddr_in(ip)))
                if mask is not None:
                    fcntl.ioctl(sock, SIOCSIFNETMASK, _ifreq(self.name, _sockaddr_in(mask)))
                req = _ifreq(self.name)
                fcntl.ioctl(sock, SIOCGIFFLAGS, req)
                flags = struct.unpack_from("H", req, IFNAMSIZ)[0]
                if not flags & IFF_UP:
                    fcntl.ioctl(sock, SIOCSIFFLAGS, _ifreq(self.name, struct.pack("H", flags | IFF_UP)))
            except OSError as e:
                hint = " (needs CAP_NET_ADMIN)" if e.errno in (errno.EPERM, errno.EACCES) else ""
                raise TapError(
                    f"--net: tap={self.name}: cannot configure the interface: {e.strerror}{hint}"
                ) from None

    def mtu(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            req = _ifreq(self.name)
            try:
                fcntl.ioctl(sock, SIOCGIFMTU, req)
            except OSError:
                return 1500
            return int(struct.unpack_from("i", req, IFNAMSIZ)[0])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _sockaddr_in(address: str) -> bytes:
    """struct sockaddr_in for an IPv4 address (the CLI validated it)."""
    return struct.pack("<H", socket.AF_INET) + b"\0\0" + ipaddress.IPv4Address(address).packed


def _attach_error(name: str, e: OSError) -> str:
    if e.errno in (errno.EPERM, errno.EACCES):
        return (
            f"--net: tap={name}: permission denied: creating or attaching a TAP needs CAP_NET_ADMIN "
            f"(or a persistent TAP owned by this user: ip tuntap add {name} mode tap vnet_hdr user $USER)"
        )
    if e.errno == errno.EINVAL:
        return f"--net: tap={name}: the interface exists but is not a TAP with a virtio-net header"
    if e.errno == errno.EBUSY:
        return f"--net: tap={name}: the TAP is already in use"
    return f"--net: tap={name}: cannot attach: {e.strerror}"
