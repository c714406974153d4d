/* Just enough ACPI to find the MADT (ACPI 6.5 §5.2.5 RSDP, §5.2.6 table header, §5.2.12 MADT). */
#ifndef GUEST_ACPI_H
#define GUEST_ACPI_H

#include <stdint.h>

struct __attribute__((packed)) acpi_rsdp {
    char signature[8]; /* "RSD PTR " */
    uint8_t checksum;  /* over the first 20 bytes */
    char oem_id[6];
    uint8_t revision;  /* 0: ACPI 1.0 (RSDT only); >= 2: the fields below are valid */
    uint32_t rsdt_address;
    uint32_t length;
    uint64_t xsdt_address;
    uint8_t extended_checksum;
    uint8_t reserved[3];
};

struct __attribute__((packed)) acpi_header {
    char signature[4];
    uint32_t length; /* of the whole table, header included */
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
};

struct __attribute__((packed)) acpi_madt {
    struct acpi_header header;
    uint32_t lapic_address;
    uint32_t flags;
    /* interrupt controller structures follow: type (1 byte), length (1 byte), body */
};

#define MADT_TYPE_LOCAL_APIC 0
#define MADT_TYPE_INTERRUPT_OVERRIDE 2
#define MADT_LAPIC_ENABLED 0x1

/* The RSDP at `hint` if non-zero and valid, else the first valid one in 0xE0000-0xFFFFF; NULL if none. */
const struct acpi_rsdp *acpi_find_rsdp(uint64_t hint);
/* The table with `signature` (e.g. "APIC") through the XSDT (or the RSDT for ACPI 1.0); NULL if none.
 * Tables are checked for sane lengths and checksums, and must lie in the identity-mapped 4 GiB. */
const struct acpi_header *acpi_find_table(const struct acpi_rsdp *rsdp, const char signature[4]);
/* APIC ids of the enabled processor-local-APIC entries (type 0, flags bit 0) of the MADT, in table
 * order; returns how many there are (only the first `max` are stored). */
unsigned madt_enabled_lapic_ids(const struct acpi_madt *madt, uint8_t *ids, unsigned max);

/* The DSDT, through the FADT's X_DSDT (or DSDT); NULL if there is none. */
const struct acpi_header *acpi_find_dsdt(const struct acpi_rsdp *rsdp);

/* A device the DSDT describes with an MMIO window (Memory32Fixed) and an interrupt (Extended Interrupt). */
struct acpi_mmio_device {
    uint64_t base;
    uint32_t length;
    uint32_t gsi;
};
/* The devices whose _HID is the string `hid` (8 characters, e.g. "LNRO0005") and whose _CRS follows with a
 * Memory32Fixed and an Extended Interrupt descriptor, in DSDT order: a byte scan for the patterns our VMM's
 * (and QEMU microvm's) AML produces, not an AML interpreter. Returns how many (at most `max` stored). */
unsigned acpi_find_mmio_devices(const struct acpi_header *dsdt, const char *hid, struct acpi_mmio_device *out,
                                unsigned max);

#endif
