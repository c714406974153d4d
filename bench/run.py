"""``make bench``: measure aovisor and QEMU side by side, print the table and write bench/results.md.

    .venv/bin/python bench/run.py [--only NAME[,NAME...]] [--runs N] [--output PATH] [--list]

The default file is written only by a complete run (every benchmark, at least five runs): a partial run
prints its table and writes a file only when ``--output`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    # Run as a script, sys.path[0] is bench/ (whose module names could shadow others): use the repository
    # root instead, where `bench` and `guests` are packages.
    sys.path[0] = str(REPO)

import argparse  # noqa: E402
import compileall  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from bench import benchmarks, host, report  # noqa: E402
from bench.harness import Result, measure, registered, select  # noqa: E402
from bench.testbed import RunFailed, Testbed  # noqa: E402

DEFAULT_RUNS = 5
MIN_RUNS_FOR_RESULTS = 5
DEFAULT_OUTPUT = REPO / "bench" / "results.md"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Benchmark aovisor against QEMU on the same guests."
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="run only these benchmarks (repeatable; see --list)",
    )
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help=f"measured runs of each side (default {DEFAULT_RUNS})"
    )
    parser.add_argument("--output", type=Path, help=f"where to write the results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.only = [name for item in args.only for name in item.split(",") if name.strip()]
    return args


def output_path(args: argparse.Namespace) -> Path | None:
    """Where to write: --output, else the default file for a complete run, else nowhere."""
    if args.output is not None:
        return Path(args.output)
    if not args.only and args.runs >= MIN_RUNS_FOR_RESULTS:
        return DEFAULT_OUTPUT
    return None


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def cache_bytecode(src: Path) -> None:
    """Compile aovisor's sources so that no measured run pays for it (the warm-ups cover the rest: they run
    without PYTHONDONTWRITEBYTECODE, see testbed.clean_environment)."""
    if not compileall.compile_dir(src, quiet=1):
        raise RunFailed(f"compiling {src} failed")


def python_version(interpreter: Path) -> str:
    try:
        out = subprocess.run([str(interpreter), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.stdout or out.stderr).strip() or "unknown"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    cli_args = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(cli_args)
    benchmarks.load()
    try:
        chosen = select(registered(), args.only)
    except ValueError as e:
        print(f"bench/run.py: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for cls in registered():
            print(f"{cls.name:8} {cls.title} ({cls.unit}; goal {cls.goal.text})")
        return 0

    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        testbed = Testbed.discover(REPO)
        cache_bytecode(REPO / "src")
    except RunFailed as e:
        print(f"bench/run.py: error: {e}", file=sys.stderr)
        return 1
    facts = host.collect(testbed.qemu.version(), python_version(testbed.aovisor.interpreter()))

    results: list[Result] = [measure(cls(testbed), args.runs, progress) for cls in chosen]
    elapsed = time.monotonic() - started

    command = " ".join(["bench/run.py", *cli_args])
    text = report.document(
        date=date, host=facts.markdown(), command=command, runs=args.runs, results=results, elapsed_s=elapsed
    )
    print(text)
    path = output_path(args)
    if path is not None:
        write_atomically(path, text)
        progress(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
