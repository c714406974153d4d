"""The x86-64 guest address map: where boot structures, RAM, the MMIO hole and legacy devices live.

Low memory follows the conventions of Firecracker and Cloud Hypervisor (`arch/src/x86_64/layout.rs`) so a
kernel sees a familiar machine: boot GDT/IDT and page tables in the first 64 KiB, the command line at
128 KiB, the kernel at 1 MiB, ACPI tables in the BIOS area (where Linux also scans for the RSDP).
"""

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# --- Low memory (all below 1 MiB) -------------------------------------------------------------
BOOT_GDT_START = 0x500
BOOT_GDT_MAX_ENTRIES = 4
BOOT_IDT_START = 0x520
PVH_INFO_START = 0x6000  # struct hvm_start_info
PVH_MODLIST_START = 0x6040  # struct hvm_modlist_entry[1] (the initramfs)
PVH_MEMMAP_START = 0x6100  # struct hvm_memmap_table_entry[]
PVH_MEMMAP_MAX_ENTRIES = 64
ZERO_PAGE_START = 0x7000  # struct boot_params (Linux boot protocol)
BOOT_STACK_POINTER = 0x8FF0
PML4_START = 0x9000
PDPTE_START = 0xA000
PDE_START = 0xB000  # four page directories follow: identity map of the first 4 GiB with 2 MiB pages
PDE_COUNT = 4
CMDLINE_START = 0x20000
CMDLINE_MAX_SIZE = 0x10000
EBDA_START = 0x9FC00  # RAM below this is usable; [EBDA, 1 MiB) is reserved in the e820 map
ACPI_START = 0xE0000  # RSDP first (16-byte aligned, inside the 0xE0000-0xFFFFF scan area), tables after
ACPI_END = 0x100000

HIGH_RAM_START = 0x100000  # where kernels load (1 MiB)

# --- The 32-bit MMIO hole -----------------------------------------------------------------------
MMIO_HOLE_START = 0xC000_0000  # 3 GiB: RAM above this continues at 4 GiB
MMIO_HOLE_END = 0x1_0000_0000
# PCI memory BARs are placed here (the host bridge's _CRS window in the DSDT).  Nothing else lives in it.
PCI_MMIO_WINDOW_START = 0xC000_0000
PCI_MMIO_WINDOW_END = 0xE000_0000
# virtio-mmio devices (--virtio-transport mmio): one 4 KiB register window each from here, described in the
# DSDT (LNRO0005), as QEMU's microvm does.  Above the PCI window, so no BAR can land on one.
VIRTIO_MMIO_START = 0xE000_0000
VIRTIO_MMIO_WINDOW_SIZE = 0x1000
IOAPIC_START = 0xFEC0_0000
IOAPIC_SIZE = 0x1000
APIC_START = 0xFEE0_0000
KVM_IDENTITY_MAP_START = 0xFEFF_C000  # one page, required by VMX before KVM_SET_TSS_ADDR
KVM_TSS_START = 0xFEFF_D000  # three pages

# --- Port I/O -----------------------------------------------------------------------------------
PORT_I8042_DATA = 0x60
PORT_I8042_COMMAND = 0x64
PORT_CMOS = 0x70  # index 0x70, data 0x71
PORT_POST = 0x80  # POST diagnostic port: a sink Linux uses for I/O delays
PORT_COM1 = 0x3F8
PORT_PCI_CONFIG = 0xCF8  # 0xCF8 address, 0xCFC-0xCFF data; a byte at 0xCF9 is the reset control register
PORT_ACPI_PM = 0x600  # hardware-reduced ACPI sleep control/status and reset registers (as in CH)
ACPI_PM_SIZE = 2  # sleep control and sleep status; the GED's event register follows them
PORT_ACPI_GED = PORT_ACPI_PM + ACPI_PM_SIZE  # 0x602: the power-button GED's event register
ACPI_GED_SIZE = 1
ACPI_S5_SLEEP_TYPE = 5  # SLP_TYP of S5 (soft off): the DSDT's \_S5_ package and the PM device agree on it

# --- Interrupts (GSIs on the IOAPIC) -----------------------------------------------------------
IRQ_I8042_KBD = 1
IRQ_COM1 = 4
IRQ_ACPI_SCI = 9
IRQ_ACPI_GED = 5  # the GED's interrupt (edge, active high): a free ISA pin, as in Cloud Hypervisor
IOAPIC_PINS = 24
# virtio-mmio devices interrupt on IOAPIC pins 16-23 (edge, active high), one pin each: at most 8 devices.
IRQ_VIRTIO_MMIO_FIRST = 16
VIRTIO_MMIO_MAX_DEVICES = IOAPIC_PINS - IRQ_VIRTIO_MMIO_FIRST
# GSIs above the IOAPIC pins, routed to MSI messages (MSI-X vectors) and raised through irqfds.
MSI_GSI_START = IOAPIC_PINS
MSI_GSI_END = 1024  # KVM accepts at least 1024 routes (KVM_MAX_IRQ_ROUTES is 4096 on current kernels)
