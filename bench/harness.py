"""The benchmark model: a registered :class:`Benchmark` per table row, its goal, and alternating measurement.

A row is one subclass of :class:`Benchmark` decorated with :func:`register`, in a module that
``bench/benchmarks/__init__.py`` imports. ``run_aovisor()`` and ``run_qemu()`` each return one sample in
``unit`` (or raise :class:`RunFailed`); :func:`measure` calls them alternately so that both sides see the
same machine load, and reports the median.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from bench.summary import Summary, ratio, summarize
from bench.testbed import RunFailed, Testbed

__all__ = [
    "Benchmark",
    "Goal",
    "Result",
    "RunFailed",
    "alternation",
    "measure",
    "register",
    "registered",
    "select",
]


@dataclass(frozen=True)
class Goal:
    """What aovisor should achieve, exactly one bound: a ratio to QEMU's median or an absolute value.

    ``max_*`` for costs (time, memory: lower is better), ``min_*`` for rates (throughput: higher is better).
    """

    max_ratio: float | None = None
    min_ratio: float | None = None
    max_value: float | None = None
    min_value: float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        bounds = (self.max_ratio, self.min_ratio, self.max_value, self.min_value)
        if sum(bound is not None for bound in bounds) != 1:
            raise ValueError("a goal has exactly one bound: max_ratio, min_ratio, max_value or min_value")

    @property
    def text(self) -> str:
        if self.max_ratio is not None:
            return f"≤ {self.max_ratio:.1f}x QEMU"
        if self.min_ratio is not None:
            return f"≥ {self.min_ratio:.1f}x QEMU"
        if self.max_value is not None:
            return f"≤ {self.max_value:g} {self.unit}".rstrip()
        return f"≥ {self.min_value:g} {self.unit}".rstrip()

    def met(self, aovisor: float, qemu: float | None) -> bool | None:
        """Whether ``aovisor`` meets the goal; None when it cannot be told (a ratio goal without QEMU)."""
        if self.max_value is not None:
            return aovisor <= self.max_value
        if self.min_value is not None:
            return aovisor >= self.min_value
        r = None if qemu is None else ratio(aovisor, qemu)
        if r is None:
            return None
        return r <= self.max_ratio if self.max_ratio is not None else r >= (self.min_ratio or 0.0)


class Benchmark(ABC):
    """One row of the table. Subclasses set the class attributes and implement the two ``run_*`` methods."""

    name: ClassVar[str]  # the --only key: short, lower-case, no spaces
    title: ClassVar[str]  # the "measure" column
    unit: ClassVar[str]  # of every sample, e.g. "ms", "µs", "MiB"
    goal: ClassVar[Goal]
    warmup_runs: ClassVar[int] = 1  # unmeasured runs of each side before measuring

    def __init__(self, testbed: Testbed) -> None:
        self.testbed = testbed
        # How many samples measure() takes of each side: set before prepare(), for a benchmark that must
        # take all its samples in one batch (one boot of the nested lab) and hand them out one by one.
        self.runs = 1

    def prepare(self) -> None:  # noqa: B027 (optional hook: most benchmarks build a guest here)
        """Get ready before warm-up (build guest programs...). Runs once."""

    def warm_up(self) -> None:
        """Unmeasured runs so that caches (page cache, Python bytecode) are what the measured runs see."""
        for _ in range(self.warmup_runs):
            self.run_aovisor()
            self.run_qemu()

    @abstractmethod
    def run_aovisor(self) -> float:
        """One measured sample of aovisor, in ``unit``."""

    @abstractmethod
    def run_qemu(self) -> float:
        """One measured sample of QEMU, in ``unit``."""

    def notes(self) -> str | None:
        """Markdown to print under the table after measuring (diagnostics), or None."""
        return None


B = TypeVar("B", bound=type[Benchmark])


class Registry:
    """Benchmark classes by name, in the order they were registered (the table's order)."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Benchmark]] = {}

    def register(self, cls: B) -> B:
        """Class decorator: add a benchmark (a new row) to this registry."""
        name = cls.name
        if not name or name != name.strip().lower() or " " in name or "," in name:
            raise ValueError(f"benchmark name {name!r}: use a short lower-case word")
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"two benchmarks are named {name!r}")
        self._classes[name] = cls
        return cls

    def benchmarks(self) -> list[type[Benchmark]]:
        return list(self._classes.values())


REGISTRY = Registry()
register = REGISTRY.register


def registered() -> list[type[Benchmark]]:
    """Every benchmark registered with :func:`register`, in table order."""
    return REGISTRY.benchmarks()


def select(available: Sequence[type[Benchmark]], names: Iterable[str]) -> list[type[Benchmark]]:
    """The benchmarks named in ``names`` (``--only``), in table order; all when ``names`` is empty."""
    wanted = {name.strip() for name in names if name.strip()}
    known = {cls.name for cls in available}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return [cls for cls in available if not wanted or cls.name in wanted]


@dataclass(frozen=True)
class Result:
    """What one benchmark produced: both sides' samples, or the error that stopped it."""

    name: str
    title: str
    unit: str
    goal: Goal
    aovisor: tuple[float, ...] = ()
    qemu: tuple[float, ...] = ()
    error: str | None = None
    notes: str | None = None

    @property
    def aovisor_summary(self) -> Summary | None:
        return summarize(self.aovisor) if self.aovisor and self.error is None else None

    @property
    def qemu_summary(self) -> Summary | None:
        return summarize(self.qemu) if self.qemu and self.error is None else None

    @property
    def ratio(self) -> float | None:
        a, q = self.aovisor_summary, self.qemu_summary
        return None if a is None or q is None else ratio(a.median, q.median)

    @property
    def goal_met(self) -> bool | None:
        a, q = self.aovisor_summary, self.qemu_summary
        if a is None:
            return None
        return self.goal.met(a.median, None if q is None else q.median)


Progress = Callable[[str], None]


def measure(bench: Benchmark, runs: int, progress: Progress = lambda _: None) -> Result:
    """Prepare, warm up, then take ``runs`` samples of each side, alternating which side goes first.

    Alternating (a q, q a, a q, ...) spreads slow drifts of the machine's load evenly over both sides.
    A :class:`RunFailed` anywhere ends this benchmark with an error result.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    aovisor: list[float] = []
    qemu: list[float] = []

    def result(error: str | None = None, notes: str | None = None) -> Result:
        return Result(
            name=bench.name,
            title=bench.title,
            unit=bench.unit,
            goal=bench.goal,
            aovisor=tuple(aovisor),
            qemu=tuple(qemu),
            error=error,
            notes=notes,
        )

    try:
        bench.runs = runs
        bench.prepare()
        progress(f"{bench.name}: warming up")
        bench.warm_up()
        for i in range(runs):
            for side in alternation(i):
                (aovisor if side == "aovisor" else qemu).append(
                    bench.run_aovisor() if side == "aovisor" else bench.run_qemu()
                )
            progress(
                f"{bench.name}: run {i + 1}/{runs}: aovisor {aovisor[-1]:.4g} {bench.unit}, "
                f"QEMU {qemu[-1]:.4g} {bench.unit}"
            )
        notes = bench.notes()
    except RunFailed as e:
        progress(f"{bench.name}: FAILED: {e}")
        return result(error=str(e))
    return result(notes=notes)


def alternation(index: int) -> tuple[str, str]:
    """Which side runs first in round ``index``: aovisor on even rounds, QEMU on odd ones."""
    return ("aovisor", "qemu") if index % 2 == 0 else ("qemu", "aovisor")
