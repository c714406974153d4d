"""The benchmark harness's own logic (bench/): statistics, goals, selection, alternation, parsing, rendering.

No timing is asserted here: what the benchmarks measure depends on the machine.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
from bench import host, report, startup_profile
from bench.harness import Benchmark, Goal, Registry, Result, RunFailed, alternation, measure, select
from bench.process import ProcessResult, TimedLine, parse_vm_hwm_kib, run_process
from bench.run import DEFAULT_OUTPUT, output_path, parse_args
from bench.startup_profile import ImportNode
from bench.summary import per_item_cost, ratio, summarize
from bench.testbed import QEMU_POWEROFF_STATUS, Aovisor, Qemu, Testbed, check_run, clean_environment
from hypothesis import given
from hypothesis import strategies as st

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


# --- statistics ---------------------------------------------------------------------------------


@given(st.lists(finite, min_size=1, max_size=30))
def test_summary_is_median_min_max(samples: list[float]) -> None:
    s = summarize(samples)
    ordered = sorted(samples)
    middle = len(ordered) // 2
    expected = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    assert s.n == len(samples)
    assert s.median == pytest.approx(expected)
    assert (s.low, s.high) == (ordered[0], ordered[-1])
    assert s.low <= s.median <= s.high


def test_median_ignores_one_outlier() -> None:
    assert summarize([50.0, 51.0, 900.0, 49.0, 50.5]).median == 50.5


def test_summary_spread_is_relative_to_the_median() -> None:
    assert summarize([90.0, 100.0, 110.0]).spread == pytest.approx(0.2)


def test_summarize_needs_samples() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, -2.0) is None


def test_per_item_cost_subtracts_the_fixed_part() -> None:
    # 100 ms of start-up both times; 100000 items add 0.9 s: 9 us each.
    assert per_item_cost(1.0, 0.1, 100_000) == pytest.approx(9e-6)
    with pytest.raises(ValueError):
        per_item_cost(1.0, 0.1, 0)


# --- goals --------------------------------------------------------------------------------------


def test_ratio_goal() -> None:
    goal = Goal(max_ratio=1.2)
    assert goal.text == "≤ 1.2x QEMU"
    assert goal.met(11.0, 10.0) is True
    assert goal.met(13.0, 10.0) is False
    assert goal.met(13.0, None) is None  # no QEMU number: cannot tell


def test_absolute_goal_ignores_qemu() -> None:
    goal = Goal(max_value=16, unit="MiB")
    assert goal.text == "≤ 16 MiB"
    assert goal.met(15.9, 38.0) is True
    assert goal.met(16.5, 100.0) is False


def test_higher_is_better_goals() -> None:
    throughput = Goal(min_ratio=0.8)
    assert throughput.text == "≥ 0.8x QEMU"
    assert throughput.met(90.0, 100.0) is True
    assert throughput.met(70.0, 100.0) is False
    floor = Goal(min_value=500, unit="MiB/s")
    assert floor.text == "≥ 500 MiB/s"
    assert (floor.met(600.0, None), floor.met(400.0, 1.0)) == (True, False)


def test_goal_has_exactly_one_bound() -> None:
    with pytest.raises(ValueError):
        Goal()
    with pytest.raises(ValueError):
        Goal(max_ratio=1.0, max_value=16)
    with pytest.raises(ValueError):
        Goal(max_ratio=1.0, min_ratio=0.5)


# --- registry, selection, measuring -------------------------------------------------------------


class FakeBenchmark(Benchmark):
    """Returns scripted samples and records the order of calls."""

    name = "fake"
    title = "fake measure"
    unit = "ms"
    goal = Goal(max_ratio=1.0)
    warmup_runs = 1

    def __init__(self, aovisor: list[float], qemu: list[float], fail_at: int | None = None) -> None:
        self.calls: list[str] = []
        self._aovisor = iter(aovisor)
        self._qemu = iter(qemu)
        self._fail_at = fail_at

    def prepare(self) -> None:
        self.calls.append("prepare")

    def _call(self, side: str, values: object) -> float:
        self.calls.append(side)
        if self._fail_at is not None and len(self.calls) > self._fail_at:
            raise RunFailed("QEMU exited with status 1, not 105")
        return next(values)  # type: ignore[call-overload,no-any-return]

    def run_aovisor(self) -> float:
        return self._call("aovisor", self._aovisor)

    def run_qemu(self) -> float:
        return self._call("qemu", self._qemu)

    def notes(self) -> str:
        return "a note"


def fake_class(name: str) -> type[Benchmark]:
    return type(name.title(), (FakeBenchmark,), {"name": name})


def test_registry_keeps_order_and_rejects_duplicates_and_bad_names() -> None:
    registry = Registry()
    b, a = fake_class("b"), fake_class("a")
    registry.register(b)
    registry.register(a)
    registry.register(a)  # the same class again (a module imported twice) is fine
    assert registry.benchmarks() == [b, a]
    with pytest.raises(ValueError, match="two benchmarks"):
        registry.register(fake_class("a"))
    for bad in ("", "Two Words", "a,b", "UPPER"):
        with pytest.raises(ValueError):
            registry.register(fake_class(bad))


def test_select_keeps_table_order() -> None:
    hello, pio, rss = fake_class("hello"), fake_class("pio"), fake_class("rss")
    available = [hello, pio, rss]
    assert select(available, []) == available
    assert select(available, ["rss", "hello"]) == [hello, rss]
    with pytest.raises(ValueError, match="unknown benchmark nope"):
        select(available, ["pio", "nope"])


def test_alternation_gives_each_side_the_first_slot_in_turn() -> None:
    rounds = [alternation(i) for i in range(4)]
    assert all(sorted(r) == ["aovisor", "qemu"] for r in rounds)
    assert [r[0] for r in rounds] == ["aovisor", "qemu", "aovisor", "qemu"]


def test_measure_warms_up_then_alternates_and_takes_medians() -> None:
    bench = FakeBenchmark(aovisor=[999.0, 10.0, 12.0, 11.0], qemu=[999.0, 5.0, 4.0, 6.0])
    messages: list[str] = []
    result = measure(bench, runs=3, progress=messages.append)
    assert bench.calls == [
        "prepare",
        "aovisor",
        "qemu",
        "aovisor",
        "qemu",
        "qemu",
        "aovisor",
        "aovisor",
        "qemu",
    ]
    assert result.aovisor == (10.0, 12.0, 11.0)  # the warm-up samples are not kept
    assert result.qemu == (5.0, 4.0, 6.0)
    assert result.error is None
    assert result.ratio == pytest.approx(11.0 / 5.0)
    assert result.goal_met is False
    assert result.notes == "a note"
    assert any("run 3/3" in m for m in messages)


def test_a_failed_run_is_an_error_not_a_number() -> None:
    bench = FakeBenchmark(aovisor=[1.0] * 5, qemu=[1.0] * 5, fail_at=4)
    result = measure(bench, runs=3)
    assert result.error is not None and "status 1" in result.error
    assert result.aovisor_summary is None and result.qemu_summary is None and result.ratio is None
    assert result.notes is None
    assert report.table_row(result)[1:3] == ("error", "error")


def test_measure_needs_a_run() -> None:
    with pytest.raises(ValueError):
        measure(FakeBenchmark([], []), runs=0)


# --- rendering ----------------------------------------------------------------------------------


def result(name: str, aovisor: tuple[float, ...], qemu: tuple[float, ...], goal: Goal) -> Result:
    return Result(name=name, title=f"{name} measure", unit="ms", goal=goal, aovisor=aovisor, qemu=qemu)


@pytest.mark.parametrize(
    ("value", "text"),
    [(1234.4, "1234"), (45.67, "45.7"), (8.912, "8.91"), (0.01234, "0.0123"), (-3.5, "-3.50")],
)
def test_format_value(value: float, text: str) -> None:
    assert report.format_value(value) == text


def test_markdown_table_aligns_and_escapes() -> None:
    table = report.markdown_table(("name", "n"), [("a|b", "1"), ("c", "100")], numeric=(1,))
    lines = table.splitlines()
    assert lines[0] == "| name |   n |"
    assert lines[1] == "| ---- | --: |"
    assert lines[2] == "| a\\|b |   1 |"
    assert lines[3] == "| c    | 100 |"
    assert len({len(line) for line in lines}) == 1
    with pytest.raises(ValueError):
        report.markdown_table(("a", "b"), [("only one",)])


def test_results_table_rows() -> None:
    results = [
        result("hello", (120.0, 130.0, 125.0), (50.0, 40.0, 45.0), Goal(max_ratio=1.0)),
        result("rss", (15.0,), (38.0,), Goal(max_value=16, unit="MiB")),
    ]
    lines = report.results_table(results).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == list(report.TABLE_HEADER)
    hello = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert hello == ["hello measure", "125 ms", "45.0 ms", "2.78x", "≤ 1.0x QEMU — **not met**"]
    rss = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert rss[3:] == ["0.39x", "≤ 16 MiB — met"]


def test_document_has_date_host_table_failures_and_notes() -> None:
    ok = Result("hello", "hello measure", "ms", Goal(max_ratio=1.0), (1.0,) * 5, (2.0,) * 5, notes="## why")
    failed = Result("pio", "pio measure", "µs", Goal(max_ratio=1.2), error="QEMU timed out")
    text = report.document(
        date="2025-01-02 03:04 UTC",
        host=["- kernel: Linux 6.1"],
        command="bench/run.py",
        runs=5,
        results=[ok, failed],
        elapsed_s=12.0,
    )
    assert "2025-01-02 03:04 UTC" in text and "median of 5 runs" in text
    assert "- kernel: Linux 6.1" in text
    assert "| hello measure |" in text
    assert "**pio** failed: QEMU timed out" in text
    assert "## why" in text
    assert text.endswith("\n")


# --- processes and checks -----------------------------------------------------------------------


def test_parse_vm_hwm() -> None:
    status = "Name:\tqemu\nVmPeak:\t  900000 kB\nVmHWM:\t   39812 kB\nVmRSS:\t   38000 kB\n"
    assert parse_vm_hwm_kib(status) == 39812
    assert parse_vm_hwm_kib("Name:\tkthreadd\nState:\tS\n") is None


def test_run_process_collects_lines_and_status() -> None:
    script = "import sys; print('one'); print('two', end=''); print('err', file=sys.stderr); sys.exit(3)"
    r = run_process([sys.executable, "-c", script], env={}, timeout=30)
    assert r.exit_status == 3 and not r.timed_out
    assert [(line.stream, line.text) for line in r.lines if line.stream == "stdout"] == [
        ("stdout", "one\n"),
        ("stdout", "two"),
    ]
    assert r.stderr == "err\n"
    assert all(0 <= line.at <= r.wall_s for line in r.lines)


def test_run_process_peak_rss_is_the_child_own() -> None:
    # The child touches 64 MiB, says so, and lingers: its peak is read when the line arrives. It must not
    # include this (larger) test process, as wait4's ru_maxrss would.
    script = "import sys, time; b = bytearray(64 << 20); print('touched', flush=True); time.sleep(0.3)"
    ballast = bytearray(200 << 20)  # make this process clearly bigger than the child
    r = run_process([sys.executable, "-u", "-c", script], env={}, timeout=30, sample_rss=True)
    assert r.stdout == "touched\n" and ballast[-1] == 0
    assert r.peak_rss_kib is not None
    assert 64 << 10 <= r.peak_rss_kib < (64 + 100) << 10


def test_run_process_kills_a_process_past_its_timeout() -> None:
    r = run_process([sys.executable, "-c", "import time; time.sleep(60)"], env={}, timeout=0.2)
    assert r.timed_out
    assert r.exit_status == -9


def process_result(status: int, stdout: str, timed_out: bool = False) -> ProcessResult:
    return ProcessResult(("vmm",), status, 0.1, (TimedLine(0.05, "stdout", stdout),), None, timed_out)


def test_check_run() -> None:
    check_run(process_result(105, "hello\n"), label="QEMU", poweroff_status=105, expect="hello", timeout=5)
    with pytest.raises(RunFailed, match="status 1, not 105"):
        check_run(process_result(1, "hello\n"), label="QEMU", poweroff_status=105, expect="hello", timeout=5)
    with pytest.raises(RunFailed, match="did not print"):
        check_run(process_result(105, "oops\n"), label="QEMU", poweroff_status=105, expect="hello", timeout=5)
    with pytest.raises(RunFailed, match="within 5 s"):
        check_run(
            process_result(-9, "hello\n", True), label="Q", poweroff_status=105, expect="hello", timeout=5
        )


def test_qemu_command_line() -> None:
    qemu = Qemu(Path("/usr/bin/qemu-system-x86_64"))
    argv = qemu.argv(Path("/g/pio.elf"), "count=5")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert argv[argv.index("-kernel") + 1] == "/g/pio.elf"
    assert argv[argv.index("-append") + 1] == "count=5"
    assert argv[argv.index("-m") + 1] == "128M"
    assert "isa-debug-exit,iobase=0x600,iosize=1" in argv
    assert "-append" not in qemu.argv(Path("/g/hello.elf"))
    assert QEMU_POWEROFF_STATUS == 105


def test_aovisor_command_line(tmp_path: Path) -> None:
    script = tmp_path / "aovisor"
    script.write_text("#!/opt/venv/bin/python3 -s\nimport sys\n")
    aovisor = Aovisor(script)
    assert aovisor.argv(Path("/g/hello.elf")) == [
        str(script),
        "--kernel",
        "/g/hello.elf",
        "--memory",
        "size=128M",
    ]
    traced = aovisor.argv(Path("/g/pio.elf"), "count=1", options=["-vv"], python_flags=["-X", "importtime"])
    assert traced[:4] == ["/opt/venv/bin/python3", "-X", "importtime", str(script)]
    assert traced[4] == "-vv"
    assert traced[-2:] == ["--cmdline", "count=1"]


def test_clean_environment_drops_python_variables() -> None:
    env = {"PATH": "/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/root"}
    assert clean_environment(env) == {"PATH": "/bin", "HOME": "/root"}


def test_testbed_reports_a_missing_console_script(tmp_path: Path) -> None:
    with pytest.raises(RunFailed, match="make venv"):
        Testbed.discover(tmp_path)


# --- start-up profile parsing -------------------------------------------------------------------


def test_parse_log_line() -> None:
    line = startup_profile.parse_log_line("   118.7ms I devices.legacy.acpi_pm[vcpu0]: guest powered off\n")
    assert line == startup_profile.LogLine(118.7, "I", "devices.legacy.acpi_pm[vcpu0]", "guest powered off")
    assert startup_profile.parse_log_line("Hello, world! from aovisor guest") is None


def test_main_start_is_the_earliest_arrival_minus_stamp() -> None:
    lines = [
        TimedLine(0.060, "stderr", "    40.0ms I aovisor: starting\n"),  # arrived 20 ms after its stamp
        TimedLine(0.100, "stderr", "    82.0ms I vmm.runner: done\n"),  # arrived 18 ms after: the better one
        TimedLine(0.070, "stdout", "    1.0ms I not: a log line on stdout\n"),
    ]
    assert startup_profile.main_started_ms(lines) == pytest.approx(18.0)
    assert startup_profile.main_started_ms([]) is None


def test_timeline_orders_events_and_ends_with_the_exit() -> None:
    r = ProcessResult(
        ("aovisor",),
        0,
        0.150,
        (
            TimedLine(0.090, "stdout", "Hello\n"),
            TimedLine(0.060, "stderr", "    40.0ms I aovisor: starting\n"),
            TimedLine(0.100, "stderr", "    80.0ms I vmm.runner: guest powered off\n"),
        ),
        None,
    )
    events = startup_profile.timeline(r)
    assert [e.at_ms for e in events] == pytest.approx([0.0, 20.0, 60.0, 90.0, 100.0, 150.0])
    assert "main()" in events[1].what and "Hello" in events[3].what and "status 0" in events[-1].what


def render_importtime(roots: list[ImportNode]) -> str:
    """The trace CPython would print for ``roots``: children first, two spaces of indent per level."""
    out = ["import time: self [us] | cumulative | imported package"]

    def emit(node: ImportNode, level: int) -> None:
        for child in node.children:
            emit(child, level + 1)
        out.append(f"import time: {node.self_us:9d} | {node.cumulative_us:10d} | {'  ' * level}{node.name}")

    for root in roots:
        emit(root, 0)
    return "\n".join(out)


names = st.text(alphabet="abcdefghij._", min_size=1, max_size=12).filter(lambda s: not s.startswith("."))
import_trees = st.recursive(
    st.builds(ImportNode, names, st.integers(0, 10**6), st.integers(0, 10**7), st.builds(list)),
    lambda children: st.builds(
        ImportNode, names, st.integers(0, 10**6), st.integers(0, 10**7), st.lists(children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(import_trees, min_size=1, max_size=5))
def test_parse_importtime_rebuilds_the_tree(roots: list[ImportNode]) -> None:
    assert startup_profile.parse_importtime(render_importtime(roots)) == roots


def test_outermost_aovisor_modules_and_their_heaviest_import() -> None:
    trace = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:       600 |        700 | encodings
import time:       300 |        300 |     aovisor
import time:       200 |        500 |   aovisor.cli
import time:       800 |        800 |     re
import time:       400 |       1200 |   aovisor.errors
import time:      2000 |       3700 | aovisor.cli.main
import time:      9000 |       9000 | argparse
import time:      1500 |       1500 |   dataclasses
import time:       100 |       1600 | aovisor.config
"""
    roots = startup_profile.parse_importtime(trace)
    ours = startup_profile.outermost(roots, lambda n: startup_profile.is_aovisor(n.name))
    assert [n.name for n in ours] == ["aovisor.cli.main", "aovisor.config"]
    heavy = startup_profile.heaviest_foreign_import(ours[0])
    assert heavy is not None and heavy.name == "re"
    rendered = "\n".join(startup_profile.render_imports(roots))
    assert "15.0 ms in all; 5.3 ms of it importing aovisor" in rendered
    assert "| `aovisor.cli.main` | 3.7 | 2.0 | `re` 0.8 ms |" in rendered
    assert "| `argparse` | 9.0 |" in rendered


def test_median_run_picks_one_real_run() -> None:
    runs = [ProcessResult(("x",), 0, wall, (), None) for wall in (0.3, 0.1, 0.2, 0.5)]
    assert startup_profile.median_run(runs).wall_s == 0.2
    assert statistics.median(r.wall_s for r in runs[:3]) == startup_profile.median_run(runs[:3]).wall_s


# --- host facts and the command line ------------------------------------------------------------


def test_cpu_model_and_kvm_flavour(tmp_path: Path) -> None:
    assert host.cpu_model("processor\t: 0\nmodel name\t: AMD  EPYC 7B13\nflags\t: fpu\n") == "AMD EPYC 7B13"
    assert host.cpu_model("processor\t: 0\n") == "unknown"
    assert host.kvm_flavour(tmp_path) == "unknown"
    (tmp_path / "kvm_amd").mkdir()
    assert host.kvm_flavour(tmp_path) == "kvm_amd (SVM)"
    (tmp_path / "kvm_pvm").mkdir()
    assert host.kvm_flavour(tmp_path).startswith("PVM")


def test_only_partial_runs_need_an_explicit_output(tmp_path: Path) -> None:
    assert output_path(parse_args([])) == DEFAULT_OUTPUT
    assert output_path(parse_args(["--only", "hello"])) is None
    assert output_path(parse_args(["--runs", "2"])) is None
    assert output_path(parse_args(["--runs", "7"])) == DEFAULT_OUTPUT
    assert output_path(parse_args(["--only", "pio", "--output", str(tmp_path / "r.md")])) == tmp_path / "r.md"
    assert parse_args(["--only", "pio,mmio", "--only", "rss"]).only == ["pio", "mmio", "rss"]
