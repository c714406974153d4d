"""The hypervisor-neutral interface: ``Hypervisor`` -> ``Vm`` -> ``Vcpu``, register types, and ``VmOps``.

As in Cloud Hypervisor's ``hypervisor`` crate, port I/O and MMIO exits are dispatched *inside* each backend's
``Vcpu.run`` through the :class:`VmOps` callbacks, so the vCPU loop above is identical for KVM and MSHV and
``run`` only returns for the few events the loop must act on (:class:`VcpuExit`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from aovisor.lean_typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from typing import ClassVar, Self

    from aovisor.devices.bus import BusDevice


class VmOps(Protocol):
    """Where a backend sends the guest's device accesses. ``size`` is in bytes."""

    def pio_read(self, port: int, size: int) -> int: ...

    def pio_write(self, port: int, size: int, value: int) -> None: ...

    def mmio_read(self, addr: int, size: int) -> int: ...

    def mmio_write(self, addr: int, size: int, value: int) -> None: ...


class VcpuExit(enum.Enum):
    """Why ``Vcpu.run`` returned to the vCPU loop."""

    INTERRUPTED = "interrupted"  # kicked (signal / immediate_exit): check for pause or stop requests
    HALT = "halt"  # HLT with no in-kernel irqchip to wait in
    RESET = "reset"  # triple fault or a reset system event: reboot the VM
    SHUTDOWN = "shutdown"  # the guest powered off through the hypervisor (e.g. PSCI/system event)


class _Record:
    """Field-wise ``==``, a ``repr`` and :meth:`copy` for the mutable register records below.

    They are small slotted classes rather than dataclasses: :mod:`dataclasses` imports :mod:`inspect`, which
    alone costs more start-up time than the whole boot path needs these records for.  Each subclass names
    its fields, in order, in ``_fields``, which is also its ``__slots__``.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Record) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable (as a dataclass with eq)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({values})"

    def copy(self) -> Self:
        """A shallow copy (nested records are shared, as with ``dataclasses.replace``)."""
        new = object.__new__(type(self))
        for name in self._fields:
            setattr(new, name, getattr(self, name))
        return new


class Segment(_Record):
    """A segment register with its hidden part (``struct kvm_segment``'s fields)."""

    _fields = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable")
    __slots__ = _fields

    def __init__(
        self,
        base: int = 0,
        limit: int = 0xFFFF,
        selector: int = 0,
        type: int = 0,
        present: bool = True,
        dpl: int = 0,
        db: bool = False,
        s: bool = True,
        l: bool = False,  # noqa: E741 - the architectural name of the 64-bit code bit
        g: bool = False,
        avl: bool = False,
        unusable: bool = False,
    ) -> None:
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.db = db
        self.s = s
        self.l = l
        self.g = g
        self.avl = avl
        self.unusable = unusable

    @classmethod
    def from_gdt_entry(cls, selector: int, entry: int) -> Segment:
        """Decode a 64-bit GDT descriptor (SDM Vol. 3A §3.4.5) into the hidden segment state."""
        limit = (entry & 0xFFFF) | ((entry >> 32) & 0xF0000)
        g = bool((entry >> 55) & 1)
        return cls(
            base=((entry >> 16) & 0xFFFFFF) | (((entry >> 56) & 0xFF) << 24),
            limit=(limit << 12) | 0xFFF if g else limit,
            selector=selector,
            type=(entry >> 40) & 0xF,
            s=bool((entry >> 44) & 1),
            dpl=(entry >> 45) & 3,
            present=bool((entry >> 47) & 1),
            avl=bool((entry >> 52) & 1),
            l=bool((entry >> 53) & 1),
            db=bool((entry >> 54) & 1),
            g=g,
            unusable=not ((entry >> 47) & 1),
        )


class DescriptorTable(_Record):
    """GDTR or IDTR: base and limit."""

    _fields = ("base", "limit")
    __slots__ = _fields

    def __init__(self, base: int = 0, limit: int = 0xFFFF) -> None:
        self.base = base
        self.limit = limit


class Regs(_Record):
    """General-purpose registers, RIP and RFLAGS (bit 1 of RFLAGS is always 1)."""

    _fields = (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "rip", "rflags",
    )  # fmt: skip
    __slots__ = _fields

    def __init__(
        self,
        rax: int = 0,
        rbx: int = 0,
        rcx: int = 0,
        rdx: int = 0,
        rsi: int = 0,
        rdi: int = 0,
        rsp: int = 0,
        rbp: int = 0,
        r8: int = 0,
        r9: int = 0,
        r10: int = 0,
        r11: int = 0,
        r12: int = 0,
        r13: int = 0,
        r14: int = 0,
        r15: int = 0,
        rip: int = 0,
        rflags: int = 0x2,
    ) -> None:
        self.rax, self.rbx, self.rcx, self.rdx = rax, rbx, rcx, rdx
        self.rsi, self.rdi, self.rsp, self.rbp = rsi, rdi, rsp, rbp
        self.r8, self.r9, self.r10, self.r11 = r8, r9, r10, r11
        self.r12, self.r13, self.r14, self.r15 = r12, r13, r14, r15
        self.rip, self.rflags = rip, rflags


class SpecialRegs(_Record):
    """Segment, descriptor-table and control registers, EFER and the APIC base.

    A segment or table left out is a new default one (never shared between two instances)."""

    _fields = (
        "cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt", "gdt", "idt",
        "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base",
    )  # fmt: skip
    __slots__ = _fields

    def __init__(
        self,
        cs: Segment | None = None,
        ds: Segment | None = None,
        es: Segment | None = None,
        fs: Segment | None = None,
        gs: Segment | None = None,
        ss: Segment | None = None,
        tr: Segment | None = None,
        ldt: Segment | None = None,
        gdt: DescriptorTable | None = None,
        idt: DescriptorTable | None = None,
        cr0: int = 0,
        cr2: int = 0,
        cr3: int = 0,
        cr4: int = 0,
        cr8: int = 0,
        efer: int = 0,
        apic_base: int = 0,
    ) -> None:
        self.cs = cs or Segment()
        self.ds = ds or Segment()
        self.es = es or Segment()
        self.fs = fs or Segment()
        self.gs = gs or Segment()
        self.ss = ss or Segment()
        self.tr = tr or Segment()
        self.ldt = ldt or Segment()
        self.gdt = gdt or DescriptorTable()
        self.idt = idt or DescriptorTable()
        self.cr0, self.cr2, self.cr3, self.cr4, self.cr8 = cr0, cr2, cr3, cr4, cr8
        self.efer = efer
        self.apic_base = apic_base


class CpuidEntry(_Record):
    """One CPUID leaf (``function``) and subleaf (``index``) with its four output registers."""

    _fields = ("function", "index", "flags", "eax", "ebx", "ecx", "edx")
    __slots__ = _fields

    def __init__(
        self,
        function: int,
        index: int = 0,
        flags: int = 0,
        eax: int = 0,
        ebx: int = 0,
        ecx: int = 0,
        edx: int = 0,
    ) -> None:
        self.function = function
        self.index = index
        self.flags = flags
        self.eax, self.ebx, self.ecx, self.edx = eax, ebx, ecx, edx


class Vcpu(Protocol):
    index: int

    def get_regs(self) -> Regs: ...

    def set_regs(self, regs: Regs) -> None: ...

    def get_sregs(self) -> SpecialRegs: ...

    def set_sregs(self, sregs: SpecialRegs) -> None: ...

    def set_cpuid(self, entries: list[CpuidEntry]) -> None: ...

    def set_msrs(self, msrs: dict[int, int]) -> None: ...

    def setup_fpu(self) -> None: ...

    def setup_lapic(self) -> None:
        """Program LINT0 as ExtINT and LINT1 as NMI, as firmware would."""
        ...

    def run(self, ops: VmOps) -> VcpuExit:
        """Run until an event the vCPU loop must handle; PIO/MMIO are dispatched to ``ops``."""
        ...

    def set_immediate_exit(self, value: bool) -> None:
        """Make the next (or current, once kicked) ``run`` return INTERRUPTED at once."""
        ...

    def close(self) -> None: ...


class Vm(Protocol):
    def map_memory(
        self, slot: int, gpa: int, size: int, host_address: int, readonly: bool = False
    ) -> None: ...

    cpuid_is_programmable: bool
    """Whether :meth:`Vcpu.set_cpuid` decides what the guest reads (KVM), or the hypervisor answers CPUID
    itself (MSHV), so that a CPU topology other than its own cannot be offered."""

    def create_vcpu(self, index: int, apic_id: int | None = None) -> Vcpu:
        """vCPU ``index`` (0 is the BSP) with initial APIC id ``apic_id`` (default: ``index``)."""
        ...

    def irq_line(self, gsi: int) -> Callable[[bool], None]:
        """A callable that sets the level of wired interrupt ``gsi`` (an IOAPIC pin)."""
        ...

    def set_msi_route(self, gsi: int, address: int, data: int) -> None:
        """Route interrupt ``gsi`` (>= 24, above the IOAPIC pins) to an MSI message (address, data)."""
        ...

    def register_irqfd(self, eventfd: int, gsi: int) -> None:
        """Writing to ``eventfd`` raises ``gsi`` in the hypervisor, with no exit to user space."""
        ...

    def register_ioeventfd(
        self, eventfd: int, addr: int, length: int, *, pio: bool = False, datamatch: int | None = None
    ) -> None:
        """A guest write of ``length`` bytes to ``addr`` signals ``eventfd`` instead of exiting
        (MSHV: MMIO only)."""
        ...

    def get_clock(self) -> int:
        """The guest's clock (ns), for pause/resume and snapshots."""
        ...

    def set_clock(self, clock: int) -> None: ...

    def supported_cpuid(self) -> list[CpuidEntry]: ...

    def create_irqchip(self) -> BusDevice | None:
        """Create the interrupt controllers, once guest memory is mapped; the IOAPIC the VMM must map at
        layout.IOAPIC_START, or None when the hypervisor has its own."""
        ...

    def close(self) -> None: ...


class Hypervisor(Protocol):
    name: str

    def create_vm(self) -> Vm: ...

    def close(self) -> None: ...
