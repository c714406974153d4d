"""The `aovisor` command line, through `main([...])` as a user runs it (the VM runner is replaced)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aovisor import __version__
from aovisor.cli.main import main, parse_args
from aovisor.config import DEFAULT_MEMORY, OutputConfig, OutputMode, VmConfig
from aovisor.errors import AovisorError, ConfigError
from aovisor.logs import get_logger

RunVm = Callable[[VmConfig], int]


@pytest.fixture(autouse=True)
def no_env_hypervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOVISOR_HYPERVISOR", raising=False)


class FakeRunner:
    """Stands in for aovisor.vmm.runner (main imports it only once the configuration is valid)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.configs: list[VmConfig] = []
        self.behaviour: RunVm = lambda config: 0
        module = types.ModuleType("aovisor.vmm.runner")
        module.run_vm = self._run_vm  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "aovisor.vmm.runner", module)

    def _run_vm(self, config: VmConfig) -> int:
        self.configs.append(config)
        return self.behaviour(config)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    return FakeRunner(monkeypatch)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aovisor: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --- --version, --help, usage errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["--version"], ["-V"], ["--version", "-v"], ["-v", "--version", "--cpus", "x"]]
)
def test_version_prints_name_and_version_like_cloud_hypervisor(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 0
    assert out == f"aovisor v{__version__}\n"
    assert re.fullmatch(r"aovisor v\d+\.\d+\.\d+\n", out)  # the shape libvirt's ch driver parses
    assert err == ""


def test_help_exits_zero_and_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for option in ("--kernel", "--cpus", "--memory", "--serial", "--console", "--hypervisor", "--disk"):
        assert option in out


def test_missing_kernel(capsys: pytest.CaptureFixture[str], runner: FakeRunner) -> None:
    status, out, err = run(capsys, "--memory", "size=1G")
    assert status == 2
    assert out == ""
    assert_one_error_line(err, "missing --kernel")
    assert runner.configs == []


@pytest.mark.parametrize("argv", [["--bogus"], ["--kernel"], ["--mem", "1G"], ["stray"], ["--cpus"]])
def test_usage_errors_are_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, argv: list[str]
) -> None:
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert_one_error_line(err)
    assert runner.configs == []


def test_unknown_option_is_named(capsys: pytest.CaptureFixture[str], kernel: str) -> None:
    status, _, err = run(capsys, "--kernel", kernel, "--bogus")
    assert status == 2
    assert_one_error_line(err, "--bogus")


def test_kernel_that_does_not_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    status, _, err = run(capsys, "--kernel", missing)
    assert status == 2
    assert_one_error_line(err, "--kernel", missing, "No such file")


def test_kernel_that_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "--kernel", str(tmp_path))
    assert status == 2
    assert_one_error_line(err, "--kernel", str(tmp_path), "directory")


def test_kernel_that_is_unreadable(
    capsys: pytest.CaptureFixture[str], kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.chmod(kernel, 0)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would for a user
        real_open = os.open

        def deny(path: str, flags: int, mode: int = 0o777) -> int:
            if path == kernel:
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, flags, mode)

        monkeypatch.setattr(os, "open", deny)
    status, _, err = run(capsys, "--kernel", kernel)
    assert status == 2
    assert_one_error_line(err, "--kernel", kernel, "Permission denied")


def test_initramfs_that_does_not_exist(
    capsys: pytest.CaptureFixture[str], kernel: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "initrd.img")
    status, _, err = run(capsys, "--kernel", kernel, "--initramfs", missing)
    assert status == 2
    assert_one_error_line(err, "--initramfs", missing)


@pytest.mark.parametrize("option", ["--kernel", "--log-file"])
def test_path_with_nul_byte(capsys: pytest.CaptureFixture[str], kernel: str, option: str) -> None:
    status, _, err = run(capsys, "--kernel", kernel, option, "bad\0path")
    assert status == 2
    assert_one_error_line(err, option, "is not a valid path")


def test_kernel_may_be_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    assert parse_args(["--kernel", str(fifo)]).payload.kernel == str(fifo)


# --- building the VmConfig -------------------------------------------------------------------------------


def test_defaults(kernel: str) -> None:
    config = parse_args(["--kernel", kernel])
    assert config.payload.kernel == kernel
    assert config.payload.initramfs is None
    assert config.payload.cmdline == ""
    assert (config.cpus.boot_vcpus, config.cpus.max_vcpus) == (1, 1)
    assert config.memory.size == DEFAULT_MEMORY == 512 << 20
    assert config.serial == OutputConfig(OutputMode.TTY)
    assert config.console == OutputConfig(OutputMode.OFF)
    assert config.hypervisor is None


def test_every_supported_option(kernel: str, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"070701")
    config = parse_args(
        [
            "--kernel", kernel,
            "--initramfs", str(initrd),
            "--cmdline", "console=ttyS0 reboot=k panic=1",
            "--cpus", "boot=4,max=4,kvm_hyperv=off,nested=off",
            "--memory", "size=2G,mergeable=off,shared=off,hugepages=off,prefault=off,hotplug_method=acpi",
            "--serial", f"file={tmp_path}/serial.log",
            "--console", "null",
            "--hypervisor", "kvm",
            "-vv",
            "--log-file", str(tmp_path / "log"),
            "--seccomp", "false",
        ]
    )  # fmt: skip
    assert config.payload.initramfs == str(initrd)
    assert config.payload.cmdline == "console=ttyS0 reboot=k panic=1"
    assert (config.cpus.boot_vcpus, config.cpus.max_vcpus) == (4, 4)
    assert config.memory.size == 2 << 30
    assert config.serial == OutputConfig(OutputMode.FILE, f"{tmp_path}/serial.log")
    assert config.console == OutputConfig(OutputMode.NULL)
    assert config.hypervisor == "kvm"


@pytest.mark.parametrize(
    ("size", "expected"),
    [("64M", 64 << 20), ("1G", 1 << 30), ("131072K", 128 << 20), ("268435456", 256 << 20)],
)
def test_memory_sizes(kernel: str, size: str, expected: int) -> None:
    assert parse_args(["--kernel", kernel, "--memory", f"size={size}"]).memory.size == expected


@pytest.mark.parametrize(
    ("memory", "fragment"),
    [
        ("size=12Q", "--memory: size: '12Q' is not a size"),
        ("size=1.5G", "--memory: size: '1.5G' is not a size"),
        ("size=8M", "--memory: size must be at least 16M"),
        ("size=16777217", "--memory: size must be a multiple of 4K"),
        ("sise=1G", "--memory: unknown key 'sise'"),
    ],
)
def test_bad_memory(capsys: pytest.CaptureFixture[str], kernel: str, memory: str, fragment: str) -> None:
    status, _, err = run(capsys, "--kernel", kernel, "--memory", memory)
    assert status == 2
    assert_one_error_line(err, fragment)


@pytest.mark.parametrize(
    ("cpus", "fragment"),
    [
        ("boot=x", "--cpus: boot: 'x' is not a number"),
        ("boot=0", "--cpus: boot=0 must be between 1 and 254"),
        ("boot=255", "--cpus: boot=255 must be between 1 and 254"),
        ("boot=2,max=1", "--cpus: max must not be smaller than boot"),
        ("boot=4,topology=2:2:1", "--cpus: topology: '2:2:1' is not <threads_per_core>:<cores_per_die>:"),
        ("boot=4,topology=2:x:1:1", "--cpus: topology: '2:x:1:1' is not"),
        ("boot=4,topology=2:-2:1:1", "--cpus: topology: '2:-2:1:1' is not"),
        ("boot=4,topology=2:2:1:2", "--cpus: topology=2:2:1:2 describes 8 vCPUs, not 4"),
        ("boot=1,topology=1:0:1:1", "--cpus: topology=1:0:1:1: every part must be at least 1"),
        # 3 cores need a 2-bit field: 3 * 65 packages reach APIC id 258.
        ("boot=195,topology=1:3:1:65", "--cpus: topology=1:3:1:65 needs APIC ids up to 258"),
        ("boot=2,affinity=[2@[0]]", "--cpus: affinity: vCPU 2 does not exist (vCPUs 0-1)"),
        ("boot=2,affinity=[0@[0],0@[1]]", "--cpus: affinity: vCPU 0 is given twice"),
        ("boot=2,affinity=[0@[]]", "--cpus: affinity: vCPU 0: no host CPUs"),
        ("boot=2,affinity=[0@1]", "--cpus: affinity: '0@1' is not <vcpu>@[<host cpus>]"),
        ("boot=2,affinity=[x@[1]]", "--cpus: affinity: 'x@[1]' is not <vcpu>@[<host cpus>]"),
        ("boot=2,affinity=[0@[a]]", "--cpus: affinity: 'a' in '0@[a]' is not a host CPU or a range of them"),
        ("boot=2,affinity=[0@[3-1]]", "--cpus: affinity: '3-1' in '0@[3-1]' is an empty range"),
        ("boot=2,affinity=0@[1]", "--cpus: affinity: '0@[1]' is not a list"),
    ],
)
def test_bad_cpus(capsys: pytest.CaptureFixture[str], kernel: str, cpus: str, fragment: str) -> None:
    status, _, err = run(capsys, "--kernel", kernel, "--cpus", cpus)
    assert status == 2
    assert_one_error_line(err, fragment)


def test_cpus_boot_in_hex(kernel: str) -> None:
    assert parse_args(["--kernel", kernel, "--cpus", "boot=0x10"]).cpus.boot_vcpus == 16


def test_cpus_affinity_takes_host_cpu_lists_and_ranges(kernel: str) -> None:
    cpus = parse_args(["--kernel", kernel, "--cpus", "boot=4,affinity=[0@[0-2,5],3@[1,1]]"]).cpus
    assert [(a.vcpu, a.host_cpus) for a in cpus.affinity] == [(0, (0, 1, 2, 5)), (3, (1,))]


def test_cpus_topology_is_cloud_hypervisors_four_parts(kernel: str) -> None:
    cpus = parse_args(["--kernel", kernel, "--cpus", "boot=12,topology=2:3:1:2"]).cpus
    assert tuple(cpus.cpu_topology) == (2, 3, 1, 2)
    assert parse_args(["--kernel", kernel, "--cpus", "boot=3"]).cpus.topology is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", OutputConfig(OutputMode.OFF)),
        ("null", OutputConfig(OutputMode.NULL)),
        ("tty", OutputConfig(OutputMode.TTY)),
        ("file=/var/log/vm.log", OutputConfig(OutputMode.FILE, "/var/log/vm.log")),
        ('file="/tmp/a,b.log"', OutputConfig(OutputMode.FILE, "/tmp/a,b.log")),
    ],
)
def test_serial_modes(kernel: str, text: str, expected: OutputConfig) -> None:
    assert parse_args(["--kernel", kernel, "--serial", text]).serial == expected


@pytest.mark.parametrize("text", ["off", "null"])
def test_console_modes(kernel: str, text: str) -> None:
    assert parse_args(["--kernel", kernel, "--console", text]).console == OutputConfig(OutputMode(text))


@pytest.mark.parametrize(
    ("option", "text", "fragment"),
    [
        ("--serial", "", "--serial: give one of off, null, tty, pty, file=PATH, socket=PATH"),
        ("--serial", "tty,off", "--serial: give one mode, not both 'tty' and 'off'"),
        ("--serial", "file=", "--serial: file: needs a path"),
        ("--serial", "tty=1", "--serial: tty: takes no value"),
        ("--serial", "ttyS0", "--serial: unknown key 'ttyS0'"),
        ("--console", "file", "--console: file: needs a value"),
    ],
)
def test_bad_serial_and_console(
    capsys: pytest.CaptureFixture[str], kernel: str, option: str, text: str, fragment: str
) -> None:
    status, _, err = run(capsys, "--kernel", kernel, option, text)
    assert status == 2
    assert_one_error_line(err, fragment)


# --- what is not yet supported ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--fs", "tag=myfs,socket=/tmp/fs.sock"],
        ["--pmem", "file=/tmp/pmem,size=128M"],
        ["--restore", "source_url=file:///tmp/snap"],
        ["--firmware", "/usr/share/ovmf.fd"],
        ["--balloon", "size=0"],
        ["--seccomp", "true"],
        ["--watchdog"],
    ],
)
def test_later_options_are_refused_with_status_2(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str, argv: list[str]
) -> None:
    status, _, err = run(capsys, "--kernel", kernel, *argv)
    assert status == 2
    assert_one_error_line(err, argv[0].partition("=")[0], "is not yet supported")
    assert runner.configs == []


def test_later_option_is_reported_even_without_a_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    # Say what is not supported, not that the kernel is missing.
    status, _, err = run(capsys, "--restore", "source_url=file:///tmp/snap")
    assert status == 2
    assert_one_error_line(err, "--restore is not yet supported")


@pytest.mark.parametrize(
    ("option", "text", "fragment"),
    [
        ("--memory", "size=1G,hugepages=on", "--memory: hugepages=on is not yet supported"),
        ("--memory", "shared=on", "--memory: shared=on is not yet supported"),
        ("--memory", "mergeable=true", "--memory: mergeable=on is not yet supported"),
        ("--memory", "hotplug_size=1G", "--memory: hotplug_size is not yet supported"),
        ("--memory", "hotplug_method=virtio-mem", "--memory: hotplug_method=virtio-mem is not yet supported"),
        ("--memory", "file=/dev/shm/mem", "--memory: file is not yet supported"),
        ("--cpus", "features=amx", "--cpus: features is not yet supported"),
        ("--cpus", "boot=1,max=4", "--cpus: max=4 above boot=1 (vCPU hotplug) is not yet supported"),
        ("--cpus", "kvm_hyperv=on", "--cpus: kvm_hyperv=on is not yet supported"),
        ("--cpus", "nested=on", "--cpus: nested=on is not yet supported"),
        ("--cpus", "profile=foo", "--cpus: profile is not yet supported"),
        ("--cpus", "max_phys_bits=39", "--cpus: max_phys_bits is not yet supported"),
        ("--serial", "socket=/tmp/serial.sock", "--serial: socket is not yet supported"),
        ("--console", "pty", "--console: pty is not yet supported"),
        ("--console", "socket=/tmp/console.sock", "--console: socket is not yet supported"),
        ("--console", "off,iommu=on", "--console: iommu=on is not yet supported"),
        ("--net", "tap=tap0,vhost_user=on", "--net: vhost_user=on is not yet supported"),
        ("--net", "tap=tap0,queue_size=512", "--net: queue_size is not yet supported"),
        ("--vsock", "cid=3,socket=/tmp/v.sock,iommu=on", "--vsock: iommu=on is not yet supported"),
    ],
)
def test_valid_cloud_hypervisor_keys_we_do_not_implement_yet(
    capsys: pytest.CaptureFixture[str], kernel: str, option: str, text: str, fragment: str
) -> None:
    status, _, err = run(capsys, "--kernel", kernel, option, text)
    assert status == 2
    assert_one_error_line(err, fragment)


def test_malformed_value_of_an_unsupported_key_is_reported_as_malformed(
    capsys: pytest.CaptureFixture[str], kernel: str
) -> None:
    status, _, err = run(capsys, "--kernel", kernel, "--memory", "hugepages=maybe")
    assert status == 2
    assert_one_error_line(err, "--memory: hugepages: 'maybe' is not on/off")


# --- hypervisor choice -----------------------------------------------------------------------------------


def test_hypervisor_from_environment(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    monkeypatch.setenv("AOVISOR_HYPERVISOR", "mshv")
    assert parse_args(["--kernel", kernel]).hypervisor == "mshv"


def test_hypervisor_option_overrides_environment(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    monkeypatch.setenv("AOVISOR_HYPERVISOR", "mshv")
    assert parse_args(["--kernel", kernel, "--hypervisor", "kvm"]).hypervisor == "kvm"


def test_empty_environment_variable_means_probe(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    monkeypatch.setenv("AOVISOR_HYPERVISOR", "")
    assert parse_args(["--kernel", kernel]).hypervisor is None


def test_bad_hypervisor_in_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    monkeypatch.setenv("AOVISOR_HYPERVISOR", "xen")
    status, _, err = run(capsys, "--kernel", kernel)
    assert status == 2
    assert_one_error_line(err, "AOVISOR_HYPERVISOR", "'xen'")


def test_bad_hypervisor_option(capsys: pytest.CaptureFixture[str], kernel: str) -> None:
    status, _, err = run(capsys, "--kernel", kernel, "--hypervisor", "xen")
    assert status == 2
    assert_one_error_line(err, "--hypervisor", "xen")


# --- running: the runner's status and errors -------------------------------------------------------------


def test_main_runs_the_vm_with_the_config_and_returns_its_status(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str
) -> None:
    runner.behaviour = lambda config: 7
    status, _, err = run(capsys, "--kernel", kernel, "--memory", "size=1G", "--cpus", "boot=2")
    assert status == 7
    assert err == ""
    [config] = runner.configs
    assert config.memory.size == 1 << 30
    assert config.cpus.boot_vcpus == 2


def raise_(error: BaseException) -> RunVm:
    def run_vm(config: VmConfig) -> int:
        raise error

    return run_vm


@pytest.mark.parametrize(
    ("error", "status", "fragment"),
    [
        (AovisorError("/dev/kvm is not available"), 1, "/dev/kvm is not available"),
        (ConfigError("multi\nline\nmessage"), 1, "multi line message"),
        (OSError(errno.EACCES, os.strerror(errno.EACCES), "/dev/kvm"), 1, "/dev/kvm: Permission denied"),
        (OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)), 1, "Cannot allocate memory"),
    ],
)
def test_runtime_errors_are_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str],
    runner: FakeRunner,
    kernel: str,
    error: BaseException,
    status: int,
    fragment: str,
) -> None:
    runner.behaviour = raise_(error)
    got, _, err = run(capsys, "--kernel", kernel)
    assert got == status
    assert_one_error_line(err, fragment)


def test_ctrl_c_exits_130_quietly(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str
) -> None:
    runner.behaviour = raise_(KeyboardInterrupt())
    status, out, err = run(capsys, "--kernel", kernel)
    assert (status, out, err) == (130, "", "")


def test_bugs_are_not_hidden(runner: FakeRunner, kernel: str) -> None:
    runner.behaviour = raise_(ZeroDivisionError())
    with pytest.raises(ZeroDivisionError):
        main(["--kernel", kernel])


# --- logging ---------------------------------------------------------------------------------------------


def log_from_vm(config: VmConfig) -> int:
    logger = get_logger("aovisor.vmm.fake")
    logger.debug("debug message")
    logger.info("info message")
    logger.warning("warning message")
    return 0


@pytest.mark.parametrize(
    ("flags", "shown"),
    [([], {"W"}), (["-v"], {"W", "I"}), (["-vv"], {"W", "I", "D"}), (["-v", "-v", "-v"], {"W", "I", "D"})],
)
def test_verbosity_levels_on_stderr(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str, flags: list[str], shown: set[str]
) -> None:
    runner.behaviour = log_from_vm
    status, _, err = run(capsys, "--kernel", kernel, *flags)
    assert status == 0
    levels = {m.group(1) for m in re.finditer(r"^ *\d+\.\dms ([DIW]) vmm\.fake: \w+ message$", err, re.M)}
    assert levels == shown


def test_log_file(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str, tmp_path: Path
) -> None:
    runner.behaviour = log_from_vm
    log = tmp_path / "aovisor.log"
    status, _, err = run(capsys, "--kernel", kernel, "-v", "--log-file", str(log))
    assert status == 0
    assert err == ""
    lines = log.read_text().splitlines()
    assert re.fullmatch(r" *\d+\.\dms I aovisor: aovisor v\d+\.\d+\.\d+ starting", lines[0])
    from_vm = [re.sub(r"^ *\d+\.\dms ", "", line) for line in lines if "vmm.fake" in line]
    assert from_vm == ["I vmm.fake: info message", "W vmm.fake: warning message"]


def test_log_file_that_cannot_be_created(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str, tmp_path: Path
) -> None:
    where = str(tmp_path / "no" / "such" / "dir.log")
    status, _, err = run(capsys, "--kernel", kernel, "--log-file", where)
    assert status == 2
    assert_one_error_line(err, "--log-file", where)
    assert runner.configs == []


def test_vcpu_thread_names_appear_in_the_log(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, kernel: str
) -> None:
    import threading

    def run_vm(config: VmConfig) -> int:
        thread = threading.Thread(
            target=lambda: get_logger("aovisor.vmm.vcpu").warning("stopped"), name="vcpu0"
        )
        thread.start()
        thread.join()
        return 0

    runner.behaviour = run_vm
    _, _, err = run(capsys, "--kernel", kernel)
    assert re.search(r"W vmm\.vcpu\[vcpu0\]: stopped$", err, re.M)


# --- robustness ------------------------------------------------------------------------------------------

OPTIONS = ["--kernel", "--initramfs", "--cmdline", "--cpus", "--memory", "--serial", "--console"]
OPTIONS += ["--hypervisor", "-v", "--disk", "--net", "--seccomp", "--watchdog", "--bogus", "-x", "--"]
argv_tokens = st.sampled_from(OPTIONS) | st.text(max_size=12) | st.sampled_from(["size=1G", "boot=2", "tty"])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(st.lists(argv_tokens, max_size=8))
def test_any_argv_gives_a_status_never_a_traceback(
    capsys: pytest.CaptureFixture[str], runner: FakeRunner, argv: list[str]
) -> None:
    status = main(argv)
    _, err = capsys.readouterr()
    assert status in (0, 2)
    if status == 2:
        assert_one_error_line(err)


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AOVISOR_HYPERVISOR"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=60)


def test_python_m_aovisor_bogus_is_one_line_without_traceback() -> None:
    result = run_python("-m", "aovisor", "--bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("aovisor: error: ") and "--bogus" in result.stderr


def test_startup_imports_stay_lean(kernel: str) -> None:
    # `--version` loads neither argparse nor the config model; a bad command line never loads the VMM.
    code = (
        "import sys; from aovisor.cli.main import main\n"
        "assert main(['--version']) == 0\n"
        "assert not {'argparse', 'aovisor.config', 'logging'} & set(sys.modules), sorted(sys.modules)\n"
        f"assert main(['--kernel', {kernel!r}, '--memory', 'size=1Q']) == 2\n"
        "assert not [m for m in sys.modules if m.startswith(('aovisor.vmm', 'aovisor.hypervisor'))]\n"
        "assert 'shutil' not in sys.modules and 'textwrap' not in sys.modules\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
