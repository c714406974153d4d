/*
 * ENABLE_LONG_MODE target: the 32-bit protected mode (paging off) -> 64-bit mode switch, as an assembler
 * macro because its users have no stack (PVH entry, bzImage 32-bit entry, SMP trampoline).
 * Sequence per Intel SDM vol. 3 §10.8.5 "Initializing IA-32e Mode": CR4.PAE, CR3, EFER.LME, then CR0.PG;
 * the far jump through a 64-bit code descriptor leaves compatibility mode.
 *
 * Clobbers EAX, ECX, EDX. Preserves EBX, ESI, EDI, EBP, but the architecture leaves the upper halves of
 * 64-bit registers undefined after the switch, so the 64-bit target must zero-extend what it keeps.
 * Include only from .S files (needs layout.h and the symbols pml4 and gdt_ptr from runtime/boot.S).
 */
#ifndef GUEST_LONG_MODE_H
#define GUEST_LONG_MODE_H

.macro ENABLE_LONG_MODE target
    lgdt gdt_ptr
    mov $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    /* EFER is written outright (no rdmsr): it is 0 after reset and at PVH/AP entry. */
    mov $MSR_EFER, %ecx
    mov $EFER_LME, %eax
    xor %edx, %edx
    wrmsr
    /* CR0 is written outright too: this clears CD/NW, which are set after INIT on an AP. */
    mov $(CR0_PG | CR0_ET | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $KERNEL_CS, $\target
.endm

#endif
