/*
 * A minimal virtio driver for the guests over virtio-pci (modern, virtio 1.2 §4.1) or virtio-mmio (version 2,
 * §4.2): capability parsing, feature negotiation, split virtqueues (§2.7) with optional EVENT_IDX, and MSI-X
 * programming. Everything works at CPL3: config space through the ports, the BAR or the MMIO window through
 * the identity map of the MMIO hole. virtio-mmio devices are found through `virtio_mmio.device=` on the
 * command line when it names any, else through the DSDT (LNRO0005).
 *
 * Guest physical addresses are the virtual addresses (the runtime identity-maps the first 4 GiB).
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pci.h"

#define VIRTIO_PCI_VENDOR 0x1AF4
#define VIRTIO_PCI_DEVICE(type) (0x1040 + (type))
/* Device types (virtio 1.2 §5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

#define VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define VIRTIO_F_EVENT_IDX (1ull << 29)
#define VIRTIO_F_VERSION_1 (1ull << 32)

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTIO_MSI_NO_VECTOR 0xFFFF

/* Bytes of 4096-aligned memory a queue of `size` entries needs: the descriptor table and the available ring,
 * then the used ring on its own page (§2.7). A constant expression, to size static arrays. */
#define VIRTQ_PAGE_ALIGN(x) (((x) + 4095u) & ~(size_t)4095u)
#define VIRTQ_MEMORY(size) (VIRTQ_PAGE_ALIGN(18u * (size) + 6u) + VIRTQ_PAGE_ALIGN(8u * (size) + 6u))

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtio_dev {
    uintptr_t mmio;       /* the virtio-mmio window; 0 for a PCI function */
    uint32_t mmio_gsi;    /* its interrupt (an IOAPIC pin), from the DSDT or the command line */
    pci_dev_t pci;
    uintptr_t common;     /* struct virtio_pci_common_cfg */
    uintptr_t notify;     /* notification area */
    uintptr_t isr;
    uintptr_t device_cfg; /* 0 if the device has none */
    uint32_t notify_multiplier;
    unsigned msix_cap;    /* config offset of the MSI-X capability, 0 if none */
    uintptr_t msix_table;
    unsigned msix_vectors;
    uint64_t features;    /* negotiated */
};

struct virtq {
    uint16_t size;
    uint16_t index;
    volatile struct virtq_desc *desc;
    volatile uint16_t *avail; /* flags, idx, ring[size], used_event */
    volatile uint8_t *used;   /* flags, idx, ring[size] of {id, len}, avail_event */
    uintptr_t notify_addr;
    uint16_t avail_idx;       /* the next available index we publish */
    uint16_t kicked_idx;      /* the available index at the last kick decision */
    uint16_t last_used;
    bool event_idx;
    bool notify32;            /* virtio-mmio: QueueNotify is a 32-bit register */
    uint64_t kicks;           /* notifications actually sent */
};

/* VIRTQ_MEMORY(size), for a size known at run time only. */
size_t virtq_memory_size(uint16_t size);

/* Find the virtio capabilities of `pci`, enable memory decoding and bus mastering. 0 on success. */
int virtio_pci_open(struct virtio_dev *dev, pci_dev_t pci);
/* Use the virtio-mmio window at `base` (magic "virt", version 2). 0 on success. */
int virtio_mmio_open(struct virtio_dev *dev, uintptr_t base);
/* The first device of virtio type `type`: a virtio-pci function, else a virtio-mmio window (command line or DSDT).
 * 0 on success; dev->mmio says which transport it is on. */
int virtio_find(struct virtio_dev *dev, unsigned type);
uint64_t virtio_device_features(struct virtio_dev *dev);
/* Reset, ACKNOWLEDGE, DRIVER, write `wanted & offered`, FEATURES_OK; 0 if the device accepted. */
int virtio_negotiate(struct virtio_dev *dev, uint64_t wanted);
/* Program queue `index` with `size` entries in `mem` (virtq_memory_size bytes, 4096-aligned, zeroed). */
int virtq_init(struct virtio_dev *dev, struct virtq *q, unsigned index, void *mem, uint16_t size,
               uint16_t msix_vector);
/* Set DRIVER_OK; 0 if the device then reports it without DEVICE_NEEDS_RESET (it took the queues). */
int virtio_driver_ok(struct virtio_dev *dev);
uint8_t virtio_status(struct virtio_dev *dev);
uint8_t virtio_read_isr(struct virtio_dev *dev);
uint16_t virtio_num_queues(struct virtio_dev *dev);
uint8_t virtio_config_read8(struct virtio_dev *dev, unsigned offset);
uint32_t virtio_config_read32(struct virtio_dev *dev, unsigned offset);
uint64_t virtio_config_read64(struct virtio_dev *dev, unsigned offset);

/* Program MSI-X table entry `vector` (address, data, masked) and enable MSI-X. */
void virtio_msix_set(struct virtio_dev *dev, unsigned vector, uint64_t address, uint32_t data, bool masked);
void virtio_msix_enable(struct virtio_dev *dev);

/* Make the chain starting at descriptor `head` available (not yet visible to the device). */
void virtq_publish(struct virtq *q, uint16_t head);
/* Point descriptor `index` at `len` bytes at `buf`, alone in its chain (`flags`: VIRTQ_DESC_F_WRITE for a
 * buffer the device fills), and publish it. */
void virtq_add_buffer(struct virtq *q, uint16_t index, const volatile void *buf, uint32_t len, uint16_t flags);
/* Make the published chains visible and notify the device if it asked for it. */
void virtq_kick(struct virtq *q);
/* Take one used element if there is one. */
bool virtq_get_used(struct virtq *q, uint32_t *id, uint32_t *len);
/* Poll for a used element of `q` for at most `ticks` TSC ticks; false if none came. `idle` (or NULL) runs
 * between polls, e.g. to reclaim another queue's completions. */
bool virtq_wait_used(struct virtq *q, uint32_t *id, uint32_t *len, uint64_t ticks, void (*idle)(void));
/* A wait for guests that never calibrate the TSC: tens of seconds at any TSC rate, for a completion that
 * only a broken device would not deliver. */
#define VIRTQ_WAIT_LONG 100000000000ull

/* --- A guest with one device ------------------------------------------------------------------------------ */
/* Print "<who>: FAILED: <what> (status 0xS)" (S: the device status, 0 before a device was found) and power
 * off; `what` is a printf format. */
__attribute__((noreturn, format(printf, 3, 4))) void virtio_fail(struct virtio_dev *dev, const char *who,
                                                                 const char *what, ...);
/* The driver's part of device initialisation (§3.1.1) up to DRIVER_OK: find the first device of `type`
 * (virtio_find), negotiate `wanted` (virtio_negotiate), and set up queue i (0 <= i < n) as `*queues[i]`,
 * `size` entries in `mem` + i * VIRTQ_MEMORY(size) (4096-aligned, zeroed), interrupting on MSI-X vector
 * `vector` (VIRTIO_MSI_NO_VECTOR: polled only). A failure goes to virtio_fail(dev, who, ...): "no <who>
 * device", "feature negotiation" or "queue setup". */
void virtio_setup(struct virtio_dev *dev, const char *who, unsigned type, uint64_t wanted,
                  struct virtq *const queues[], unsigned n, uint16_t size, void *mem, uint16_t vector);

static inline void virtio_mb(void) { __asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory", "cc"); }
static inline void compiler_barrier(void) { __asm__ volatile("" ::: "memory"); }

#endif
