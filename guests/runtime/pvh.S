/*
 * PVH entry (Xen x86/HVM direct boot ABI, docs/misc/pvh.pandoc and include/public/arch-x86/hvm/start_info.h):
 * the VMM finds the 32-bit entry point in an ELF note of type XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen",
 * and enters it in 32-bit protected mode, paging off, flat CS/DS, EBX = address of struct hvm_start_info.
 */
#include "layout.h"
#include "long_mode.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

    /* The descriptor is 8 bytes (a 64-bit value, upper half 0), which Xen's numeric-note rule allows:
     * QEMU reads a 64-bit value from ELF64 notes. 4-byte alignment: QEMU pads the name to the PT_NOTE
     * segment's p_align. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                        /* namesz: "Xen\0" */
    .long 8                        /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY /* type */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32

    .section .text.head, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    mov %ebx, %edi
    ENABLE_LONG_MODE pvh_start64

    .code64
pvh_start64:
    mov %edi, %edi /* zero-extend the hvm_start_info address: c_entry's argument */
    jmp start64
