/* Finding ACPI tables. Everything read here comes from the VMM and is checked before it is trusted:
 * lengths are bounded, checksums verified, and addresses must lie in the identity-mapped first 4 GiB. */
#include "acpi.h"

#include "runtime.h"

#define MAPPED_LIMIT 0x100000000ull
#define TABLE_MAX_LENGTH (1u << 20)
#define BIOS_AREA_START 0xE0000
#define BIOS_AREA_END 0x100000

static bool bytes_sum_to_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + b[i]);
    return sum == 0;
}

static bool in_mapped_range(uint64_t addr, uint64_t len)
{
    return addr != 0 && addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr;
}

static const struct acpi_rsdp *rsdp_at(uint64_t addr)
{
    if (!in_mapped_range(addr, sizeof(struct acpi_rsdp)))
        return NULL;
    const struct acpi_rsdp *rsdp = (const struct acpi_rsdp *)addr;
    if (memcmp(rsdp->signature, "RSD PTR ", 8) != 0 || !bytes_sum_to_zero(rsdp, 20))
        return NULL;
    return rsdp;
}

const struct acpi_rsdp *acpi_find_rsdp(uint64_t hint)
{
    if (hint != 0)
        return rsdp_at(hint);
    for (uint64_t addr = BIOS_AREA_START; addr < BIOS_AREA_END; addr += 16) {
        const struct acpi_rsdp *rsdp = rsdp_at(addr);
        if (rsdp != NULL)
            return rsdp;
    }
    return NULL;
}

static const struct acpi_header *table_at(uint64_t addr)
{
    if (!in_mapped_range(addr, sizeof(struct acpi_header)))
        return NULL;
    const struct acpi_header *h = (const struct acpi_header *)addr;
    if (h->length < sizeof(*h) || h->length > TABLE_MAX_LENGTH || !in_mapped_range(addr, h->length))
        return NULL;
    if (!bytes_sum_to_zero(h, h->length))
        return NULL;
    return h;
}

const struct acpi_header *acpi_find_table(const struct acpi_rsdp *rsdp, const char signature[4])
{
    if (rsdp == NULL)
        return NULL;
    bool use_xsdt = rsdp->revision >= 2 && rsdp->xsdt_address != 0;
    const struct acpi_header *root = table_at(use_xsdt ? rsdp->xsdt_address : rsdp->rsdt_address);
    if (root == NULL || memcmp(root->signature, use_xsdt ? "XSDT" : "RSDT", 4) != 0)
        return NULL;
    size_t entry_size = use_xsdt ? 8 : 4;
    size_t entries = (root->length - sizeof(*root)) / entry_size;
    const uint8_t *base = (const uint8_t *)(root + 1);
    for (size_t i = 0; i < entries; i++) {
        uint64_t addr = 0;
        memcpy(&addr, base + i * entry_size, entry_size); /* entries may be unaligned */
        const struct acpi_header *t = table_at(addr);
        if (t != NULL && memcmp(t->signature, signature, 4) == 0)
            return t;
    }
    return NULL;
}

unsigned madt_enabled_lapic_ids(const struct acpi_madt *madt, uint8_t *ids, unsigned max)
{
    if (madt->header.length < sizeof(*madt))
        return 0;
    const uint8_t *p = (const uint8_t *)(madt + 1);
    const uint8_t *end = (const uint8_t *)madt + madt->header.length;
    unsigned count = 0;
    while (end - p >= 2) {
        uint8_t type = p[0], length = p[1];
        if (length < 2 || length > end - p)
            break; /* malformed entry: stop rather than loop or overrun */
        if (type == MADT_TYPE_LOCAL_APIC && length >= 8) {
            uint32_t flags;
            memcpy(&flags, p + 4, 4);
            if (flags & MADT_LAPIC_ENABLED) {
                if (count < max)
                    ids[count] = p[3];
                count++;
            }
        }
        p += length;
    }
    return count;
}

#define FADT_DSDT 40
#define FADT_X_DSDT 140

const struct acpi_header *acpi_find_dsdt(const struct acpi_rsdp *rsdp)
{
    const struct acpi_header *fadt = acpi_find_table(rsdp, "FACP");
    if (fadt == NULL)
        return NULL;
    const uint8_t *f = (const uint8_t *)fadt;
    uint64_t addr = 0;
    if (fadt->length >= FADT_X_DSDT + 8)
        memcpy(&addr, f + FADT_X_DSDT, 8);
    if (addr == 0 && fadt->length >= FADT_DSDT + 4)
        memcpy(&addr, f + FADT_DSDT, 4);
    const struct acpi_header *dsdt = table_at(addr);
    return dsdt != NULL && memcmp(dsdt->signature, "DSDT", 4) == 0 ? dsdt : NULL;
}

#define AML_STRING_PREFIX 0x0D
#define RES_MEMORY32_FIXED 0x86
#define RES_EXTENDED_IRQ 0x89
#define CRS_SCAN_LIMIT 256 /* bytes after the _HID in which the descriptors must appear */

unsigned acpi_find_mmio_devices(const struct acpi_header *dsdt, const char *hid, struct acpi_mmio_device *out,
                                unsigned max)
{
    if (dsdt == NULL)
        return 0;
    const uint8_t *p = (const uint8_t *)dsdt;
    size_t end = dsdt->length, found = 0;
    for (size_t i = sizeof(*dsdt); i + 10 <= end; i++) {
        if (p[i] != AML_STRING_PREFIX || memcmp(p + i + 1, hid, 8) != 0 || p[i + 9] != 0)
            continue;
        struct acpi_mmio_device dev = {0, 0, 0};
        bool have_mem = false, have_irq = false;
        size_t limit = i + 10 + CRS_SCAN_LIMIT < end ? i + 10 + CRS_SCAN_LIMIT : end;
        for (size_t j = i + 10; j + 3 <= limit && !(have_mem && have_irq); j++) {
            if (!have_mem && p[j] == RES_MEMORY32_FIXED && p[j + 1] == 9 && p[j + 2] == 0 && j + 12 <= limit) {
                uint32_t base, len;
                memcpy(&base, p + j + 4, 4);
                memcpy(&len, p + j + 8, 4);
                dev.base = base;
                dev.length = len;
                have_mem = true;
            } else if (!have_irq && p[j] == RES_EXTENDED_IRQ && p[j + 1] >= 6 && p[j + 2] == 0 && j + 9 <= limit &&
                       p[j + 4] >= 1) {
                memcpy(&dev.gsi, p + j + 5, 4);
                have_irq = true;
            }
        }
        if (have_mem && have_irq) {
            if (found < max)
                out[found] = dev;
            found++;
        }
        i += 9;
    }
    return (unsigned)found;
}
