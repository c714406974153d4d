"""A KVM VM fd: memory slots, in-kernel irqchip and PIT, interrupt lines, irqfd/ioeventfd, vCPU creation."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

from aovisor.arch.x86_64 import cpuid, layout
from aovisor.hypervisor.base import CpuidEntry
from aovisor.hypervisor.kvm import abi
from aovisor.hypervisor.syscalls import ioctl
from aovisor.lean_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from threading import Thread

    from aovisor.hypervisor.kvm.system import Kvm
    from aovisor.hypervisor.kvm.vcpu import KvmVcpu


class KvmVm:
    cpuid_is_programmable = True

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm
        self.fd = ioctl(kvm.fd, abi.KVM_CREATE_VM, 0)
        os.set_inheritable(self.fd, False)
        # VMX needs a TSS and an identity-map page inside the guest physical space but outside RAM; SVM
        # ignores them.  Place them at the top of the MMIO hole, as QEMU and Firecracker do.
        ioctl(self.fd, abi.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(layout.KVM_IDENTITY_MAP_START))
        ioctl(self.fd, abi.KVM_SET_TSS_ADDR, layout.KVM_TSS_START)
        # The GSI routing table (see _commit_routes); first sent by create_irqchip, which it needs.
        self._routes: dict[int, list[tuple[int, int, int]]] = _legacy_routes()
        self._pit_setup: Thread | None = None  # see create_irqchip

    def map_memory(self, slot: int, gpa: int, size: int, host_address: int, readonly: bool = False) -> None:
        region = abi.kvm_userspace_memory_region(
            slot=slot,
            flags=abi.KVM_MEM_READONLY if readonly else 0,
            guest_phys_addr=gpa,
            memory_size=size,
            userspace_addr=host_address,
        )
        ioctl(self.fd, abi.KVM_SET_USER_MEMORY_REGION, region)

    def set_irq_line(self, gsi: int, level: bool) -> None:
        """KVM_IRQ_LINE: drive an in-kernel PIC/IOAPIC input (GSI ``gsi``) to ``level``."""
        req = abi.kvm_irq_level(irq=gsi, level=int(level))
        ioctl(self.fd, abi.KVM_IRQ_LINE, req)

    def _commit_routes(self) -> None:
        """KVM_SET_GSI_ROUTING replaces the whole table, so every change re-sends all routes."""
        entries = [
            (gsi, kind, a, b) for gsi, targets in sorted(self._routes.items()) for kind, a, b in targets
        ]
        n = len(entries)

        class Table(ctypes.Structure):
            _fields_ = [("header", abi.kvm_irq_routing), ("entries", abi.kvm_irq_routing_entry * n)]

        table = Table()
        table.header.nr = n
        for k, (gsi, kind, a, b) in zip(table.entries, entries, strict=True):
            k.gsi, k.type = gsi, kind
            if kind == abi.KVM_IRQ_ROUTING_IRQCHIP:
                k.u.irqchip.irqchip, k.u.irqchip.pin = a, b
            else:
                k.u.msi.address_lo, k.u.msi.address_hi, k.u.msi.data = a & 0xFFFFFFFF, a >> 32, b
        ioctl(self.fd, abi.KVM_SET_GSI_ROUTING, table)

    def set_msi_route(self, gsi: int, address: int, data: int) -> None:
        """Route ``gsi`` (an irqfd's) to an MSI message, as a device's MSI-X vector is programmed."""
        self._routes[gsi] = [(abi.KVM_IRQ_ROUTING_MSI, address, data)]
        self._commit_routes()

    def irq_line(self, gsi: int) -> Callable[[bool], None]:
        def set_level(level: bool) -> None:
            self.set_irq_line(gsi, level)

        return set_level

    def register_irqfd(self, eventfd: int, gsi: int) -> None:
        ioctl(self.fd, abi.KVM_IRQFD, abi.kvm_irqfd(fd=eventfd, gsi=gsi))

    def register_ioeventfd(
        self, eventfd: int, addr: int, length: int, *, pio: bool = False, datamatch: int | None = None
    ) -> None:
        flags = (abi.KVM_IOEVENTFD_FLAG_PIO if pio else 0) | (
            abi.KVM_IOEVENTFD_FLAG_DATAMATCH if datamatch is not None else 0
        )
        req = abi.kvm_ioeventfd(datamatch=datamatch or 0, addr=addr, len=length, fd=eventfd, flags=flags)
        ioctl(self.fd, abi.KVM_IOEVENTFD, req)

    def get_clock(self) -> int:
        data = abi.kvm_clock_data()
        ioctl(self.fd, abi.KVM_GET_CLOCK, data)
        return int(data.clock)

    def set_clock(self, clock: int) -> None:
        ioctl(self.fd, abi.KVM_SET_CLOCK, abi.kvm_clock_data(clock=clock))

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID plus two things KVM leaves to user space, as QEMU ``-cpu host`` does:

        * the LAPIC timer's TSC-deadline mode, which the in-kernel LAPIC emulates
          (KVM_CAP_TSC_DEADLINE_TIMER) but older kernels leave out of that table (api.rst,
          KVM_GET_SUPPORTED_CPUID; it gained the bit with KVM commit 9be4ec35d668, early 2025; the lab's L2
          kernel, 6.12, lacks it).  With it, Linux skips calibrating the LAPIC timer (calibrate_APIC_clock);
        * the host's brand string (leaves 0x80000002-4, which KVM reports as zeros), so the guest's
          ``model name`` is the host's rather than a name Linux makes up from family and model.
        """
        entries = self.kvm.supported_cpuid()
        tsc_deadline = self.kvm.check_extension(abi.KVM_CAP_TSC_DEADLINE_TIMER)
        brand = cpuid.host_brand_string()
        brand_leaves = {e.function: e for e in cpuid.brand_string_leaves(brand)} if brand else {}
        for i, e in enumerate(entries):
            if e.function == 1 and tsc_deadline:
                e.ecx |= cpuid.LEAF1_ECX_TSC_DEADLINE
            elif e.function in brand_leaves and not (e.eax or e.ebx or e.ecx or e.edx):
                entries[i] = brand_leaves[e.function]
        return entries

    def create_irqchip(self) -> None:
        """In-kernel PIC + IOAPIC + LAPICs and PIT: interrupt delivery and HLT never exit to Python.

        After the guest memory is mapped: measured here, a memory slot added once the in-kernel irqchip
        exists takes ~6 ms to add (128 MiB), the same slot added before it 0.2 ms (the slot update waits
        out the SRCU grace period that the irqchip's I/O bus registrations started).
        """
        ioctl(self.fd, abi.KVM_CREATE_IRQCHIP, 0)
        pit = abi.kvm_pit_config(flags=abi.KVM_PIT_SPEAKER_DUMMY)
        ioctl(self.fd, abi.KVM_CREATE_PIT2, pit)
        self._commit_routes()
        import threading

        self._pit_setup = threading.Thread(target=self._disable_pit_reinjection, name="kvm-pit-setup")
        self._pit_setup.start()
        return None  # the IOAPIC is in the kernel

    def _disable_pit_reinjection(self) -> None:
        """KVM_REINJECT_CONTROL off: the PIT delivers each tick as it expires and drops the ones a busy
        guest missed (QEMU's ``lost_tick_policy=discard``), instead of queueing them for catch-up.

        Why: a tickless guest keeps time from its clocksource, not by counting ticks, and reinjection
        inhibits AMD's AVIC for the whole VM (arch/x86/kvm/i8254.c, kvm_pit_set_reinject).  Switching it
        off waits for two SRCU grace periods of the VM's irq_srcu (unregistering the PIT's IRQ ack and
        mask notifiers), ~14 ms here; so does destroying a PIT that still reinjects, which would delay
        every exit of the VMM.  On its own thread the wait overlaps the rest of the boot instead.
        """
        try:
            ioctl(self.fd, abi.KVM_REINJECT_CONTROL, abi.kvm_reinject_control(pit_reinject=0))
        except OSError as e:  # harmless: the PIT keeps reinjecting and the VM's teardown is slower
            from aovisor.logs import get_logger

            get_logger(__name__).warning("could not switch off PIT tick reinjection: %s", e.strerror)

    def create_vcpu(self, index: int, apic_id: int | None = None) -> KvmVcpu:
        """KVM_CREATE_VCPU with ``apic_id`` as the vcpu id: KVM's LAPIC takes its initial APIC id from the
        vcpu id (lapic.c, kvm_lapic_reset), and vcpu id 0 is the BSP (kvm->arch.bsp_vcpu_id's default)."""
        from aovisor.hypervisor.kvm.vcpu import KvmVcpu

        return KvmVcpu(self, index, index if apic_id is None else apic_id)

    def close(self) -> None:
        if self._pit_setup is not None:
            self._pit_setup.join()  # not to close the fd under its ioctl
        os.close(self.fd)


def _legacy_routes() -> dict[int, list[tuple[int, int, int]]]:
    """ISA IRQs 0-15 to the 8259 pair and IOAPIC pins; IRQ0 (the PIT) to IOAPIC pin 2.

    The MADT declares the PC's interrupt source override IRQ0 -> GSI 2, so Linux programs pin 2 for the
    timer; KVM's default table would deliver the PIT on pin 0 (as QEMU, we re-route it).  GSI 2 itself is
    the 8259 cascade and has no IOAPIC input of its own.
    """
    routes: dict[int, list[tuple[int, int, int]]] = {}
    for gsi in range(layout.IOAPIC_PINS):
        targets = []
        if gsi < 8:
            targets.append((abi.KVM_IRQ_ROUTING_IRQCHIP, abi.KVM_IRQCHIP_PIC_MASTER, gsi))
        elif gsi < 16:
            targets.append((abi.KVM_IRQ_ROUTING_IRQCHIP, abi.KVM_IRQCHIP_PIC_SLAVE, gsi - 8))
        if gsi == 0:
            targets.append((abi.KVM_IRQ_ROUTING_IRQCHIP, abi.KVM_IRQCHIP_IOAPIC, 2))
        elif gsi != 2:
            targets.append((abi.KVM_IRQ_ROUTING_IRQCHIP, abi.KVM_IRQCHIP_IOAPIC, gsi))
        routes[gsi] = targets
    return routes
