"""The hypervisor-neutral interface: ``Hypervisor`` -> ``Vm`` -> ``Vcpu``, register types, and ``VmOps``.

As in Cloud Hypervisor's ``hypervisor`` crate, port I/O and MMIO exits are dispatched *inside* each backend's
``Vcpu.run`` through the :class:`VmOps` callbacks, so the vCPU loop above is identical for KVM and MSHV and
``run`` only returns for the few events the loop must act on (:class:`VcpuExit`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
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


@dataclass
class Segment:
    """A segment register with its hidden part (``struct kvm_segment``'s fields)."""

    base: int = 0
    limit: int = 0xFFFF
    selector: int = 0
    type: int = 0
    present: bool = True
    dpl: int = 0
    db: bool = False
    s: bool = True
    l: bool = False  # noqa: E741 - the architectural name of the 64-bit code bit
    g: bool = False
    avl: bool = False
    unusable: bool = False

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


@dataclass
class DescriptorTable:
    """GDTR or IDTR: base and limit."""

    base: int = 0
    limit: int = 0xFFFF


@dataclass
class Regs:
    """General-purpose registers, RIP and RFLAGS (bit 1 of RFLAGS is always 1)."""

    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x2


@dataclass
class SpecialRegs:
    """Segment, descriptor-table and control registers, EFER and the APIC base."""

    cs: Segment = field(default_factory=Segment)
    ds: Segment = field(default_factory=Segment)
    es: Segment = field(default_factory=Segment)
    fs: Segment = field(default_factory=Segment)
    gs: Segment = field(default_factory=Segment)
    ss: Segment = field(default_factory=Segment)
    tr: Segment = field(default_factory=Segment)
    ldt: Segment = field(default_factory=Segment)
    gdt: DescriptorTable = field(default_factory=DescriptorTable)
    idt: DescriptorTable = field(default_factory=DescriptorTable)
    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    apic_base: int = 0


@dataclass
class CpuidEntry:
    """One CPUID leaf (``function``) and subleaf (``index``) with its four output registers."""

    function: int
    index: int = 0
    flags: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0


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

    def create_vcpu(self, index: int) -> Vcpu: ...

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

    def irqchip_device(self) -> BusDevice | None:
        """The IOAPIC the VMM must map at layout.IOAPIC_START, or None when the hypervisor has its own."""
        ...

    def close(self) -> None: ...


class Hypervisor(Protocol):
    name: str

    def create_vm(self) -> Vm: ...

    def close(self) -> None: ...
