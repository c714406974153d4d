"""Where aovisor's start-up time goes: a timeline from its ``-vv`` log and the cost of its imports.

Two kinds of runs of the hello guest, each repeated and represented by the run with the median wall time
(one coherent run, not a mix of several):

- ``aovisor -vv``: every log line carries the milliseconds since ``main()`` started; the time a line
  *arrived* here, minus that stamp, places ``main()`` on the spawn clock (the smallest such difference is the
  best estimate: a line can arrive late, never early).
- ``python -X importtime .venv/bin/aovisor``: CPython's per-import self and cumulative microseconds, printed
  children-first, nesting shown by indentation.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.process import ProcessResult, TimedLine, run_process
from bench.testbed import RunFailed, Testbed

PROFILE_RUNS = 3
AOVISOR_PACKAGE = "aovisor"

# `   39.8ms I vmm.runner[vcpu0]: message`: src/aovisor/cli/main.py's _LOG_FORMAT.
_LOG_LINE = re.compile(r"^\s*(?P<ms>\d+(?:\.\d+)?)ms (?P<level>[A-Z]) (?P<origin>[^:]+): (?P<message>.*)$")
# `import time:       577 |       2079 |   aovisor.cli.main` (Python/import.c): two spaces per nesting level.
_IMPORT_LINE = re.compile(
    r"^import time:\s+(?P<self>\d+) \|\s+(?P<cumulative>\d+) \| (?P<indent> *)(?P<name>\S+)$"
)


@dataclass(frozen=True)
class LogLine:
    ms: float  # since aovisor's main() started
    level: str
    origin: str
    message: str


def parse_log_line(text: str) -> LogLine | None:
    """A line of aovisor's log, or None for anything else (guest output, tracebacks)."""
    m = _LOG_LINE.match(text.rstrip("\n"))
    if m is None:
        return None
    return LogLine(float(m["ms"]), m["level"], m["origin"], m["message"])


@dataclass(frozen=True)
class Event:
    at_ms: float  # since the spawn
    what: str


def main_started_ms(lines: Iterable[TimedLine]) -> float | None:
    """When aovisor's ``main()`` started, in ms after the spawn, judged by the log lines' arrival."""
    estimates = [
        line.at * 1000 - log.ms
        for line in lines
        if line.stream == "stderr" and (log := parse_log_line(line.text)) is not None
    ]
    return min(estimates) if estimates else None


def timeline(result: ProcessResult) -> list[Event]:
    """The spawn, ``main()``, each log line and each line of guest output, and the exit, in time order."""
    events = [Event(0.0, "spawn")]
    started = main_started_ms(result.lines)
    if started is not None:
        events.append(
            Event(started, "`main()` entered: interpreter start-up, `site`, `import aovisor.cli.main`")
        )
    for line in result.lines:
        text = line.text.rstrip("\n")
        if line.stream == "stdout":
            events.append(Event(line.at * 1000, f"guest output: `{text}`"))
        elif started is not None and (log := parse_log_line(text)) is not None:
            events.append(Event(started + log.ms, f"log {log.level} {log.origin}: {log.message}"))
    events.sort(key=lambda e: e.at_ms)  # stable: ties keep their order of arrival
    events.append(Event(result.wall_s * 1000, f"process exited (status {result.exit_status}) and reaped"))
    return events


@dataclass
class ImportNode:
    name: str
    self_us: int
    cumulative_us: int
    children: list[ImportNode] = field(default_factory=list)

    def walk(self) -> Iterable[ImportNode]:
        yield self
        for child in self.children:
            yield from child.walk()


def parse_importtime(text: str) -> list[ImportNode]:
    """The import tree from ``-X importtime`` output (other lines are ignored), roots in import order.

    CPython prints a module after everything it imported, one nesting level deeper: so the pending nodes
    one level below a new node are its children.
    """
    pending: dict[int, list[ImportNode]] = {}
    for raw in text.splitlines():
        m = _IMPORT_LINE.match(raw)
        if m is None:
            continue
        level = len(m["indent"]) // 2
        node = ImportNode(m["name"], int(m["self"]), int(m["cumulative"]), pending.pop(level + 1, []))
        pending.setdefault(level, []).append(node)
    # A well-formed trace ends at level 0; keep anything deeper too (a process killed mid-import).
    return [node for level in sorted(pending) for node in pending[level]]


def is_aovisor(name: str) -> bool:
    return name == AOVISOR_PACKAGE or name.startswith(AOVISOR_PACKAGE + ".")


def outermost(roots: Iterable[ImportNode], wanted: Callable[[ImportNode], bool]) -> list[ImportNode]:
    """The ``wanted`` nodes that have no ``wanted`` ancestor (their cumulative times do not overlap)."""
    found: list[ImportNode] = []

    def visit(node: ImportNode) -> None:
        if wanted(node):
            found.append(node)
            return
        for child in node.children:
            visit(child)

    for root in roots:
        visit(root)
    return found


def heaviest_foreign_import(node: ImportNode) -> ImportNode | None:
    """The costliest non-aovisor import made while importing ``node`` (at any depth), or None."""
    foreign = outermost(node.children, lambda n: not is_aovisor(n.name))
    return max(foreign, key=lambda n: n.cumulative_us, default=None)


def median_run(results: Sequence[ProcessResult]) -> ProcessResult:
    """The run whose wall time is the median (the lower middle one for an even count)."""
    if not results:
        raise ValueError("no runs")
    ordered = sorted(results, key=lambda r: r.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def render_timeline(events: Sequence[Event], limit: int = 40) -> list[str]:
    rows = ["| at ms | +ms | event |", "|---:|---:|---|"]
    previous = 0.0
    shown = events if len(events) <= limit else [*events[: limit - 1], events[-1]]
    for event in shown:
        delta = "" if event is events[0] else f"{event.at_ms - previous:.1f}"
        rows.append(f"| {event.at_ms:.1f} | {delta} | {_cell(event.what)} |")
        previous = event.at_ms
    if len(events) > limit:
        rows.append(f"| | | ({len(events) - limit} more events not shown) |")
    return rows


def render_imports(roots: Sequence[ImportNode], top: int = 10) -> list[str]:
    total = sum(root.cumulative_us for root in roots)
    ours = sorted(outermost(roots, lambda n: is_aovisor(n.name)), key=lambda n: -n.cumulative_us)
    others = sorted((r for r in roots if not is_aovisor(r.name)), key=lambda n: -n.cumulative_us)
    ours_total = sum(n.cumulative_us for n in ours)
    lines = [
        f"Imports took {total / 1000:.1f} ms in all; {ours_total / 1000:.1f} ms of it importing aovisor's "
        "modules (including the standard library they pulled in).",
        "",
        "| aovisor module (outermost) | cumulative ms | self ms | heaviest other import under it |",
        "|---|---:|---:|---|",
    ]
    for node in ours[:top]:
        heavy = heaviest_foreign_import(node)
        under = "" if heavy is None else f"`{heavy.name}` {heavy.cumulative_us / 1000:.1f} ms"
        lines.append(
            f"| `{node.name}` | {node.cumulative_us / 1000:.1f} | {node.self_us / 1000:.1f} | {under} |"
        )
    if len(ours) > top:
        rest = sum(n.cumulative_us for n in ours[top:])
        lines.append(f"| ({len(ours) - top} more) | {rest / 1000:.1f} | | |")
    lines += ["", "| other top-level import | cumulative ms |", "|---|---:|"]
    lines += [f"| `{node.name}` | {node.cumulative_us / 1000:.1f} |" for node in others[:top]]
    return lines


def profile_notes(testbed: Testbed, kernel: Path, expect: str, runs: int = PROFILE_RUNS) -> str:
    """Markdown notes: the ``-vv`` timeline and the import costs of booting ``kernel`` on aovisor."""
    vmm = testbed.aovisor
    logged = [
        testbed.boot(vmm, kernel, expect=expect, timeout=30, argv=vmm.argv(kernel, options=["-vv"]))
        for _ in range(runs)
    ]
    traced = [
        testbed.boot(
            vmm, kernel, expect=expect, timeout=30, argv=vmm.argv(kernel, python_flags=["-X", "importtime"])
        )
        for _ in range(runs)
    ]
    python = vmm.interpreter()
    bare_python = _median_wall_ms(testbed, [str(python), "-c", "pass"], runs)
    version_only = _median_wall_ms(testbed, [str(vmm.script), "--version"], runs)
    logged_run = median_run(logged)
    traced_run = median_run(traced)
    walls = statistics.median(r.wall_s * 1000 for r in logged)
    lines = [
        "### aovisor start-up: where the hello run's time goes",
        "",
        f"For scale (medians of {runs}): `{python} -c pass` takes {bare_python:.1f} ms; "
        f"`aovisor --version` (console script, `aovisor.cli.main` and no more) {version_only:.1f} ms.",
        "",
        f"Timeline of `aovisor -vv` (the median of {runs} runs by wall time: {walls:.1f} ms; `-vv` itself "
        "adds a little). `main()` is placed from the log lines' arrival, so it is approximate.",
        "",
        *render_timeline(timeline(logged_run)),
        "",
        f"`python -X importtime .venv/bin/aovisor` (the median of {runs} runs; the tracing inflates the "
        "times somewhat):",
        "",
        *render_imports(parse_importtime(traced_run.stderr)),
    ]
    return "\n".join(lines)


def _median_wall_ms(testbed: Testbed, argv: Sequence[str], runs: int) -> float:
    """The median wall time of ``argv``, which must exit with status 0."""
    walls = []
    for _ in range(runs):
        result = run_process(argv, env=testbed.env, timeout=30)
        if result.exit_status != 0 or result.timed_out:
            raise RunFailed(
                f"`{' '.join(argv)}` failed (status {result.exit_status}): {result.stderr[-300:]}"
            )
        walls.append(result.wall_s * 1000)
    return statistics.median(walls)


def _cell(text: str) -> str:
    """``text`` made safe for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
