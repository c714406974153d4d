"""lab/l2/vmm_runner.py, the L2 side of lab.vmm_runs, run here on ordinary commands (no KVM tracing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

RUNNER = Path(__file__).resolve().parents[2] / "lab" / "l2" / "vmm_runner.py"


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vmm_runner", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_run_gets_its_lines_timed_its_status_and_its_stderr(tmp_path: Path) -> None:
    spec = {
        "runs": [
            {"name": "ok", "argv": ["sh", "-c", "echo first; sleep 0.3; echo MARK; echo oops >&2; exit 3"],
             "timeout": 30},
            {"name": "hangs", "argv": ["sh", "-c", "echo started; sleep 30"], "timeout": 0.5},
        ]
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert _runner().main(str(tmp_path / "spec.json"), str(tmp_path / "results.json")) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    ok, hangs = results["runs"]
    assert [text for _, text in ok["lines"]] == ["first", "MARK"]
    assert ok["lines"][1][0] - ok["lines"][0][0] >= 0.25  # seconds since the spawn, per line
    assert (ok["status"], ok["timed_out"], ok["stderr"]) == (3, False, "oops\n")
    # The whole session is killed at the timeout (sleep included, or reading its output would hang).
    assert (hangs["status"], hangs["timed_out"]) == (None, True)
    assert [text for _, text in hangs["lines"]] == ["started"]
    assert 0.5 <= hangs["seconds"] < 10


def test_tracefs_histograms_parse_into_counted_keys() -> None:
    text = """# event histogram
#
# trigger info: hist:keys=port,rw:vals=hitcount:sort=hitcount:size=4096 [active]
#

{ port:       1016, rw:          1 } hitcount:        123
{ port:        113, rw:          0 } hitcount:          5

Totals:
    Hits: 128
    Entries: 2
    Dropped: 0
"""
    assert _runner()._parse_histogram(text) == [
        {"port": 1016, "rw": 1, "count": 123},
        {"port": 113, "rw": 0, "count": 5},
    ]


def test_the_runner_needs_only_the_standard_library() -> None:
    """L2 has no pip packages: the runner may import nothing outside the standard library."""
    source = RUNNER.read_text()
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    assert imported <= set(sys.stdlib_module_names)
