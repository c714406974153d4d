"""Start-up: the whole life of a process that boots the hello guest, prints its line and powers off."""

from __future__ import annotations

from pathlib import Path

from bench.harness import Benchmark, Goal, register
from bench.startup_profile import profile_notes
from bench.testbed import Vmm

HELLO_LINE = "Hello, world! from aovisor guest\n"


@register
class HelloStartup(Benchmark):
    name = "hello"
    title = "hello: process start → guest output → exit"
    unit = "ms"
    goal = Goal(max_ratio=1.0)
    warmup_runs = 2

    def prepare(self) -> None:
        self.kernel: Path = self.testbed.guest("hello")

    def _wall_ms(self, vmm: Vmm) -> float:
        return self.testbed.boot(vmm, self.kernel, expect=HELLO_LINE, timeout=30).wall_s * 1000

    def run_aovisor(self) -> float:
        return self._wall_ms(self.testbed.aovisor)

    def run_qemu(self) -> float:
        return self._wall_ms(self.testbed.qemu)

    def notes(self) -> str:
        return profile_notes(self.testbed, self.kernel, expect=HELLO_LINE)
