"""The table's rows, one module each. A new row is a module here with a :func:`bench.harness.register`-ed
class, and its name in :data:`ROW_MODULES`, whose order is the table's."""

from __future__ import annotations

import importlib

ROW_MODULES = ("startup", "exits", "memory", "virtio", "linux_boot")


def load() -> None:
    """Import every row module, registering its benchmarks in table order."""
    for module in ROW_MODULES:
        importlib.import_module(f"{__name__}.{module}")
