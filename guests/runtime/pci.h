/*
 * PCI configuration access through mechanism #1 (ports 0xCF8/0xCFC, PCI Local Bus Specification 3.0
 * §3.2.2.3.2), bus 0 only, plus capability-list and BAR helpers. Works at CPL3 (the TSS I/O bitmap).
 */
#ifndef GUEST_PCI_H
#define GUEST_PCI_H

#include <stdbool.h>
#include <stdint.h>

#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_BAR0 0x10
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_PIN 0x3D

#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10

#define PCI_CAP_ID_VENDOR 0x09
#define PCI_CAP_ID_MSIX 0x11

/* A function on bus 0: device (slot) << 3 | function. */
typedef unsigned pci_dev_t;

uint32_t pci_read32(pci_dev_t dev, unsigned reg);
uint16_t pci_read16(pci_dev_t dev, unsigned reg);
uint8_t pci_read8(pci_dev_t dev, unsigned reg);
void pci_write32(pci_dev_t dev, unsigned reg, uint32_t value);
void pci_write16(pci_dev_t dev, unsigned reg, uint16_t value);
void pci_write8(pci_dev_t dev, unsigned reg, uint8_t value);

/* The first function (function 0 of slots 0-31) with this vendor and device id; false if none. */
bool pci_find(uint16_t vendor, uint16_t device, pci_dev_t *found);
/* Config offset of the next capability with `id` after offset `after` (0: from the start); 0 if none. */
unsigned pci_find_capability(pci_dev_t dev, uint8_t id, unsigned after);
/* The memory address BAR `index` holds (both halves of a 64-bit BAR). */
uint64_t pci_bar_address(pci_dev_t dev, unsigned index);

#endif
