"""Boot the guest programs with the `aovisor` command, on each hypervisor backend, and check what a user sees:
the guest's exact serial output and the process's exit status."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO, host_model_name, run_aovisor

Guest = Callable[[str], Path]


def boot(hypervisor: str, kernel: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = run_aovisor(
        ["--hypervisor", hypervisor, "--kernel", str(kernel), "--memory", "size=128M", *args], timeout=timeout
    )
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def test_hello_prints_and_powers_off(hypervisor: str, guest: Guest) -> None:
    rc, out, err = boot(hypervisor, guest("hello"))
    assert (rc, out) == (0, "Hello, world! from aovisor guest\n"), err


def test_cpl3_workload_runs_at_cpl3(hypervisor: str, guest: Guest) -> None:
    rc, out, err = boot(hypervisor, guest("cpl3"), "--cmdline", "count=1000")
    assert rc == 0, err
    assert out == "cpl3: running at CPL 3\ncpl3: 1000 iterations, result 0xf517ff66df0cbea9\ncpl3 ok\n"


@pytest.mark.parametrize("size", [1, 2, 4])
def test_pio_out_exits_reach_the_device(hypervisor: str, guest: Guest, size: int) -> None:
    rc, out, err = boot(hypervisor, guest("pio"), "--cmdline", f"count=2000 port=0x80 size={size}")
    assert rc == 0, err
    assert out == f"pio: out 2000 x {size} bytes at port 0x80\npio done 2000\n"


def test_string_port_io_carries_every_access(hypervisor: str, guest: Guest) -> None:
    # rep outs/ins: one exit with several accesses whose data follow one another in the exit's buffer.
    rc, out, err = boot(hypervisor, guest("pio"), "--cmdline", "mode=string")
    assert rc == 0, err
    assert out == (
        "pio: rep outsb reached the uart\n"
        "pio: rep insb from 0x80: a5 a5 a5 a5 a5 a5 a5 a5\n"
        "pio: rep insw from 0x5f0: ffff ffff ffff ffff\n"
    )


def test_unclaimed_ports_read_all_ones(hypervisor: str, guest: Guest) -> None:
    rc, out, err = boot(hypervisor, guest("pio"), "--cmdline", "count=1000 port=0x5f0 mode=in size=2")
    assert rc == 0, err
    assert f"pio in sum 0x{1000 * 0xFFFF:016x}\n" in out
    assert out.endswith("pio done 1000\n")


def test_serial_scratch_register_reads_back(hypervisor: str, guest: Guest) -> None:
    # SCR (0x3ff) holds what was last written; the guest's UART init never writes it, so it reads 0.
    rc, out, err = boot(hypervisor, guest("pio"), "--cmdline", "count=500 port=0x3ff mode=in")
    assert rc == 0, err
    assert f"pio in sum 0x{0:016x}\n" in out


@pytest.mark.parametrize(("mode", "size"), [("write", 4), ("read", 1), ("read", 2), ("read", 4), ("read", 8)])
def test_mmio_exits_in_the_hole(hypervisor: str, guest: Guest, mode: str, size: int) -> None:
    rc, out, err = boot(hypervisor, guest("mmio"), "--cmdline", f"count=1000 mode={mode} size={size}")
    assert rc == 0, err
    assert out.startswith(f"mmio: {mode} 1000 x {size} bytes at 0xd0000000\n")
    if mode == "read":  # nothing is mapped there: reads are all-ones
        assert f"mmio read sum 0x{(1000 * ((1 << (8 * size)) - 1)) & (2**64 - 1):016x}\n" in out
    assert out.endswith("mmio done 1000\n")


def test_lapic_and_pit_timer_interrupts(hypervisor: str, guest: Guest) -> None:
    rc, out, err = boot(hypervisor, guest("timer"))
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["timer: lapic phase", "lapic tick 1", "lapic tick 2", "lapic tick 3"]
    # KVM's in-kernel LAPIC emulates TSC-deadline mode and aovisor offers it in CPUID (as QEMU and Cloud
    # Hypervisor do); whether Hyper-V offers it to a child partition is its own choice.
    if hypervisor == "kvm" or lines[4] != "timer: no tsc-deadline mode in cpuid":
        deadline = [
            "timer: tsc-deadline phase",
            "tsc-deadline tick 1",
            "tsc-deadline tick 2",
            "tsc-deadline tick 3",
        ]
        assert lines[4:8] == deadline
        del lines[4:8]
    else:
        del lines[4]
    # The PIT's IRQ0 arrives on IOAPIC pin 2, as the MADT's interrupt source override says.
    assert lines[:9] == [
        "timer: lapic phase", "lapic tick 1", "lapic tick 2", "lapic tick 3",
        "timer: pit phase", "pit tick 1", "pit tick 2", "pit tick 3",
        "timer: pit arrived on ioapic pin 2",
    ]  # fmt: skip
    # Ticks missed with interrupts off are dropped, not replayed in a burst (KVM_REINJECT_CONTROL off):
    # one arrives, latched while interrupts were off; two if the host stalled the guest past a period.
    assert re.fullmatch(r"timer: [12] pit ticks after 5 missed", lines[9]), lines[9]
    assert lines[10:] == ["timer ok"]


# What CPUID leaf 0x40000000 spells (EBX, ECX, EDX): KVM's leaf passes through; Hyper-V answers its own.
HYPERVISOR_CPUID_SIGNATURE = {"kvm": "KVMKVMKVM", "mshv": "Microsoft Hv"}


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_smp_guest_starts_every_ap(hypervisor: str, guest: Guest, cpus: int) -> None:
    rc, out, err = boot(hypervisor, guest("smp"), "--cpus", f"boot={cpus}")
    assert rc == 0, err
    lines = out.splitlines()
    signature = HYPERVISOR_CPUID_SIGNATURE[hypervisor]
    assert lines[:4] == [
        f"smp: {cpus} cpus in MADT",
        f'smp: cpuid: hypervisor "{signature}", {cpus} logical cpus per package',
        f'smp: cpuid: brand "{host_model_name()}"',  # the host's, as with QEMU -cpu host
        "smp: bsp apic id 0, cpuid apic id 0, x2apic id 0",
    ]
    assert lines[-1] == f"smp: all {cpus} cpus online"
    assert sorted(lines[4:-1]) == [
        f"cpu online: apic id {i}, cpuid apic id {i}, x2apic id {i}" for i in range(1, cpus)
    ]


@pytest.mark.parametrize(
    ("topology", "apic_ids", "per_package"),
    [
        ("1:3:1:2", [0, 1, 2, 4, 5, 6], 3),  # 3 cores need a 2-bit field: package 1 starts at APIC id 4
        ("2:2:1:1", [0, 1, 2, 3], 4),
    ],
)
def test_smp_guest_sees_the_topology_asked_for(
    hypervisor: str, guest: Guest, topology: str, apic_ids: list[int], per_package: int
) -> None:
    cpus = len(apic_ids)
    rc, out, err = boot(hypervisor, guest("smp"), "--cpus", f"boot={cpus},topology={topology}")
    if hypervisor == "mshv":  # Hyper-V answers CPUID with its own topology
        assert rc != 0 and "topology" in err, err
        return
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"smp: {cpus} cpus in MADT"
    assert lines[1] == f'smp: cpuid: hypervisor "KVMKVMKVM", {per_package} logical cpus per package'
    assert lines[3] == "smp: bsp apic id 0, cpuid apic id 0, x2apic id 0"
    assert sorted(lines[4:-1]) == [
        f"cpu online: apic id {i}, cpuid apic id {i}, x2apic id {i}" for i in apic_ids[1:]
    ]
    assert lines[-1] == f"smp: all {cpus} cpus online"


def _sum32(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def test_pvh_start_info(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(100_000))
    rc, out, err = boot(hypervisor, guest("pvhinfo"), "--cmdline", "hello there", "--initramfs", str(initrd))
    assert rc == 0, err
    assert out == (
        "pvhinfo: start_info version 1\n"
        "cmdline: hello there\n"
        "memmap: 3 entries, 127 MiB usable\n"  # [0, 639K) RAM, [639K, 1M) reserved, [1M, 128M) RAM
        "modules: 1\n"
        f"initrd: 100000 bytes, sum 0x{_sum32(initrd.read_bytes()):08x}\n"
        "rsdp: 0xe0000\n"
    )


def test_bzimage_boot_protocol(hypervisor: str, bzimage_guest: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(123_457))
    rc, out, err = boot(
        hypervisor, bzimage_guest, "--cmdline", "console=ttyS0 hello", "--initramfs", str(initrd)
    )
    assert rc == 0, err
    assert out == (
        "bzimage: boot_params ok\n"
        "cmdline: console=ttyS0 hello\n"
        "e820: 3 entries, 127 MiB usable\n"
        f"initrd: 123457 bytes, sum 0x{_sum32(initrd.read_bytes()):08x}\n"
        "loader: 0xff\n"
    )


def _read_boot_lines(proc: subprocess.Popen[bytes], wanted: int, timeout: float) -> list[str]:
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < wanted and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").splitlines()


@pytest.mark.parametrize("method", ["i8042", "cf9", "acpi", "triple"])
def test_reset_reboots_the_guest(hypervisor: str, guest: Guest, method: str) -> None:
    """Every reset path reboots: the guest's first line appears again (it resets on every boot, so the test
    stops the VMM once it has seen three boots)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aovisor", "--hypervisor", hypervisor, "--kernel", str(guest("reset")),
         "--memory", "size=64M", "--cmdline", f"method={method}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        lines = _read_boot_lines(proc, 3, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert lines[:3] == [f"reset: boot, method {method}"] * 3, err.decode()


def _events(path: Path) -> list[str]:
    """``source:event`` of each JSON object the event monitor wrote (objects follow one another)."""
    text, decoder, found, at = path.read_text(), json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        event, at = decoder.raw_decode(text, at)
        found.append(f"{event['source']}:{event['event']}")
    return found


def test_sigterm_shuts_the_vmm_down_in_order(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    """SIGTERM, as libvirt and Kata stop a VMM: the guest stops, the events are complete, the API socket
    file is removed and the status is 0 (as after ``vmm.shutdown``), rather than the process being killed."""
    events, api = tmp_path / "events.json", tmp_path / "api.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aovisor", "--hypervisor", hypervisor, "--kernel", str(guest("ticker")),
         "--memory", "size=64M", "--cmdline", "period_ms=20",
         "--event-monitor", f"path={events}", "--api-socket", f"path={api}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        lines = _read_boot_lines(proc, 3, timeout=30)  # "ticker: period 20 ms", "tick 1", "tick 2"
        assert api.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert lines[1:3] == ["tick 1", "tick 2"], err.decode()
    assert proc.returncode == 0, err.decode()
    assert _events(events) == [
        "vmm:starting", "vm:booting", "vm:booted", "vm:shutdown", "vm:deleted", "vmm:shutdown",
    ]  # fmt: skip
    assert not api.exists()


def test_vcpu_threads_are_named_for_libvirt(hypervisor: str, guest: Guest) -> None:
    """libvirt's ch driver finds vCPU threads by their OS name `vcpuN`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aovisor", "--hypervisor", hypervisor, "--kernel", str(guest("pio")),
         "--memory", "size=64M", "--cpus", "boot=2", "--cmdline", "count=100000000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        _read_boot_lines(proc, 1, timeout=30)  # the guest is running once it prints
        names = {(Path(t) / "comm").read_text().strip() for t in Path(f"/proc/{proc.pid}/task").iterdir()}
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert {"vcpu0", "vcpu1"} <= names


def _allowed_cpus(task: Path) -> str:
    return next(line.split(":")[1].strip() for line in (task / "status").read_text().splitlines()
                if line.startswith("Cpus_allowed_list:"))  # fmt: skip


def test_vcpu_threads_run_on_the_host_cpus_given(hypervisor: str, guest: Guest) -> None:
    """``--cpus affinity=``: each vCPU thread is pinned to its host CPUs (the VMM's other threads are not)."""
    first, last = min(os.sched_getaffinity(0)), max(os.sched_getaffinity(0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aovisor", "--hypervisor", hypervisor, "--kernel", str(guest("pio")),
         "--memory", "size=64M", "--cpus", f"boot=2,affinity=[0@[{last}],1@[{first}]]",
         "--cmdline", "count=100000000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        _read_boot_lines(proc, 1, timeout=30)  # the guest is running once it prints
        tasks = {(t / "comm").read_text().strip(): t for t in Path(f"/proc/{proc.pid}/task").iterdir()}
        pinned = {name: _allowed_cpus(tasks[name]) for name in ("vcpu0", "vcpu1")}
        main_thread = _allowed_cpus(Path(f"/proc/{proc.pid}/task/{proc.pid}"))
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert pinned == {"vcpu0": str(last), "vcpu1": str(first)}
    assert main_thread == _allowed_cpus(Path("/proc/self"))


def test_affinity_to_a_host_cpu_out_of_reach_is_one_error_line(hypervisor: str, guest: Guest) -> None:
    beyond = max(os.sched_getaffinity(0)) + 1
    rc, out, err = boot(hypervisor, guest("hello"), "--cpus", f"boot=1,affinity=[0@[{beyond}]]")
    assert rc != 0 and out == ""
    assert err.count("\n") == 1 and f"--cpus: affinity: vCPU 0: host CPU {beyond} is not one" in err, err


def test_guest_exception_is_reported_and_vm_powers_off(hypervisor: str, guest: Guest) -> None:
    # A bad MMIO address (unaligned for its size) makes the guest print its argument error and power off.
    rc, out, _ = boot(hypervisor, guest("mmio"), "--cmdline", "addr=0xd0000001 size=4")
    assert rc == 0
    assert out == "mmio: bad arguments: addr=0xd0000001 size=4\n"


def test_garbage_kernel_is_one_error_line(hypervisor: str, tmp_path: Path) -> None:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"\x00" * 4096)
    rc, out, err = boot(hypervisor, kernel)
    assert rc != 0
    assert out == ""
    assert err.count("\n") == 1 and str(kernel) in err and "Traceback" not in err
