"""PCI: configuration spaces and the root bus behind ports 0xCF8-0xCFF."""

from aovisor.devices.pci.config_space import ConfigSpace, PciFunction
from aovisor.devices.pci.root import PciRoot

__all__ = ["ConfigSpace", "PciFunction", "PciRoot"]
