"""Markdown for the results: the comparison table, the samples behind it, and the whole results document."""

from __future__ import annotations

from collections.abc import Sequence

from bench.harness import Result
from bench.summary import Summary

TABLE_HEADER = ("measure", "aovisor", "QEMU", "ratio aovisor/QEMU", "goal")


def format_value(value: float) -> str:
    """About three significant digits, without exponent: 1234 -> "1234", 45.67 -> "45.7", 8.912 -> "8.91"."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def goal_cell(result: Result) -> str:
    met = result.goal_met
    verdict = "" if met is None else (" — met" if met else " — **not met**")
    return f"{result.goal.text}{verdict}"


def _value_cell(summary: Summary | None, unit: str) -> str:
    return "—" if summary is None else f"{format_value(summary.median)} {unit}"


def table_row(result: Result) -> tuple[str, ...]:
    if result.error is not None:
        return (result.title, "error", "error", "n/a", result.goal.text)
    return (
        result.title,
        _value_cell(result.aovisor_summary, result.unit),
        _value_cell(result.qemu_summary, result.unit),
        format_ratio(result.ratio),
        goal_cell(result),
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A markdown table, ``numeric`` columns right-aligned; cells are padded to line up as plain text."""
    cells = [[_escape(c) for c in row] for row in [header, *rows]]
    if any(len(row) != len(header) for row in cells):
        raise ValueError("every row needs one cell per column")
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = [("-" * (w - 1) + ":") if i in numeric else "-" * w for i, w in enumerate(widths)]

    def line(row: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    return "\n".join([line(cells[0]), "| " + " | ".join(rule) + " |", *(line(row) for row in cells[1:])])


def results_table(results: Sequence[Result]) -> str:
    """The comparison: one row per benchmark, medians of both sides."""
    return markdown_table(TABLE_HEADER, [table_row(r) for r in results], numeric=(1, 2, 3))


def samples_table(results: Sequence[Result]) -> str:
    """The spread behind each median: runs, median, min and max of each side."""
    rows: list[tuple[str, ...]] = []
    for result in results:
        for side, summary in (("aovisor", result.aovisor_summary), ("QEMU", result.qemu_summary)):
            if summary is None:
                continue
            rows.append(
                (
                    result.name,
                    side,
                    str(summary.n),
                    f"{format_value(summary.median)} {result.unit}",
                    f"{format_value(summary.low)} to {format_value(summary.high)} {result.unit}",
                    f"{summary.spread * 100:.0f} %",
                )
            )
    return markdown_table(
        ("benchmark", "VMM", "runs", "median", "min to max", "(max-min)/median"), rows, numeric=(2, 3, 4, 5)
    )


def failures(results: Sequence[Result]) -> list[str]:
    return [f"- **{r.name}** failed: {r.error}" for r in results if r.error is not None]


def document(
    *,
    date: str,
    host: Sequence[str],
    command: str,
    runs: int,
    results: Sequence[Result],
    elapsed_s: float,
) -> str:
    """bench/results.md: header with date and host, the table, the samples, failures and notes."""
    parts = [
        "# aovisor vs QEMU",
        "",
        f"Measured {date} by `{command}` in {elapsed_s:.0f} s: median of {_plural(runs, 'run')} of each "
        "side, the two sides alternating (see bench/README.md for what each row measures).",
        "",
        *host,
        "",
        results_table(results),
        "",
    ]
    failed = failures(results)
    if failed:
        parts += ["## Failures", "", *failed, ""]
    measured = [r for r in results if r.error is None]
    if measured:
        parts += ["## Samples", "", samples_table(measured), ""]
    notes = [r.notes for r in results if r.notes]
    if notes:
        parts += ["## Notes", ""]
        for note in notes:
            parts += [note, ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
