"""Every MSHV request number, struct size, field offset, register id and message offset equals mshv.md.

The expected values below are copied from the specification (/work/shared/reference/mshv.md, section given
per table), not computed from aovisor's code.  When the host has ``<linux/mshv.h>`` (linux-libc-dev ≥ 6.15)
the mainline values are also checked against it with a C compiler.  The last part drives the two kernel
dialects through a recording fake ``ioctl`` to check what actually reaches the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aovisor.hypervisor.base import DescriptorTable, Segment
from aovisor.hypervisor.mshv import abi, dialect, hvcall, registers


def _ioc(direction: int, nr: int, size: int) -> int:
    """§1: _IOC(dir, 0xB8, nr, size) = dir<<30 | size<<16 | 0xB8<<8 | nr."""
    return direction << 30 | size << 16 | 0xB8 << 8 | nr


IO, IOW, IOR, IOWR = 0, 1, 2, 3

# §2: (name, macro direction, nr, size, request as printed in mshv.md)
MAINLINE_IOCTLS = [
    ("MSHV_CREATE_PARTITION", IOW, 0x00, 16, 0x4010B800),
    ("MSHV_INITIALIZE_PARTITION", IO, 0x00, 0, 0x0000B800),
    ("MSHV_CREATE_VP", IOW, 0x01, 4, 0x4004B801),
    ("MSHV_SET_GUEST_MEMORY", IOW, 0x02, 32, 0x4020B802),
    ("MSHV_IRQFD", IOW, 0x03, 16, 0x4010B803),
    ("MSHV_IOEVENTFD", IOW, 0x04, 32, 0x4020B804),
    ("MSHV_SET_MSI_ROUTING", IOW, 0x05, 8, 0x4008B805),
    ("MSHV_GET_GPAP_ACCESS_BITMAP", IOWR, 0x06, 32, 0xC020B806),
    ("MSHV_ROOT_HVCALL", IOWR, 0x07, 32, 0xC020B807),
    ("MSHV_RUN_VP", IOR, 0x00, 256, 0x8100B800),
    ("MSHV_GET_VP_STATE", IOWR, 0x01, 16, 0xC010B801),
    ("MSHV_SET_VP_STATE", IOWR, 0x02, 16, 0xC010B802),
]
# §10
LEGACY_IOCTLS = [
    ("MSHV_LEGACY_CHECK_EXTENSION", IOW, 0x00, 4, 0x4004B800),
    ("MSHV_LEGACY_CREATE_PARTITION", IOW, 0x01, 48, 0x4030B801),
    ("MSHV_LEGACY_MAP_GUEST_MEMORY", IOW, 0x02, 32, 0x4020B802),
    ("MSHV_LEGACY_UNMAP_GUEST_MEMORY", IOW, 0x03, 32, 0x4020B803),
    ("MSHV_LEGACY_CREATE_VP", IOW, 0x04, 4, 0x4004B804),
    ("MSHV_LEGACY_INSTALL_INTERCEPT", IOW, 0x08, 16, 0x4010B808),
    ("MSHV_LEGACY_ASSERT_INTERRUPT", IOW, 0x09, 24, 0x4018B809),
    ("MSHV_LEGACY_SET_PARTITION_PROPERTY", IOW, 0x0C, 16, 0x4010B80C),
    ("MSHV_LEGACY_GET_PARTITION_PROPERTY", IOWR, 0x0D, 16, 0xC010B80D),
    ("MSHV_LEGACY_IRQFD", IOW, 0x0E, 16, 0x4010B80E),
    ("MSHV_LEGACY_IOEVENTFD", IOW, 0x0F, 32, 0x4020B80F),
    ("MSHV_LEGACY_SET_MSI_ROUTING", IOW, 0x11, 8, 0x4008B811),
    ("MSHV_LEGACY_ROOT_HVCALL", IOWR, 0x35, 32, 0xC020B835),
    ("MSHV_LEGACY_GET_VP_REGISTERS", IOWR, 0x05, 16, 0xC010B805),
    ("MSHV_LEGACY_SET_VP_REGISTERS", IOW, 0x06, 16, 0x4010B806),
    ("MSHV_LEGACY_RUN_VP", IOR, 0x07, 256, 0x8100B807),
    ("MSHV_LEGACY_TRANSLATE_GVA", IOWR, 0x0E, 32, 0xC020B80E),
]


@pytest.mark.parametrize(("name", "direction", "nr", "size", "number"), MAINLINE_IOCTLS + LEGACY_IOCTLS)
def test_ioctl_request_numbers(name: str, direction: int, nr: int, size: int, number: int) -> None:
    assert _ioc(direction, nr, size) == number, "mshv.md's macro and number disagree"
    assert getattr(abi, name) == number


# (struct, total size, {field: offset}) — §2.1, §4.1, §10
STRUCTS = [
    ("mshv_create_partition", 16, {"pt_flags": 0, "pt_isolation": 8}),
    (
        "mshv_create_partition_v2",
        64,
        {
            "pt_flags": 0,
            "pt_isolation": 8,
            "pt_num_cpu_fbanks": 16,
            "pt_rsvd": 18,
            "pt_cpu_fbanks": 24,
            "pt_rsvd1": 40,
            "pt_disabled_xsave": 56,
        },
    ),
    ("mshv_create_vp", 4, {"vp_index": 0}),
    ("mshv_user_mem_region", 32, {"size": 0, "guest_pfn": 8, "userspace_addr": 16, "flags": 24, "rsvd": 25}),
    ("mshv_user_irqfd", 16, {"fd": 0, "resamplefd": 4, "gsi": 8, "flags": 12}),
    ("mshv_user_ioeventfd", 32, {"datamatch": 0, "addr": 8, "len": 16, "fd": 20, "flags": 24, "rsvd": 28}),
    ("mshv_user_irq_table", 8, {"nr": 0, "rsvd": 4}),
    ("mshv_user_irq_entry", 16, {"gsi": 0, "address_lo": 4, "address_hi": 8, "data": 12}),
    (
        "mshv_root_hvcall",
        32,
        {"code": 0, "reps": 2, "in_sz": 4, "out_sz": 6, "status": 8, "rsvd": 10, "in_ptr": 16, "out_ptr": 24},
    ),
    ("mshv_run_vp", 256, {"msg_buf": 0}),
    ("mshv_get_set_vp_state", 16, {"type": 0, "rsvd": 1, "buf_sz": 4, "buf_ptr": 8}),
    (
        "mshv_gpap_access_bitmap",
        32,
        {"access_type": 0, "access_op": 1, "rsvd": 2, "page_count": 8, "gpap_base": 16, "bitmap_ptr": 24},
    ),
    ("hv_input_set_partition_property", 24, {"partition_id": 0, "property_code": 8, "property_value": 16}),
    ("hv_input_get_partition_property", 16, {"partition_id": 0, "property_code": 8}),
    ("hv_input_vp_registers_header", 16, {"partition_id": 0, "vp_index": 8, "input_vtl": 12}),
    (
        "hv_input_assert_virtual_interrupt",
        32,
        {"partition_id": 0, "control": 8, "dest_addr": 16, "vector": 24, "target_vtl": 28},
    ),
    ("hv_input_install_intercept", 24, {"access_type": 8, "intercept_type": 12, "parameter": 16}),
    ("hv_input_translate_virtual_address", 32, {"vp_index": 8, "control_flags": 16, "gva_page": 24}),
    ("hv_output_translate_virtual_address", 16, {"result": 0, "gpa_page": 8}),
    ("hv_register_assoc", 32, {"name": 0, "reserved1": 4, "reserved2": 8, "value": 16}),
    ("hv_x64_segment_register", 16, {"base": 0, "limit": 8, "selector": 12, "attributes": 14}),
    ("hv_x64_table_register", 16, {"pad": 0, "limit": 6, "base": 8}),
    ("hv_local_interrupt_controller_state", 176, {"apic_lvt_lint0": 140, "apic_lvt_lint1": 144}),
    (
        "mshv_create_partition_legacy",
        48,
        {
            "flags": 0,
            "disabled_processor_features": 8,
            "disabled_xsave": 24,
            "synthetic_processor_features": 32,
            "isolation_properties": 40,
        },
    ),
    ("mshv_user_mem_region_legacy", 32, {"size": 0, "guest_pfn": 8, "userspace_addr": 16, "flags": 24}),
    ("mshv_vp_registers_legacy", 16, {"count": 0, "regs_ptr": 8}),
    ("mshv_assert_interrupt_legacy", 24, {"control": 0, "dest_addr": 8, "vector": 16}),
    ("mshv_partition_property_legacy", 16, {"property_code": 0, "property_value": 8}),
    ("mshv_translate_gva_legacy", 32, {"gva": 0, "flags": 8, "result_ptr": 16, "gpa_ptr": 24}),
]


@pytest.mark.parametrize(("name", "size", "offsets"), STRUCTS, ids=[s[0] for s in STRUCTS])
def test_struct_size_and_offsets(name: str, size: int, offsets: dict[str, int]) -> None:
    struct_type = getattr(abi, name)
    assert ctypes.sizeof(struct_type) == size
    for field, offset in offsets.items():
        assert getattr(struct_type, field).offset == offset, field


# §2.1, §3, §4, §10: flag bits, codes and ids
CONSTANTS = {
    "MSHV_PT_BIT_LAPIC": 0,
    "MSHV_PT_BIT_X2APIC": 1,
    "MSHV_PT_BIT_GPA_SUPER_PAGES": 2,
    "MSHV_PT_BIT_CPU_AND_XSAVE_FEATURES": 3,
    "MSHV_SET_MEM_BIT_WRITABLE": 0,
    "MSHV_SET_MEM_BIT_EXECUTABLE": 1,
    "MSHV_SET_MEM_BIT_UNMAP": 2,
    "MSHV_IRQFD_BIT_DEASSIGN": 0,
    "MSHV_IRQFD_BIT_RESAMPLE": 1,
    "MSHV_IOEVENTFD_BIT_DATAMATCH": 0,
    "MSHV_IOEVENTFD_BIT_PIO": 1,
    "MSHV_IOEVENTFD_BIT_DEASSIGN": 2,
    "MSHV_VP_STATE_LAPIC": 0,
    "MSHV_VP_STATE_XSAVE": 1,
    "MSHV_VP_STATE_SIMP": 2,
    "MSHV_VP_STATE_SIEFP": 3,
    "MSHV_VP_STATE_SYNTHETIC_TIMERS": 4,
    "MSHV_VP_MMAP_OFFSET_REGISTERS": 0,
    "MSHV_VP_MMAP_OFFSET_INTERCEPT_MESSAGE": 1,
    "MSHV_VP_MMAP_OFFSET_GHCB": 2,
    "MSHV_MAX_VPS": 256,
    "MSHV_MAX_GSI": 4096,
    "HVCALL_GET_PARTITION_PROPERTY": 0x44,
    "HVCALL_SET_PARTITION_PROPERTY": 0x45,
    "HVCALL_INSTALL_INTERCEPT": 0x4D,
    "HVCALL_GET_VP_REGISTERS": 0x50,
    "HVCALL_SET_VP_REGISTERS": 0x51,
    "HVCALL_TRANSLATE_VIRTUAL_ADDRESS": 0x52,
    "HVCALL_CLEAR_VIRTUAL_INTERRUPT": 0x56,
    "HVCALL_REGISTER_INTERCEPT_RESULT": 0x91,
    "HVCALL_ASSERT_VIRTUAL_INTERRUPT": 0x94,
    "HVCALL_SIGNAL_EVENT_DIRECT": 0xC0,
    "HVCALL_POST_MESSAGE_DIRECT": 0xC1,
    "HVCALL_GET_VP_CPUID_VALUES": 0xF4,
    "HV_STATUS_INVALID_PARAMETER": 5,
    "HV_STATUS_ACCESS_DENIED": 6,
    "HV_STATUS_INSUFFICIENT_MEMORY": 0xB,
    "HV_MAX_REGISTERS_PER_CALL": 127,
    "HV_INTERRUPT_CONTROL_LEVEL_TRIGGERED": 1 << 32,
    "HV_INTERRUPT_CONTROL_LOGICAL_DEST": 1 << 33,
    "HV_INTERCEPT_ACCESS_MASK_READ": 1,
    "HV_INTERCEPT_ACCESS_MASK_WRITE": 2,
    "HV_INTERCEPT_ACCESS_MASK_EXECUTE": 4,
    "HV_INTERCEPT_TYPE_X64_IO_PORT": 0,
    "HV_INTERCEPT_TYPE_X64_MSR": 1,
    "HV_INTERCEPT_TYPE_X64_CPUID": 2,
    "HV_INTERCEPT_TYPE_EXCEPTION": 3,
    "HV_INTERCEPT_TYPE_MMIO": 5,
    "HV_TRANSLATE_GVA_VALIDATE_READ": 1,
    "HV_TRANSLATE_GVA_VALIDATE_WRITE": 2,
    "HV_TRANSLATE_GVA_VALIDATE_EXECUTE": 4,
    "HV_X64_INTERRUPT_TYPE_FIXED": 0,
    "HV_X64_INTERRUPT_TYPE_LOWESTPRIORITY": 1,
    "HV_X64_INTERRUPT_TYPE_SMI": 2,
    "HV_X64_INTERRUPT_TYPE_REMOTEREAD": 3,
    "HV_X64_INTERRUPT_TYPE_NMI": 4,
    "HV_X64_INTERRUPT_TYPE_INIT": 5,
    "HV_X64_INTERRUPT_TYPE_SIPI": 6,
    "HV_X64_INTERRUPT_TYPE_EXTINT": 7,
    "HV_X64_INTERRUPT_TYPE_LOCALINT0": 8,
    "HV_X64_INTERRUPT_TYPE_LOCALINT1": 9,
    "HV_PARTITION_PROPERTY_SYNTHETIC_PROC_FEATURES": 0x10001,
    "HV_PARTITION_PROPERTY_TIME_FREEZE": 0x30003,
    "HV_PARTITION_PROPERTY_UNIMPLEMENTED_MSR_ACTION": 0x50017,
    "HV_PARTITION_PROPERTY_GPA_PAGE_ACCESS_TRACKING": 0x50005,
    "HV_PARTITION_PROPERTY_PHYSICAL_ADDRESS_WIDTH": 0x60006,
    "HV_PARTITION_PROPERTY_PROCESSOR_FEATURES0": 0x6000A,
    "HV_PARTITION_PROPERTY_PROCESSOR_FEATURES1": 0x6000B,
    "HV_UNIMPLEMENTED_MSR_ACTION_IGNORE_WRITE_READ_ZERO": 1,
    "HV_SYNTHETIC_PROC_FEATURES_LINUX": 0x6400FFB,
    # §4.1 registers
    "HV_X64_REGISTER_RAX": 0x20000,
    "HV_X64_REGISTER_RCX": 0x20001,
    "HV_X64_REGISTER_RDX": 0x20002,
    "HV_X64_REGISTER_RBX": 0x20003,
    "HV_X64_REGISTER_RSP": 0x20004,
    "HV_X64_REGISTER_RBP": 0x20005,
    "HV_X64_REGISTER_RSI": 0x20006,
    "HV_X64_REGISTER_RDI": 0x20007,
    "HV_X64_REGISTER_R8": 0x20008,
    "HV_X64_REGISTER_R15": 0x2000F,
    "HV_X64_REGISTER_RIP": 0x20010,
    "HV_X64_REGISTER_RFLAGS": 0x20011,
    "HV_X64_REGISTER_CR0": 0x40000,
    "HV_X64_REGISTER_CR2": 0x40001,
    "HV_X64_REGISTER_CR3": 0x40002,
    "HV_X64_REGISTER_CR4": 0x40003,
    "HV_X64_REGISTER_CR8": 0x40004,
    "HV_X64_REGISTER_XFEM": 0x40005,
    "HV_X64_REGISTER_ES": 0x60000,
    "HV_X64_REGISTER_CS": 0x60001,
    "HV_X64_REGISTER_SS": 0x60002,
    "HV_X64_REGISTER_DS": 0x60003,
    "HV_X64_REGISTER_FS": 0x60004,
    "HV_X64_REGISTER_GS": 0x60005,
    "HV_X64_REGISTER_LDTR": 0x60006,
    "HV_X64_REGISTER_TR": 0x60007,
    "HV_X64_REGISTER_IDTR": 0x70000,
    "HV_X64_REGISTER_GDTR": 0x70001,
    "HV_X64_REGISTER_TSC": 0x80000,
    "HV_X64_REGISTER_EFER": 0x80001,
    "HV_X64_REGISTER_KERNEL_GS_BASE": 0x80002,
    "HV_X64_REGISTER_APIC_BASE": 0x80003,
    "HV_X64_REGISTER_PAT": 0x80004,
    "HV_X64_REGISTER_SYSENTER_CS": 0x80005,
    "HV_X64_REGISTER_SYSENTER_EIP": 0x80006,
    "HV_X64_REGISTER_SYSENTER_ESP": 0x80007,
    "HV_X64_REGISTER_STAR": 0x80008,
    "HV_X64_REGISTER_LSTAR": 0x80009,
    "HV_X64_REGISTER_CSTAR": 0x8000A,
    "HV_X64_REGISTER_SFMASK": 0x8000B,
    "HV_X64_REGISTER_INITIAL_APIC_ID": 0x8000C,
    "HV_X64_REGISTER_MTRR_DEF_TYPE": 0x8000E,
    "HV_X64_REGISTER_XMM0": 0x30000,
    "HV_X64_REGISTER_DR0": 0x50000,
    "HV_X64_REGISTER_DR7": 0x50005,
    "HV_REGISTER_PENDING_INTERRUPTION": 0x10002,
    "HV_REGISTER_INTERRUPT_STATE": 0x10003,
    "HV_SEGMENT_S": 1 << 4,
    "HV_SEGMENT_DPL_SHIFT": 5,
    "HV_SEGMENT_P": 1 << 7,
    "HV_SEGMENT_AVL": 1 << 12,
    "HV_SEGMENT_L": 1 << 13,
    "HV_SEGMENT_DB": 1 << 14,
    "HV_SEGMENT_G": 1 << 15,
    # §4.2 messages
    "HV_MESSAGE_SIZE": 256,
    "HVMSG_UNMAPPED_GPA": 0x80000000,
    "HVMSG_GPA_INTERCEPT": 0x80000001,
    "HVMSG_UNRECOVERABLE_EXCEPTION": 0x80000021,
    "HVMSG_X64_IO_PORT_INTERCEPT": 0x80010000,
    "HVMSG_X64_MSR_INTERCEPT": 0x80010001,
    "HVMSG_X64_CPUID_INTERCEPT": 0x80010002,
    "HVMSG_X64_EXCEPTION_INTERCEPT": 0x80010003,
    "HVMSG_X64_APIC_EOI": 0x80010004,
    "HVMSG_X64_HALT": 0x80010007,
    "MSG_TYPE_OFFSET": 0,
    "MSG_PAYLOAD_SIZE_OFFSET": 4,
    "MSG_PAYLOAD_OFFSET": 16,
    "MSG_VP_INDEX_OFFSET": 16,
    "MSG_INSTRUCTION_LENGTH_OFFSET": 20,
    "MSG_ACCESS_TYPE_OFFSET": 21,
    "MSG_EXECUTION_STATE_OFFSET": 22,
    "MSG_CS_OFFSET": 24,
    "MSG_RIP_OFFSET": 40,
    "MSG_RFLAGS_OFFSET": 48,
    "EXECUTION_STATE_CR0_PE": 1 << 2,
    "EXECUTION_STATE_EFER_LMA": 1 << 4,
    "EXECUTION_STATE_INTERRUPTION_PENDING": 1 << 6,
    "EXECUTION_STATE_INTERRUPT_SHADOW": 1 << 12,
    "IO_PORT_NUMBER_OFFSET": 56,
    "IO_ACCESS_INFO_OFFSET": 58,
    "IO_INSTRUCTION_BYTE_COUNT_OFFSET": 59,
    "IO_RAX_OFFSET": 64,
    "IO_INSTRUCTION_BYTES_OFFSET": 72,
    "IO_DS_OFFSET": 88,
    "IO_ES_OFFSET": 104,
    "IO_RCX_OFFSET": 120,
    "IO_RSI_OFFSET": 128,
    "IO_RDI_OFFSET": 136,
    "IO_ACCESS_STRING": 1 << 3,
    "IO_ACCESS_REP": 1 << 4,
    "MEM_CACHE_TYPE_OFFSET": 56,
    "MEM_INSTRUCTION_BYTE_COUNT_OFFSET": 60,
    "MEM_ACCESS_INFO_OFFSET": 61,
    "MEM_TPR_OFFSET": 62,
    "MEM_GVA_OFFSET": 64,
    "MEM_GPA_OFFSET": 72,
    "MEM_INSTRUCTION_BYTES_OFFSET": 80,
    "MEM_ACCESS_GVA_VALID": 1,
    "MEM_ACCESS_GVA_GPA_VALID": 2,
    "EOI_VP_INDEX_OFFSET": 16,
    "EOI_VECTOR_OFFSET": 20,
    # §4.4 register page
    "REG_PAGE_ISVALID_OFFSET": 2,
    "REG_PAGE_DIRTY_OFFSET": 4,
    "REG_PAGE_GP_OFFSET": 8,
    "REG_PAGE_RIP_OFFSET": 136,
    "REG_PAGE_RFLAGS_OFFSET": 144,
    "REG_PAGE_DIRTY_GENERAL": 1,
    "REG_PAGE_DIRTY_IP": 2,
    "REG_PAGE_DIRTY_XMM": 4,
    "REG_PAGE_DIRTY_SEGMENT": 8,
    "REG_PAGE_DIRTY_FLAGS": 16,
    # §10 legacy flags
    "HV_PARTITION_CREATION_FLAG_LAPIC_ENABLED": 1 << 13,
    "HV_PARTITION_CREATION_FLAG_X2APIC_CAPABLE": 1 << 22,
    "HV_MAP_GPA_READABLE": 0x1,
    "HV_MAP_GPA_WRITABLE": 0x2,
    "HV_MAP_GPA_EXECUTABLE": 0xC,
    "HV_MAP_GPA_ADJUSTABLE": 0x8000,
    "MSHV_LEGACY_MAX_REGISTERS": 128,
}


@pytest.mark.parametrize("name", list(CONSTANTS))
def test_constant(name: str) -> None:
    assert getattr(abi, name) == CONSTANTS[name]


def test_registers_follow_the_architectural_order() -> None:
    """§4.1: RAX RCX RDX RBX RSP RBP RSI RDI R8-R15 are 0x20000-0x2000F in that order."""
    order = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{i}" for i in range(8, 16))]
    assert [registers.REGS_IDS[name] for name in order] == list(range(0x20000, 0x20010))


def test_segment_encoding_gives_the_spec_attribute_words() -> None:
    """§4.1: 64-bit code 0xA09B, flat data 0xC093, busy TSS 0x008B, LDT 0x0082."""
    code = Segment(base=0, limit=0xFFFFF, selector=0x10, type=0xB, s=True, present=True, l=True, g=True)
    data = Segment(base=0, limit=0xFFFFF, selector=0x18, type=0x3, s=True, present=True, db=True, g=True)
    tss = Segment(base=0x1000, limit=0x67, selector=0x20, type=0xB, s=False, present=True)
    ldt = Segment(base=0, limit=0xFFFF, selector=0, type=0x2, s=False, present=True)
    for seg, attributes in ((code, 0xA09B), (data, 0xC093), (tss, 0x008B), (ldt, 0x0082)):
        value = registers.encode_segment(seg)
        raw = value.to_bytes(16, "little")
        base, limit, selector, attr = struct.unpack("<QIHH", raw)
        assert (base, limit, selector, attr) == (seg.base, seg.limit, seg.selector, attributes)
        assert registers.decode_segment(value) == seg


def test_table_register_layout() -> None:
    """§4.1: hv_x64_table_register = pad u16[3], limit u16 at 6, base u64 at 8."""
    value = registers.encode_table(DescriptorTable(base=0x1234_5678_9ABC, limit=0x3F))
    assert value.to_bytes(16, "little") == bytes(6) + struct.pack("<HQ", 0x3F, 0x1234_5678_9ABC)
    assert registers.decode_table(value) == DescriptorTable(0x1234_5678_9ABC, 0x3F)


def test_pending_exception_register_value() -> None:
    # #GP(0x10): pending, type 3 (exception), deliver error code, vector 13, error code in the high half.
    assert registers.pending_exception(13, 0x10) == 1 | 3 << 1 | 1 << 4 | 13 << 16 | 0x10 << 32
    assert registers.pending_exception(6, None) == 1 | 3 << 1 | 6 << 16


# --- hypercall input layouts (§3) ------------------------------------------------------------------------
def test_hypercall_inputs() -> None:
    assert hvcall.build_set_partition_property(0x30003, 1) == struct.pack("<QIIQ", 0, 0x30003, 0, 1)
    assert hvcall.build_get_partition_property(0x50017) == struct.pack("<QII", 0, 0x50017, 0)
    assert hvcall.build_get_vp_registers(3, [0x20000, 0x20010]) == struct.pack(
        "<QIBBHII", 0, 3, 0, 0, 0, 0x20000, 0x20010
    )
    set_input = hvcall.build_set_vp_registers(1, [(0x20010, 0x1000)])
    assert len(set_input) == 16 + 32
    assert struct.unpack_from("<QIB", set_input) == (0, 1, 0)
    assert struct.unpack_from("<IIQQQ", set_input, 16) == (0x20010, 0, 0, 0x1000, 0)
    assert hvcall.build_assert_virtual_interrupt(4, 2, 7, level_triggered=True, logical=True) == struct.pack(
        "<QQQIBBH", 0, 4 | 1 << 32 | 1 << 33, 7, 2, 0, 0, 0
    )
    assert hvcall.build_install_intercept(2, 5, 0xD000_0000) == struct.pack("<QIIQ", 0, 2, 5, 0xD000_0000)
    assert hvcall.build_translate_virtual_address(2, 0xD0000, 3) == struct.pack("<QIIQQ", 0, 2, 0, 3, 0xD0000)
    assert hvcall.parse_translate_virtual_address(struct.pack("<QQ", 4 | 0xAB << 32, 0x123)) == (4, 0x123)


# --- the dialects, against a recording fake kernel ------------------------------------------------------
class FakeKernel:
    """Records each ioctl; answers ROOT_HVCALL from ``outputs`` and hands out real fds (/dev/null)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, object]] = []
        self.hvcalls: list[tuple[int, int, bytes, int]] = []  # (fd, code, input, reps)
        self.outputs: dict[int, bytes] = {}
        self.fail: dict[int, list[int]] = {}  # request -> errnos to raise, in order
        self.short_reps = False
        self.fds: list[int] = []

    def __call__(self, fd: int, request: int, arg: object = None) -> int:
        self.calls.append((fd, request, arg))
        pending = self.fail.get(request)
        if pending:
            err = pending.pop(0)
            raise OSError(err, os.strerror(err))
        if request in (abi.MSHV_ROOT_HVCALL, abi.MSHV_LEGACY_ROOT_HVCALL):
            assert isinstance(arg, abi.mshv_root_hvcall)
            data = ctypes.string_at(arg.in_ptr, arg.in_sz)
            self.hvcalls.append((fd, arg.code, data, arg.reps))
            out = self.outputs.get(arg.code, bytes(arg.out_sz))[: arg.out_sz]
            if arg.out_sz:
                ctypes.memmove(arg.out_ptr, out, len(out))
            arg.reps = arg.reps - 1 if self.short_reps and arg.reps else arg.reps
            return 0
        if request in (abi.MSHV_CREATE_PARTITION, abi.MSHV_LEGACY_CREATE_PARTITION, abi.MSHV_CREATE_VP):
            fd_new = os.open("/dev/null", os.O_RDONLY)
            self.fds.append(fd_new)
            return fd_new
        return 0

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    k = FakeKernel()
    yield k
    k.close()


def test_detect_tells_mainline_from_legacy_without_creating_a_partition(kernel: FakeKernel) -> None:
    kernel.fail[abi.MSHV_CREATE_PARTITION] = [errno.EINVAL]
    d = dialect.detect(99, kernel)
    assert isinstance(d, dialect.MainlineAbi)
    probe = kernel.calls[0][2]
    assert isinstance(probe, abi.mshv_create_partition) and probe.pt_flags >> 63  # an unknown flag bit
    kernel.fail[abi.MSHV_CREATE_PARTITION] = [errno.ENOTTY]
    assert isinstance(dialect.detect(99, kernel), dialect.LegacyAbi)


def test_mainline_partition_creation_sequence(kernel: FakeKernel) -> None:
    d = dialect.MainlineAbi(kernel)
    fd = d.create_partition(7, abi.HV_SYNTHETIC_PROC_FEATURES_LINUX)
    requests = [(f, r) for f, r, _ in kernel.calls]
    assert requests == [
        (7, abi.MSHV_CREATE_PARTITION),
        (fd, abi.MSHV_ROOT_HVCALL),
        (fd, abi.MSHV_INITIALIZE_PARTITION),
    ]
    create = kernel.calls[0][2]
    assert isinstance(create, abi.mshv_create_partition)
    assert create.pt_flags == 0b111 and create.pt_isolation == 0  # LAPIC | X2APIC | GPA_SUPER_PAGES (§5)
    # The synthetic features go in before INITIALIZE (§3: "early" property), on the partition fd.
    assert kernel.hvcalls == [(fd, 0x45, struct.pack("<QIIQ", 0, 0x10001, 0, 0x6400FFB), 0)]


def test_legacy_partition_creation_is_one_ioctl(kernel: FakeKernel) -> None:
    d = dialect.LegacyAbi(kernel)
    d.create_partition(7, 0x6400FFB)
    assert [r for _, r, _ in kernel.calls] == [abi.MSHV_LEGACY_CREATE_PARTITION]
    args = kernel.calls[0][2]
    assert isinstance(args, abi.mshv_create_partition_legacy)
    assert args.flags == 1 << 13 | 1 << 22 and args.synthetic_processor_features == 0x6400FFB


def test_set_registers_splits_at_127_per_hypercall(kernel: FakeKernel) -> None:
    d = dialect.MainlineAbi(kernel)
    values = [(0x20000 + i % 16, i) for i in range(130)]
    d.set_registers(5, 2, values)
    assert [(fd, code, reps, len(data)) for fd, code, data, reps in kernel.hvcalls] == [
        (5, 0x51, 127, 16 + 32 * 127),
        (5, 0x51, 3, 16 + 32 * 3),
    ]
    last = kernel.hvcalls[1][2]
    assert struct.unpack_from("<I", last, 16 + 32 * 2)[0] == 0x20000 + 129 % 16
    assert struct.unpack_from("<Q", last, 16 + 32 * 2 + 16)[0] == 129


def test_get_registers_parses_the_output_and_checks_reps(kernel: FakeKernel) -> None:
    d = dialect.MainlineAbi(kernel)
    kernel.outputs[0x50] = struct.pack("<QQQQ", 0x1111, 0, 0x2222, 0)
    assert d.get_registers(5, 0, [0x20000, 0x20010]) == [0x1111, 0x2222]
    assert kernel.hvcalls[0][2] == struct.pack("<QIBBHII", 0, 0, 0, 0, 0, 0x20000, 0x20010)
    kernel.short_reps = True
    with pytest.raises(hvcall.HypercallError):
        d.get_registers(5, 0, [0x20000, 0x20010])


def test_hypercall_retries_eagain_and_reports_hv_status(kernel: FakeKernel) -> None:
    d = dialect.MainlineAbi(kernel)
    kernel.fail[abi.MSHV_ROOT_HVCALL] = [errno.EAGAIN, errno.EAGAIN]
    d.set_property(3, 0x30003, 0)  # succeeds on the third attempt (§3: older kernels deposit a page)
    assert len(kernel.hvcalls) == 1
    kernel.fail[abi.MSHV_ROOT_HVCALL] = [errno.EINVAL]
    with pytest.raises(hvcall.HypercallError, match="0x45"):
        d.set_property(3, 0x30003, 0)


def test_translate_gva_combines_page_and_offset(kernel: FakeKernel) -> None:
    d = dialect.MainlineAbi(kernel)
    kernel.outputs[0x52] = struct.pack("<QQ", 0, 0xD0001)
    assert d.translate_gva(5, 1, 0x7FFF_1234, 1) == (0, 0xD000_1234)
    assert kernel.hvcalls[0][2] == struct.pack("<QIIQQ", 0, 1, 0, 1, 0x7FFF1)


def test_memory_mapping_flags(kernel: FakeKernel) -> None:
    mainline, legacy = dialect.MainlineAbi(kernel), dialect.LegacyAbi(kernel)
    mainline.map_memory(3, 0x10_0000, 0x20_0000, 0x7F00_0000_0000, writable=True)
    mainline.map_memory(3, 0xFFFF_0000, 0x1_0000, 0x7F00_1000_0000, writable=False)
    mainline.unmap_memory(3, 0x10_0000, 0x20_0000, 0x7F00_0000_0000, writable=True)
    legacy.map_memory(3, 0x10_0000, 0x20_0000, 0x7F00_0000_0000, writable=True)
    regions = [arg for _, _, arg in kernel.calls]
    assert [(r.guest_pfn, r.flags) for r in regions[:3]] == [(0x100, 0b11), (0xFFFF0, 0b10), (0x100, 0b100)]
    assert [r for _, r, _ in kernel.calls] == [abi.MSHV_SET_GUEST_MEMORY] * 3 + [
        abi.MSHV_LEGACY_MAP_GUEST_MEMORY
    ]
    assert regions[3].flags == 0x1 | 0x2 | 0xC | 0x8000


def test_legacy_registers_travel_in_place(kernel: FakeKernel) -> None:
    d = dialect.LegacyAbi(kernel)

    def fill(fd: int, request: int, arg: object = None) -> int:
        kernel.calls.append((fd, request, arg))
        assert isinstance(arg, abi.mshv_vp_registers_legacy)
        assocs = (abi.hv_register_assoc * arg.count).from_address(arg.regs_ptr)
        for a in assocs:
            ctypes.memmove(a.value, (a.name * 2).to_bytes(16, "little"), 16)
        return 0

    d.ioctl = fill
    assert d.get_registers(5, 0, [0x20000, 0x20010]) == [0x40000, 0x40020]
    assert kernel.calls[-1][1] == abi.MSHV_LEGACY_GET_VP_REGISTERS


# --- cross-check with the installed kernel header, when there is one ---------------------------------
HEADER = Path("/usr/include/linux/mshv.h")


@pytest.mark.skipif(
    not HEADER.exists(), reason="<linux/mshv.h> not installed (linux-libc-dev older than 6.15)"
)
def test_mainline_values_match_linux_mshv_h(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc
    names = [name for name, *_ in MAINLINE_IOCTLS]
    structs = ["mshv_create_partition", "mshv_create_vp", "mshv_user_mem_region", "mshv_user_irqfd",
               "mshv_user_ioeventfd", "mshv_user_irq_table", "mshv_user_irq_entry", "mshv_root_hvcall",
               "mshv_run_vp", "mshv_get_set_vp_state"]  # fmt: skip
    lines = ["#include <stdio.h>", "#include <linux/mshv.h>", "int main(void) {"]
    lines += [f'printf("{n} %lu\\n", (unsigned long)({n}));' for n in names]
    lines += [f'printf("sizeof:{s} %lu\\n", (unsigned long)sizeof(struct {s}));' for s in structs]
    lines.append("return 0; }")
    (tmp_path / "m.c").write_text("\n".join(lines))
    subprocess.run([cc, "-o", str(tmp_path / "m"), str(tmp_path / "m.c")], check=True)
    out = subprocess.run([str(tmp_path / "m")], check=True, capture_output=True, text=True).stdout
    values = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    for name in names:
        assert values[name] == getattr(abi, name), name
    for s in structs:
        assert values[f"sizeof:{s}"] == ctypes.sizeof(getattr(abi, s)), s
