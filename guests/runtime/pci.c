/* PCI configuration mechanism #1 on bus 0; see pci.h. */
#include "pci.h"

#include "x86.h"

#define PCI_CONFIG_ADDRESS 0xCF8
#define PCI_CONFIG_DATA 0xCFC
#define PCI_SLOTS 32

static void select_register(pci_dev_t dev, unsigned reg)
{
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | (dev & 0xFF) << 8 | (reg & 0xFC));
}

uint32_t pci_read32(pci_dev_t dev, unsigned reg)
{
    select_register(dev, reg);
    return inl(PCI_CONFIG_DATA);
}

uint16_t pci_read16(pci_dev_t dev, unsigned reg)
{
    select_register(dev, reg);
    return inw(PCI_CONFIG_DATA + (reg & 2));
}

uint8_t pci_read8(pci_dev_t dev, unsigned reg)
{
    select_register(dev, reg);
    return inb(PCI_CONFIG_DATA + (reg & 3));
}

void pci_write32(pci_dev_t dev, unsigned reg, uint32_t value)
{
    select_register(dev, reg);
    outl(PCI_CONFIG_DATA, value);
}

void pci_write16(pci_dev_t dev, unsigned reg, uint16_t value)
{
    select_register(dev, reg);
    outw(PCI_CONFIG_DATA + (reg & 2), value);
}

void pci_write8(pci_dev_t dev, unsigned reg, uint8_t value)
{
    select_register(dev, reg);
    outb(PCI_CONFIG_DATA + (reg & 3), value);
}

bool pci_find(uint16_t vendor, uint16_t device, pci_dev_t *found)
{
    for (unsigned slot = 0; slot < PCI_SLOTS; slot++) {
        pci_dev_t dev = slot << 3;
        uint32_t id = pci_read32(dev, PCI_VENDOR_ID);
        if ((id & 0xFFFF) == vendor && (id >> 16) == device) {
            *found = dev;
            return true;
        }
    }
    return false;
}

unsigned pci_find_capability(pci_dev_t dev, uint8_t id, unsigned after)
{
    if (!(pci_read16(dev, PCI_STATUS) & PCI_STATUS_CAP_LIST))
        return 0;
    unsigned at = after ? pci_read8(dev, after + 1) : pci_read8(dev, PCI_CAPABILITY_LIST);
    /* At most 48 capabilities fit in 192 bytes: the bound stops a looping list. */
    for (unsigned n = 0; n < 48 && at >= 0x40; n++) {
        at &= 0xFC;
        if (pci_read8(dev, at) == id)
            return at;
        at = pci_read8(dev, at + 1);
    }
    return 0;
}

uint64_t pci_bar_address(pci_dev_t dev, unsigned index)
{
    uint32_t low = pci_read32(dev, PCI_BAR0 + 4 * index);
    if (low & 1)
        return low & ~3u;
    uint64_t address = low & ~0xFu;
    if ((low & 0x6) == 0x4)
        address |= (uint64_t)pci_read32(dev, PCI_BAR0 + 4 * (index + 1)) << 32;
    return address;
}
