"""Summaries of repeated measurements: the median is what we report, the spread says how much to trust it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    low: float
    high: float

    @property
    def spread(self) -> float:
        """(high - low) / median: 0.1 means the runs lay within 10 % of the median's size."""
        return (self.high - self.low) / abs(self.median) if self.median else float("inf")


def summarize(samples: Sequence[float]) -> Summary:
    """Median, minimum and maximum of ``samples`` (at least one)."""
    if not samples:
        raise ValueError("no samples to summarize")
    return Summary(n=len(samples), median=statistics.median(samples), low=min(samples), high=max(samples))


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when the denominator is not positive (no meaningful ratio)."""
    if denominator <= 0:
        return None
    return numerator / denominator


def per_item_cost(total_with_items: float, total_without: float, items: int) -> float:
    """The cost of one item from two runs that differ only by ``items`` items: (with - without) / items."""
    if items <= 0:
        raise ValueError(f"items must be positive, not {items}")
    return (total_with_items - total_without) / items
