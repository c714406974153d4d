/*
 * The real-mode part of the bzImage: the boot sector area with the setup header at 0x1f1
 * (Documentation/arch/x86/boot.rst, protocol 2.15), followed by setup code for loaders that start the
 * image the 16-bit way (QEMU/SeaBIOS, GRUB's linux16). A 64-bit loader such as aovisor never runs this
 * code: it reads the header, builds the zero page itself and enters startup_64 at load address + 0x200.
 *
 * The setup code does what Linux's does, minimally: builds a zero page (the header plus an E820 map from
 * BIOS int 0x15, AX=0xE820), enables A20, enters 32-bit protected mode with the GDT the 32-bit boot
 * protocol requires (__BOOT_CS 0x10, __BOOT_DS 0x18) and jumps to code32_start with ESI = zero page.
 *
 * Linked at address 0 (offsets within the setup segment); the loader sets DS = ES = SS = setup segment.
 * __setup_sects, __syssize and __init_size come from bzimage.ld.
 */
#include "layout.h"

/* Where, in the setup segment, the zero page is built: past the setup code, below the loader's stack. */
#define ZERO_PAGE 0x1000
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_E820_TABLE 0x2d0
#define E820_MAX_ENTRIES 128
#define SMAP 0x534d4150 /* "SMAP" */
#define LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x0001

    .section .setup, "ax"
    .code16
setup_start:
    /* 0x000-0x1f0: the boot sector of old, all zeros here (boot_params fields with no value). */
    .org BP_HDR
hdr:
setup_sects:            .byte __setup_sects
root_flags:             .word 0
syssize:                .long __syssize
ram_size:               .word 0
vid_mode:               .word 0
root_dev:               .word 0
boot_flag:              .word 0xAA55
    /* 0x200: the loader jumps here (setup segment + 0x20 : 0) */
jump:                   .byte 0xeb, setup_code - 1f
1:
header:                 .ascii "HdrS"
version:                .word 0x020f
realmode_swtch:         .long 0
start_sys_seg:          .word 0
kernel_version:         .word kernel_version_string - 0x200
type_of_loader:         .byte 0
loadflags:              .byte LOADED_HIGH
setup_move_size:        .word 0
code32_start:           .long LOAD_ADDR
ramdisk_image:          .long 0
ramdisk_size:           .long 0
bootsect_kludge:        .long 0
heap_end_ptr:           .word 0
ext_loader_ver:         .byte 0
ext_loader_type:        .byte 0
cmd_line_ptr:           .long 0
initrd_addr_max:        .long 0x7fffffff
kernel_alignment:       .long 0x200000
relocatable_kernel:     .byte 0
min_alignment:          .byte 21
xloadflags:             .word XLF_KERNEL_64
cmdline_size:           .long 4095
hardware_subarch:       .long 0
hardware_subarch_data:  .quad 0
payload_offset:         .long 0
payload_length:         .long 0
setup_data:             .quad 0
pref_address:           .quad LOAD_ADDR
init_size:              .long __init_size
handover_offset:        .long 0
kernel_info_offset:     .long 0
hdr_end:
    .global header, hdr_end /* for the layout checks in bzimage.ld */

/* Entered in real mode with CS = setup segment + 0x20 (so CS-relative offsets are off by 0x200: only
 * relative jumps are used) and DS = ES = SS = setup segment, interrupts possibly on. */
setup_code:
    cli
    cld
    mov %ds, %ax
    mov %ax, %es

    /* Zero page: clear it, then copy the header the loader filled in (cmd_line_ptr, ramdisk_*, ...). */
    mov $ZERO_PAGE, %di
    xor %ax, %ax
    mov $2048, %cx
    rep stosw
    mov $hdr, %si
    mov $(ZERO_PAGE + BP_HDR), %di
    mov $(hdr_end - hdr), %cx
    rep movsb

    /* E820 map (ACPI 6.5 §15.1): ES:DI -> 20-byte entry, EBX = continuation, CF or EBX = 0 ends it. */
    mov $(ZERO_PAGE + BP_E820_TABLE), %di
    xor %ebx, %ebx
    xor %si, %si
e820_next:
    mov $0xe820, %eax
    mov $SMAP, %edx
    mov $20, %ecx
    int $0x15
    jc e820_done
    cmp $SMAP, %eax
    jne e820_done
    add $20, %di
    inc %si
    cmp $E820_MAX_ENTRIES, %si
    jae e820_done
    test %ebx, %ebx
    jnz e820_next
e820_done:
    mov %si, %ax
    mov %al, ZERO_PAGE + BP_E820_ENTRIES

    /* Fast A20 gate (port 0x92 bit 1; bit 0 would reset the machine). */
    in $0x92, %al
    or $0x02, %al
    and $0xfe, %al
    out %al, $0x92

    /* Linear addresses: the setup segment base plus link-time offsets. */
    xor %ebx, %ebx
    mov %ds, %bx
    shl $4, %ebx
    leal gdt(%ebx), %eax
    mov %eax, gdt_desc + 2
    leal pm32(%ebx), %eax
    mov %eax, pm32_target
    leal ZERO_PAGE(%ebx), %esi

    lgdtl gdt_desc
    mov %cr0, %eax
    or $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl *pm32_target

    .code32
pm32:
    /* The 32-bit boot protocol: flat __BOOT_DS everywhere, ESI = boot_params, EBP = EDI = EBX = 0. */
    mov $0x18, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %fs
    mov %eax, %gs
    mov %eax, %ss
    xor %ebp, %ebp
    xor %edi, %edi
    xor %ebx, %ebx
    jmp *(BP_HDR + 0x214 - 0x1f1)(%esi) /* hdr.code32_start */

    .balign 8
gdt:
    .quad 0
    .quad 0
    .quad 0x00cf9a000000ffff /* 0x10 __BOOT_CS: 32-bit flat code */
    .quad 0x00cf92000000ffff /* 0x18 __BOOT_DS: flat data */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long 0 /* base: patched above */
pm32_target:
    .long 0 /* patched above */
    .word 0x10

kernel_version_string:
    .asciz "aovisor bzImage test guest"

    .balign 512
