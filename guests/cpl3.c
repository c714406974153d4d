/*
 * cpl3: leave CPL0 right after boot, check that the CPU really runs at CPL3, run a compute loop natively,
 * print from CPL3 and power off from CPL3 (port I/O at CPL3 is allowed by IOPL=3 and the TSS I/O bitmap).
 * Command line: count=N iterations (default 10000000).
 */
#include "runtime.h"

/* One step of Knuth's MMIX linear congruential generator: deterministic, and no compiler can fold a
 * loop of them into a closed form. */
static uint64_t compute(uint64_t iterations)
{
    uint64_t x = 1;
    for (uint64_t i = 0; i < iterations; i++)
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    return x;
}

static void user_main(void)
{
    /* Printing at all proves port I/O works at CPL3. RFLAGS.IOPL is not checked: PVM shows 0 there
     * even though enter_user set 3 (the runtime's TSS I/O bitmap is what lets the I/O through). */
    unsigned cpl = current_cpl();
    printf("cpl3: running at CPL %u\n", cpl);
    if (cpl != 3) {
        printf("cpl3: FAILED: expected CPL 3\n");
        poweroff();
    }
    uint64_t iterations = cmdline_get_u64("count=", 10000000);
    uint64_t result = compute(iterations);
    printf("cpl3: %lu iterations, result 0x%016lx\n", iterations, result);
    printf("cpl3 ok\n");
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
