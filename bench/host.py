"""Facts about the machine a result was measured on, for the header of bench/results.md."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostFacts:
    kernel: str
    cpu: str
    cpus: int
    kvm: str
    python: str
    qemu: str
    load: str

    def markdown(self) -> list[str]:
        return [
            f"- kernel: {self.kernel}",
            f"- CPU: {self.cpu} ({self.cpus} logical CPUs)",
            f"- KVM: {self.kvm}",
            f"- Python (aovisor's): {self.python}",
            f"- QEMU: {self.qemu}",
            f"- load average when the run started: {self.load}",
        ]


def collect(qemu_version: str, python_version: str | None = None) -> HostFacts:
    uname = platform.uname()
    return HostFacts(
        kernel=f"Linux {uname.release} {uname.machine}",
        cpu=cpu_model(_read("/proc/cpuinfo")),
        cpus=os.cpu_count() or 0,
        kvm=kvm_flavour(Path("/sys/module")),
        python=python_version or f"{platform.python_implementation()} {platform.python_version()}",
        qemu=qemu_version,
        load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )


def cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` of /proc/cpuinfo, or "unknown"."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return "unknown"


def kvm_flavour(sys_module: Path) -> str:
    """Which KVM module serves /dev/kvm: PVM (nested virtualization in software), Intel VMX or AMD SVM."""
    for module, text in (
        ("kvm_pvm", "PVM (kvm_pvm: exits are costly, timings noisy)"),
        ("kvm_intel", "kvm_intel (VMX)"),
        ("kvm_amd", "kvm_amd (SVM)"),
    ):
        if (sys_module / module).is_dir():
            return text
    return "unknown"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
