"""aovisor boots real Linux: Debian's cloud kernel with the default guest initramfs, in the nested lab.

One L2 boot runs every aovisor boot below, one after another (an L2 boot costs ~8 s, an L3 boot 15-30 s);
each test then checks one of them.  The checks read the guest's own output: what its command printed
(``uname -r``, the processor count of ``/proc/cpuinfo``, the clock source, lines of its ``dmesg``), the
readiness marker of its ``/init``, and aovisor's exit status after the guest's ``poweroff -f``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lab.vmm_runs import (
    GUEST_CMDLINE,
    INITRAMFS,
    L2_EXTRA,
    VmmRun,
    VmmRunResult,
    VmmRunsResult,
    aovisor_boot,
    guest_files,
    run_vmms,
)

from aovisor.image.builder import GuestImage
from aovisor.image.init_script import (
    EXIT_MARKER,
    POWER_BUTTON_MARKER,
    READY_MARKER,
    command_line_parameter,
)
from lab import LabArtifacts

pytestmark = pytest.mark.lab

# What the guest reports, one "key: value" line each; dmesg lines come back prefixed with "dmesg: ".
TOPOLOGY = "/sys/devices/system/cpu/cpu*/topology"
REPORT = (
    "echo kernel-release: $(uname -r); echo cpus: $(grep -c ^processor /proc/cpuinfo); "
    "echo clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource); "
    f"echo core-ids: $(cat {TOPOLOGY}/core_id); echo package-ids: $(cat {TOPOLOGY}/physical_package_id); "
    "echo tsc-deadline-cpus: $(grep -c '^flags.* tsc_deadline_timer' /proc/cpuinfo); "
    "echo model-name: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2)"
)
SIBLINGS = f"echo thread-siblings: $(cat {TOPOLOGY}/thread_siblings_list)"
DMESG_PATTERN = "ACPI.*(Error|Warning)|WARNING:|XSAVE consistency|BUG:|Oops|clocksource|unstable"
# (Not the lines that quote the kernel command line: it holds this very pattern.)
DMESG = f"dmesg | grep -E '{DMESG_PATTERN}' | grep -v aovisor_cmd | sed 's/^/dmesg: /'"
# The reboot test: CMOS byte 0x50 (/dev/nvram offset 0x50 - 14 = 66) says whether this is the second boot.
# The first boot sets it and reboots (`reboot -f`: Linux writes the FADT's reset register); the second
# clears it and ends, so /init powers off.  It works only if CMOS RAM survives the reset, as on a PC.
NVRAM_FLAG = "dd if=/dev/nvram bs=1 skip=66 count=1 2>/dev/null | od -An -tu1"
NVRAM_WRITE = "| dd of=/dev/nvram bs=1 seek=66 count=1 conv=notrunc 2>/dev/null"
NVRAM_SET, NVRAM_CLEAR = f"printf x {NVRAM_WRITE}", rf"printf \\0 {NVRAM_WRITE}"  # sh makes \\0 a \0: NUL
REBOOT_ONCE = (
    f"flag=$({NVRAM_FLAG}); echo nvram-flag: $flag; "
    f"if [ $flag = 0 ]; then {NVRAM_SET}; echo first-boot: rebooting; reboot -f; fi; "
    f"{NVRAM_CLEAR}; echo second-boot: powering off"
)
# Ports the kernel probes that this machine (like QEMU's microvm) leaves empty on purpose: the 8250
# driver looks for the legacy COM2-COM4 UARTs (it reads all-ones there and concludes there is none).
EXPECTED_UNHANDLED_PORTS = {*range(0x2F8, 0x300), *range(0x3E8, 0x3F0), *range(0x2E8, 0x2F0)}
_UNHANDLED = re.compile(r"(pio|mmio): unhandled (read|write) (0x[0-9a-f]+)/(\d)")


def _boot(
    name: str,
    kernel: str,
    command: str,
    *,
    cpus: int = 1,
    topology: str | None = None,
    verbose: bool = False,
    options: tuple[str, ...] = (),
) -> VmmRun:
    cmdline = f"{GUEST_CMDLINE} {command_line_parameter(command)}"
    options = (*options, "-vv") if verbose else options
    return VmmRun(name, aovisor_boot(kernel, cmdline, cpus=cpus, topology=topology, options=options))


def _api_driven(name: str, actions: str) -> VmmRun:
    """aovisor with --api-socket booting a guest that waits; ``actions`` (API endpoints, PUT in order) are
    sent each time the guest says it is ready (tests/lab/l2_api_driver.py)."""
    socket = f"/tmp/{name}.sock"
    cmdline = f"{GUEST_CMDLINE} {command_line_parameter('echo guest: waiting; sleep 600')}"
    argv = aovisor_boot("vmlinuz", cmdline, options=("--api-socket", f"path={socket}"))
    driver = ("python3", "/work/tests/lab/l2_api_driver.py", socket, READY_MARKER, actions, "--")
    return VmmRun(name, [*driver, *argv])


# The initramfs itself serves as a read-only disk: its first bytes are the newc magic "070701".
MMIO_OPTIONS = ("--virtio-transport", "mmio", "--disk", f"path={L2_EXTRA}/{INITRAMFS},readonly=on")
MMIO_REPORT = (
    "echo disk-magic: $(head -c 6 /dev/vda); echo rng: $(cat /sys/class/misc/hw_random/rng_current); "
    "echo mmio-devices: $(ls /sys/bus/platform/drivers/virtio-mmio | grep -c LNRO0005)"
)

RUNS = (
    _boot("bzimage-1cpu", "vmlinuz", f"{REPORT}; {DMESG}", verbose=True),
    _boot("bzimage-4cpus", "vmlinuz", REPORT, cpus=4),
    _boot("topology-2-threads-2-packages", "vmlinuz", f"{REPORT}; {SIBLINGS}", cpus=4, topology="2:1:1:2"),
    _boot("pvh-1cpu", "vmlinux", REPORT, verbose=True),
    _boot("reboot", "vmlinuz", f"{REPORT}; {REBOOT_ONCE}"),
    _api_driven("api-reboot-then-power-button", "vm.reboot,vm.power-button"),
    _boot("virtio-mmio", "vmlinuz", MMIO_REPORT, options=MMIO_OPTIONS),
)


@pytest.fixture(scope="module")
def boots(
    default_guest_image: GuestImage,
    lab_artifacts: LabArtifacts,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> VmmRunsResult:
    console_log = tmp_path_factory.mktemp("linux-boot") / "l2-console.log"
    result = run_vmms(
        RUNS,
        worktree=repo_root,
        timeout=900,
        extra_files=guest_files(
            default_guest_image.vmlinuz, default_guest_image.vmlinux, default_guest_image.initramfs
        ),
        console_log=console_log,
        artifacts=lab_artifacts,
    )
    for run in result.runs.values():
        ready = run.times(READY_MARKER)
        print(f"{run.name}: status {run.status}, marker at {ready} s, exit after {run.seconds:.1f} s")
    return result


def _run(boots: VmmRunsResult, name: str) -> VmmRunResult:
    run = boots.runs.get(name)
    if run is None:
        pytest.fail(f"the {name} run did not finish in L2\n{boots.describe()}", pytrace=False)
    return run


def _report(run: VmmRunResult, key: str) -> list[str]:
    return [line.split(": ", 1)[1].strip() for _, line in run.lines if line.startswith(f"{key}: ")]


def _powered_off_cleanly(run: VmmRunResult, boots_expected: int = 1) -> None:
    context = run.describe()
    assert not run.timed_out, context
    assert len(run.times(READY_MARKER)) == boots_expected, context
    assert run.times(f"{EXIT_MARKER} 0"), context  # the guest's command succeeded, then /init powered off
    assert run.status == 0, context  # `poweroff -f` (ACPI S5) ends aovisor with status 0


@pytest.mark.parametrize(
    ("name", "kernel_format"), [("bzimage-1cpu", "bzImage"), ("pvh-1cpu", "PVH vmlinux")]
)
def test_the_kernel_boots_to_the_marker_and_powers_off(
    boots: VmmRunsResult, default_guest_image: GuestImage, name: str, kernel_format: str
) -> None:
    run = _run(boots, name)
    _powered_off_cleanly(run)
    assert _report(run, "kernel-release") == [default_guest_image.kernel_release], run.describe()
    assert _report(run, "cpus") == ["1"], run.describe()


def test_four_vcpus_are_four_processors_in_the_guest(boots: VmmRunsResult) -> None:
    run = _run(boots, "bzimage-4cpus")
    _powered_off_cleanly(run)
    assert _report(run, "cpus") == ["4"], run.describe()
    # One package of four cores, as the CPUID topology leaves say (before they were written whole, the
    # kernel of L2 reported no core level and Linux made each vCPU its own package).
    assert _report(run, "core-ids") == ["0 1 2 3"], run.describe()
    assert _report(run, "package-ids") == ["0 0 0 0"], run.describe()
    # L2's kernel (6.12) leaves TSC-deadline mode out of KVM_GET_SUPPORTED_CPUID; aovisor offers it.
    assert _report(run, "tsc-deadline-cpus") == ["4"], run.describe()
    # The brand string is L2's (QEMU's TCG CPU), which KVM leaves to user space, as QEMU -cpu host does.
    assert [name.startswith("QEMU TCG CPU") for name in _report(run, "model-name")] == [True], run.describe()


def test_linux_sees_the_cpu_topology_asked_for(boots: VmmRunsResult) -> None:
    """``--cpus topology=2:1:1:2``: two packages of one core with two threads each (APIC ids 0-3)."""
    run = _run(boots, "topology-2-threads-2-packages")
    _powered_off_cleanly(run)
    assert _report(run, "cpus") == ["4"], run.describe()
    assert _report(run, "package-ids") == ["0 0 1 1"], run.describe()
    assert _report(run, "thread-siblings") == ["0-1 0-1 2-3 2-3"], run.describe()


def test_reboot_boots_again_and_the_second_boot_powers_off(boots: VmmRunsResult) -> None:
    run = _run(boots, "reboot")
    _powered_off_cleanly(run, boots_expected=2)
    # The first boot found the flag clear and set it; the second found it set: CMOS RAM survived the reset.
    assert _report(run, "nvram-flag") == ["0", str(ord("x"))], run.describe()
    assert len(run.times("first-boot: rebooting")) == 1, run.describe()
    assert len(run.times("second-boot: powering off")) == 1, run.describe()


def test_dmesg_shows_no_acpi_errors_and_a_stable_clock(boots: VmmRunsResult) -> None:
    run = _run(boots, "bzimage-1cpu")
    dmesg = _report(run, "dmesg")
    assert [line for line in dmesg if re.search(r"ACPI.*(Error|Warning)", line)] == [], run.describe()
    assert any("Switched to clocksource kvm-clock" in line for line in dmesg), run.describe()
    assert _report(run, "clocksource") in (["kvm-clock"], ["tsc"]), run.describe()
    assert [line for line in dmesg if "unstable" in line] == [], run.describe()
    assert [line for line in dmesg if "BUG:" in line or "Oops" in line] == [], run.describe()
    # The one kernel WARNING allowed: L2's CPUID leaf 0xD comes from QEMU's software CPU, whose XSAVE sizes
    # disagree ("XSAVE consistency problem"); QEMU/KVM in L2 shows the same warning with the same kernel.
    warnings = [line for line in dmesg if "WARNING:" in line]
    assert len(warnings) == len([line for line in dmesg if "XSAVE consistency problem" in line]), (
        run.describe()
    )


@pytest.mark.parametrize("name", ["bzimage-1cpu", "pvh-1cpu"])
def test_linux_touches_no_unexpected_unhandled_port_or_mmio(boots: VmmRunsResult, name: str) -> None:
    """With -vv aovisor logs every access no device claims; only the legacy UART probes may be among them."""
    run = _run(boots, name)
    accesses = [(bus, kind, int(address, 16)) for bus, kind, address, _ in _UNHANDLED.findall(run.stderr)]
    unexpected = sorted(
        {f"{bus} {kind} {address:#x}" for bus, kind, address in accesses}
        - {f"pio {kind} {port:#x}" for port in EXPECTED_UNHANDLED_PORTS for kind in ("read", "write")}
    )
    assert unexpected == [], run.describe()


def test_api_reboot_boots_again_and_the_power_button_powers_linux_off(boots: VmmRunsResult) -> None:
    """vm.reboot (REST API) restarts the running guest; vm.power-button then makes Linux power off."""
    run = _run(boots, "api-reboot-then-power-button")
    context = run.describe()
    assert not run.timed_out, context
    assert len(run.times(READY_MARKER)) == 2, context  # booted, then booted again after vm.reboot
    assert len(run.times("api: vm.reboot -> 204")) == 1, context
    assert len(run.times("api: vm.power-button -> 204")) == 1, context
    # The guest's acpid saw KEY_POWER from the ACPI button driver and powered off (ACPI S5).
    assert len(run.times(POWER_BUTTON_MARKER)) == 1, context
    assert run.times(EXIT_MARKER) == [], context  # not by its command ending: that sleeps
    assert run.times("api: aovisor exit status 0") and run.status == 0, context
    (reboot,) = run.times("api: vm.reboot -> 204")
    (second_boot,) = run.times(READY_MARKER)[1:]
    (pressed,) = run.times("api: vm.power-button -> 204")
    (powered_off,) = run.times(POWER_BUTTON_MARKER)
    assert reboot < second_boot < pressed < powered_off, context


def test_linux_drives_virtio_devices_over_the_mmio_transport(boots: VmmRunsResult) -> None:
    """--virtio-transport mmio: Linux's virtio_mmio finds the DSDT's LNRO0005 windows; blk and rng work."""
    run = _run(boots, "virtio-mmio")
    _powered_off_cleanly(run)
    assert _report(run, "disk-magic") == ["070701"], run.describe()
    assert _report(run, "rng") == ["virtio_rng.0"], run.describe()
    assert _report(run, "mmio-devices") == ["2"], run.describe()  # the disk and the rng
