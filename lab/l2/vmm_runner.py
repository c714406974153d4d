"""Runs inside L2: VMM commands one after another, each guest console line timed; KVM exits counted.

    python3 vmm_runner.py SPEC.json RESULTS.json

SPEC is ``{"runs": [{"name", "argv", "timeout", "trace_exits"}]}``. Each run's command starts in its own
session (a timeout kills the whole group); its stdout lines get the seconds since the spawn, its stderr is
kept whole.  With ``trace_exits``, tracefs histograms count, over that run only, KVM's exits by reason
(``kvm_exit``), the returns of ``KVM_RUN`` to the VMM by reason (``kvm_userspace_exit``: what the VMM's own
code handles), port I/O by port and MMIO by address (all VMs in L2 are counted: runs are sequential).
RESULTS gets ``{"kvm_isa", "runs": [{"name", "status", "timed_out", "seconds", "lines", "stderr",
"exits"}]}``, rewritten after every run, so a run that brings L2 down leaves the earlier ones' results behind.

Standard library only: L2 has no pip packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TRACEFS = Path("/sys/kernel/tracing")
# tracepoint -> histogram keys (include/trace/events/kvm.h, arch/x86/kvm/trace.h)
HISTOGRAMS = {
    "kvm_exit": "exit_reason",
    "kvm_userspace_exit": "reason",
    "kvm_pio": "port,rw",
    "kvm_mmio": "gpa,type",
}
_HIST_LINE = re.compile(r"^\{(?P<keys>[^}]*)\}\s+hitcount:\s+(?P<count>\d+)")


def main(spec_path: str, results_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    results: dict[str, Any] = {"kvm_isa": _kvm_isa(), "runs": []}
    for run in spec["runs"]:
        print(f"vmm-runner: {run['name']}: {' '.join(run['argv'])}", flush=True)
        result = _run_one(run)
        results["runs"].append(result)
        _write_atomically(Path(results_path), json.dumps(results))
        print(
            f"vmm-runner: {run['name']}: status {result['status']} after {result['seconds']:.2f}s"
            + (" (timed out)" if result["timed_out"] else ""),
            flush=True,
        )
    return 0


def _run_one(run: dict[str, Any]) -> dict[str, Any]:
    tracing = bool(run.get("trace_exits"))
    exits: dict[str, Any] = {}
    if tracing:
        try:
            _start_histograms()
        except OSError as error:
            exits["error"] = f"tracefs: {error}"
            tracing = False
    lines: list[list[Any]] = []
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            run["argv"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        assert process.stdout is not None
        reader = threading.Thread(target=_read_lines, args=(process.stdout, started, lines, run["name"]))
        reader.start()
        timed_out = False
        try:
            process.wait(timeout=float(run["timeout"]))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        seconds = time.monotonic() - started
        reader.join()
        stderr.seek(0)
        stderr_text = stderr.read().decode("utf-8", "replace")
    if tracing:
        exits.update(_stop_histograms())
    return {
        "name": run["name"],
        "status": None if timed_out else process.returncode,
        "timed_out": timed_out,
        "seconds": seconds,
        "lines": lines,
        "stderr": stderr_text,
        "exits": exits,
    }


def _read_lines(stream: Any, started: float, lines: list[list[Any]], name: str) -> None:
    for raw in iter(stream.readline, b""):
        now = time.monotonic() - started
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append([round(now, 4), text])
        print(f"[{name} {now:7.2f}] {text}", flush=True)
    stream.close()


def _start_histograms() -> None:
    if not (TRACEFS / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True, capture_output=True)
    for event, keys in HISTOGRAMS.items():
        trigger = TRACEFS / "events" / "kvm" / event / "trigger"
        # Writing the trigger again would add to the old counts: remove it first ("!" + the same spec).
        _remove_trigger(trigger, keys)
        trigger.write_text(f"hist:keys={keys}:sort=hitcount.descending:size=4096\n")


def _stop_histograms() -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for event, keys in HISTOGRAMS.items():
        directory = TRACEFS / "events" / "kvm" / event
        try:
            counts[event] = _parse_histogram((directory / "hist").read_text())
        except OSError as error:
            counts[event] = {"error": str(error)}
        _remove_trigger(directory / "trigger", keys)
    return counts


def _remove_trigger(trigger: Path, keys: str) -> None:
    with contextlib.suppress(OSError):  # there was none
        trigger.write_text(f"!hist:keys={keys}:sort=hitcount.descending:size=4096\n")


def _parse_histogram(text: str) -> list[dict[str, Any]]:
    """``{ port: 1016, rw: 1 } hitcount: 12`` -> ``{"port": 1016, "rw": 1, "count": 12}``."""
    entries = []
    for line in text.splitlines():
        match = _HIST_LINE.match(line.strip())
        if match is None:
            continue
        entry: dict[str, Any] = {"count": int(match["count"])}
        for field in match["keys"].split(","):
            key, _, value = field.partition(":")
            value = value.strip()
            try:
                entry[key.strip()] = int(value, 0)
            except ValueError:
                entry[key.strip()] = value
        entries.append(entry)
    return entries


def _kvm_isa() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return "svm" if " svm" in flags else "vmx" if " vmx" in flags else "unknown"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
