/*
 * Application-processor start-up code for the smp guest.
 *
 * ap_trampoline_start..ap_trampoline_end is copied to AP_TRAMPOLINE_ADDR (below 1 MiB, 4 KiB aligned)
 * and run by each AP after INIT-SIPI-SIPI: real mode with CS = AP_TRAMPOLINE_ADDR >> 4, IP = 0
 * (SDM vol. 3 §9.4.4). It is position-dependent on AP_TRAMPOLINE_ADDR: addresses inside it are computed
 * as AP_TRAMPOLINE_ADDR + (label - ap_trampoline_start). It loads the runtime's GDT, enters 32-bit
 * protected mode, then long mode with the runtime's page tables, and jumps to ap_start64 in the image.
 */
#include "layout.h"
#include "long_mode.h"

#define AP_STACK_SIZE 4096
#define MAX_APS 63
#define TRAMPOLINE_LINEAR(label) (AP_TRAMPOLINE_ADDR + (label) - ap_trampoline_start)

    .section .rodata.ap_trampoline, "a"
    .global ap_trampoline_start, ap_trampoline_end
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl tramp_gdt_ptr - ap_trampoline_start /* DS-relative; lgdtl loads the full 32-bit base */
    /* CR0 = PE only: also clears CD/NW, which INIT sets. */
    mov $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $KERNEL_CS32, $TRAMPOLINE_LINEAR(tramp32)

    .code32
tramp32:
    mov $KERNEL_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    ENABLE_LONG_MODE ap_start64

    .balign 8
tramp_gdt_ptr:
    .word GDT_BYTES - 1
    .long gdt
ap_trampoline_end:

/*
 * ap_start64: 64-bit entry of every AP. Takes a private stack (one atomic add on ap_stack_next), loads
 * the IDT and calls ap_main() in smp.c. APs stay at CPL0 and never load the TSS (a TSS descriptor can only
 * be loaded by one CPU: ltr marks it busy).
 */
    .text
    .code64
    .global ap_start64
ap_start64:
    mov $KERNEL_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $AP_STACK_SIZE, %eax
    lock xadd %rax, ap_stack_next
    cmp $ap_stacks_end, %rax
    ja ap_park /* more APs than stacks */
    mov %rax, %rsp
    lidt idt_ptr
    call ap_main
ap_park:
    cli
    hlt
    jmp ap_park

    .data
    .balign 8
ap_stack_next:
    .quad ap_stacks + AP_STACK_SIZE /* top of the first stack */

    .section .stack, "aw", @nobits
    .balign 16
ap_stacks:
    .skip AP_STACK_SIZE * MAX_APS
ap_stacks_end:
