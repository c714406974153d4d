"""The VM configuration model: one set of records for the CLI, the API and (later) snapshots.

The records are plain frozen dataclasses (cheap to import: startup counts).  They hold *validated* values;
parsing and validation with field-named errors happen in :mod:`aovisor.cli.options` (CLI grammar) and in
:func:`VmConfig.validate` (cross-field rules).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from aovisor.errors import ConfigError

MiB = 1 << 20
DEFAULT_MEMORY = 512 * MiB  # Cloud Hypervisor's default
MAX_VCPUS = 254  # one xAPIC id per vCPU, 0xFF is broadcast


@dataclass(frozen=True)
class PayloadConfig:
    kernel: Path
    initramfs: Path | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class CpusConfig:
    boot_vcpus: int = 1
    max_vcpus: int = 1


@dataclass(frozen=True)
class MemoryConfig:
    size: int = DEFAULT_MEMORY


class OutputMode(enum.Enum):
    """Where a serial port or console goes (Cloud Hypervisor's `--serial`/`--console` modes)."""

    OFF = "off"  # no device at all
    NULL = "null"  # device present, output discarded
    TTY = "tty"  # this process's stdin/stdout (raw mode when stdin is a terminal)
    FILE = "file"  # output appended to a file
    PTY = "pty"
    SOCKET = "socket"


@dataclass(frozen=True)
class OutputConfig:
    mode: OutputMode
    file: Path | None = None


@dataclass(frozen=True)
class VmConfig:
    payload: PayloadConfig
    cpus: CpusConfig = field(default_factory=CpusConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # Until virtio-console exists the serial port is the only console, so it defaults to tty (CH: null).
    serial: OutputConfig = field(default_factory=lambda: OutputConfig(OutputMode.TTY))
    console: OutputConfig = field(default_factory=lambda: OutputConfig(OutputMode.OFF))
    hypervisor: str | None = None  # "kvm" | "mshv" | None (probe)

    def validate(self) -> None:
        if not 1 <= self.cpus.boot_vcpus <= MAX_VCPUS:
            raise ConfigError(f"--cpus: boot={self.cpus.boot_vcpus} must be between 1 and {MAX_VCPUS}")
        if self.cpus.max_vcpus < self.cpus.boot_vcpus:
            raise ConfigError("--cpus: max must not be smaller than boot")
        if self.memory.size < 16 * MiB:
            raise ConfigError("--memory: size must be at least 16M")
        if self.memory.size % (1 << 12):
            raise ConfigError("--memory: size must be a multiple of 4K")
        if self.hypervisor not in (None, "kvm", "mshv"):
            raise ConfigError(f"--hypervisor: unknown hypervisor {self.hypervisor!r} (kvm or mshv)")
