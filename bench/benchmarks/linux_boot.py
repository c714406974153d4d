"""Linux boot in the nested lab: Debian's cloud kernel with the default initramfs (``aovisor image build``),
process start → the initramfs's readiness marker, aovisor against QEMU ``-M microvm`` (and ``-M q35``).

This machine's /dev/kvm cannot run a stock kernel, so every boot happens inside one boot of the lab's L2
(lab/README.md), where KVM is real: L2 boots once and runs all the VMMs one after another, round by round,
each round starting with the next VMM in turn (so slow drifts of the machine fall on all of them).  The
samples are handed to the harness afterwards.  All VMMs get the same kernel (bzImage), initramfs, one vCPU,
256 MiB and command line; the guest's command is ``true``, so it powers off right after the marker.

One more boot of each VMM runs with KVM's tracepoints counted (tracefs histograms in L2): every exit by
reason, and the returns of ``KVM_RUN`` to the VMM by reason -- the exits aovisor handles in Python.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from aovisor.image.init_script import READY_MARKER, command_line_parameter
from bench.harness import Benchmark, Goal, register
from bench.testbed import REPO, RunFailed

SIDES = ("aovisor", "microvm", "q35")
LABELS = {"aovisor": "aovisor", "microvm": "QEMU -M microvm", "q35": "QEMU -M q35"}
WARMUP_ROUNDS = 1
RUN_TIMEOUT = 240.0
CONSOLE_LOG = REPO / "build" / "bench" / "linux-l2-console.log"  # L2's whole console, for a failed run
L2_SECONDS_PER_BOOT = 60  # generous: the lab's whole-run timeout is this per boot, plus its own boot

# Exit reason codes: arch/x86/include/uapi/asm/svm.h (SVM_EXIT_*), vmx.h (EXIT_REASON_*), and the
# KVM_EXIT_* of struct kvm_run (include/uapi/linux/kvm.h) for the returns to user space.
SVM_EXITS = {
    **{code: f"read CR{code}" for code in range(0x10)},
    **{code: f"write CR{code - 0x10}" for code in range(0x10, 0x20)},
    **{code: f"exception {code - 0x40}" for code in range(0x40, 0x60)},
    0x60: "INTR", 0x61: "NMI", 0x64: "VINTR", 0x65: "CR0 selective write", 0x6E: "RDTSC", 0x72: "CPUID",
    0x74: "IRET", 0x77: "PAUSE",
    0x78: "HLT", 0x7B: "IOIO", 0x7C: "MSR", 0x7F: "SHUTDOWN", 0x81: "VMMCALL", 0x87: "RDTSCP",
    0x89: "WBINVD", 0x8D: "XSETBV", 0x400: "NPF", 0x401: "AVIC_INCOMPLETE_IPI", 0x402: "AVIC_NOACCEL",
}  # fmt: skip
VMX_EXITS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 7: "INTERRUPT_WINDOW", 10: "CPUID",
    12: "HLT", 18: "VMCALL", 28: "CR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE",
    40: "PAUSE", 44: "APIC_ACCESS", 45: "EOI_INDUCED", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG",
    52: "PREEMPTION_TIMER", 55: "XSETBV", 56: "APIC_WRITE",
}  # fmt: skip
USERSPACE_EXITS = {
    0: "UNKNOWN", 2: "IO", 5: "HLT", 6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 10: "INTR (signal)",
    11: "SET_TPR", 12: "TPR_ACCESS", 17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT",
}  # fmt: skip
# kvm_mmio's type (include/trace/events/kvm.h): a read that goes to user space is traced twice, as
# "unsatisfied" on the way out and as a read when the VMM's answer comes back.
MMIO_KINDS = {0: "read, to the VMM", 1: "read", 2: "write"}
PORT_NAMES = {
    **{port: "COM1" for port in range(0x3F8, 0x400)},
    **{port: "PCI config" for port in range(0xCF8, 0xD00)},
    0x70: "CMOS index", 0x71: "CMOS data", 0x60: "i8042 data", 0x64: "i8042 status/command",
    0x80: "POST", 0x600: "ACPI PM", 0x601: "ACPI PM", 0x40: "PIT", 0x43: "PIT", 0x61: "PC speaker/NMI",
    0x20: "PIC", 0x21: "PIC", 0xA0: "PIC", 0xA1: "PIC", 0x4D0: "ELCR", 0x4D1: "ELCR",
    0x510: "fw_cfg selector", 0x511: "fw_cfg data", 0x514: "fw_cfg DMA", 0x518: "fw_cfg DMA",
}  # fmt: skip
IOAPIC_MMIO = range(0xFEC00000, 0xFEC01000)  # in KVM for aovisor and q35, in QEMU for microvm (split irqchip)


@register
class LinuxBoot(Benchmark):
    name = "linux"
    title = "Linux (lab): process start → initramfs marker, vs QEMU microvm"
    unit = "s"
    goal = Goal(max_ratio=1.0)
    warmup_runs = 0  # the lab runs them, before the measured rounds

    def prepare(self) -> None:
        from lab.vmm_runs import guest_files, run_vmms

        from aovisor.image.builder import build_guest_image
        from aovisor.image.errors import ImageBuildError
        from lab import LabError

        try:
            CONSOLE_LOG.parent.mkdir(parents=True, exist_ok=True)
            image = build_guest_image()
            runs = plan(self.runs)
            result = run_vmms(
                runs,
                worktree=REPO,
                timeout=L2_SECONDS_PER_BOOT * (len(runs) + 1),
                extra_files=guest_files(image.vmlinuz, image.vmlinux, image.initramfs),
                console_log=CONSOLE_LOG,
            )
        except (ImageBuildError, LabError) as error:
            raise RunFailed(f"the lab: {error}") from None
        missing = [run.name for run in runs if run.name not in result.runs]
        if missing:
            raise RunFailed(f"{len(missing)} runs missing from the lab: {result.describe()[:2000]}")
        self.kvm_isa = result.kvm_isa
        self.marker_s: dict[str, list[float]] = {side: [] for side in SIDES}
        self.exit_s: dict[str, list[float]] = {side: [] for side in SIDES}
        self.exits: dict[str, dict[str, Any]] = {}
        self._handed_out: dict[str, int] = {}
        for run in runs:
            done = result.runs[run.name]
            side, _, round_name = run.name.partition("/")
            marker = done.times(READY_MARKER)
            if done.status != 0 or not marker:
                raise RunFailed(f"{done.describe(tail=800)}")
            if round_name == "traced":
                self.exits[side] = done.exits
            elif not round_name.startswith("warmup"):
                self.marker_s[side].append(marker[0])
                self.exit_s[side].append(done.seconds)

    def warm_up(self) -> None:
        pass  # done in the lab

    def run_aovisor(self) -> float:
        return self.marker_s["aovisor"][self._taken("aovisor")]

    def run_qemu(self) -> float:
        return self.marker_s["microvm"][self._taken("microvm")]

    def _taken(self, side: str) -> int:
        """The index of the next sample of ``side`` to hand out (they stay in place for the notes)."""
        index = self._handed_out.get(side, 0)
        self._handed_out[side] = index + 1
        return index

    def notes(self) -> str:
        return boot_table(self.marker_s, self.exit_s) + "\n\n" + exits_notes(self.exits, self.kvm_isa)


def plan(rounds: int) -> list[Any]:
    """The lab's runs: warm-up rounds, ``rounds`` measured rounds (each starting with the next VMM), then one
    traced boot of each VMM.  Run names are ``<side>/<round>``."""
    from lab.vmm_runs import GUEST_CMDLINE, VmmRun, aovisor_boot, qemu_boot

    cmdline = f"{GUEST_CMDLINE} {command_line_parameter('true')}"

    def boot(side: str, round_name: str, trace: bool = False) -> VmmRun:
        argv = aovisor_boot("vmlinuz", cmdline) if side == "aovisor" else qemu_boot(side, "vmlinuz", cmdline)
        return VmmRun(f"{side}/{round_name}", argv, timeout=RUN_TIMEOUT, trace_exits=trace)

    runs = [boot(side, f"warmup{i}") for i in range(WARMUP_ROUNDS) for side in SIDES]
    for i in range(rounds):
        order = SIDES[i % len(SIDES) :] + SIDES[: i % len(SIDES)]
        runs += [boot(side, str(i)) for side in order]
    return runs + [boot(side, "traced", trace=True) for side in SIDES]


def boot_table(marker_s: Mapping[str, list[float]], exit_s: Mapping[str, list[float]]) -> str:
    """Medians of the three VMMs (the harness's table has aovisor and microvm only)."""
    base = statistics.median(marker_s["microvm"])
    rows = [
        "Linux boot in the lab (all three VMMs; medians; the harness's samples were taken from these):",
        "",
        "| VMM | start → marker (s) | vs microvm | start → exit after power-off (s) |",
        "|---|---|---|---|",
    ]
    for side in SIDES:
        median, exited = statistics.median(marker_s[side]), statistics.median(exit_s[side])
        rows.append(f"| {LABELS[side]} | {median:.2f} | {median / base:.2f}x | {exited:.2f} |")
    return "\n".join(rows)


def exits_notes(exits: Mapping[str, Mapping[str, Any]], kvm_isa: str) -> str:
    """Tables of one traced boot of each VMM: all KVM exits by reason, the returns to user space by reason,
    and where aovisor's user-space exits went (ports, MMIO addresses)."""
    names = SVM_EXITS if kvm_isa == "svm" else VMX_EXITS
    sides = [side for side in SIDES if side in exits]
    errors = [f"{side}: {exits[side]['error']}" for side in sides if "error" in exits[side]]
    if errors:
        return "Exit counts unavailable: " + "; ".join(errors)
    header = "| | " + " | ".join(LABELS[side] for side in sides) + " |\n|---|" + "---|" * len(sides)
    parts = [
        f"Exits during one whole boot (start to power-off), counted by KVM's tracepoints in L2 ({kvm_isa}):",
        "",
        header,
        _rows(exits, sides, "kvm_userspace_exit", "reason", USERSPACE_EXITS, "to the VMM: "),
        _rows(exits, sides, "kvm_exit", "exit_reason", names, "KVM exit: ", top=10),
    ]
    for side in sides:
        parts += ["", f"{LABELS[side]}: most frequent port I/O and MMIO exits (in-kernel devices too):", ""]
        parts.append(_access_list(exits[side], top=12 if side == "aovisor" else 5))
    return "\n".join(parts)


def _rows(
    exits: Mapping[str, Mapping[str, Any]],
    sides: list[str],
    event: str,
    key: str,
    names: Mapping[int, str],
    prefix: str,
    top: int = 8,
) -> str:
    counts = {side: _by_key(exits[side].get(event, []), key) for side in sides}
    totals = {side: sum(counts[side].values()) for side in sides}

    def peak(reason: Any) -> int:
        return max(c.get(reason, 0) for c in counts.values())

    reasons = sorted({r for c in counts.values() for r in c}, key=peak, reverse=True)[:top]
    rows = [f"| **{prefix}all** | " + " | ".join(f"**{totals[side]}**" for side in sides) + " |"]
    for reason in reasons:
        label = names.get(reason, f"{reason:#x}") if isinstance(reason, int) else str(reason)
        rows.append(
            f"| {prefix}{label} | " + " | ".join(str(counts[side].get(reason, 0)) for side in sides) + " |"
        )
    return "\n".join(rows)


def _by_key(entries: list[dict[str, Any]], key: str) -> dict[Any, int]:
    totals: dict[Any, int] = {}
    for entry in entries:
        totals[entry.get(key)] = totals.get(entry.get(key), 0) + int(entry["count"])
    return totals


def _access_list(exits: Mapping[str, Any], top: int = 12) -> str:
    items: list[tuple[int, str]] = []
    for entry in exits.get("kvm_pio", []):
        port = int(entry["port"])
        what = f"port {port:#x} ({PORT_NAMES.get(port, '?')}) {'write' if entry.get('rw') else 'read'}"
        items.append((int(entry["count"]), what))
    for entry in exits.get("kvm_mmio", []):
        kind = MMIO_KINDS.get(int(entry.get("type", -1)), "?")
        gpa = int(entry["gpa"])
        where = " (IOAPIC)" if gpa in IOAPIC_MMIO else ""
        items.append((int(entry["count"]), f"MMIO {gpa:#x}{where} {kind}"))
    items.sort(reverse=True)
    return "\n".join(f"- {count}x {what}" for count, what in items[:top])
