"""virtio-vsock with Cloud Hypervisor's hybrid host side (a Unix socket): see :mod:`.device`."""

from aovisor.virtio.devices.vsock.device import VsockDevice

__all__ = ["VsockDevice"]
