"""The `linux` bench row's logic: the plan of lab runs, handing out the samples, and its notes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.benchmarks.linux_boot import SIDES, LinuxBoot, boot_table, exits_notes, plan
from bench.testbed import Aovisor, Qemu, Testbed


def test_plan_warms_up_then_rotates_who_goes_first_then_traces_each_vmm() -> None:
    runs = plan(4)
    names = [run.name for run in runs]
    assert names[:3] == ["aovisor/warmup0", "microvm/warmup0", "q35/warmup0"]
    measured = [name for name in names if name.split("/")[1].isdigit()]
    assert [measured[i].split("/")[0] for i in range(0, 12, 3)] == ["aovisor", "microvm", "q35", "aovisor"]
    assert Counter(name.split("/")[0] for name in measured) == {side: 4 for side in SIDES}
    traced = [run for run in runs if run.trace_exits]
    assert [run.name for run in traced] == ["aovisor/traced", "microvm/traced", "q35/traced"]
    assert names[-3:] == [run.name for run in traced]
    # The same guest for everyone: only the VMM differs.
    cmdlines = {run.argv[-1] for run in runs}
    assert cmdlines == {'console=ttyS0 quiet aovisor_cmd="true"'}
    assert all(
        run.argv[run.argv.index("-M") + 1] == run.name.split("/")[0] for run in runs if "-M" in run.argv
    )


def test_samples_are_handed_out_in_order_and_kept_for_the_notes(tmp_path: Any) -> None:
    bench = LinuxBoot(Testbed(Aovisor(tmp_path / "a"), Qemu(tmp_path / "q"), tmp_path, {}))
    bench.marker_s = {"aovisor": [1.0, 2.0], "microvm": [3.0, 4.0], "q35": [5.0, 6.0]}
    bench.exit_s = {"aovisor": [1.5, 2.5], "microvm": [3.5, 4.5], "q35": [5.5, 6.5]}
    bench.exits, bench.kvm_isa, bench._handed_out = {}, "svm", {}
    assert [bench.run_aovisor(), bench.run_qemu(), bench.run_aovisor(), bench.run_qemu()] == [1, 3, 2, 4]
    table = boot_table(bench.marker_s, bench.exit_s)
    assert "| aovisor | 1.50 | 0.43x | 2.00 |" in table
    assert "| QEMU -M q35 | 5.50 | 1.57x | 6.00 |" in table


def test_exit_notes_name_svm_reasons_and_userspace_exits() -> None:
    exits: dict[str, dict[str, Any]] = {
        "aovisor": {
            "kvm_exit": [{"exit_reason": 0x400, "count": 900}, {"exit_reason": 0x7B, "count": 100}],
            "kvm_userspace_exit": [{"reason": 2, "count": 80}, {"reason": 6, "count": 20}],
            "kvm_pio": [{"port": 0x3F8, "rw": 1, "count": 50}, {"port": 0x70, "rw": 1, "count": 7}],
            "kvm_mmio": [{"gpa": 0xC0000014, "type": 0, "count": 3}],
        },
        "microvm": {
            "kvm_exit": [{"exit_reason": 0x400, "count": 1200}],
            "kvm_userspace_exit": [{"reason": 2, "count": 40}],
            "kvm_pio": [],
            "kvm_mmio": [],
        },
    }
    notes = exits_notes(exits, "svm")
    assert "| **to the VMM: all** | **100** | **40** |" in notes
    assert "| to the VMM: IO | 80 | 40 |" in notes
    assert "| to the VMM: MMIO | 20 | 0 |" in notes
    assert "| KVM exit: NPF | 900 | 1200 |" in notes
    assert "| KVM exit: IOIO | 100 | 0 |" in notes
    assert "- 50x port 0x3f8 (COM1) write" in notes
    assert "- 3x MMIO 0xc0000014 read, to the VMM" in notes


def test_exit_notes_say_when_tracing_failed() -> None:
    assert "unavailable" in exits_notes({"aovisor": {"error": "tracefs: no such file"}}, "svm")
