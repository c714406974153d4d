"""The virtio-vsock packet header (virtio 1.2 §5.10.6) and its constants.

``struct virtio_vsock_hdr`` is 44 little-endian bytes: ``src_cid u64, dst_cid u64, src_port u32,
dst_port u32, len u32, type u16, op u16, flags u32, buf_alloc u32, fwd_cnt u32``.  ``buf_alloc`` and
``fwd_cnt`` carry the sender's receive credit on every packet (§5.10.6.3): a peer may have at most
``buf_alloc - (bytes sent - fwd_cnt)`` bytes in flight towards it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct("<QQIIIHHIII")
HEADER_SIZE = HEADER.size  # 44

HOST_CID = 2  # VMADDR_CID_HOST

TYPE_STREAM = 1

OP_REQUEST = 1
OP_RESPONSE = 2
OP_RST = 3
OP_SHUTDOWN = 4
OP_RW = 5
OP_CREDIT_UPDATE = 6
OP_CREDIT_REQUEST = 7

SHUTDOWN_RCV = 1  # the sender will receive no more
SHUTDOWN_SEND = 2  # the sender will send no more
SHUTDOWN_BOTH = SHUTDOWN_RCV | SHUTDOWN_SEND


class Header(NamedTuple):
    src_cid: int
    dst_cid: int
    src_port: int
    dst_port: int
    len: int
    type: int
    op: int
    flags: int
    buf_alloc: int
    fwd_cnt: int

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> Header:
        return cls._make(HEADER.unpack_from(data))

    def pack(self) -> bytes:
        return HEADER.pack(*self)
