"""The cost of one guest exit handled in the VMM's user space: port I/O and MMIO.

Each sample boots the same guest twice, looping ``count`` times and not at all, and divides the difference
of the two wall times by ``count``: start-up and power-off cancel out, what remains is the exit round trip
(guest -> KVM -> VMM user space -> device -> back), however the VMM spends it.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

from bench.harness import Benchmark, Goal, register
from bench.summary import per_item_cost
from bench.testbed import Vmm

EXIT_COUNT = 100_000


class ExitCost(Benchmark):
    """Per-exit cost of the guest ``guest_name``; subclasses give its command line."""

    unit = "µs"
    warmup_runs = 0  # warm_up() boots the loop-less guest instead of a full sample
    guest_name: ClassVar[str]
    count: ClassVar[int] = EXIT_COUNT
    timeout: ClassVar[float] = 120.0

    @abstractmethod
    def cmdline(self, count: int) -> str:
        """The guest's command line for ``count`` exits."""

    def prepare(self) -> None:
        self.kernel: Path = self.testbed.guest(self.guest_name)

    def _wall_s(self, vmm: Vmm, count: int) -> float:
        done = f"{self.guest_name} done {count}\n"
        return self.testbed.boot(
            vmm, self.kernel, self.cmdline(count), expect=done, timeout=self.timeout
        ).wall_s

    def _sample_us(self, vmm: Vmm) -> float:
        without = self._wall_s(vmm, 0)
        with_exits = self._wall_s(vmm, self.count)
        return per_item_cost(with_exits, without, self.count) * 1e6

    def warm_up(self) -> None:
        for vmm in (self.testbed.aovisor, self.testbed.qemu):
            self._wall_s(vmm, 0)

    def run_aovisor(self) -> float:
        return self._sample_us(self.testbed.aovisor)

    def run_qemu(self) -> float:
        return self._sample_us(self.testbed.qemu)


# Port 0x80 (POST codes): aovisor's devices/legacy/post.py; QEMU microvm maps nothing there, so the
# access falls to its unassigned-I/O handler. Both in user space, one KVM_RUN return per `out`
# (bench/README.md shows how that was checked).
PIO_PORT = 0x80


@register
class PioExitCost(ExitCost):
    name = "pio"
    title = f"cost per PIO exit (`out` to port {PIO_PORT:#x}, 1 byte)"
    goal = Goal(max_ratio=1.2)
    guest_name = "pio"

    def cmdline(self, count: int) -> str:
        return f"count={count} port={PIO_PORT:#x} size=1 mode=out"


# In the 32-bit MMIO hole, claimed by no device of either VMM: each write exits to user space, where both
# find no device and drop it. QEMU microvm's devices start at 0xfea00000; aovisor's PCI BAR window
# (0xc0000000-0xe0000000, arch/x86_64/layout.py) is filled from its bottom, and empty in this VM anyway.
MMIO_ADDRESS = 0xD000_0000


@register
class MmioExitCost(ExitCost):
    name = "mmio"
    title = f"cost per MMIO exit (4-byte write to unmapped {MMIO_ADDRESS:#x})"
    goal = Goal(max_ratio=1.2)
    guest_name = "mmio"

    def cmdline(self, count: int) -> str:
        return f"count={count} addr={MMIO_ADDRESS:#x} size=4 mode=write"
