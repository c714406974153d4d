"""Memory: the VMM process's peak resident set while it runs a 128 MiB guest."""

from __future__ import annotations

from pathlib import Path

from bench.harness import Benchmark, Goal, RunFailed, register
from bench.testbed import GUEST_MEMORY_MIB, Vmm

# The pio guest looping this long keeps the VMM busy for about a second: past start-up, in its steady state.
BUSY_EXITS = 20_000


@register
class VmmPeakRss(Benchmark):
    name = "rss"
    title = f"VMM peak RSS, {GUEST_MEMORY_MIB} MiB guest running"
    unit = "MiB"
    goal = Goal(max_value=16, unit="MiB")

    def prepare(self) -> None:
        self.kernel: Path = self.testbed.guest("pio")

    def _peak_mib(self, vmm: Vmm) -> float:
        result = self.testbed.boot(
            vmm, self.kernel, f"count={BUSY_EXITS}", expect=f"pio done {BUSY_EXITS}\n", sample_rss=True
        )
        if result.peak_rss_kib is None:
            raise RunFailed(f"{vmm.label}: no VmHWM could be read from /proc while it ran")
        return result.peak_rss_kib / 1024

    def run_aovisor(self) -> float:
        return self._peak_mib(self.testbed.aovisor)

    def run_qemu(self) -> float:
        return self._peak_mib(self.testbed.qemu)
