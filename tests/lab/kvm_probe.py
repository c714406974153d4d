"""Runs inside L2: proves /dev/kvm works by running a few real-mode instructions in a fresh VM.

Prints one JSON object: the KVM API version, the guest's I/O port writes as KVM reported them, and the
average round trip of an exit to user space. Uses only the standard library (L2 has no pip packages).
Ioctl numbers and struct layouts: include/uapi/linux/kvm.h.
"""

import ctypes
import fcntl
import json
import mmap
import os
import struct
import sys
import time

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
KVM_RUN = 0xAE80
KVM_EXIT_IO = 2
KVM_EXIT_IO_OUT = 1

# After reset a vCPU fetches from 0xfffffff0 (CS base 0xffff0000, IP 0xfff0), so a 64 KiB slot just below
# 4 GiB holds the program: mov al, 42; out 0x10, al; jmp back to the out.
SLOT_BASE = 0xFFFF0000
SLOT_SIZE = 0x10000
PROGRAM = bytes([0xB0, 42, 0xE6, 0x10, 0xEB, 0xFC])
EXITS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def main() -> None:
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    api_version = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, SLOT_SIZE)
    memory[0xFFF0 : 0xFFF0 + len(PROGRAM)] = PROGRAM
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    region = struct.pack("=IIQQQ", 0, 0, SLOT_BASE, SLOT_SIZE, address)
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE), mmap.MAP_SHARED)
    writes = []
    started = time.perf_counter()
    for _ in range(EXITS):
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        exit_reason = struct.unpack_from("=I", run, 8)[0]
        if exit_reason != KVM_EXIT_IO:
            raise SystemExit(f"unexpected exit reason {exit_reason}")
        direction, size, port, count, data_offset = struct.unpack_from("=BBHIQ", run, 32)
        writes.append((direction, size, port, count, run[data_offset]))
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "api_version": api_version,
                "vm_fd": vm,
                "vcpu_fd": vcpu,
                "exits": len(writes),
                "distinct_writes": sorted(set(writes)),
                "expected_write": (KVM_EXIT_IO_OUT, 1, 0x10, 1, 42),
                "us_per_exit": round(elapsed / EXITS * 1e6, 1),
            }
        )
    )


main()
