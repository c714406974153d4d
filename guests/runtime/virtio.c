/* The guests' virtio driver (virtio-pci and virtio-mmio); see virtio.h. */
#include "virtio.h"

#include <stdarg.h>

#include "acpi.h"
#include "runtime.h"

#define CAP_COMMON_CFG 1
#define CAP_NOTIFY_CFG 2
#define CAP_ISR_CFG 3
#define CAP_DEVICE_CFG 4

/* struct virtio_pci_common_cfg (§4.1.4.3) */
#define COMMON_DFSELECT 0x00
#define COMMON_DF 0x04
#define COMMON_GFSELECT 0x08
#define COMMON_GF 0x0C
#define COMMON_MSIX 0x10
#define COMMON_NUMQ 0x12
#define COMMON_STATUS 0x14
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_SIZE 0x18
#define COMMON_Q_MSIX 0x1A
#define COMMON_Q_ENABLE 0x1C
#define COMMON_Q_NOFF 0x1E
#define COMMON_Q_DESC 0x20
#define COMMON_Q_AVAIL 0x28
#define COMMON_Q_USED 0x30

/* virtio-mmio registers (§4.2.2) */
#define MMIO_MAGIC 0x000
#define MMIO_VERSION 0x004
#define MMIO_DEVICE_ID 0x008
#define MMIO_DEVICE_FEATURES 0x010
#define MMIO_DEVICE_FEATURES_SEL 0x014
#define MMIO_DRIVER_FEATURES 0x020
#define MMIO_DRIVER_FEATURES_SEL 0x024
#define MMIO_QUEUE_SEL 0x030
#define MMIO_QUEUE_NUM_MAX 0x034
#define MMIO_QUEUE_NUM 0x038
#define MMIO_QUEUE_READY 0x044
#define MMIO_QUEUE_NOTIFY 0x050
#define MMIO_INTERRUPT_STATUS 0x060
#define MMIO_INTERRUPT_ACK 0x064
#define MMIO_STATUS 0x070
#define MMIO_QUEUE_DESC 0x080
#define MMIO_QUEUE_DRIVER 0x090
#define MMIO_QUEUE_DEVICE 0x0A0
#define MMIO_CONFIG 0x100
#define MMIO_MAGIC_VALUE 0x74726976 /* "virt" */

#define PAGE 4096u

static size_t used_offset(uint16_t size) { return VIRTQ_PAGE_ALIGN(18u * size + 6u); }

size_t virtq_memory_size(uint16_t size) { return VIRTQ_MEMORY(size); }

static void write64(uintptr_t addr, uint64_t value)
{
    /* Two 32-bit halves, low first, as the spec allows (§4.1.3.1). */
    mmio_write32(addr, (uint32_t)value);
    mmio_write32(addr + 4, (uint32_t)(value >> 32));
}

int virtio_pci_open(struct virtio_dev *dev, pci_dev_t pci)
{
    memset(dev, 0, sizeof(*dev));
    dev->pci = pci;
    pci_write16(pci, PCI_COMMAND, pci_read16(pci, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    for (unsigned at = pci_find_capability(pci, PCI_CAP_ID_VENDOR, 0); at != 0;
         at = pci_find_capability(pci, PCI_CAP_ID_VENDOR, at)) {
        uint8_t type = pci_read8(pci, at + 3);
        uint8_t bar = pci_read8(pci, at + 4);
        uint32_t offset = pci_read32(pci, at + 8);
        if (bar > 5)
            continue;
        uintptr_t base = (uintptr_t)pci_bar_address(pci, bar) + offset;
        if (type == CAP_COMMON_CFG && !dev->common)
            dev->common = base;
        else if (type == CAP_NOTIFY_CFG && !dev->notify) {
            dev->notify = base;
            dev->notify_multiplier = pci_read32(pci, at + 16);
        } else if (type == CAP_ISR_CFG && !dev->isr)
            dev->isr = base;
        else if (type == CAP_DEVICE_CFG && !dev->device_cfg)
            dev->device_cfg = base;
    }
    unsigned msix = pci_find_capability(pci, PCI_CAP_ID_MSIX, 0);
    if (msix) {
        uint32_t table = pci_read32(pci, msix + 4);
        dev->msix_cap = msix;
        dev->msix_vectors = (pci_read16(pci, msix + 2) & 0x7FF) + 1;
        dev->msix_table = (uintptr_t)pci_bar_address(pci, table & 7) + (table & ~7u);
    }
    return dev->common && dev->notify && dev->isr ? 0 : -1;
}

int virtio_mmio_open(struct virtio_dev *dev, uintptr_t base)
{
    memset(dev, 0, sizeof(*dev));
    if (mmio_read32(base + MMIO_MAGIC) != MMIO_MAGIC_VALUE || mmio_read32(base + MMIO_VERSION) != 2)
        return -1;
    dev->mmio = base;
    dev->device_cfg = base + MMIO_CONFIG;
    return 0;
}

/* A number as Linux's memparse reads it: decimal or 0x hex, then an optional K/M/G suffix. */
static const char *parse_size(const char *s, uint64_t *out)
{
    uint64_t value = 0;
    unsigned base = 10, digits = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++, digits++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
            d = (unsigned)((*s | 0x20) - 'a' + 10);
        else
            break;
        value = value * base + d;
    }
    if (*s == 'K' || *s == 'k')
        value <<= 10, s++;
    else if (*s == 'M' || *s == 'm')
        value <<= 20, s++;
    else if (*s == 'G' || *s == 'g')
        value <<= 30, s++;
    *out = value;
    return digits ? s : NULL;
}

static bool starts_with(const char *s, const char *prefix)
{
    while (*prefix && *s == *prefix)
        s++, prefix++;
    return *prefix == 0;
}

/* The windows named by `virtio_mmio.device=<size>@<base>:<irq>` on the command line (Linux's
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES syntax, what `--virtio-transport mmio-cmdline` announces). */
static unsigned cmdline_mmio_devices(struct acpi_mmio_device *out, unsigned max)
{
    static const char key[] = "virtio_mmio.device=";
    const char *s = cmdline_get();
    unsigned n = 0;
    for (; s && *s && n < max; s++) {
        if ((s != cmdline_get() && s[-1] != ' ') || !starts_with(s, key))
            continue;
        uint64_t size, base, irq;
        const char *p = parse_size(s + sizeof(key) - 1, &size);
        if (!p || *p != '@' || !(p = parse_size(p + 1, &base)) || *p != ':' || !parse_size(p + 1, &irq))
            continue;
        out[n].base = base;
        out[n].length = size > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)size;
        out[n].gsi = (uint32_t)irq;
        n++;
    }
    return n;
}

int virtio_find(struct virtio_dev *dev, unsigned type)
{
    pci_dev_t pci;
    if (pci_find(VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE(type), &pci))
        return virtio_pci_open(dev, pci);
    struct acpi_mmio_device found[16];
    unsigned n = cmdline_mmio_devices(found, 16);
    if (n == 0) {
        const struct acpi_header *dsdt = acpi_find_dsdt(acpi_find_rsdp(boot_start_info->rsdp_paddr));
        n = acpi_find_mmio_devices(dsdt, "LNRO0005", found, 16);
    }
    for (unsigned i = 0; i < n && i < 16; i++) {
        uintptr_t base = (uintptr_t)found[i].base;
        if (found[i].length < 0x200 || base < 0xC0000000u || base > 0xFFFFF000u)
            continue; /* only windows in the (identity-mapped, uncached) MMIO hole */
        if (mmio_read32(base + MMIO_MAGIC) != MMIO_MAGIC_VALUE || mmio_read32(base + MMIO_DEVICE_ID) != type)
            continue;
        if (virtio_mmio_open(dev, base) != 0)
            continue;
        dev->mmio_gsi = found[i].gsi;
        return 0;
    }
    return -1;
}

uint64_t virtio_device_features(struct virtio_dev *dev)
{
    if (dev->mmio) {
        mmio_write32(dev->mmio + MMIO_DEVICE_FEATURES_SEL, 0);
        uint64_t low = mmio_read32(dev->mmio + MMIO_DEVICE_FEATURES);
        mmio_write32(dev->mmio + MMIO_DEVICE_FEATURES_SEL, 1);
        return (uint64_t)mmio_read32(dev->mmio + MMIO_DEVICE_FEATURES) << 32 | low;
    }
    mmio_write32(dev->common + COMMON_DFSELECT, 0);
    uint64_t low = mmio_read32(dev->common + COMMON_DF);
    mmio_write32(dev->common + COMMON_DFSELECT, 1);
    uint64_t high = mmio_read32(dev->common + COMMON_DF);
    return high << 32 | low;
}

uint8_t virtio_status(struct virtio_dev *dev)
{
    if (dev->mmio)
        return (uint8_t)mmio_read32(dev->mmio + MMIO_STATUS);
    return mmio_read8(dev->common + COMMON_STATUS);
}

static void set_status(struct virtio_dev *dev, uint8_t status)
{
    if (dev->mmio)
        mmio_write32(dev->mmio + MMIO_STATUS, status);
    else
        mmio_write8(dev->common + COMMON_STATUS, status);
}

uint8_t virtio_read_isr(struct virtio_dev *dev)
{
    if (dev->mmio) { /* InterruptStatus, acknowledged at once */
        uint32_t status = mmio_read32(dev->mmio + MMIO_INTERRUPT_STATUS);
        mmio_write32(dev->mmio + MMIO_INTERRUPT_ACK, status);
        return (uint8_t)status;
    }
    return mmio_read8(dev->isr);
}

uint16_t virtio_num_queues(struct virtio_dev *dev)
{
    if (dev->mmio) {
        uint16_t n = 0;
        for (;; n++) {
            mmio_write32(dev->mmio + MMIO_QUEUE_SEL, n);
            if (mmio_read32(dev->mmio + MMIO_QUEUE_NUM_MAX) == 0 || n == 1024)
                return n;
        }
    }
    return mmio_read16(dev->common + COMMON_NUMQ);
}

int virtio_negotiate(struct virtio_dev *dev, uint64_t wanted)
{
    set_status(dev, 0);
    for (unsigned spins = 0; virtio_status(dev) != 0; spins++) /* reset completes when status reads 0 */
        if (spins > 1000000)
            return -1;
    set_status(dev, VIRTIO_STATUS_ACKNOWLEDGE);
    set_status(dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    uint64_t features = virtio_device_features(dev) & wanted;
    uintptr_t select = dev->mmio ? dev->mmio + MMIO_DRIVER_FEATURES_SEL : dev->common + COMMON_GFSELECT;
    uintptr_t value = dev->mmio ? dev->mmio + MMIO_DRIVER_FEATURES : dev->common + COMMON_GF;
    mmio_write32(select, 0);
    mmio_write32(value, (uint32_t)features);
    mmio_write32(select, 1);
    mmio_write32(value, (uint32_t)(features >> 32));
    uint8_t status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    set_status(dev, status);
    if (!(virtio_status(dev) & VIRTIO_STATUS_FEATURES_OK))
        return -1;
    dev->features = features;
    return 0;
}

static void queue_layout(struct virtio_dev *dev, struct virtq *q, unsigned index, uintptr_t base, uint16_t size)
{
    memset(q, 0, sizeof(*q));
    q->size = size;
    q->index = (uint16_t)index;
    q->desc = (volatile struct virtq_desc *)base;
    q->avail = (volatile uint16_t *)(base + 16u * size);
    q->used = (volatile uint8_t *)(base + used_offset(size));
    q->event_idx = (dev->features & VIRTIO_F_EVENT_IDX) != 0;
}

static int mmio_queue_init(struct virtio_dev *dev, struct virtq *q, unsigned index, uintptr_t base, uint16_t size)
{
    uintptr_t m = dev->mmio;
    mmio_write32(m + MMIO_QUEUE_SEL, index);
    uint32_t max = mmio_read32(m + MMIO_QUEUE_NUM_MAX);
    if (max == 0 || size > max || (size & (size - 1)) || (base & (PAGE - 1)) || mmio_read32(m + MMIO_QUEUE_READY))
        return -1;
    queue_layout(dev, q, index, base, size);
    mmio_write32(m + MMIO_QUEUE_NUM, size);
    mmio_write32(m + MMIO_QUEUE_DESC, (uint32_t)base);
    mmio_write32(m + MMIO_QUEUE_DESC + 4, (uint32_t)((uint64_t)base >> 32));
    mmio_write32(m + MMIO_QUEUE_DRIVER, (uint32_t)(uintptr_t)q->avail);
    mmio_write32(m + MMIO_QUEUE_DRIVER + 4, (uint32_t)((uint64_t)(uintptr_t)q->avail >> 32));
    mmio_write32(m + MMIO_QUEUE_DEVICE, (uint32_t)(uintptr_t)q->used);
    mmio_write32(m + MMIO_QUEUE_DEVICE + 4, (uint32_t)((uint64_t)(uintptr_t)q->used >> 32));
    q->notify_addr = m + MMIO_QUEUE_NOTIFY;
    q->notify32 = true;
    mmio_write32(m + MMIO_QUEUE_READY, 1);
    return 0;
}

int virtq_init(struct virtio_dev *dev, struct virtq *q, unsigned index, void *mem, uint16_t size,
               uint16_t msix_vector)
{
    uintptr_t base = (uintptr_t)mem;
    if (dev->mmio)
        return mmio_queue_init(dev, q, index, base, size);
    mmio_write16(dev->common + COMMON_Q_SELECT, (uint16_t)index);
    uint16_t max = mmio_read16(dev->common + COMMON_Q_SIZE);
    if (max == 0 || size > max || (size & (size - 1)) || (base & (PAGE - 1)))
        return -1;
    queue_layout(dev, q, index, base, size);
    mmio_write16(dev->common + COMMON_Q_SIZE, size);
    mmio_write16(dev->common + COMMON_Q_MSIX, msix_vector);
    if (mmio_read16(dev->common + COMMON_Q_MSIX) != msix_vector)
        return -1;
    write64(dev->common + COMMON_Q_DESC, base);
    write64(dev->common + COMMON_Q_AVAIL, (uintptr_t)q->avail);
    write64(dev->common + COMMON_Q_USED, (uintptr_t)q->used);
    uint16_t notify_off = mmio_read16(dev->common + COMMON_Q_NOFF);
    q->notify_addr = dev->notify + (uintptr_t)notify_off * dev->notify_multiplier;
    mmio_write16(dev->common + COMMON_Q_ENABLE, 1);
    return 0;
}

int virtio_driver_ok(struct virtio_dev *dev)
{
    set_status(dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                        VIRTIO_STATUS_DRIVER_OK);
    uint8_t status = virtio_status(dev);
    return (status & VIRTIO_STATUS_DRIVER_OK) && !(status & VIRTIO_STATUS_NEEDS_RESET) ? 0 : -1;
}

uint8_t virtio_config_read8(struct virtio_dev *dev, unsigned offset) { return mmio_read8(dev->device_cfg + offset); }

uint32_t virtio_config_read32(struct virtio_dev *dev, unsigned offset)
{
    return mmio_read32(dev->device_cfg + offset);
}

uint64_t virtio_config_read64(struct virtio_dev *dev, unsigned offset)
{
    uint64_t low = mmio_read32(dev->device_cfg + offset);
    return (uint64_t)mmio_read32(dev->device_cfg + offset + 4) << 32 | low;
}

void virtio_msix_set(struct virtio_dev *dev, unsigned vector, uint64_t address, uint32_t data, bool masked)
{
    if (!dev->msix_table)
        return; /* virtio-mmio: a wired interrupt instead */
    uintptr_t entry = dev->msix_table + 16u * vector;
    mmio_write32(entry + 12, 1); /* mask while changing the message */
    mmio_write32(entry + 0, (uint32_t)address);
    mmio_write32(entry + 4, (uint32_t)(address >> 32));
    mmio_write32(entry + 8, data);
    mmio_write32(entry + 12, masked ? 1 : 0);
}

void virtio_msix_enable(struct virtio_dev *dev)
{
    if (!dev->msix_cap)
        return;
    uint16_t control = pci_read16(dev->pci, dev->msix_cap + 2);
    pci_write16(dev->pci, dev->msix_cap + 2, (control | 0x8000) & ~0x4000); /* enable, no function mask */
}

void virtq_publish(struct virtq *q, uint16_t head)
{
    q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
    q->avail_idx++;
}

void virtq_add_buffer(struct virtq *q, uint16_t index, const volatile void *buf, uint32_t len, uint16_t flags)
{
    q->desc[index] = (struct virtq_desc){(uintptr_t)buf, len, flags, 0};
    virtq_publish(q, index);
}

void virtq_kick(struct virtq *q)
{
    uint16_t new_idx = q->avail_idx, old_idx = q->kicked_idx;
    compiler_barrier(); /* ring entries before the index (x86 keeps stores in order) */
    q->avail[1] = new_idx;
    q->kicked_idx = new_idx;
    virtio_mb(); /* the index store must be visible before we read the device's avail_event/flags */
    bool notify;
    if (q->event_idx) {
        uint16_t avail_event = *(volatile uint16_t *)(q->used + 4 + 8u * q->size);
        notify = (uint16_t)(new_idx - avail_event - 1) < (uint16_t)(new_idx - old_idx);
    } else {
        notify = !(*(volatile uint16_t *)q->used & 1); /* VIRTQ_USED_F_NO_NOTIFY */
    }
    if (notify) {
        if (q->notify32)
            mmio_write32(q->notify_addr, q->index);
        else
            mmio_write16(q->notify_addr, q->index);
        q->kicks++;
    }
}

bool virtq_get_used(struct virtq *q, uint32_t *id, uint32_t *len)
{
    uint16_t used_idx = *(volatile uint16_t *)(q->used + 2);
    if (used_idx == q->last_used)
        return false;
    compiler_barrier(); /* the element after the index (x86 keeps loads in order) */
    volatile uint32_t *elem = (volatile uint32_t *)(q->used + 4 + 8u * (q->last_used & (q->size - 1)));
    *id = elem[0];
    *len = elem[1];
    q->last_used++;
    if (q->event_idx)
        q->avail[2 + q->size] = q->last_used; /* used_event: interrupt at the next completion */
    return true;
}

bool virtq_wait_used(struct virtq *q, uint32_t *id, uint32_t *len, uint64_t ticks, void (*idle)(void))
{
    for (uint64_t t0 = rdtsc(); !virtq_get_used(q, id, len); cpu_relax()) {
        if (idle)
            idle();
        if (rdtsc() - t0 > ticks)
            return false;
    }
    return true;
}

void virtio_fail(struct virtio_dev *dev, const char *who, const char *what, ...)
{
    /* Until a transport is open there is no status register to read. */
    uint8_t status = dev->mmio || dev->common ? virtio_status(dev) : 0;
    va_list ap;
    va_start(ap, what);
    printf("%s: FAILED: ", who);
    vprintf(what, ap);
    va_end(ap);
    printf(" (status 0x%x)\n", status);
    poweroff();
}

void virtio_setup(struct virtio_dev *dev, const char *who, unsigned type, uint64_t wanted,
                  struct virtq *const queues[], unsigned n, uint16_t size, void *mem, uint16_t vector)
{
    if (virtio_find(dev, type) != 0)
        virtio_fail(dev, who, "no %s device", who);
    if (virtio_negotiate(dev, wanted) != 0)
        virtio_fail(dev, who, "feature negotiation");
    for (unsigned i = 0; i < n; i++)
        if (virtq_init(dev, queues[i], i, (uint8_t *)mem + i * VIRTQ_MEMORY(size), size, vector) != 0)
            virtio_fail(dev, who, "queue setup");
}
