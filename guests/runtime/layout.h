/*
 * Constants shared by the runtime's assembly and C code: segment selectors, control-register bits and
 * the fixed addresses the guests use. Only preprocessor definitions, so .S files can include it too.
 */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

/* Physical load address of every guest image (PVH ELF and bzImage protected-mode kernel). */
#define LOAD_ADDR 0x100000

/* GDT selectors (runtime/boot.S). 0x10/0x18 match Linux's __BOOT_CS/__BOOT_DS. */
#define KERNEL_CS32 0x08 /* 32-bit flat code: PVH entry and the SMP trampoline */
#define KERNEL_CS 0x10   /* 64-bit kernel code */
#define KERNEL_DS 0x18   /* flat data */
#define USER_DS 0x20     /* DPL3 data; load as USER_DS | 3 */
#define USER_CS 0x28     /* DPL3 64-bit code; load as USER_CS | 3 */
#define TSS_SEL 0x30     /* 64-bit TSS (16-byte descriptor) */
#define GDT_BYTES 0x40   /* size of the GDT: 6 descriptors + the 16-byte TSS descriptor */

#define CR0_PE 0x00000001
#define CR0_ET 0x00000010
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100
#define RFLAGS_IF 0x00000200
#define RFLAGS_IOPL3 0x00003000

/* Page-table entry bits (Intel SDM vol. 3 §4.5). Every mapping is user-accessible so CPL3 code can reach
 * RAM, the LAPIC/IOAPIC and MMIO test addresses without further setup. */
#define PTE_P 0x001
#define PTE_RW 0x002
#define PTE_US 0x004
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_PS 0x080 /* 2 MiB page in a page-directory entry */

/* Where the SMP guest copies its real-mode AP trampoline. The VMM keeps 0x30000-0x9efff free (see
 * src/aovisor/arch/x86_64/layout.py); the SIPI vector is this address >> 12. */
#define AP_TRAMPOLINE_ADDR 0x30000

/* Port 0x600: the hardware-reduced ACPI sleep control register. Writing SLP_TYP=5 | SLP_EN (0x34) is
 * the power-off contract with the VMM (and with QEMU's isa-debug-exit device, iobase=0x600). */
#define PORT_SLEEP_CONTROL 0x600
#define SLEEP_CONTROL_POWEROFF 0x34

#define COM1_BASE 0x3f8

#define LAPIC_BASE 0xFEE00000
#define IOAPIC_BASE 0xFEC00000

#endif
