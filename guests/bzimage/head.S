/*
 * Entry points of the bzImage's protected-mode kernel, loaded at 1 MiB:
 *   load address + 0x000  startup_32: the 32-bit boot protocol (ESI = boot_params, paging off)
 *   load address + 0x200  startup_64: the 64-bit boot protocol (Documentation/arch/x86/boot.rst,
 *                         "64-bit BOOT PROTOCOL": RSI = boot_params, identity-mapped long mode)
 * Both continue into the runtime's start64 with RDI = boot_params and the runtime's own page tables and
 * GDT, so nothing depends on what the loader set up beyond the protocol.
 */
#include "layout.h"
#include "long_mode.h"

    .section .head, "ax"
    .code32
    .global startup_32
startup_32:
    cli
    ENABLE_LONG_MODE startup_32_long

    .code64
startup_32_long:
    mov %esi, %esi /* zero-extend boot_params: upper halves are undefined after the mode switch */
    jmp startup_64

    .org 0x200
    .global startup_64
startup_64:
    cli
    mov %rsi, %rdi
    /* The loader's identity map covers this code, and so does ours: switching CR3 here is safe. */
    mov $pml4, %eax
    mov %rax, %cr3
    /* CR4 = PAE only, whatever the loader enabled: with SMEP, CPL0 could not run from our pages, which
     * are all user-accessible. (4-level paging is assumed: LA57 cannot be changed in long mode.) */
    mov $CR4_PAE, %eax
    mov %rax, %cr4
    lgdt gdt_ptr
    pushq $KERNEL_CS
    pushq $start64
    lretq
