"""The KVM user-space ABI: ioctl numbers, capabilities, exit reasons and ctypes structs (x86-64).

Everything here is transcribed from ``include/uapi/linux/kvm.h`` and ``arch/x86/include/uapi/asm/kvm.h``;
``tests/unit/test_kvm_abi.py`` compiles a C program against the installed headers and checks every number and
struct size below against them, so a typo cannot survive.
"""

from __future__ import annotations

import ctypes

from aovisor.hypervisor.ioctl_numbers import IoctlNumbers

# --- ioctl encoding (include/uapi/asm-generic/ioctl.h) ------------------------------------------
KVMIO = 0xAE
_numbers = IoctlNumbers(KVMIO)
_io, _iow, _ior, _iowr = _numbers.io, _numbers.iow, _numbers.ior, _numbers.iowr


KVM_API_VERSION = 12

# --- Structures -------------------------------------------------------------------------------------
u8, u16, u32, u64, s32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


KVM_MEM_READONLY = 1 << 1


_KVM_REGS_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
)  # fmt: skip


class kvm_regs(ctypes.Structure):
    _fields_ = [(name, u64) for name in _KVM_REGS_NAMES]


class kvm_segment(ctypes.Structure):
    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_fpu(ctypes.Structure):
    _fields_ = [
        ("fpr", (u8 * 16) * 8),
        ("fcw", u16),
        ("fsw", u16),
        ("ftwx", u8),
        ("pad1", u8),
        ("last_opcode", u16),
        ("last_ip", u64),
        ("last_dp", u64),
        ("xmm", (u8 * 16) * 16),
        ("mxcsr", u32),
        ("pad2", u32),
    ]


class kvm_msr_entry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(ctypes.Structure):
    """Header only; entries (kvm_msr_entry[nmsrs]) follow it in the same buffer."""

    _fields_ = [("nmsrs", u32), ("pad", u32)]


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """Header only; entries (kvm_cpuid_entry2[nent]) follow it in the same buffer."""

    _fields_ = [("nent", u32), ("padding", u32)]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # (sic) the kernel's spelling


class kvm_lapic_state(ctypes.Structure):
    _fields_ = [("regs", ctypes.c_char * 1024)]


class kvm_irq_level(ctypes.Structure):
    _fields_ = [("irq", u32), ("level", u32)]


class kvm_pit_config(ctypes.Structure):
    _fields_ = [("flags", u32), ("pad", u32 * 15)]


KVM_PIT_SPEAKER_DUMMY = 1  # the kernel also emulates port 0x61 (PC speaker/PIT gate 2)


class kvm_reinject_control(ctypes.Structure):
    _fields_ = [("pit_reinject", u8), ("reserved", u8 * 31)]


class kvm_irqfd(ctypes.Structure):
    _fields_ = [("fd", u32), ("gsi", u32), ("flags", u32), ("resamplefd", u32), ("pad", u8 * 16)]


KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1


class kvm_ioeventfd(ctypes.Structure):
    _fields_ = [
        ("datamatch", u64),
        ("addr", u64),
        ("len", u32),
        ("fd", s32),
        ("flags", u32),
        ("pad", u8 * 36),
    ]


KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2


class kvm_irq_routing_irqchip(ctypes.Structure):
    _fields_ = [("irqchip", u32), ("pin", u32)]


class kvm_irq_routing_msi(ctypes.Structure):
    _fields_ = [("address_lo", u32), ("address_hi", u32), ("data", u32), ("devid", u32)]


class _kvm_irq_routing_union(ctypes.Union):
    _fields_ = [("irqchip", kvm_irq_routing_irqchip), ("msi", kvm_irq_routing_msi), ("pad", u32 * 8)]


class kvm_irq_routing_entry(ctypes.Structure):
    _fields_ = [("gsi", u32), ("type", u32), ("flags", u32), ("pad", u32), ("u", _kvm_irq_routing_union)]


class kvm_irq_routing(ctypes.Structure):
    """Header only; entries (kvm_irq_routing_entry[nr]) follow it in the same buffer."""

    _fields_ = [("nr", u32), ("flags", u32)]


KVM_IRQ_ROUTING_IRQCHIP = 1
KVM_IRQ_ROUTING_MSI = 2
KVM_IRQCHIP_PIC_MASTER = 0
KVM_IRQCHIP_PIC_SLAVE = 1
KVM_IRQCHIP_IOAPIC = 2


class kvm_msi(ctypes.Structure):
    _fields_ = [
        ("address_lo", u32),
        ("address_hi", u32),
        ("data", u32),
        ("flags", u32),
        ("devid", u32),
        ("pad", u8 * 12),
    ]


class kvm_clock_data(ctypes.Structure):
    _fields_ = [
        ("clock", u64),
        ("flags", u32),
        ("pad0", u32),
        ("realtime", u64),
        ("host_tsc", u64),
        ("pad", u32 * 4),
    ]


class kvm_mp_state(ctypes.Structure):
    _fields_ = [("mp_state", u32)]


KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1


class kvm_enable_cap(ctypes.Structure):
    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


# --- struct kvm_run (the vCPU's shared page) ------------------------------------------------------
# Offsets of the fields the run loop reads; the exit-specific union starts at byte 32.
KVM_RUN_IMMEDIATE_EXIT_OFFSET = 1
KVM_RUN_EXIT_REASON_OFFSET = 8
KVM_RUN_EXIT_UNION_OFFSET = 32
# io: direction u8, size u8, port u16, count u32, data_offset u64
KVM_RUN_IO_FORMAT = "<BBHIQ"
# mmio: phys_addr u64, data u8[8] (read as one little-endian u64), len u32, is_write u8
KVM_RUN_MMIO_FORMAT = "<QQIB"
KVM_RUN_MMIO_ADDR_OFFSET = 32
KVM_RUN_MMIO_DATA_OFFSET = 40
KVM_RUN_MMIO_LEN_OFFSET = 48
KVM_RUN_MMIO_IS_WRITE_OFFSET = 52
# system_event: type u32, ndata u32, data u64[16]
KVM_RUN_SYSTEM_EVENT_FORMAT = "<II"
# internal: suberror u32, ndata u32, data u64[16]
KVM_RUN_INTERNAL_FORMAT = "<II"
KVM_RUN_FAIL_ENTRY_FORMAT = "<QI"

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

# Exit reasons
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3

# --- Capabilities ------------------------------------------------------------------------------------
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_REINJECT_CONTROL = 24
KVM_CAP_IRQ_ROUTING = 25
KVM_CAP_IRQFD = 32
KVM_CAP_PIT2 = 33
KVM_CAP_IOEVENTFD = 36
KVM_CAP_ADJUST_CLOCK = 39
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_TSC_DEADLINE_TIMER = 72
KVM_CAP_IMMEDIATE_EXIT = 136

# --- ioctls ------------------------------------------------------------------------------------------
# /dev/kvm
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, ctypes.sizeof(kvm_cpuid2))
# VM fd
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(kvm_userspace_memory_region))
KVM_SET_TSS_ADDR = _io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, ctypes.sizeof(u64))
KVM_CREATE_IRQCHIP = _io(0x60)
KVM_IRQ_LINE = _iow(0x61, ctypes.sizeof(kvm_irq_level))
KVM_SET_GSI_ROUTING = _iow(0x6A, ctypes.sizeof(kvm_irq_routing))
KVM_IRQFD = _iow(0x76, ctypes.sizeof(kvm_irqfd))
KVM_CREATE_PIT2 = _iow(0x77, ctypes.sizeof(kvm_pit_config))
KVM_REINJECT_CONTROL = _io(0x71)
KVM_IOEVENTFD = _iow(0x79, ctypes.sizeof(kvm_ioeventfd))
KVM_SET_CLOCK = _iow(0x7B, ctypes.sizeof(kvm_clock_data))
KVM_GET_CLOCK = _ior(0x7C, ctypes.sizeof(kvm_clock_data))
KVM_SIGNAL_MSI = _iow(0xA5, ctypes.sizeof(kvm_msi))
# vCPU fd
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, ctypes.sizeof(kvm_regs))
KVM_SET_REGS = _iow(0x82, ctypes.sizeof(kvm_regs))
KVM_GET_SREGS = _ior(0x83, ctypes.sizeof(kvm_sregs))
KVM_SET_SREGS = _iow(0x84, ctypes.sizeof(kvm_sregs))
KVM_GET_MSRS = _iowr(0x88, ctypes.sizeof(kvm_msrs))
KVM_SET_MSRS = _iow(0x89, ctypes.sizeof(kvm_msrs))
KVM_GET_FPU = _ior(0x8C, ctypes.sizeof(kvm_fpu))
KVM_SET_FPU = _iow(0x8D, ctypes.sizeof(kvm_fpu))
KVM_GET_LAPIC = _ior(0x8E, ctypes.sizeof(kvm_lapic_state))
KVM_SET_LAPIC = _iow(0x8F, ctypes.sizeof(kvm_lapic_state))
KVM_SET_CPUID2 = _iow(0x90, ctypes.sizeof(kvm_cpuid2))
KVM_GET_MP_STATE = _ior(0x98, ctypes.sizeof(kvm_mp_state))
KVM_SET_MP_STATE = _iow(0x99, ctypes.sizeof(kvm_mp_state))
KVM_ENABLE_CAP = _iow(0xA3, ctypes.sizeof(kvm_enable_cap))

# --- LAPIC register offsets and delivery modes used with kvm_lapic_state (SDM Vol. 3A §11.5.1) -----
APIC_LVT_LINT0 = 0x350
APIC_LVT_LINT1 = 0x360
APIC_MODE_NMI = 0x4
APIC_MODE_EXTINT = 0x7
