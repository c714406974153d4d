/*
 * mmio_forms: one MMIO access by each of ~400 distinct x86-64 instruction encodings, at CPL3, for the
 * differential test of aovisor's MMIO instruction emulator against KVM's
 * (tests/guest/test_emulator_differential.py).  No command line.
 *
 * Every form runs as one asm statement:
 *     load RFLAGS and every GPR but RSP from `s`;  out %al, $0xe0;  <the instruction>;  out %al, $0xe1
 * so a VMM watching ports 0xe0 (before) and 0xe1 (after) sees the registers just before and just after the
 * instruction, and every MMIO access between the two comes from that one instruction.  Neither OUT changes a
 * register or a flag.
 *
 * Register values are pseudo-random per form (an LCG seeded with the form's number).  Address registers
 * point into a page of the MMIO hole chosen per form (MMIO(x) = page + x, page = 0xd0000000 + (n % 240) *
 * 4 KiB): rbx = MMIO(0x100), rbp = MMIO(0x200), r12 = MMIO(0x300), r13 = MMIO(0x400), rdi = MMIO(0x500);
 * r8 = 8 and rsi = 0x10 are index registers.  No access crosses a page.  SRC is RAM holding known bytes, DST
 * RAM each form may write at its own offset.  Forms that need other values set them after fill_state().
 *
 * The list below is explicit on purpose: each line is one encoding the test decodes and compares.
 * Output:
 *     mmio_forms: start
 *     mmio_forms done N          (N = the number of forms run)
 */
#include "runtime.h"

enum { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };

#define X86_RFLAGS_DF (1u << 10)
#define ARITH_FLAGS 0x8d5u /* CF PF AF ZF SF OF */
#define MMIO_HOLE_PAGES 0xd0000000ull

struct form_state {
    uint64_t r[16];  /* architectural order; r[RSP] is not loaded */
    uint64_t rflags; /* offset 128 */
};

static uint8_t src_buffer[64] __attribute__((aligned(64)));
static uint8_t dst_buffer[512 * 64] __attribute__((aligned(64)));
static uint64_t page;
static unsigned n;

#define MMIO(offset) (page + (offset))
#define SRC ((uint64_t)(src_buffer + 32))
#define DST ((uint64_t)(dst_buffer + (n % 512) * 64 + 16))

static void fill_state(struct form_state *s)
{
    uint64_t x = (n + 1) * 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < 16; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        s->r[i] = x ^ (x >> 29);
    }
    s->rflags = 0x2 | ((x >> 40) & ARITH_FLAGS);
    page = MMIO_HOLE_PAGES + (uint64_t)(n % 240) * 4096;
    s->r[RBX] = MMIO(0x100);
    s->r[RBP] = MMIO(0x200);
    s->r[R12] = MMIO(0x300);
    s->r[R13] = MMIO(0x400);
    s->r[RDI] = MMIO(0x500);
    s->r[R8] = 8;
    s->r[RSI] = 0x10;
}

/* RBP is saved by hand (gcc may not allow it in a clobber list); RAX carries the state pointer in. */
#define FORM(insn, ...)                                                                                 \
    do {                                                                                                \
        struct form_state s;                                                                            \
        fill_state(&s);                                                                                 \
        __VA_ARGS__                                                                                     \
        uint64_t *p = s.r;                                                                              \
        asm volatile("push %%rbp\n\t"                                                                   \
                     "pushq 128(%%rax)\n\t"                                                             \
                     "popfq\n\t"                                                                        \
                     "mov 8(%%rax), %%rcx\n\tmov 16(%%rax), %%rdx\n\tmov 24(%%rax), %%rbx\n\t"          \
                     "mov 40(%%rax), %%rbp\n\tmov 48(%%rax), %%rsi\n\tmov 56(%%rax), %%rdi\n\t"         \
                     "mov 64(%%rax), %%r8\n\tmov 72(%%rax), %%r9\n\tmov 80(%%rax), %%r10\n\t"           \
                     "mov 88(%%rax), %%r11\n\tmov 96(%%rax), %%r12\n\tmov 104(%%rax), %%r13\n\t"        \
                     "mov 112(%%rax), %%r14\n\tmov 120(%%rax), %%r15\n\tmov (%%rax), %%rax\n\t"         \
                     "outb %%al, $0xe0\n\t" insn "\n\toutb %%al, $0xe1\n\t"                             \
                     "cld\n\t"                                                                          \
                     "pop %%rbp"                                                                        \
                     : "+a"(p)                                                                          \
                     :                                                                                  \
                     : "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", \
                       "r15", "cc", "memory");                                                          \
        n++;                                                                                            \
    } while (0)

static void run_forms(void)
{
    FORM("mov %%al, (%%rbx)",);
    FORM("mov %%al, -0x20(%%rbx,%%r8,8)",);
    FORM("mov 0x7f(%%r12), %%al",);
    FORM("mov 0x100(%%rbp), %%al",);
    FORM("mov %%cl, 0x10(%%rbx)",);
    FORM("mov %%cl, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov (%%r13), %%cl",);
    FORM("mov 0x1c(%%r13,%%rsi,1), %%cl",);
    FORM("mov %%dl, (%%rbp)",);
    FORM("mov %%dl, (%%r12,%%r8,2)",);
    FORM("mov -0x20(%%rbx,%%r8,8), %%dl",);
    FORM("mov 0x200(%%rbx,%%r8,1), %%dl",);
    FORM("mov %%ah, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov %%ah, (%%rbp)",);
    FORM("mov (%%rbx), %%ah",);
    FORM("mov -0x8(%%rdi), %%ah",);
    FORM("mov %%ch, 0x100(%%rbp)",);
    FORM("mov %%ch, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov 0x10(%%rbx), %%ch",);
    FORM("mov (%%rbx), %%ch",);
    FORM("mov %%dh, -0x8(%%rdi)",);
    FORM("mov %%dh, 0x100(%%rbp)",);
    FORM("mov (%%rbp), %%dh",);
    FORM("mov 0x10(%%rbx), %%dh",);
    FORM("mov %%r9b, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov %%r9b, -0x8(%%rdi)",);
    FORM("mov 0x1c(%%r13,%%rsi,1), %%r9b",);
    FORM("mov (%%rbp), %%r9b",);
    FORM("mov %%r10b, (%%r12,%%r8,2)",);
    FORM("mov %%r10b, (%%rbx)",);
    FORM("mov 0x200(%%rbx,%%r8,1), %%r10b",);
    FORM("mov 0x7f(%%r12), %%r10b",);
    FORM("mov %%r11b, 0x100(%%rbp)",);
    FORM("mov %%r11b, 0x10(%%rbx)",);
    FORM("mov -0x8(%%rdi), %%r11b",);
    FORM("mov (%%r13), %%r11b",);
    FORM("mov %%r14b, 0x1c(%%r13,%%rsi,1)",);
    FORM("mov %%r14b, (%%rbp)",);
    FORM("mov (%%rbx), %%r14b",);
    FORM("mov -0x20(%%rbx,%%r8,8), %%r14b",);
    FORM("mov %%r15b, 0x200(%%rbx,%%r8,1)",);
    FORM("mov %%r15b, 0x7f(%%r12)",);
    FORM("mov 0x10(%%rbx), %%r15b",);
    FORM("mov 0x8(%%rbx,%%rsi,4), %%r15b",);
    FORM("mov %%sil, -0x8(%%rdi)",);
    FORM("mov %%sil, (%%r13)",);
    FORM("mov (%%rbp), %%sil",);
    FORM("mov (%%r12,%%r8,2), %%sil",);
    FORM("mov %%ax, (%%rbx)",);
    FORM("mov %%ax, -0x20(%%rbx,%%r8,8)",);
    FORM("mov 0x7f(%%r12), %%ax",);
    FORM("mov 0x100(%%rbp), %%ax",);
    FORM("mov %%cx, 0x10(%%rbx)",);
    FORM("mov %%cx, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov (%%r13), %%cx",);
    FORM("mov 0x1c(%%r13,%%rsi,1), %%cx",);
    FORM("mov %%dx, (%%rbp)",);
    FORM("mov %%dx, (%%r12,%%r8,2)",);
    FORM("mov -0x20(%%rbx,%%r8,8), %%dx",);
    FORM("mov 0x200(%%rbx,%%r8,1), %%dx",);
    FORM("mov %%r9w, 0x7f(%%r12)",);
    FORM("mov %%r9w, 0x100(%%rbp)",);
    FORM("mov 0x8(%%rbx,%%rsi,4), %%r9w",);
    FORM("mov -0x8(%%rdi), %%r9w",);
    FORM("mov %%r14w, (%%r13)",);
    FORM("mov %%r14w, 0x1c(%%r13,%%rsi,1)",);
    FORM("mov (%%r12,%%r8,2), %%r14w",);
    FORM("mov (%%rbx), %%r14w",);
    FORM("mov %%si, -0x20(%%rbx,%%r8,8)",);
    FORM("mov %%si, 0x200(%%rbx,%%r8,1)",);
    FORM("mov 0x100(%%rbp), %%si",);
    FORM("mov 0x10(%%rbx), %%si",);
    FORM("mov %%eax, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov %%eax, -0x8(%%rdi)",);
    FORM("mov 0x1c(%%r13,%%rsi,1), %%eax",);
    FORM("mov (%%rbp), %%eax",);
    FORM("mov %%ecx, (%%r12,%%r8,2)",);
    FORM("mov %%ecx, (%%rbx)",);
    FORM("mov 0x200(%%rbx,%%r8,1), %%ecx",);
    FORM("mov 0x7f(%%r12), %%ecx",);
    FORM("mov %%edx, 0x100(%%rbp)",);
    FORM("mov %%edx, 0x10(%%rbx)",);
    FORM("mov -0x8(%%rdi), %%edx",);
    FORM("mov (%%r13), %%edx",);
    FORM("mov %%r9d, 0x1c(%%r13,%%rsi,1)",);
    FORM("mov %%r9d, (%%rbp)",);
    FORM("mov (%%rbx), %%r9d",);
    FORM("mov -0x20(%%rbx,%%r8,8), %%r9d",);
    FORM("mov %%r10d, 0x200(%%rbx,%%r8,1)",);
    FORM("mov %%r10d, 0x7f(%%r12)",);
    FORM("mov 0x10(%%rbx), %%r10d",);
    FORM("mov 0x8(%%rbx,%%rsi,4), %%r10d",);
    FORM("mov %%r11d, -0x8(%%rdi)",);
    FORM("mov %%r11d, (%%r13)",);
    FORM("mov (%%rbp), %%r11d",);
    FORM("mov (%%r12,%%r8,2), %%r11d",);
    FORM("mov %%r14d, (%%rbx)",);
    FORM("mov %%r14d, -0x20(%%rbx,%%r8,8)",);
    FORM("mov 0x7f(%%r12), %%r14d",);
    FORM("mov 0x100(%%rbp), %%r14d",);
    FORM("mov %%r15d, 0x10(%%rbx)",);
    FORM("mov %%r15d, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov (%%r13), %%r15d",);
    FORM("mov 0x1c(%%r13,%%rsi,1), %%r15d",);
    FORM("mov %%rax, (%%rbp)",);
    FORM("mov %%rax, (%%r12,%%r8,2)",);
    FORM("mov -0x20(%%rbx,%%r8,8), %%rax",);
    FORM("mov 0x200(%%rbx,%%r8,1), %%rax",);
    FORM("mov %%rcx, 0x7f(%%r12)",);
    FORM("mov %%rcx, 0x100(%%rbp)",);
    FORM("mov 0x8(%%rbx,%%rsi,4), %%rcx",);
    FORM("mov -0x8(%%rdi), %%rcx",);
    FORM("mov %%rdx, (%%r13)",);
    FORM("mov %%rdx, 0x1c(%%r13,%%rsi,1)",);
    FORM("mov (%%r12,%%r8,2), %%rdx",);
    FORM("mov (%%rbx), %%rdx",);
    FORM("mov %%r9, -0x20(%%rbx,%%r8,8)",);
    FORM("mov %%r9, 0x200(%%rbx,%%r8,1)",);
    FORM("mov 0x100(%%rbp), %%r9",);
    FORM("mov 0x10(%%rbx), %%r9",);
    FORM("mov %%r10, 0x8(%%rbx,%%rsi,4)",);
    FORM("mov %%r10, -0x8(%%rdi)",);
    FORM("mov 0x1c(%%r13,%%rsi,1), %%r10",);
    FORM("mov (%%rbp), %%r10",);
    FORM("mov %%r11, (%%r12,%%r8,2)",);
    FORM("mov %%r11, (%%rbx)",);
    FORM("mov 0x200(%%rbx,%%r8,1), %%r11",);
    FORM("mov 0x7f(%%r12), %%r11",);
    FORM("mov %%r14, 0x100(%%rbp)",);
    FORM("mov %%r14, 0x10(%%rbx)",);
    FORM("mov -0x8(%%rdi), %%r14",);
    FORM("mov (%%r13), %%r14",);
    FORM("mov %%r15, 0x1c(%%r13,%%rsi,1)",);
    FORM("mov %%r15, (%%rbp)",);
    FORM("mov (%%rbx), %%r15",);
    FORM("mov -0x20(%%rbx,%%r8,8), %%r15",);
    FORM("mov %%al, %%fs:0x30(%%rbx)",);
    FORM("mov %%fs:0x30(%%rbx), %%al",);
    FORM("mov %%al, %%gs:(%%rbp)",);
    FORM("mov %%gs:(%%rbp), %%al",);
    FORM("mov %%ax, %%fs:0x30(%%rbx)",);
    FORM("mov %%fs:0x30(%%rbx), %%ax",);
    FORM("mov %%ax, %%gs:(%%rbp)",);
    FORM("mov %%gs:(%%rbp), %%ax",);
    FORM("mov %%eax, %%fs:0x30(%%rbx)",);
    FORM("mov %%fs:0x30(%%rbx), %%eax",);
    FORM("mov %%eax, %%gs:(%%rbp)",);
    FORM("mov %%gs:(%%rbp), %%eax",);
    FORM("mov %%rax, %%fs:0x30(%%rbx)",);
    FORM("mov %%fs:0x30(%%rbx), %%rax",);
    FORM("mov %%rax, %%gs:(%%rbp)",);
    FORM("mov %%gs:(%%rbp), %%rax",);
    FORM("movb $0x5a, 0x10(%%rbx)",);
    FORM("movb $0x5a, (%%r13)",);
    FORM("movb $0x5a, (%%r12,%%r8,2)",);
    FORM("movb $0x5a, 0x200(%%rbx,%%r8,1)",);
    FORM("movw $0x1234, (%%rbp)",);
    FORM("movw $0x1234, -0x20(%%rbx,%%r8,8)",);
    FORM("movw $0x1234, 0x100(%%rbp)",);
    FORM("movw $0x1234, -0x8(%%rdi)",);
    FORM("movl $0xdeadbeef, (%%r13)",);
    FORM("movl $0xdeadbeef, (%%r12,%%r8,2)",);
    FORM("movl $0xdeadbeef, 0x200(%%rbx,%%r8,1)",);
    FORM("movl $0xdeadbeef, 0x10(%%rbx)",);
    FORM("movq $-2, 0x100(%%rbp)",);
    FORM("movq $-2, -0x8(%%rdi)",);
    FORM("movq $-2, (%%rbp)",);
    FORM("movq $-2, -0x20(%%rbx,%%r8,8)",);
    FORM("movabs 0xd00fe008, %%al",);
    FORM("movabs %%al, 0xd00fe010",);
    FORM("movabs 0xd00fe008, %%ax",);
    FORM("movabs %%ax, 0xd00fe010",);
    FORM("movabs 0xd00fe008, %%eax",);
    FORM("movabs %%eax, 0xd00fe010",);
    FORM("movabs 0xd00fe008, %%rax",);
    FORM("movabs %%rax, 0xd00fe010",);
    FORM("addr32 mov %%eax, 0xd00fe020",);
    FORM("addr32 mov 0xd00fe024, %%ecx",);
    FORM("addr32 mov (%%ebx), %%edx",);
    FORM("addr32 movl $7, 0x10(%%ebx,%%r8d,4)",);
    FORM("movzbw (%%rbx), %%cx",);
    FORM("movzbw 0x10(%%rbx), %%r14w",);
    FORM("movzbl (%%rbp), %%edx",);
    FORM("movzbl 0x7f(%%r12), %%r10d",);
    FORM("movzbq (%%r13), %%rax",);
    FORM("movzbq -0x20(%%rbx,%%r8,8), %%r9",);
    FORM("movzwl 0x8(%%rbx,%%rsi,4), %%edx",);
    FORM("movzwl (%%r12,%%r8,2), %%r10d",);
    FORM("movzwq 0x100(%%rbp), %%rax",);
    FORM("movzwq 0x1c(%%r13,%%rsi,1), %%r9",);
    FORM("movsbw 0x200(%%rbx,%%r8,1), %%cx",);
    FORM("movsbw -0x8(%%rdi), %%r14w",);
    FORM("movsbl (%%rbx), %%edx",);
    FORM("movsbl 0x10(%%rbx), %%r10d",);
    FORM("movsbq (%%rbp), %%rax",);
    FORM("movsbq 0x7f(%%r12), %%r9",);
    FORM("movswl (%%r13), %%edx",);
    FORM("movswl -0x20(%%rbx,%%r8,8), %%r10d",);
    FORM("movswq 0x8(%%rbx,%%rsi,4), %%rax",);
    FORM("movswq (%%r12,%%r8,2), %%r9",);
    FORM("movslq (%%rbx), %%rdx",);
    FORM("movslq 0x8(%%rbx,%%rsi,4), %%r15",);
    FORM("movslq (%%r13), %%rcx",);
    FORM("add %%cl, (%%rbx)",);
    FORM("add (%%r13), %%cl",);
    FORM("addb $0x81, (%%r12,%%r8,2)",);
    FORM("add %%dx, 0x10(%%rbx)",);
    FORM("add -0x20(%%rbx,%%r8,8), %%dx",);
    FORM("addw $0x7f, 0x100(%%rbp)",);
    FORM("add %%r9d, (%%rbp)",);
    FORM("add 0x8(%%rbx,%%rsi,4), %%r9d",);
    FORM("addl $-3, 0x1c(%%r13,%%rsi,1)",);
    FORM("add %%r10, 0x7f(%%r12)",);
    FORM("add (%%r12,%%r8,2), %%r10",);
    FORM("addq $0x12345678, 0x200(%%rbx,%%r8,1)",);
    FORM("addl $0x1234, (%%r13)",);
    FORM("addw $-4, 0x8(%%rbx,%%rsi,4)",);
    FORM("or %%al, (%%r13)",);
    FORM("or 0x100(%%rbp), %%al",);
    FORM("orb $0x81, -0x8(%%rdi)",);
    FORM("or %%ax, -0x20(%%rbx,%%r8,8)",);
    FORM("or 0x1c(%%r13,%%rsi,1), %%ax",);
    FORM("orw $0x7f, (%%rbx)",);
    FORM("or %%r15d, 0x8(%%rbx,%%rsi,4)",);
    FORM("or 0x200(%%rbx,%%r8,1), %%r15d",);
    FORM("orl $-3, 0x10(%%rbx)",);
    FORM("or %%rax, (%%r12,%%r8,2)",);
    FORM("or -0x8(%%rdi), %%rax",);
    FORM("orq $0x12345678, (%%rbp)",);
    FORM("orl $0x1234, 0x100(%%rbp)",);
    FORM("orw $-4, 0x200(%%rbx,%%r8,1)",);
    FORM("adc %%r14b, 0x100(%%rbp)",);
    FORM("adc (%%rbx), %%r14b",);
    FORM("adcb $0x81, 0x7f(%%r12)",);
    FORM("adc %%r14w, 0x1c(%%r13,%%rsi,1)",);
    FORM("adc 0x10(%%rbx), %%r14w",);
    FORM("adcw $0x7f, (%%r13)",);
    FORM("adc %%r9d, 0x200(%%rbx,%%r8,1)",);
    FORM("adc (%%rbp), %%r9d",);
    FORM("adcl $-3, -0x20(%%rbx,%%r8,8)",);
    FORM("adc %%r10, -0x8(%%rdi)",);
    FORM("adc 0x7f(%%r12), %%r10",);
    FORM("adcq $0x12345678, 0x8(%%rbx,%%rsi,4)",);
    FORM("adcl $0x1234, (%%rbx)",);
    FORM("adcw $-4, (%%rbp)",);
    FORM("sbb %%cl, (%%rbx)",);
    FORM("sbb (%%r13), %%cl",);
    FORM("sbbb $0x81, (%%r12,%%r8,2)",);
    FORM("sbb %%dx, 0x10(%%rbx)",);
    FORM("sbb -0x20(%%rbx,%%r8,8), %%dx",);
    FORM("sbbw $0x7f, 0x100(%%rbp)",);
    FORM("sbb %%r15d, (%%rbp)",);
    FORM("sbb 0x8(%%rbx,%%rsi,4), %%r15d",);
    FORM("sbbl $-3, 0x1c(%%r13,%%rsi,1)",);
    FORM("sbb %%rax, 0x7f(%%r12)",);
    FORM("sbb (%%r12,%%r8,2), %%rax",);
    FORM("sbbq $0x12345678, 0x200(%%rbx,%%r8,1)",);
    FORM("sbbl $0x1234, (%%r13)",);
    FORM("sbbw $-4, 0x8(%%rbx,%%rsi,4)",);
    FORM("and %%al, (%%r13)",);
    FORM("and 0x100(%%rbp), %%al",);
    FORM("andb $0x81, -0x8(%%rdi)",);
    FORM("and %%ax, -0x20(%%rbx,%%r8,8)",);
    FORM("and 0x1c(%%r13,%%rsi,1), %%ax",);
    FORM("andw $0x7f, (%%rbx)",);
    FORM("and %%r9d, 0x8(%%rbx,%%rsi,4)",);
    FORM("and 0x200(%%rbx,%%r8,1), %%r9d",);
    FORM("andl $-3, 0x10(%%rbx)",);
    FORM("and %%r10, (%%r12,%%r8,2)",);
    FORM("and -0x8(%%rdi), %%r10",);
    FORM("andq $0x12345678, (%%rbp)",);
    FORM("andl $0x1234, 0x100(%%rbp)",);
    FORM("andw $-4, 0x200(%%rbx,%%r8,1)",);
    FORM("sub %%r14b, 0x100(%%rbp)",);
    FORM("sub (%%rbx), %%r14b",);
    FORM("subb $0x81, 0x7f(%%r12)",);
    FORM("sub %%r14w, 0x1c(%%r13,%%rsi,1)",);
    FORM("sub 0x10(%%rbx), %%r14w",);
    FORM("subw $0x7f, (%%r13)",);
    FORM("sub %%r15d, 0x200(%%rbx,%%r8,1)",);
    FORM("sub (%%rbp), %%r15d",);
    FORM("subl $-3, -0x20(%%rbx,%%r8,8)",);
    FORM("sub %%rax, -0x8(%%rdi)",);
    FORM("sub 0x7f(%%r12), %%rax",);
    FORM("subq $0x12345678, 0x8(%%rbx,%%rsi,4)",);
    FORM("subl $0x1234, (%%rbx)",);
    FORM("subw $-4, (%%rbp)",);
    FORM("xor %%cl, (%%rbx)",);
    FORM("xor (%%r13), %%cl",);
    FORM("xorb $0x81, (%%r12,%%r8,2)",);
    FORM("xor %%dx, 0x10(%%rbx)",);
    FORM("xor -0x20(%%rbx,%%r8,8), %%dx",);
    FORM("xorw $0x7f, 0x100(%%rbp)",);
    FORM("xor %%r9d, (%%rbp)",);
    FORM("xor 0x8(%%rbx,%%rsi,4), %%r9d",);
    FORM("xorl $-3, 0x1c(%%r13,%%rsi,1)",);
    FORM("xor %%r10, 0x7f(%%r12)",);
    FORM("xor (%%r12,%%r8,2), %%r10",);
    FORM("xorq $0x12345678, 0x200(%%rbx,%%r8,1)",);
    FORM("xorl $0x1234, (%%r13)",);
    FORM("xorw $-4, 0x8(%%rbx,%%rsi,4)",);
    FORM("cmp %%al, (%%r13)",);
    FORM("cmp 0x100(%%rbp), %%al",);
    FORM("cmpb $0x81, -0x8(%%rdi)",);
    FORM("cmp %%ax, -0x20(%%rbx,%%r8,8)",);
    FORM("cmp 0x1c(%%r13,%%rsi,1), %%ax",);
    FORM("cmpw $0x7f, (%%rbx)",);
    FORM("cmp %%r15d, 0x8(%%rbx,%%rsi,4)",);
    FORM("cmp 0x200(%%rbx,%%r8,1), %%r15d",);
    FORM("cmpl $-3, 0x10(%%rbx)",);
    FORM("cmp %%rax, (%%r12,%%r8,2)",);
    FORM("cmp -0x8(%%rdi), %%rax",);
    FORM("cmpq $0x12345678, (%%rbp)",);
    FORM("cmpl $0x1234, 0x100(%%rbp)",);
    FORM("cmpw $-4, 0x200(%%rbx,%%r8,1)",);
    FORM("test %%dl, 0x10(%%rbx)",);
    FORM("testb $0x80, 0x8(%%rbx,%%rsi,4)",);
    FORM("test %%dx, (%%rbp)",);
    FORM("testw $0x1001, (%%r12,%%r8,2)",);
    FORM("test %%edx, (%%r13)",);
    FORM("testl $0x10001, 0x1c(%%r13,%%rsi,1)",);
    FORM("test %%rdx, 0x100(%%rbp)",);
    FORM("testq $0x10001, 0x10(%%rbx)",);
    FORM("incb 0x8(%%rbx,%%rsi,4)",);
    FORM("incw 0x1c(%%r13,%%rsi,1)",);
    FORM("incl 0x7f(%%r12)",);
    FORM("incq 0x7f(%%r12)",);
    FORM("decb 0x8(%%rbx,%%rsi,4)",);
    FORM("decw 0x1c(%%r13,%%rsi,1)",);
    FORM("decl 0x7f(%%r12)",);
    FORM("decq 0x7f(%%r12)",);
    FORM("notb 0x8(%%rbx,%%rsi,4)",);
    FORM("notw 0x1c(%%r13,%%rsi,1)",);
    FORM("notl 0x7f(%%r12)",);
    FORM("notq 0x7f(%%r12)",);
    FORM("negb 0x8(%%rbx,%%rsi,4)",);
    FORM("negw 0x1c(%%r13,%%rsi,1)",);
    FORM("negl 0x7f(%%r12)",);
    FORM("negq 0x7f(%%r12)",);
    FORM("xchg %%cl, 0x10(%%rbx)",);
    FORM("xadd %%ah, 0x8(%%rbx,%%rsi,4)",);
    FORM("cmpxchg %%ch, 0x10(%%rbx)",);
    FORM("xchg %%cx, (%%rbp)",);
    FORM("xadd %%r9w, (%%r13)",);
    FORM("cmpxchg %%r14w, 0x100(%%rbp)",);
    FORM("xchg %%ecx, (%%r13)",);
    FORM("xadd %%r9d, 0x8(%%rbx,%%rsi,4)",);
    FORM("cmpxchg %%r10d, 0x200(%%rbx,%%r8,1)",);
    FORM("xchg %%rcx, 0x100(%%rbp)",);
    FORM("xadd %%r9, 0x200(%%rbx,%%r8,1)",);
    FORM("cmpxchg %%r10, (%%rbp)",);
    FORM("btw $12, (%%r13)",);
    FORM("btl $22, 0x8(%%rbx,%%rsi,4)",);
    FORM("btq $42, 0x200(%%rbx,%%r8,1)",);
    FORM("bt %%cx, (%%rbx)", s.r[RCX] = (uint64_t)(37););
    FORM("bt %%ecx, 0x40(%%rbp)", s.r[RCX] = (uint64_t)(-70););
    FORM("bt %%r9, (%%r12)", s.r[R9] = (uint64_t)(130););
    FORM("btsw $13, -0x20(%%rbx,%%r8,8)",);
    FORM("btsl $23, (%%r12,%%r8,2)",);
    FORM("btsq $43, -0x8(%%rdi)",);
    FORM("bts %%cx, (%%rbx)", s.r[RCX] = (uint64_t)(37););
    FORM("bts %%ecx, 0x40(%%rbp)", s.r[RCX] = (uint64_t)(-70););
    FORM("bts %%r9, (%%r12)", s.r[R9] = (uint64_t)(130););
    FORM("btrw $13, -0x20(%%rbx,%%r8,8)",);
    FORM("btrl $23, (%%r12,%%r8,2)",);
    FORM("btrq $43, -0x8(%%rdi)",);
    FORM("btr %%cx, (%%rbx)", s.r[RCX] = (uint64_t)(37););
    FORM("btr %%ecx, 0x40(%%rbp)", s.r[RCX] = (uint64_t)(-70););
    FORM("btr %%r9, (%%r12)", s.r[R9] = (uint64_t)(130););
    FORM("btcw $13, -0x20(%%rbx,%%r8,8)",);
    FORM("btcl $23, (%%r12,%%r8,2)",);
    FORM("btcq $43, -0x8(%%rdi)",);
    FORM("btc %%cx, (%%rbx)", s.r[RCX] = (uint64_t)(37););
    FORM("btc %%ecx, 0x40(%%rbp)", s.r[RCX] = (uint64_t)(-70););
    FORM("btc %%r9, (%%r12)", s.r[R9] = (uint64_t)(130););
    FORM("stosb", s.r[RDI] = (uint64_t)(MMIO(0x500)););
    FORM("rep stosb", s.r[RDI] = (uint64_t)(MMIO(0x500)); s.r[RCX] = (uint64_t)(3););
    FORM("movsb", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)););
    FORM("rep movsb", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)); s.r[RCX] = (uint64_t)(2););
    FORM("lodsb", s.r[RSI] = (uint64_t)(MMIO(0x700)););
    FORM("scasb", s.r[RDI] = (uint64_t)(MMIO(0x780)););
    FORM("stosw", s.r[RDI] = (uint64_t)(MMIO(0x500)););
    FORM("rep stosw", s.r[RDI] = (uint64_t)(MMIO(0x500)); s.r[RCX] = (uint64_t)(3););
    FORM("movsw", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)););
    FORM("rep movsw", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)); s.r[RCX] = (uint64_t)(2););
    FORM("lodsw", s.r[RSI] = (uint64_t)(MMIO(0x700)););
    FORM("scasw", s.r[RDI] = (uint64_t)(MMIO(0x780)););
    FORM("stosl", s.r[RDI] = (uint64_t)(MMIO(0x500)););
    FORM("rep stosl", s.r[RDI] = (uint64_t)(MMIO(0x500)); s.r[RCX] = (uint64_t)(3););
    FORM("movsl", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)););
    FORM("rep movsl", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)); s.r[RCX] = (uint64_t)(2););
    FORM("lodsl", s.r[RSI] = (uint64_t)(MMIO(0x700)););
    FORM("scasl", s.r[RDI] = (uint64_t)(MMIO(0x780)););
    FORM("stosq", s.r[RDI] = (uint64_t)(MMIO(0x500)););
    FORM("rep stosq", s.r[RDI] = (uint64_t)(MMIO(0x500)); s.r[RCX] = (uint64_t)(3););
    FORM("movsq", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)););
    FORM("rep movsq", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)); s.r[RCX] = (uint64_t)(2););
    FORM("lodsq", s.r[RSI] = (uint64_t)(MMIO(0x700)););
    FORM("scasq", s.r[RDI] = (uint64_t)(MMIO(0x780)););
    FORM("rep movsb", s.r[RSI] = (uint64_t)(MMIO(0x800)); s.r[RDI] = (uint64_t)(DST); s.r[RCX] = (uint64_t)(3););
    FORM("rep movsq", s.r[RSI] = (uint64_t)(MMIO(0x800)); s.r[RDI] = (uint64_t)(MMIO(0x900)); s.r[RCX] = (uint64_t)(2););
    FORM("rep movsl", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)); s.r[RCX] = (uint64_t)(3); s.rflags |= X86_RFLAGS_DF;);
    FORM("rep stosw", s.r[RDI] = (uint64_t)(MMIO(0x5f0)); s.r[RCX] = (uint64_t)(4); s.rflags |= X86_RFLAGS_DF;);
    FORM("rep lodsb", s.r[RSI] = (uint64_t)(MMIO(0x700)); s.r[RCX] = (uint64_t)(2););
    FORM("cmpsb", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x780)););
    FORM("repe cmpsl", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x780)); s.r[RCX] = (uint64_t)(3););
    FORM("repne scasb", s.r[RDI] = (uint64_t)(MMIO(0x780)); s.r[RCX] = (uint64_t)(4););
    FORM("addr32 rep stosb", s.r[RDI] = (uint64_t)(MMIO(0x500)); s.r[RCX] = (uint64_t)(2););
    FORM("addr32 movsl", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)););
    FORM("addr32 rep stosb", s.r[RDI] = (uint64_t)(MMIO(0x500)); s.r[RCX] = (uint64_t)(0x100000002););
    FORM("movsb %%fs:(%%rsi), %%es:(%%rdi)", s.r[RSI] = (uint64_t)(SRC); s.r[RDI] = (uint64_t)(MMIO(0x600)););
    FORM("lodsl %%gs:(%%rsi), %%eax", s.r[RSI] = (uint64_t)(MMIO(0x700)););
}

static void user_main(void)
{
    for (unsigned i = 0; i < sizeof src_buffer; i++)
        src_buffer[i] = (uint8_t)(0xa0 + i * 7);
    printf("mmio_forms: start\n");
    run_forms();
    printf("mmio_forms done %u\n", n);
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
