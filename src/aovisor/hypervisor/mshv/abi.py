"""The ``/dev/mshv`` ABI: ioctl numbers, ctypes structs, hypercall codes, register ids, message layouts.

Transcribed from the project's specification, /work/shared/reference/mshv.md (cited as "§n" below), which
was collected from mainline Linux ``include/uapi/linux/mshv.h`` and ``include/hyperv/*.h``, rust-vmm/mshv and
Cloud Hypervisor.  ``tests/unit/test_mshv_abi.py`` checks every number, size and offset here against the
values written in that document (and against ``<linux/mshv.h>`` when the host has it).

Three generations exist (§0): **mainline** ("UP", Linux ≥ 6.15: registers, interrupts and properties all
go through the MSHV_ROOT_HVCALL pass-through), the Azure kernels' superset ("DN", same numbers plus 0xF0+
ioctls we do not need), and the **legacy** out-of-tree driver ("OLD", Cloud Hypervisor ≤ v41) with its own
numbering and dedicated ioctls for what mainline does by hypercall.
"""

from __future__ import annotations

import ctypes

from aovisor.hypervisor.ioctl_numbers import IoctlNumbers

# --- ioctl encoding (§1) -----------------------------------------------------------------------------
MSHV_IOCTL = 0xB8
_numbers = IoctlNumbers(MSHV_IOCTL)
_io, _iow, _ior, _iowr = _numbers.io, _numbers.iow, _numbers.ior, _numbers.iowr


u8, u16, u32, u64, s32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32


class _Packed(ctypes.LittleEndianStructure):
    _pack_ = 1


# --- Mainline structures (§2.1) ---------------------------------------------------------------------
class mshv_create_partition(_Packed):
    _fields_ = [("pt_flags", u64), ("pt_isolation", u64)]


# pt_flags bits (§2.1); the kernel maps them to hypervisor creation flags itself.
MSHV_PT_BIT_LAPIC = 0
MSHV_PT_BIT_X2APIC = 1
MSHV_PT_BIT_GPA_SUPER_PAGES = 2
MSHV_PT_BIT_CPU_AND_XSAVE_FEATURES = 3  # 6.19+: the kernel reads mshv_create_partition_v2
MSHV_PT_ISOLATION_NONE = 0


class mshv_create_partition_v2(_Packed):
    _fields_ = [
        ("pt_flags", u64),
        ("pt_isolation", u64),
        ("pt_num_cpu_fbanks", u16),
        ("pt_rsvd", u8 * 6),
        ("pt_cpu_fbanks", u64 * 2),  # a set bit *disables* the feature
        ("pt_rsvd1", u64 * 2),
        ("pt_disabled_xsave", u64),
    ]


class mshv_create_vp(_Packed):
    _fields_ = [("vp_index", u32)]


MSHV_MAX_VPS = 256  # vp_index < 256 (§2.1)


class mshv_user_mem_region(_Packed):
    _fields_ = [
        ("size", u64),
        ("guest_pfn", u64),
        ("userspace_addr", u64),
        ("flags", u8),
        ("rsvd", u8 * 7),
    ]


MSHV_SET_MEM_BIT_WRITABLE = 0
MSHV_SET_MEM_BIT_EXECUTABLE = 1
MSHV_SET_MEM_BIT_UNMAP = 2


class mshv_user_irqfd(_Packed):
    _fields_ = [("fd", s32), ("resamplefd", s32), ("gsi", u32), ("flags", u32)]


MSHV_IRQFD_BIT_DEASSIGN = 0
MSHV_IRQFD_BIT_RESAMPLE = 1


class mshv_user_ioeventfd(_Packed):
    _fields_ = [
        ("datamatch", u64),
        ("addr", u64),
        ("len", u32),
        ("fd", s32),
        ("flags", u32),
        ("rsvd", u8 * 4),
    ]


MSHV_IOEVENTFD_BIT_DATAMATCH = 0
MSHV_IOEVENTFD_BIT_PIO = 1  # refused by MSHV (EOPNOTSUPP): port I/O always exits (§8)
MSHV_IOEVENTFD_BIT_DEASSIGN = 2


class mshv_user_irq_entry(_Packed):
    _fields_ = [("gsi", u32), ("address_lo", u32), ("address_hi", u32), ("data", u32)]


class mshv_user_irq_table(_Packed):
    """Header only; ``mshv_user_irq_entry[nr]`` follows in the same buffer."""

    _fields_ = [("nr", u32), ("rsvd", u32)]


MSHV_MAX_GSI = 4096  # gsi < 4096 (§8)


class mshv_root_hvcall(_Packed):
    _fields_ = [
        ("code", u16),
        ("reps", u16),
        ("in_sz", u16),
        ("out_sz", u16),
        ("status", u16),
        ("rsvd", u8 * 6),
        ("in_ptr", u64),
        ("out_ptr", u64),
    ]


HV_MESSAGE_SIZE = 256


class mshv_run_vp(_Packed):
    _fields_ = [("msg_buf", u8 * HV_MESSAGE_SIZE)]


class mshv_get_set_vp_state(_Packed):
    _fields_ = [("type", u8), ("rsvd", u8 * 3), ("buf_sz", u32), ("buf_ptr", u64)]


MSHV_VP_STATE_LAPIC = 0
MSHV_VP_STATE_XSAVE = 1
MSHV_VP_STATE_SIMP = 2
MSHV_VP_STATE_SIEFP = 3
MSHV_VP_STATE_SYNTHETIC_TIMERS = 4


class mshv_gpap_access_bitmap(_Packed):
    _fields_ = [
        ("access_type", u8),
        ("access_op", u8),
        ("rsvd", u8 * 6),
        ("page_count", u64),
        ("gpap_base", u64),
        ("bitmap_ptr", u64),
    ]


# --- Mainline ioctls (§2) --------------------------------------------------------------------------------
# /dev/mshv
MSHV_CREATE_PARTITION = _iow(0x00, ctypes.sizeof(mshv_create_partition))
# partition fd
MSHV_INITIALIZE_PARTITION = _io(0x00)
MSHV_CREATE_VP = _iow(0x01, ctypes.sizeof(mshv_create_vp))
MSHV_SET_GUEST_MEMORY = _iow(0x02, ctypes.sizeof(mshv_user_mem_region))
MSHV_IRQFD = _iow(0x03, ctypes.sizeof(mshv_user_irqfd))
MSHV_IOEVENTFD = _iow(0x04, ctypes.sizeof(mshv_user_ioeventfd))
MSHV_SET_MSI_ROUTING = _iow(0x05, ctypes.sizeof(mshv_user_irq_table))
MSHV_GET_GPAP_ACCESS_BITMAP = _iowr(0x06, ctypes.sizeof(mshv_gpap_access_bitmap))
MSHV_ROOT_HVCALL = _iowr(0x07, ctypes.sizeof(mshv_root_hvcall))  # partition and VP fds
# VP fd
MSHV_RUN_VP = _ior(0x00, ctypes.sizeof(mshv_run_vp))
MSHV_GET_VP_STATE = _iowr(0x01, ctypes.sizeof(mshv_get_set_vp_state))
MSHV_SET_VP_STATE = _iowr(0x02, ctypes.sizeof(mshv_get_set_vp_state))

# VP fd mmap page indexes (§2.2)
MSHV_VP_MMAP_OFFSET_REGISTERS = 0
MSHV_VP_MMAP_OFFSET_INTERCEPT_MESSAGE = 1
MSHV_VP_MMAP_OFFSET_GHCB = 2

# --- Hypercalls through MSHV_ROOT_HVCALL (§3) ---------------------------------------------------------
HVCALL_GET_PARTITION_PROPERTY = 0x44
HVCALL_SET_PARTITION_PROPERTY = 0x45  # asynchronous: partition fd only
HVCALL_INSTALL_INTERCEPT = 0x4D
HVCALL_GET_VP_REGISTERS = 0x50
HVCALL_SET_VP_REGISTERS = 0x51
HVCALL_TRANSLATE_VIRTUAL_ADDRESS = 0x52
HVCALL_CLEAR_VIRTUAL_INTERRUPT = 0x56
HVCALL_REGISTER_INTERCEPT_RESULT = 0x91
HVCALL_ASSERT_VIRTUAL_INTERRUPT = 0x94
HVCALL_SIGNAL_EVENT_DIRECT = 0xC0
HVCALL_POST_MESSAGE_DIRECT = 0xC1
HVCALL_GET_VP_CPUID_VALUES = 0xF4

HV_HYPERCALL_MAX_INPUT = 4096  # in_sz / out_sz ≤ one page (§3)
HV_MAX_REGISTERS_PER_CALL = 127  # 16 + 32·n ≤ 4096 for SET_VP_REGISTERS (§3)

# HV status codes the kernel leaves in mshv_root_hvcall.status (§3)
HV_STATUS_SUCCESS = 0
HV_STATUS_INVALID_PARAMETER = 5
HV_STATUS_ACCESS_DENIED = 6
HV_STATUS_INSUFFICIENT_MEMORY = 0xB


class hv_input_set_partition_property(_Packed):
    _fields_ = [("partition_id", u64), ("property_code", u32), ("padding", u32), ("property_value", u64)]


class hv_input_get_partition_property(_Packed):
    _fields_ = [("partition_id", u64), ("property_code", u32), ("padding", u32)]


class hv_output_get_partition_property(_Packed):
    _fields_ = [("property_value", u64)]


class hv_input_vp_registers_header(_Packed):
    """Header of GET/SET_VP_REGISTERS; names (u32) or hv_register_assoc follow at offset 16."""

    _fields_ = [
        ("partition_id", u64),
        ("vp_index", u32),
        ("input_vtl", u8),
        ("rsvd_z8", u8),
        ("rsvd_z16", u16),
    ]


class hv_input_assert_virtual_interrupt(_Packed):
    _fields_ = [
        ("partition_id", u64),
        ("control", u64),  # bits 31:0 interrupt type, 32 level-triggered, 33 logical destination mode
        ("dest_addr", u64),  # APIC id
        ("vector", u32),
        ("target_vtl", u8),
        ("rsvd_z0", u8),
        ("rsvd_z1", u16),
    ]


class hv_input_install_intercept(_Packed):
    _fields_ = [("partition_id", u64), ("access_type", u32), ("intercept_type", u32), ("parameter", u64)]


class hv_input_translate_virtual_address(_Packed):
    _fields_ = [
        ("partition_id", u64),
        ("vp_index", u32),
        ("padding", u32),
        ("control_flags", u64),
        ("gva_page", u64),
    ]


class hv_output_translate_virtual_address(_Packed):
    _fields_ = [("result", u64), ("gpa_page", u64)]  # result: low u32 = result code, 0 = success


HV_INTERRUPT_CONTROL_LEVEL_TRIGGERED = 1 << 32
HV_INTERRUPT_CONTROL_LOGICAL_DEST = 1 << 33

HV_INTERCEPT_ACCESS_MASK_READ = 1
HV_INTERCEPT_ACCESS_MASK_WRITE = 2
HV_INTERCEPT_ACCESS_MASK_EXECUTE = 4
HV_INTERCEPT_TYPE_X64_IO_PORT = 0
HV_INTERCEPT_TYPE_X64_MSR = 1
HV_INTERCEPT_TYPE_X64_CPUID = 2
HV_INTERCEPT_TYPE_EXCEPTION = 3
HV_INTERCEPT_TYPE_MMIO = 5

HV_TRANSLATE_GVA_VALIDATE_READ = 1
HV_TRANSLATE_GVA_VALIDATE_WRITE = 2
HV_TRANSLATE_GVA_VALIDATE_EXECUTE = 4
HV_TRANSLATE_GVA_SUCCESS = 0
# The other result codes (enum hv_translate_gva_result_code in Microsoft's hvgdk; mshv.md §3 only says
# "0 = ok"): 1-3 are page-walk failures, 4-7 mean the walk succeeded but the GPA is not plain RAM (an MMIO
# address is "unmapped"), so the returned GPA is still the translation.
HV_TRANSLATE_GVA_PAGE_NOT_PRESENT = 1
HV_TRANSLATE_GVA_PRIVILEGE_VIOLATION = 2
HV_TRANSLATE_GVA_INVALID_PAGE_TABLE_FLAGS = 3
HV_TRANSLATE_GVA_GPA_UNMAPPED = 4
HV_TRANSLATE_GVA_GPA_NO_READ_ACCESS = 5
HV_TRANSLATE_GVA_GPA_NO_WRITE_ACCESS = 6

# Interrupt types (§3)
HV_X64_INTERRUPT_TYPE_FIXED = 0
HV_X64_INTERRUPT_TYPE_LOWESTPRIORITY = 1
HV_X64_INTERRUPT_TYPE_SMI = 2
HV_X64_INTERRUPT_TYPE_REMOTEREAD = 3
HV_X64_INTERRUPT_TYPE_NMI = 4
HV_X64_INTERRUPT_TYPE_INIT = 5
HV_X64_INTERRUPT_TYPE_SIPI = 6
HV_X64_INTERRUPT_TYPE_EXTINT = 7
HV_X64_INTERRUPT_TYPE_LOCALINT0 = 8
HV_X64_INTERRUPT_TYPE_LOCALINT1 = 9

# Partition properties (§3)
HV_PARTITION_PROPERTY_SYNTHETIC_PROC_FEATURES = 0x10001  # set before MSHV_INITIALIZE_PARTITION
HV_PARTITION_PROPERTY_TIME_FREEZE = 0x30003
HV_PARTITION_PROPERTY_GPA_PAGE_ACCESS_TRACKING = 0x50005
HV_PARTITION_PROPERTY_UNIMPLEMENTED_MSR_ACTION = 0x50017
HV_PARTITION_PROPERTY_PHYSICAL_ADDRESS_WIDTH = 0x60006
HV_PARTITION_PROPERTY_PROCESSOR_FEATURES0 = 0x6000A
HV_PARTITION_PROPERTY_PROCESSOR_FEATURES1 = 0x6000B
HV_UNIMPLEMENTED_MSR_ACTION_FAULT = 0
HV_UNIMPLEMENTED_MSR_ACTION_IGNORE_WRITE_READ_ZERO = 1
# The synthetic feature set QEMU and CH give a Linux guest (§3): hypervisor present, HV1, reference
# counter, SynIC, synthetic timers, interrupt-control/hypercall/VP-index regs, reference TSC, guest idle,
# frequency regs, direct stimers, TLB-flush hypercalls, cluster IPI.
HV_SYNTHETIC_PROC_FEATURES_LINUX = 0x6400FFB


# --- Registers (§4.1) ---------------------------------------------------------------------------------
class hv_register_assoc(_Packed):
    _fields_ = [("name", u32), ("reserved1", u32), ("reserved2", u64), ("value", u8 * 16)]


HV_REGISTER_VALUE_SIZE = 16


class hv_x64_segment_register(_Packed):
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("attributes", u16)]


class hv_x64_table_register(_Packed):
    _fields_ = [("pad", u16 * 3), ("limit", u16), ("base", u64)]


HV_X64_REGISTER_RAX = 0x20000  # RAX RCX RDX RBX RSP RBP RSI RDI R8..R15 follow in that order
HV_X64_REGISTER_RCX = 0x20001
HV_X64_REGISTER_RDX = 0x20002
HV_X64_REGISTER_RBX = 0x20003
HV_X64_REGISTER_RSP = 0x20004
HV_X64_REGISTER_RBP = 0x20005
HV_X64_REGISTER_RSI = 0x20006
HV_X64_REGISTER_RDI = 0x20007
HV_X64_REGISTER_R8 = 0x20008
HV_X64_REGISTER_R15 = 0x2000F
HV_X64_REGISTER_RIP = 0x20010
HV_X64_REGISTER_RFLAGS = 0x20011
HV_X64_REGISTER_CR0 = 0x40000
HV_X64_REGISTER_CR2 = 0x40001
HV_X64_REGISTER_CR3 = 0x40002
HV_X64_REGISTER_CR4 = 0x40003
HV_X64_REGISTER_CR8 = 0x40004
HV_X64_REGISTER_XFEM = 0x40005
HV_X64_REGISTER_ES = 0x60000
HV_X64_REGISTER_CS = 0x60001
HV_X64_REGISTER_SS = 0x60002
HV_X64_REGISTER_DS = 0x60003
HV_X64_REGISTER_FS = 0x60004
HV_X64_REGISTER_GS = 0x60005
HV_X64_REGISTER_LDTR = 0x60006
HV_X64_REGISTER_TR = 0x60007
HV_X64_REGISTER_IDTR = 0x70000
HV_X64_REGISTER_GDTR = 0x70001
HV_X64_REGISTER_TSC = 0x80000
HV_X64_REGISTER_EFER = 0x80001
HV_X64_REGISTER_KERNEL_GS_BASE = 0x80002
HV_X64_REGISTER_APIC_BASE = 0x80003
HV_X64_REGISTER_PAT = 0x80004
HV_X64_REGISTER_SYSENTER_CS = 0x80005
HV_X64_REGISTER_SYSENTER_EIP = 0x80006
HV_X64_REGISTER_SYSENTER_ESP = 0x80007
HV_X64_REGISTER_STAR = 0x80008
HV_X64_REGISTER_LSTAR = 0x80009
HV_X64_REGISTER_CSTAR = 0x8000A
HV_X64_REGISTER_SFMASK = 0x8000B
HV_X64_REGISTER_INITIAL_APIC_ID = 0x8000C
HV_X64_REGISTER_MTRR_DEF_TYPE = 0x8000E
HV_X64_REGISTER_XMM0 = 0x30000
HV_X64_REGISTER_DR0 = 0x50000
HV_X64_REGISTER_DR7 = 0x50005
HV_REGISTER_PENDING_INTERRUPTION = 0x10002
HV_REGISTER_INTERRUPT_STATE = 0x10003

# hv_x64_pending_interruption_register (Microsoft hvgdk; WHV_X64_PENDING_INTERRUPTION_REGISTER has the same
# layout): bit 0 pending, bits 3:1 type, bit 4 deliver error code, bits 31:16 vector, bits 63:32 error code.
# Not spelled out in mshv.md, which only names the register (§4.1).
HV_PENDING_INTERRUPTION_PENDING = 1 << 0
HV_PENDING_INTERRUPTION_TYPE_SHIFT = 1
HV_PENDING_INTERRUPTION_TYPE_EXCEPTION = 3
HV_PENDING_INTERRUPTION_DELIVER_ERROR_CODE = 1 << 4
HV_PENDING_INTERRUPTION_VECTOR_SHIFT = 16
HV_PENDING_INTERRUPTION_ERROR_CODE_SHIFT = 32

# Segment attribute bits (§4.1)
HV_SEGMENT_TYPE_MASK = 0xF
HV_SEGMENT_S = 1 << 4
HV_SEGMENT_DPL_SHIFT = 5
HV_SEGMENT_P = 1 << 7
HV_SEGMENT_AVL = 1 << 12
HV_SEGMENT_L = 1 << 13
HV_SEGMENT_DB = 1 << 14
HV_SEGMENT_G = 1 << 15

# --- hv_message (§4.2) --------------------------------------------------------------------------------
HVMSG_UNMAPPED_GPA = 0x80000000
HVMSG_GPA_INTERCEPT = 0x80000001
HVMSG_UNRECOVERABLE_EXCEPTION = 0x80000021
HVMSG_X64_IO_PORT_INTERCEPT = 0x80010000
HVMSG_X64_MSR_INTERCEPT = 0x80010001
HVMSG_X64_CPUID_INTERCEPT = 0x80010002
HVMSG_X64_EXCEPTION_INTERCEPT = 0x80010003
HVMSG_X64_APIC_EOI = 0x80010004
HVMSG_X64_HALT = 0x80010007

# Header (msg+0)
MSG_TYPE_OFFSET = 0  # u32
MSG_PAYLOAD_SIZE_OFFSET = 4  # u8
MSG_PAYLOAD_OFFSET = 16
# x86 intercept header (msg+16, 40 bytes)
MSG_VP_INDEX_OFFSET = 16  # u32
MSG_INSTRUCTION_LENGTH_OFFSET = 20  # u8: bits 3:0 instruction length, 7:4 cr8
MSG_ACCESS_TYPE_OFFSET = 21  # u8: 0 read, 1 write, 2 execute
MSG_EXECUTION_STATE_OFFSET = 22  # u16
MSG_CS_OFFSET = 24  # hv_x64_segment_register
MSG_RIP_OFFSET = 40  # u64
MSG_RFLAGS_OFFSET = 48  # u64
INTERCEPT_ACCESS_READ = 0
INTERCEPT_ACCESS_WRITE = 1
INTERCEPT_ACCESS_EXECUTE = 2
EXECUTION_STATE_CPL_MASK = 0x3
EXECUTION_STATE_CR0_PE = 1 << 2
EXECUTION_STATE_EFER_LMA = 1 << 4
EXECUTION_STATE_INTERRUPTION_PENDING = 1 << 6
EXECUTION_STATE_INTERRUPT_SHADOW = 1 << 12
# X64_IO_PORT_INTERCEPT payload
IO_PORT_NUMBER_OFFSET = 56  # u16
IO_ACCESS_INFO_OFFSET = 58  # u8: bits 2:0 access size, bit 3 string op, bit 4 REP prefix
IO_INSTRUCTION_BYTE_COUNT_OFFSET = 59  # u8
IO_RAX_OFFSET = 64  # u64
IO_INSTRUCTION_BYTES_OFFSET = 72  # u8[16]
IO_DS_OFFSET = 88  # hv_x64_segment_register
IO_ES_OFFSET = 104  # hv_x64_segment_register
IO_RCX_OFFSET = 120  # u64
IO_RSI_OFFSET = 128  # u64
IO_RDI_OFFSET = 136  # u64
IO_ACCESS_SIZE_MASK = 0x7
IO_ACCESS_STRING = 1 << 3
IO_ACCESS_REP = 1 << 4
# UNMAPPED_GPA / GPA_INTERCEPT payload
MEM_CACHE_TYPE_OFFSET = 56  # u32
MEM_INSTRUCTION_BYTE_COUNT_OFFSET = 60  # u8
MEM_ACCESS_INFO_OFFSET = 61  # u8: bit 0 gva valid, bit 1 gva->gpa valid
MEM_TPR_OFFSET = 62  # u8
MEM_GVA_OFFSET = 64  # u64
MEM_GPA_OFFSET = 72  # u64
MEM_INSTRUCTION_BYTES_OFFSET = 80  # u8[16]
MEM_ACCESS_GVA_VALID = 1 << 0
MEM_ACCESS_GVA_GPA_VALID = 1 << 1
# X64_APIC_EOI payload
EOI_VP_INDEX_OFFSET = 16  # u32
EOI_VECTOR_OFFSET = 20  # u32
INSTRUCTION_BYTES_MAX = 16

# --- VP register page, mmap index 0 (§4.4) -----------------------------------------------------------
# Only the offsets every source agrees on are used (GP registers, RIP, RFLAGS); the rest differ between
# Linux's hvhdk.h and rust-vmm/OpenVMM by 8 bytes, so we read those through hypercalls.
REG_PAGE_VERSION_OFFSET = 0  # u16
REG_PAGE_ISVALID_OFFSET = 2  # u8: use the page only if non-zero
REG_PAGE_DIRTY_OFFSET = 4  # u32
REG_PAGE_GP_OFFSET = 8  # u64[16], architectural order
REG_PAGE_RIP_OFFSET = 136
REG_PAGE_RFLAGS_OFFSET = 144
REG_PAGE_DIRTY_GENERAL = 1 << 0
REG_PAGE_DIRTY_IP = 1 << 1
REG_PAGE_DIRTY_XMM = 1 << 2
REG_PAGE_DIRTY_SEGMENT = 1 << 3
REG_PAGE_DIRTY_FLAGS = 1 << 4

# --- LAPIC state for MSHV_GET/SET_VP_STATE type LAPIC --------------------------------------------------
# struct hv_local_interrupt_controller_state (Microsoft hvhdk; QEMU target/i386/mshv/mshv-cpu.c reads and
# writes it to program LINT0/LINT1).  Not spelled out in mshv.md beyond "one page" (§2.1); the fields are
# packed u32s in this order.
_LAPIC_STATE_FIELDS = (
    "apic_id", "apic_version", "apic_ldr", "apic_dfr", "apic_spurious",
    *(f"apic_isr{i}" for i in range(8)), *(f"apic_tmr{i}" for i in range(8)),
    *(f"apic_irr{i}" for i in range(8)),
    "apic_esr", "apic_icr_high", "apic_icr_low", "apic_lvt_timer", "apic_lvt_thermal", "apic_lvt_perfmon",
    "apic_lvt_lint0", "apic_lvt_lint1", "apic_lvt_error", "apic_lvt_cmci", "apic_error_status",
    "apic_initial_count", "apic_counter_value", "apic_divide_configuration", "apic_remote_read",
)  # fmt: skip


class hv_local_interrupt_controller_state(_Packed):
    _fields_ = [(name, u32) for name in _LAPIC_STATE_FIELDS]


APIC_MODE_NMI = 0x4
APIC_MODE_EXTINT = 0x7
VP_STATE_PAGE = 4096  # buf_sz is a multiple of 4096 and buf_ptr 4096-aligned (§2.1)


# --- Legacy out-of-tree ABI, "OLD" (§10) ----------------------------------------------------------------
class mshv_create_partition_legacy(_Packed):
    _fields_ = [
        ("flags", u64),  # raw HV_PARTITION_CREATION_FLAG_*
        ("disabled_processor_features", u64 * 2),
        ("disabled_xsave", u64),
        ("synthetic_processor_features", u64),
        ("isolation_properties", u64),
    ]


HV_PARTITION_CREATION_FLAG_LAPIC_ENABLED = 1 << 13
HV_PARTITION_CREATION_FLAG_X2APIC_CAPABLE = 1 << 22


class mshv_user_mem_region_legacy(_Packed):
    _fields_ = [
        ("size", u64),
        ("guest_pfn", u64),
        ("userspace_addr", u64),
        ("flags", u32),
        ("padding", u32),
    ]


HV_MAP_GPA_READABLE = 0x1
HV_MAP_GPA_WRITABLE = 0x2
HV_MAP_GPA_EXECUTABLE = 0xC  # kernel 0x4 | user 0x8
HV_MAP_GPA_ADJUSTABLE = 0x8000


class mshv_vp_registers_legacy(_Packed):
    _fields_ = [("count", s32), ("padding", u32), ("regs_ptr", u64)]  # regs_ptr -> hv_register_assoc[count]


MSHV_LEGACY_MAX_REGISTERS = 128


class mshv_assert_interrupt_legacy(_Packed):
    _fields_ = [("control", u64), ("dest_addr", u64), ("vector", u32), ("rsvd", u32)]


class mshv_partition_property_legacy(_Packed):
    _fields_ = [("property_code", u32), ("padding", u32), ("property_value", u64)]


class mshv_install_intercept_legacy(_Packed):
    _fields_ = [("access_type_mask", u32), ("intercept_type", u32), ("intercept_parameter", u64)]


class mshv_translate_gva_legacy(_Packed):
    """gva, flags, then *pointers* to the u64 result and u64 gpa (the OLD kernel's struct; 32 bytes as in
    §10's ``_IOWR(0x0E,32)``)."""

    _fields_ = [("gva", u64), ("flags", u64), ("result_ptr", u64), ("gpa_ptr", u64)]


# /dev/mshv
MSHV_LEGACY_CHECK_EXTENSION = _iow(0x00, 4)
MSHV_LEGACY_CREATE_PARTITION = _iow(0x01, ctypes.sizeof(mshv_create_partition_legacy))
# partition fd
MSHV_LEGACY_MAP_GUEST_MEMORY = _iow(0x02, ctypes.sizeof(mshv_user_mem_region_legacy))
MSHV_LEGACY_UNMAP_GUEST_MEMORY = _iow(0x03, ctypes.sizeof(mshv_user_mem_region_legacy))
MSHV_LEGACY_CREATE_VP = _iow(0x04, ctypes.sizeof(mshv_create_vp))
MSHV_LEGACY_INSTALL_INTERCEPT = _iow(0x08, ctypes.sizeof(mshv_install_intercept_legacy))
MSHV_LEGACY_ASSERT_INTERRUPT = _iow(0x09, ctypes.sizeof(mshv_assert_interrupt_legacy))
MSHV_LEGACY_SET_PARTITION_PROPERTY = _iow(0x0C, ctypes.sizeof(mshv_partition_property_legacy))
MSHV_LEGACY_GET_PARTITION_PROPERTY = _iowr(0x0D, ctypes.sizeof(mshv_partition_property_legacy))
MSHV_LEGACY_IRQFD = _iow(0x0E, ctypes.sizeof(mshv_user_irqfd))
MSHV_LEGACY_IOEVENTFD = _iow(0x0F, ctypes.sizeof(mshv_user_ioeventfd))
MSHV_LEGACY_SET_MSI_ROUTING = _iow(0x11, ctypes.sizeof(mshv_user_irq_table))
MSHV_LEGACY_ROOT_HVCALL = _iowr(0x35, ctypes.sizeof(mshv_root_hvcall))
# VP fd
MSHV_LEGACY_GET_VP_REGISTERS = _iowr(0x05, ctypes.sizeof(mshv_vp_registers_legacy))
MSHV_LEGACY_SET_VP_REGISTERS = _iow(0x06, ctypes.sizeof(mshv_vp_registers_legacy))
MSHV_LEGACY_RUN_VP = _ior(0x07, HV_MESSAGE_SIZE)
MSHV_LEGACY_TRANSLATE_GVA = _iowr(0x0E, ctypes.sizeof(mshv_translate_gva_legacy))
