"""The recipe that turns a :class:`VmConfig` into a runnable :class:`VirtualMachine`.

Read :func:`build_vm` top to bottom: it is the whole machine, one ``attach_*`` step at a time (the shape of
Firecracker's ``builder.rs``).
"""

from __future__ import annotations

import os

from aovisor.arch.x86_64 import layout
from aovisor.errors import ConfigError
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger
from aovisor.memory import GuestMemory
from aovisor.vmm.vm import VirtualMachine

if TYPE_CHECKING:
    from aovisor.config import VcpuAffinity, VmConfig
    from aovisor.hypervisor.base import Hypervisor
    from aovisor.loader import BootInfo
    from aovisor.virtio.device import VirtioDevice
    from aovisor.virtio.transport.mmio import VirtioMmioDevice
    from aovisor.vmm.serial_io import SerialEndpoint

log = get_logger(__name__)


def build_vm(config: VmConfig, hypervisor: Hypervisor, serial: SerialEndpoint) -> VirtualMachine:
    memory = GuestMemory.with_hole(config.memory.size, layout.MMIO_HOLE_START, layout.MMIO_HOLE_END)
    vm = VirtualMachine(config, hypervisor.create_vm(), memory)
    try:
        attach_memory(vm)
        attach_irqchip(vm)
        attach_legacy_devices(vm, serial)
        attach_power_button(vm)
        attach_pci_root(vm)
        attach_virtio_devices(vm)
        rsdp_gpa = attach_acpi_tables(vm)
        boot = load_payload(vm, rsdp_gpa)
        create_vcpus(vm, boot)
    except BaseException:
        vm.close()
        raise
    return vm


def attach_memory(vm: VirtualMachine) -> None:
    for slot, region in enumerate(vm.memory):
        vm.hv_vm.map_memory(slot, region.gpa, region.size, region.host_address)


def attach_irqchip(vm: VirtualMachine) -> None:
    """The interrupt controllers, after the memory (see KvmVm.create_irqchip); a user-space IOAPIC where
    the hypervisor has none (MSHV), KVM's is in the kernel."""
    ioapic = vm.hv_vm.create_irqchip()
    if ioapic is not None:
        vm.mmio_bus.insert(ioapic, layout.IOAPIC_START, layout.IOAPIC_SIZE)


def attach_legacy_devices(vm: VirtualMachine, serial: SerialEndpoint) -> None:
    """The PC platform devices a guest expects at fixed ports (layout.py)."""
    from aovisor.devices.legacy.acpi_pm import AcpiPmDevice
    from aovisor.devices.legacy.cmos import Cmos
    from aovisor.devices.legacy.i8042 import I8042
    from aovisor.devices.legacy.post import PostCode

    if serial.enabled:
        from aovisor.devices.legacy.serial import Serial16550

        com1 = Serial16550(irq=_IrqPin(vm, layout.IRQ_COM1), out=serial.write)
        vm.pio_bus.insert(com1, layout.PORT_COM1, 8)
        serial.attach_input(com1.enqueue_input)
        vm.devices["com1"] = com1

    i8042 = I8042(reset=vm.reset, kbd_irq=_IrqPin(vm, layout.IRQ_I8042_KBD))
    vm.pio_bus.insert(i8042, layout.PORT_I8042_DATA, 5)
    below, above = _ram_below_above_4g(vm.memory)
    cmos = Cmos(mem_below_4g=below, mem_above_4g=above)
    vm.pio_bus.insert(cmos, layout.PORT_CMOS, 2)
    vm.devices["cmos"] = cmos  # the VMM carries its RAM over a reset (vmm.py)
    vm.pio_bus.insert(PostCode(), layout.PORT_POST, 1)
    vm.pio_bus.insert(
        AcpiPmDevice(poweroff=vm.poweroff, reset=vm.reset), layout.PORT_ACPI_PM, layout.ACPI_PM_SIZE
    )


def attach_power_button(vm: VirtualMachine) -> None:
    """The ACPI Generic Event Device that delivers ``vm.power-button`` (its AML is in the DSDT)."""
    from aovisor.devices.legacy.ged import AcpiGedDevice

    ged = AcpiGedDevice(irq=_IrqPin(vm, layout.IRQ_ACPI_GED))
    vm.pio_bus.insert(ged, layout.PORT_ACPI_GED, layout.ACPI_GED_SIZE)
    vm.devices["ged"] = ged


def attach_pci_root(vm: VirtualMachine) -> None:
    from aovisor.devices.pci.root import PciRoot

    root = PciRoot(reset=vm.reset)
    vm.pio_bus.insert(root, layout.PORT_PCI_CONFIG, 8)
    vm.devices["pci"] = root


def attach_virtio_devices(vm: VirtualMachine) -> None:
    """The virtio-pci devices: one step per kind, in the order of their PCI slots."""
    attach_block_devices(vm)
    attach_net_devices(vm)
    attach_console_device(vm)
    attach_rng_device(vm)
    attach_vsock_device(vm)


def attach_block_devices(vm: VirtualMachine) -> None:
    if not vm.config.disks:
        return  # the device modules are imported only when used (startup time)
    from aovisor.virtio.devices.block import BlockDevice

    for index, disk in enumerate(vm.config.disks):
        name = f"virtio-blk{index}"
        _attach_virtio(vm, disk.id or f"_disk{index}", BlockDevice(name, disk))


def attach_net_devices(vm: VirtualMachine) -> None:
    if not vm.config.nets:
        return
    from aovisor.virtio.devices.net import NetDevice

    for index, net in enumerate(vm.config.nets):
        _attach_virtio(vm, net.id or f"_net{index}", NetDevice(f"virtio-net{index}", net))


def attach_console_device(vm: VirtualMachine) -> None:
    """virtio-console (the guest's hvc0) on the ``--console`` endpoint, unless it is off."""
    from aovisor.config import OutputMode

    cfg = vm.config.console
    if cfg.mode is OutputMode.OFF:
        return
    import os

    from aovisor.virtio.devices.console import ConsoleDevice
    from aovisor.vmm.serial_io import SerialEndpoint

    endpoint = SerialEndpoint(cfg, option="--console")
    vm.on_close(endpoint.close)
    size = None
    if cfg.mode is OutputMode.TTY:
        try:
            columns, lines = os.get_terminal_size(1)
            size = (columns, lines)
        except OSError:  # stdout is not a terminal
            size = None
    console = ConsoleDevice("virtio-console0", endpoint.write, size)
    endpoint.attach_input(console.enqueue_input)
    _attach_virtio(vm, "_console", console)


def attach_rng_device(vm: VirtualMachine) -> None:
    if vm.config.rng is None:
        return
    from aovisor.virtio.devices.rng import RngDevice

    _attach_virtio(vm, "_rng", RngDevice("virtio-rng0", vm.config.rng))


def attach_vsock_device(vm: VirtualMachine) -> None:
    vsock = vm.config.vsock
    if vsock is None:
        return
    from aovisor.virtio.devices.vsock import VsockDevice

    _attach_virtio(vm, vsock.id or "_vsock", VsockDevice("virtio-vsock0", vsock))


def _attach_virtio(vm: VirtualMachine, device_id: str, device: VirtioDevice) -> None:
    """Put ``device`` behind the transport the configuration chose (``--virtio-transport``)."""
    from aovisor.config import VirtioTransport

    if vm.config.virtio_transport in (VirtioTransport.MMIO, VirtioTransport.MMIO_CMDLINE):
        _attach_virtio_mmio(vm, device_id, device)
    else:
        _attach_virtio_pci(vm, device_id, device)


def _attach_virtio_mmio(vm: VirtualMachine, device_id: str, device: VirtioDevice) -> None:
    """Put ``device`` in the next virtio-mmio window, on the next IOAPIC pin (its DSDT entry is made by
    :func:`attach_acpi_tables`, or its command-line parameter by :func:`load_payload`)."""
    from aovisor.virtio.transport.mmio import VirtioMmioDevice

    vm.on_close(device.close)
    index = len(_mmio_windows(vm))
    if index >= layout.VIRTIO_MMIO_MAX_DEVICES:
        raise ConfigError(f"--virtio-transport: at most {layout.VIRTIO_MMIO_MAX_DEVICES} virtio-mmio devices")
    base = layout.VIRTIO_MMIO_START + index * layout.VIRTIO_MMIO_WINDOW_SIZE
    transport = VirtioMmioDevice(
        device, memory=vm.memory, hv_vm=vm.hv_vm, base=base, gsi=layout.IRQ_VIRTIO_MMIO_FIRST + index
    )
    vm.on_close(transport.close)
    vm.mmio_bus.insert(transport, base, layout.VIRTIO_MMIO_WINDOW_SIZE)
    vm.devices[device_id] = transport
    vm.pausables.append(device)


def _attach_virtio_pci(vm: VirtualMachine, device_id: str, device: VirtioDevice) -> None:
    """Put ``device`` behind virtio-pci in the next free slot of bus 0, its BAR in the PCI MMIO window."""
    from aovisor.devices.pci.root import PciRoot
    from aovisor.virtio.transport.pci import BAR_SIZE, VirtioPciDevice

    vm.on_close(device.close)  # first, so that a failure below still closes the device's files
    root = vm.devices["pci"]
    assert isinstance(root, PciRoot)
    transport = VirtioPciDevice(
        device,
        memory=vm.memory,
        hv_vm=vm.hv_vm,
        mmio_bus=vm.mmio_bus,
        bar_address=vm.pci_mmio.allocate(BAR_SIZE),
        gsis=vm.gsis.allocate(len(device.queue_max_sizes) + 1),
    )
    vm.on_close(transport.close)
    root.add_device(root.free_slot(), transport)
    vm.devices[device_id] = transport
    vm.pausables.append(device)


def attach_acpi_tables(vm: VirtualMachine) -> int:
    from aovisor.arch.x86_64.acpi import AcpiConfig, build_acpi
    from aovisor.arch.x86_64.acpi.pci_host import pci_host_bridge
    from aovisor.config import VirtioTransport
    from aovisor.devices.legacy.ged import ged_aml

    mmio_devices: list[bytes] = []
    if vm.config.virtio_transport is VirtioTransport.MMIO:
        mmio_devices = [d.aml(uid) for uid, d in enumerate(_mmio_windows(vm))]
    sb_devices = (*ged_aml(), pci_host_bridge(), *mmio_devices)
    cpus = vm.config.cpus
    apic_ids = cpus.cpu_topology.apic_ids(cpus.boot_vcpus)
    blob = build_acpi(
        AcpiConfig(n_cpus=cpus.boot_vcpus, apic_ids=apic_ids, sb_devices=sb_devices), layout.ACPI_START
    )
    vm.memory.write(layout.ACPI_START, blob.data)
    # With hardware-reduced ACPI and no EFI, Linux reboots by jumping to the BIOS: a stub there resets.
    from aovisor.arch.x86_64.reset_vector import RESET_VECTOR, write_reset_stub

    if layout.ACPI_START + len(blob.data) > RESET_VECTOR:
        raise RuntimeError(f"the ACPI tables ({len(blob.data)} bytes) reach the reset vector")
    write_reset_stub(vm.memory)
    return blob.rsdp_gpa


def load_payload(vm: VirtualMachine, rsdp_gpa: int) -> BootInfo:
    from aovisor.loader import load_kernel

    payload = vm.config.payload
    return load_kernel(
        vm.memory,
        payload.kernel,
        cmdline=" ".join((payload.cmdline, *_virtio_mmio_cmdline(vm))).strip(),
        initramfs=payload.initramfs,
        rsdp_gpa=rsdp_gpa,
    )


def _virtio_mmio_cmdline(vm: VirtualMachine) -> list[str]:
    """``virtio_mmio.device=<size>@<base>:<irq>`` for each window with ``--virtio-transport mmio-cmdline``
    (Linux's drivers/virtio/virtio_mmio.c command-line syntax)."""
    from aovisor.config import VirtioTransport

    if vm.config.virtio_transport is not VirtioTransport.MMIO_CMDLINE:
        return []
    size = layout.VIRTIO_MMIO_WINDOW_SIZE
    return [f"virtio_mmio.device={size >> 10}K@{d.base:#x}:{d.gsi}" for d in _mmio_windows(vm)]


def _mmio_windows(vm: VirtualMachine) -> list[VirtioMmioDevice]:
    """The virtio-mmio transports attached so far, in window (and IOAPIC pin) order."""
    from aovisor.virtio.transport.mmio import VirtioMmioDevice

    return [d for d in vm.devices.values() if isinstance(d, VirtioMmioDevice)]


def create_vcpus(vm: VirtualMachine, boot: BootInfo) -> None:
    """Create every boot vCPU with CPUID, MSRs, FPU and LAPIC set; only the BSP gets boot registers — the
    APs wait for INIT/SIPI from the guest in the in-kernel LAPIC."""
    from aovisor.arch.x86_64 import cpuid, msrs, regs

    count = vm.config.cpus.boot_vcpus
    topology = vm.config.cpus.cpu_topology
    if vm.config.cpus.topology is not None and not vm.hv_vm.cpuid_is_programmable:
        raise ConfigError("--cpus: topology: this hypervisor answers CPUID itself, with its own topology")
    _check_affinity(vm.config.cpus.affinity)
    supported = vm.hv_vm.supported_cpuid()
    for index in range(count):
        vcpu = vm.hv_vm.create_vcpu(index, topology.apic_id(index))
        vm.vcpus.append(vcpu)
        vcpu.set_cpuid(cpuid.vcpu_cpuid(supported, index, topology))
        vcpu.set_msrs(msrs.boot_msrs())
        vcpu.setup_fpu()
        vcpu.setup_lapic()
    bsp = vm.vcpus[0]
    if boot.protocol == "pvh":
        r, s = regs.pvh_boot_state(vm.memory, boot.entry, boot.boot_struct_gpa, bsp.get_sregs())
    else:
        r, s = regs.linux64_boot_state(vm.memory, boot.entry, boot.boot_struct_gpa, bsp.get_sregs())
    bsp.set_sregs(s)
    bsp.set_regs(r)


def _check_affinity(affinity: tuple[VcpuAffinity, ...]) -> None:
    """Every host CPU ``--cpus affinity`` names is one this process may run on (cpuset, taskset), so that
    the vCPU threads' sched_setaffinity cannot fail once they start."""
    if not affinity:
        return
    allowed = os.sched_getaffinity(0)
    for entry in affinity:
        missing = sorted(set(entry.host_cpus) - allowed)
        if missing:
            raise ConfigError(
                f"--cpus: affinity: vCPU {entry.vcpu}: host CPU {missing[0]} is not one this process may use "
                f"({', '.join(map(str, sorted(allowed)))})"
            )


class _IrqPin:
    """An IOAPIC/PIC input driven through KVM_IRQ_LINE, acting only on level changes."""

    def __init__(self, vm: VirtualMachine, gsi: int) -> None:
        self._set = vm.hv_vm.irq_line(gsi)
        self._level = False

    def set_level(self, level: bool) -> None:
        if level != self._level:
            self._level = level
            self._set(level)


def _ram_below_above_4g(memory: GuestMemory) -> tuple[int, int]:
    below = sum(r.size for r in memory if r.gpa < layout.MMIO_HOLE_END)
    return below, memory.total_size - below
