"""`python -m lab build | run -- CMD... | shell | prune`: the nested lab from the command line."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from lab.builder import LAB_DIR, build, cache_root, exclusive_cache_lock, resolve_inputs
from lab.errors import LabError
from lab.runner import DEFAULT_CPUS, LabResult, run, shell

REPO_ROOT = LAB_DIR.parent
# Exit statuses when the command's own status did not come back (as timeout(1) and env(1) use them).
EXIT_TIMED_OUT = 124
EXIT_NO_STATUS = 125


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)

    build_parser = commands.add_parser(
        "build", help="build (or find cached) L2 kernel, initramfs, root image"
    )
    build_parser.add_argument("--force", action="store_true", help="rebuild even if cached")

    run_parser = commands.add_parser(
        "run",
        help="boot L2 and run a command in /work; one argument is a bash script, several are one command",
    )
    _add_vm_options(run_parser)
    run_parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole boot (600)")
    run_parser.add_argument("--results", type=Path, help="copy what the command writes to $LAB_OUT here")
    run_parser.add_argument("--console-log", type=Path, help="also write the timestamped console here")
    run_parser.add_argument("command", nargs="+", help="the command (after --)")

    shell_parser = commands.add_parser("shell", help="an interactive root shell in L2 (exit it to power off)")
    _add_vm_options(shell_parser)

    commands.add_parser("prune", help="delete cached builds other than the current one")

    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            artifacts = build(force=args.force)
            print(artifacts.directory)
            print(json.dumps(artifacts.manifest, indent=2))
            return 0
        if args.action == "run":
            script = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
            result = run(
                script,
                worktree=args.worktree,
                timeout=args.timeout,
                cpus=args.cpus,
                memory_mib=args.memory,
                extra_files=_parse_extra(args.extra),
                on_console=_print_console,
                console_log=args.console_log,
                results_dir=args.results,
            )
            _print_summary(result)
            if result.exit_status is not None:
                return result.exit_status
            return EXIT_TIMED_OUT if result.timed_out else EXIT_NO_STATUS
        if args.action == "shell":
            return shell(
                worktree=args.worktree,
                cpus=args.cpus,
                memory_mib=args.memory,
                extra_files=_parse_extra(args.extra),
            )
        if args.action == "prune":
            return _prune()
    except LabError as error:
        print(f"lab: error: {error}", file=sys.stderr)
        return 2
    raise AssertionError(args.action)


def _add_vm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worktree", type=Path, default=REPO_ROOT, help="tree copied to /work (this repo)")
    parser.add_argument("--cpus", type=int, default=DEFAULT_CPUS, help=f"L2 vCPUs ({DEFAULT_CPUS})")
    parser.add_argument("--memory", type=int, default=4096, help="L2 memory in MiB (4096)")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="DEST=FILE", help="put FILE at /lab/extra/DEST"
    )


def _parse_extra(items: list[str]) -> dict[str, Path]:
    extra = {}
    for item in items:
        destination, separator, source = item.partition("=")
        if not separator or not destination or not source:
            raise LabError(f"--extra wants DEST=FILE, got {item!r}")
        extra[destination] = Path(source)
    return extra


def _print_console(t: float, line: str) -> None:
    print(f"[{t:8.3f}] {line}", file=sys.stderr, flush=True)


def _print_summary(result: LabResult) -> None:
    boot = f"{result.boot_seconds:.1f}s" if result.boot_seconds is not None else "never"
    status = "timed out" if result.timed_out else f"exit status {result.exit_status}"
    print(f"lab: {status}; command started after {boot}; {result.duration:.1f}s in all", file=sys.stderr)


def _prune() -> int:
    inputs = resolve_inputs()
    keep = {inputs.key(), "roots", "debs", ".lock", "inputs-memo.json"}
    root = cache_root()
    with exclusive_cache_lock():
        stale = [entry for entry in root.iterdir() if entry.name not in keep]
        if (root / "roots").is_dir():
            stale += [entry for entry in (root / "roots").iterdir() if entry.name != inputs.root_key()]
        for entry in stale:
            print(f"removing {entry}")
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
