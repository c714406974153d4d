"""The VM configuration model: one set of records for the CLI, the API and (later) snapshots.

The records are named tuples (:mod:`aovisor.lean_typing`): immutable, and cheap to import and create
(neither a validation library nor :mod:`dataclasses`, which imports :mod:`inspect`: startup counts);
change fields with ``record._replace(name=value)``.  Being tuples, two records of different types with
equal values compare equal: compare fields, not records of different types.  File paths are ``str``, as
the user gave them (:mod:`pathlib` costs start-up time, and ``os.open`` is all the VMM does with them).
They hold *validated* values; parsing and validation with field-named errors happen in
:mod:`aovisor.cli.options` (CLI grammar) and in :func:`VmConfig.validate` (cross-field rules).
"""

from __future__ import annotations

import enum

from aovisor.arch.x86_64.topology import CpuTopology
from aovisor.errors import ConfigError
from aovisor.lean_typing import NamedTuple

MiB = 1 << 20
DEFAULT_MEMORY = 512 * MiB  # Cloud Hypervisor's default
MAX_VCPUS = 254  # one xAPIC id per vCPU, 0xFF is broadcast
MAX_XAPIC_ID = 254  # 0xFF is broadcast


class PayloadConfig(NamedTuple):
    """What to boot: the kernel (ELF vmlinux or bzImage), its initramfs and command line."""

    kernel: str
    initramfs: str | None = None
    cmdline: str = ""


class VcpuAffinity(NamedTuple):
    """Cloud Hypervisor's ``<vcpu>@[<host cpus>]``: the host CPUs vCPU ``vcpu``'s thread may run on."""

    vcpu: int
    host_cpus: tuple[int, ...]


class CpusConfig(NamedTuple):
    """vCPUs at boot, and at most (the same: no hotplug yet); the topology, None for one package of cores."""

    boot_vcpus: int = 1
    max_vcpus: int = 1
    topology: CpuTopology | None = None
    affinity: tuple[VcpuAffinity, ...] = ()

    @property
    def cpu_topology(self) -> CpuTopology:
        """The topology the guest sees: the one given, else one package of ``max_vcpus`` cores."""
        return self.topology if self.topology is not None else CpuTopology.flat(self.max_vcpus)


class MemoryConfig(NamedTuple):
    """Guest RAM, in bytes."""

    size: int = DEFAULT_MEMORY


class OutputMode(enum.Enum):
    """Where a serial port or console goes (Cloud Hypervisor's `--serial`/`--console` modes)."""

    OFF = "off"  # no device at all
    NULL = "null"  # device present, output discarded
    TTY = "tty"  # this process's stdin/stdout (raw mode when stdin is a terminal)
    FILE = "file"  # output appended to a file
    PTY = "pty"
    SOCKET = "socket"


class OutputConfig(NamedTuple):
    """Where a serial port or console goes; ``file`` only with :attr:`OutputMode.FILE`."""

    mode: OutputMode
    file: str | None = None


class DiskConfig(NamedTuple):
    """A virtio-blk disk (``--disk path=...``): a raw image file or block device."""

    path: str
    readonly: bool = False
    direct: bool = False  # O_DIRECT: bypass the host page cache
    id: str | None = None
    serial: str | None = None  # what VIRTIO_BLK_T_GET_ID returns (20 bytes at most); default: the id


DEFAULT_RNG_SOURCE = "/dev/urandom"


class RngConfig(NamedTuple):
    """The virtio-rng device (``--rng src=...``), present by default as in Cloud Hypervisor."""

    src: str = DEFAULT_RNG_SOURCE


class NetConfig(NamedTuple):
    """A virtio-net device on a host TAP (``--net tap=NAME,mac=,ip=,mask=`` or TAP fds from the API)."""

    tap: str | None = None  # interface name; None and no fds: a new TAP the kernel names (vmtapN)
    fds: tuple[int, ...] = ()  # TAP fds already open (CH's fd=[...]): the device uses a dup of the first
    mac: str | None = None  # the guest's MAC, "52:54:00:12:34:56"; None: random when the device is made
    ip: str | None = None  # IPv4 address and netmask of the host side of the TAP (None: left as it is)
    mask: str | None = None
    id: str | None = None
    offload_csum: bool = True  # offer checksum offload in both directions
    offload_tso: bool = True  # offer TCP segmentation offload in both directions (needs offload_csum)


class VsockConfig(NamedTuple):
    """The virtio-vsock device (``--vsock cid=,socket=``): Cloud Hypervisor's hybrid vsock, whose host side
    is a Unix socket (``CONNECT <port>`` from the host; guest connections go to ``<socket>_<port>``)."""

    cid: int
    socket: str
    id: str | None = None


VSOCK_MIN_GUEST_CID = 3  # 0-2 are the hypervisor, local and host addresses (virtio 1.2 §5.10.4)
VSOCK_MAX_GUEST_CID = 0xFFFF_FFFE  # -1 is VMADDR_CID_ANY


class VirtioTransport(enum.Enum):
    """How virtio devices appear to the guest (``--virtio-transport``)."""

    PCI = "pci"  # virtio-pci functions on PCI bus 0 (Cloud Hypervisor's only transport)
    MMIO = "mmio"  # virtio-mmio windows described in the DSDT (LNRO0005), as QEMU microvm does
    # The same windows announced as `virtio_mmio.device=<size>@<base>:<irq>` on the kernel command line
    # instead, as Firecracker does (needs a kernel with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
    MMIO_CMDLINE = "mmio-cmdline"


class VmConfig(NamedTuple):
    """The whole VM: every record above, as validated by :meth:`validate`."""

    payload: PayloadConfig
    # The defaults are shared instances, which is safe: every record is immutable.
    cpus: CpusConfig = CpusConfig()
    memory: MemoryConfig = MemoryConfig()
    # Until virtio-console exists the serial port is the only console, so it defaults to tty (CH: null).
    serial: OutputConfig = OutputConfig(OutputMode.TTY)
    console: OutputConfig = OutputConfig(OutputMode.OFF)
    hypervisor: str | None = None  # "kvm" | "mshv" | None (probe)
    disks: tuple[DiskConfig, ...] = ()
    rng: RngConfig | None = RngConfig()
    nets: tuple[NetConfig, ...] = ()
    vsock: VsockConfig | None = None
    virtio_transport: VirtioTransport = VirtioTransport.PCI

    def validate(self) -> None:
        if not 1 <= self.cpus.boot_vcpus <= MAX_VCPUS:
            raise ConfigError(f"--cpus: boot={self.cpus.boot_vcpus} must be between 1 and {MAX_VCPUS}")
        if self.cpus.max_vcpus < self.cpus.boot_vcpus:
            raise ConfigError("--cpus: max must not be smaller than boot")
        if self.cpus.topology is not None:
            _validate_topology(self.cpus.topology, self.cpus.max_vcpus)
        _validate_affinity(self.cpus.affinity, self.cpus.max_vcpus)
        if self.memory.size < 16 * MiB:
            raise ConfigError("--memory: size must be at least 16M")
        if self.memory.size % (1 << 12):
            raise ConfigError("--memory: size must be a multiple of 4K")
        ids = [disk.id for disk in self.disks if disk.id is not None]
        if len(ids) != len(set(ids)):
            raise ConfigError("--disk: id: the same id is given to two disks")
        ids += [net.id for net in self.nets if net.id is not None]
        if self.vsock is not None and self.vsock.id is not None:
            ids.append(self.vsock.id)
        if len(ids) != len(set(ids)):
            raise ConfigError("--net: id: the same id is given to two devices")
        if self.vsock is not None and not VSOCK_MIN_GUEST_CID <= self.vsock.cid <= VSOCK_MAX_GUEST_CID:
            raise ConfigError(f"--vsock: cid: {self.vsock.cid} is reserved (use 3 or more)")
        if self.serial.mode is OutputMode.TTY and self.console.mode is OutputMode.TTY:
            raise ConfigError("--console: tty: the serial port is on the terminal already (--serial null)")
        if self.hypervisor not in (None, "kvm", "mshv"):
            raise ConfigError(f"--hypervisor: unknown hypervisor {self.hypervisor!r} (kvm or mshv)")


def _validate_topology(topology: CpuTopology, max_vcpus: int) -> None:
    """Cloud Hypervisor's rules (every part at least 1, their product is max_vcpus) and ours: the APIC ids
    the topology implies fit the MADT's xAPIC entries (0-254)."""
    given = ":".join(str(part) for part in topology)
    if min(topology) < 1:
        raise ConfigError(f"--cpus: topology={given}: every part must be at least 1")
    if topology.vcpus != max_vcpus:
        raise ConfigError(f"--cpus: topology={given} describes {topology.vcpus} vCPUs, not {max_vcpus}")
    highest = topology.apic_id(max_vcpus - 1)
    if highest > MAX_XAPIC_ID:
        raise ConfigError(
            f"--cpus: topology={given} needs APIC ids up to {highest} (each part's field is a power of two "
            f"wide), above the xAPIC limit of {MAX_XAPIC_ID}"
        )


def _validate_affinity(affinity: tuple[VcpuAffinity, ...], max_vcpus: int) -> None:
    """Each vCPU at most once, within the vCPUs there are, with at least one host CPU."""
    seen: set[int] = set()
    for entry in affinity:
        if not 0 <= entry.vcpu < max_vcpus:
            raise ConfigError(f"--cpus: affinity: vCPU {entry.vcpu} does not exist (vCPUs 0-{max_vcpus - 1})")
        if entry.vcpu in seen:
            raise ConfigError(f"--cpus: affinity: vCPU {entry.vcpu} is given twice")
        seen.add(entry.vcpu)
        if not entry.host_cpus or min(entry.host_cpus) < 0:
            raise ConfigError(f"--cpus: affinity: vCPU {entry.vcpu}: no host CPUs")
