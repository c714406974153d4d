/*
 * smp: count the CPUs in the ACPI MADT, start every AP with INIT-SIPI-SIPI and have each report in.
 *
 * The BSP works at CPL3 (MADT walk, IPIs through the user-accessible LAPIC page, waiting); each AP runs
 * the real-mode trampoline (smp_trampoline.S) into long mode, prints its ids at CPL0 under a spinlock,
 * counts itself in and halts. Every CPU reports its LAPIC id beside the ids CPUID gives it (leaf 1
 * EBX[31:24], leaf 0xB EDX), which the VMM must make agree per vCPU; the BSP also reports the hypervisor
 * leaf's signature, the core-level count of leaf 0xB and the brand string. Output:
 *   smp: N cpus in MADT
 *   smp: cpuid: hypervisor "SIG", N logical cpus per package
 *   smp: cpuid: brand "BRAND"
 *   smp: bsp apic id 0, cpuid apic id 0, x2apic id 0
 *   cpu online: apic id K, cpuid apic id K, x2apic id K        (one per AP, in any order)
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

/* "apic id A, cpuid apic id B, x2apic id C" for the calling CPU; C is "none" without leaf 0xB. */
static void print_cpu_ids(void)
{
    unsigned initial_apic_id = cpuid(1, 0).ebx >> 24;
    printf("apic id %u, cpuid apic id %u, x2apic id ", lapic_id(), initial_apic_id);
    if (cpuid(0, 0).eax >= 0xB)
        printf("%u\n", cpuid(0xB, 0).edx);
    else
        printf("none\n");
}

/* The hypervisor leaf (0x40000000: EBX, ECX, EDX spell the vendor) and leaf 0xB's core level. */
static void print_cpuid_platform(void)
{
    char signature[13] = {0};
    if (cpuid(1, 0).ecx & (1u << 31)) {
        struct cpuid_regs hv = cpuid(0x40000000, 0);
        memcpy(signature, &hv.ebx, 4);
        memcpy(signature + 4, &hv.ecx, 4);
        memcpy(signature + 8, &hv.edx, 4);
    }
    unsigned per_package = 0;
    if (cpuid(0, 0).eax >= 0xB) {
        struct cpuid_regs core = cpuid(0xB, 1);
        if (((core.ecx >> 8) & 0xFF) == 2) /* level type 2: core */
            per_package = core.ebx & 0xFFFF;
    }
    printf("smp: cpuid: hypervisor \"%s\", %u logical cpus per package\n", signature, per_package);

    /* The brand string (leaves 0x80000002-4), blanks trimmed at both ends as Linux does. */
    char brand[49] = {0};
    if (cpuid(0x80000000, 0).eax >= 0x80000004)
        for (unsigned i = 0; i < 3; i++) {
            struct cpuid_regs r = cpuid(0x80000002 + i, 0);
            memcpy(brand + 16 * i, &r, 16);
        }
    char *start = brand;
    while (*start == ' ')
        start++;
    for (char *end = start + strnlen(start, sizeof brand); end > start && end[-1] == ' ';)
        *--end = '\0';
    printf("smp: cpuid: brand \"%s\"\n", start);
}

/* Called by ap_start64 on each AP, at CPL0 on its own stack. */
void ap_main(void);
void ap_main(void)
{
    spin_lock(&print_lock);
    printf("cpu online: ");
    print_cpu_ids();
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
    print_cpuid_platform();
    printf("smp: bsp ");
    print_cpu_ids();
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
