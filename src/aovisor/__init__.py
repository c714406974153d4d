"""aovisor: a virtual machine monitor in Python for KVM and the Microsoft Hypervisor (MSHV).

``aovisor.VM`` is the Python API (:mod:`aovisor.python_api`).  It is loaded on first use, so ``import
aovisor`` stays cheap: ``aovisor --version`` and the CLI's startup do not pay for the VMM (nor for
:mod:`typing`, hence the annotation-only import below; mypy treats any ``TYPE_CHECKING`` name as true).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["VM", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "VM":
        from aovisor.python_api import VM

        return VM
    raise AttributeError(f"module 'aovisor' has no attribute {name!r}")
