/*
 * smp: count the CPUs in the ACPI MADT, start every AP with INIT-SIPI-SIPI and have each report in.
 *
 * The BSP works at CPL3 (MADT walk, IPIs through the user-accessible LAPIC page, waiting); each AP runs
 * the real-mode trampoline (smp_trampoline.S) into long mode, prints "cpu online: apic id N" at CPL0
 * under a spinlock, counts itself in and halts. Output:
 *   smp: N cpus in MADT
 *   cpu online: apic id K        (one per AP, in any order)
 *   smp: all N cpus online
 * or "smp: FAILED: ..." if there is no MADT or an AP does not show up within the timeout.
 */
#include "acpi.h"
#include "lapic.h"
#include "runtime.h"

#define MAX_CPUS 64 /* the BSP + MAX_APS in smp_trampoline.S */
#define AP_TIMEOUT_CYCLES 20000000000ull /* TSC cycles to wait for all APs: seconds at any TSC rate */

extern const char ap_trampoline_start[], ap_trampoline_end[];

static volatile uint32_t print_lock;
static volatile uint32_t aps_online;

static void spin_lock(volatile uint32_t *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) != 0)
        while (*lock != 0)
            cpu_relax();
}

static void spin_unlock(volatile uint32_t *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

/* Called by ap_start64 on each AP, at CPL0 on its own stack. */
void ap_main(void);
void ap_main(void)
{
    unsigned id = lapic_id();
    spin_lock(&print_lock);
    printf("cpu online: apic id %u\n", id);
    __atomic_add_fetch(&aps_online, 1, __ATOMIC_RELEASE);
    spin_unlock(&print_lock);
    /* Returning parks the AP (cli; hlt) in ap_start64. */
}

static void wait_icr_idle(void)
{
    for (unsigned i = 0; i < 1000000 && (lapic_read(LAPIC_ICR_LOW) & ICR_SEND_PENDING); i++)
        cpu_relax();
}

static void send_ipi(unsigned apic_id, uint32_t icr_low)
{
    lapic_write(LAPIC_ICR_HIGH, apic_id << 24);
    lapic_write(LAPIC_ICR_LOW, icr_low);
    wait_icr_idle();
}

static void delay_cycles(uint64_t cycles)
{
    uint64_t start = rdtsc();
    while (rdtsc() - start < cycles)
        cpu_relax();
}

/* INIT, then two STARTUPs (SDM vol. 3 §9.4.4.1). The architectural 10 ms / 200 us waits are shortened:
 * a virtual CPU processes INIT before a later SIPI, and a second SIPI to a running CPU is ignored. */
static void start_ap(unsigned apic_id)
{
    send_ipi(apic_id, ICR_DELIVERY_INIT | ICR_LEVEL_ASSERT);
    delay_cycles(100000);
    for (int i = 0; i < 2; i++) {
        send_ipi(apic_id, ICR_DELIVERY_STARTUP | ICR_LEVEL_ASSERT | (AP_TRAMPOLINE_ADDR >> 12));
        delay_cycles(20000);
    }
}

static void user_main(void)
{
    const struct acpi_rsdp *rsdp = acpi_find_rsdp(boot_start_info->rsdp_paddr);
    const struct acpi_header *madt = acpi_find_table(rsdp, "APIC");
    if (madt == NULL) {
        printf("smp: FAILED: no ACPI MADT (rsdp %p)\n", (const void *)rsdp);
        poweroff();
    }
    uint8_t ids[MAX_CPUS];
    unsigned ncpus = madt_enabled_lapic_ids((const struct acpi_madt *)madt, ids, MAX_CPUS);
    printf("smp: %u cpus in MADT\n", ncpus);
    if (ncpus > MAX_CPUS) {
        printf("smp: FAILED: more than %u cpus\n", MAX_CPUS);
        poweroff();
    }

    memcpy((void *)AP_TRAMPOLINE_ADDR, ap_trampoline_start, (size_t)(ap_trampoline_end - ap_trampoline_start));
    unsigned self = lapic_id();
    unsigned expected = 0;
    for (unsigned i = 0; i < ncpus; i++) {
        if (ids[i] == self)
            continue;
        start_ap(ids[i]);
        expected++;
    }

    uint64_t start = rdtsc();
    while (__atomic_load_n(&aps_online, __ATOMIC_ACQUIRE) < expected && rdtsc() - start < AP_TIMEOUT_CYCLES)
        cpu_relax();
    spin_lock(&print_lock);
    unsigned online = __atomic_load_n(&aps_online, __ATOMIC_ACQUIRE) + 1;
    if (online == ncpus)
        printf("smp: all %u cpus online\n", ncpus);
    else
        printf("smp: FAILED: %u of %u cpus online\n", online, ncpus);
    spin_unlock(&print_lock);
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
