"""CPU topology: threads per core, cores per die, dies per package, packages, and the APIC ids they imply.

An x86 APIC id is a bit field (SDM Vol. 3A §9.9.1): the thread number in the low bits, then the core, the
die and the package, each field as wide as its count needs.  So a count that is not a power of two leaves
gaps: 3 cores per package give APIC ids 0, 1, 2, then 4, 5, 6 for the next package.  vCPU *index* n is
thread n % threads, core (n / threads) % cores ... as in Cloud Hypervisor (``arch::x86_64::get_x2apic_id``),
so the same ``--cpus topology=`` gives a guest the same ids under both VMMs.
"""

from __future__ import annotations

from aovisor.lean_typing import NamedTuple


def _bits_for(count: int) -> int:
    """Number of APIC-id bits needed to number ``count`` items."""
    return max(0, (count - 1).bit_length())


class CpuTopology(NamedTuple):
    """Cloud Hypervisor's ``topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>``."""

    threads_per_core: int = 1
    cores_per_die: int = 1
    dies_per_package: int = 1
    packages: int = 1

    @classmethod
    def flat(cls, vcpus: int) -> CpuTopology:
        """The default: one package of ``vcpus`` single-threaded cores (APIC id = vCPU index)."""
        return cls(1, vcpus, 1, 1)

    @property
    def vcpus(self) -> int:
        return self.threads_per_core * self.cores_per_die * self.dies_per_package * self.packages

    @property
    def thread_bits(self) -> int:
        return _bits_for(self.threads_per_core)

    @property
    def core_bits(self) -> int:
        return _bits_for(self.cores_per_die)

    @property
    def die_bits(self) -> int:
        return _bits_for(self.dies_per_package)

    @property
    def package_shift(self) -> int:
        """APIC-id bits below the package number: what CPUID calls the package level's shift."""
        return self.thread_bits + self.core_bits + self.die_bits

    @property
    def logical_per_package(self) -> int:
        return self.threads_per_core * self.cores_per_die * self.dies_per_package

    def apic_id(self, index: int) -> int:
        """The APIC id of vCPU ``index`` (0-based)."""
        thread = index % self.threads_per_core
        core = index // self.threads_per_core % self.cores_per_die
        die = index // (self.threads_per_core * self.cores_per_die) % self.dies_per_package
        package = index // self.logical_per_package
        return (
            thread
            | core << self.thread_bits
            | die << (self.thread_bits + self.core_bits)
            | package << self.package_shift
        )

    def apic_ids(self, count: int) -> tuple[int, ...]:
        """The APIC ids of vCPUs 0 .. count-1."""
        return tuple(self.apic_id(index) for index in range(count))
