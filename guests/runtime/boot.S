/*
 * The static x86-64 machine state every guest shares: identity page tables, GDT, TSS, IDT, stacks, the
 * interrupt stubs, the common 64-bit start (start64) and enter_user.
 *
 * Everything that can be built at assembly/link time is: under PVM, code at CPL0 is emulated one
 * instruction at a time, so the page tables and the IDT are data here rather than loops at run time.
 * Fields that need bit-slices of link-time addresses (IDT gate offsets, TSS descriptor base) use the
 * absolute symbols computed in runtime/symbols.ld.
 */
#include "layout.h"

/* ------------------------------------------------------------------------------------------------ */
/* Page tables: identity map of 0-4 GiB with 2 MiB pages, all user-accessible. Page 0 stays mapped:   */
/* firmware may put boot data there (SeaBIOS's PVH ROM puts the memory map at 0x5xx). The top GiB      */
/* (MMIO hole: LAPIC, IOAPIC, test MMIO) is mapped uncached.                                          */
/* ------------------------------------------------------------------------------------------------ */
#define TABLE_FLAGS (PTE_P | PTE_RW | PTE_US)
#define LARGE_FLAGS (PTE_P | PTE_RW | PTE_US | PTE_PS)
#define LARGE_UNCACHED_FLAGS (LARGE_FLAGS | PTE_PCD | PTE_PWT)

    .section .data.pagetables, "aw"
    .balign 4096
    .global pml4
pml4:
    .quad pdpt + TABLE_FLAGS
    .fill 511, 8, 0

    .balign 4096
pdpt:
    .quad pd + 0x0000 + TABLE_FLAGS
    .quad pd + 0x1000 + TABLE_FLAGS
    .quad pd + 0x2000 + TABLE_FLAGS
    .quad pd + 0x3000 + TABLE_FLAGS
    .fill 508, 8, 0

    /* Four page directories back to back: entry i maps [i * 2 MiB, (i + 1) * 2 MiB). */
    .balign 4096
pd:
    .set addr, 0
    .rept 3 * 512
    .quad addr + LARGE_FLAGS
    .set addr, addr + 0x200000
    .endr
    .rept 512
    .quad addr + LARGE_UNCACHED_FLAGS
    .set addr, addr + 0x200000
    .endr

/* ------------------------------------------------------------------------------------------------ */
/* GDT and TSS                                                                                        */
/* ------------------------------------------------------------------------------------------------ */
    .section .data
    .balign 16
    .global gdt, gdt_end
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff /* 0x08 KERNEL_CS32: 32-bit code, base 0, limit 4 GiB */
    .quad 0x00af9a000000ffff /* 0x10 KERNEL_CS: 64-bit code (L=1) */
    .quad 0x00cf92000000ffff /* 0x18 KERNEL_DS */
    .quad 0x00cff2000000ffff /* 0x20 USER_DS: DPL3 */
    .quad 0x00affa000000ffff /* 0x28 USER_CS: DPL3 64-bit code */
    /* 0x30 TSS_SEL: 64-bit available TSS (type 9), 16 bytes (SDM vol. 3 §8.2.3). */
    .word tss_end - tss - 1
    .word __tss_base_0_15
    .byte __tss_base_16_23
    .byte 0x89
    .byte 0x00
    .byte __tss_base_24_31
    .long 0
    .long 0
gdt_end:
    .if (gdt_end - gdt) != GDT_BYTES
    .error "GDT_BYTES in layout.h does not match the GDT"
    .endif

    /* Pseudo-descriptor for lgdt: 32-bit code reads limit + 4-byte base, 64-bit code limit + 8 bytes. */
    .balign 16
    .global gdt_ptr
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

    /* 64-bit TSS (SDM vol. 3 §8.7): RSP0 for interrupts taken at CPL3, IST1 for #DF, and an I/O
     * permission bitmap allowing every port (SDM vol. 1 §19.5.2). On hardware, IOPL=3 already lets CPL3
     * use in/out and the bitmap is not consulted; PVM does not let a guest's IOPL through to CPL3 (the
     * guest sees IOPL 0 there) but honours the bitmap, so port I/O at CPL3 works in both. */
    .balign 16
    .global tss
tss:
    .long 0
    .quad trap_stack_top /* rsp0 */
    .quad 0              /* rsp1 */
    .quad 0              /* rsp2 */
    .quad 0
    .quad df_stack_top   /* ist1 */
    .fill 6, 8, 0        /* ist2-ist7 */
    .quad 0
    .word 0
    .word io_bitmap - tss /* I/O map base */
io_bitmap:
    .fill 65536 / 8, 1, 0 /* a clear bit allows the port */
    .byte 0xff            /* required terminator: accesses may read one byte past the last port's */
tss_end:

/* ------------------------------------------------------------------------------------------------ */
/* IDT: 256 interrupt gates, gate i -> isr_stubs + 16 * i (stubs are 16-byte aligned, see below).     */
/* ------------------------------------------------------------------------------------------------ */
    .balign 16
    .global idt
idt:
    .set vec, 0
    .rept 256
    .word __isr_stubs_0_15 + vec * 16
    .word KERNEL_CS
    .if vec == 8
    .byte 1 /* #DF runs on IST1 so a kernel stack overflow still gets reported */
    .else
    .byte 0
    .endif
    .byte 0x8e /* present, DPL0, 64-bit interrupt gate (IF cleared on entry) */
    .word __isr_stubs_16_31
    .long 0
    .long 0
    .set vec, vec + 1
    .endr
idt_end:

    .balign 16
    .global idt_ptr
idt_ptr:
    .word idt_end - idt - 1
    .quad idt

/* ------------------------------------------------------------------------------------------------ */
/* Stacks (uninitialised; the bzImage image leaves .stack out of the file)                            */
/* ------------------------------------------------------------------------------------------------ */
    .section .stack, "aw", @nobits
    .balign 16
    .skip 16384
    .global boot_stack_top
boot_stack_top:
    .skip 8192
trap_stack_top:
    .skip 4096
df_stack_top:
    .skip 16384
    .global user_stack_top
user_stack_top:

/* ------------------------------------------------------------------------------------------------ */
/* Interrupt stubs: one per vector, each 16-byte aligned. Vectors without a CPU error code push a 0  */
/* so every frame has the same layout (struct trap_frame in runtime.h).                               */
/* ------------------------------------------------------------------------------------------------ */
    .section .text.isr, "ax"
    .code64
    .balign 4096 /* keeps isr_stubs + 16 * 255 inside one 64 KiB window: see symbols.ld */
    .global isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    /* Vectors with an error code: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17, #CP 21,
     * #VC 29, #SX 30 (SDM vol. 3 table 6-1, AMD APM vol. 2 §8.2). */
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

    .text
    .code64
isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    /* 5 CPU-pushed words + error + vector + 9 registers: RSP is 16-byte aligned here. */
    mov %rsp, %rdi
    cld
    call trap_dispatch
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

/* ------------------------------------------------------------------------------------------------ */
/* start64: common 64-bit start. Entered with CS = KERNEL_CS, paging on (runtime page tables),      */
/* RDI = the boot argument for c_entry (already zero-extended by the caller).                        */
/* ------------------------------------------------------------------------------------------------ */
    .global start64
start64:
    mov $KERNEL_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack_top, %esp
    lidt idt_ptr
    mov $TSS_SEL, %eax
    ltr %ax
    call c_entry
    call poweroff
1:  cli
    hlt
    jmp 1b

/* ------------------------------------------------------------------------------------------------ */
/* void enter_user(void (*fn)(void), void *stack_top): iretq to CPL3 with IOPL=3 and the current IF.  */
/* ------------------------------------------------------------------------------------------------ */
    .global enter_user
enter_user:
    and $-16, %rsi
    pushq $(USER_DS | 3)
    pushq %rsi
    pushfq
    orq $RFLAGS_IOPL3, (%rsp)
    pushq $(USER_CS | 3)
    pushq $user_thunk
    iretq

    /* First CPL3 code: RDI still holds fn. Calling it (rather than iretq-ing straight into it) gives fn
     * the ABI stack alignment and a place to return to. */
user_thunk:
    call *%rdi
    call user_returned
2:  pause
    jmp 2b
