"""The ``aovisor`` command line: Cloud Hypervisor's options -> a validated :class:`VmConfig` -> the VM runner.

Exit status: what the runner returns when the VM ran; 2 when the command line is wrong (unknown, malformed
or not-yet-supported option, missing kernel file...); 1 when starting or running the VM fails; 130 on Ctrl-C.
Every user error is one line on stderr, ``aovisor: error: <message>``, never a traceback.

Startup is benchmarked against QEMU, so imports are deferred: ``--version`` loads nothing but this module and
the option grammar; argparse only for ``--help`` and command lines with errors (see aovisor.cli.arguments);
the VMM only once the configuration is valid.
"""

from __future__ import annotations

import gc
import os
import sys
import time

from aovisor import __version__
from aovisor.cli.arguments import HYPERVISOR_ENV, HYPERVISORS, PROG, ParserExit, parse_namespace
from aovisor.cli.options import OptionParser, ParsedOptions
from aovisor.errors import AovisorError, ConfigError

# Annotation-only imports, kept off the startup path (mypy treats any `TYPE_CHECKING` name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence
    from types import SimpleNamespace
    from typing import NoReturn

    from aovisor.api.server import ApiSocketSpec
    from aovisor.arch.x86_64.topology import CpuTopology
    from aovisor.config import (
        CpusConfig,
        DiskConfig,
        MemoryConfig,
        NetConfig,
        OutputConfig,
        RngConfig,
        VcpuAffinity,
        VmConfig,
        VsockConfig,
    )
    from aovisor.vmm.events import EventMonitor

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C

# The keys of Cloud Hypervisor's grammar (vmm/src/config.rs), so that a valid CH key we do not implement yet
# is reported as "not yet supported" rather than "unknown".
CPUS_OPTION = OptionParser(
    "--cpus",
    keys=(
        "boot",
        "max",
        "topology",
        "kvm_hyperv",
        "max_phys_bits",
        "affinity",
        "features",
        "nested",
        "core_scheduling",
        "profile",
    ),
)
MEMORY_OPTION = OptionParser(
    "--memory",
    keys=(
        "size",
        "mergeable",
        "shared",
        "hugepages",
        "hugepage_size",
        "hotplug_method",
        "hotplug_size",
        "hotplugged_size",
        "prefault",
        "reserve",
        "thp",
        "file",
    ),
)
_OUTPUT_FLAGS = ("off", "null", "tty", "pty")
_OUTPUT_KEYS = ("file", "socket")
SERIAL_OPTION = OptionParser("--serial", keys=_OUTPUT_KEYS, flags=_OUTPUT_FLAGS)
CONSOLE_OPTION = OptionParser(
    "--console", keys=(*_OUTPUT_KEYS, "iommu", "id", "pci_segment", "pci_device_id"), flags=_OUTPUT_FLAGS
)
DISK_OPTION = OptionParser(
    "--disk",
    keys=(
        "path",
        "readonly",
        "direct",
        "id",
        "serial",
        "iommu",
        "num_queues",
        "queue_size",
        "image_type",
        "vhost_user",
        "socket",
        "bw_size",
        "bw_one_time_burst",
        "bw_refill_time",
        "ops_size",
        "ops_one_time_burst",
        "ops_refill_time",
        "pci_segment",
        "rate_limit_group",
        "queue_affinity",
    ),
)
RNG_OPTION = OptionParser("--rng", keys=("src", "iommu"))
NET_OPTION = OptionParser(
    "--net",
    keys=(
        "tap",
        "ip",
        "mask",
        "mac",
        "host_mac",
        "mtu",
        "iommu",
        "num_queues",
        "queue_size",
        "id",
        "vhost_user",
        "socket",
        "vhost_mode",
        "fd",
        "offload_tso",
        "offload_ufo",
        "offload_csum",
        "pci_segment",
        "bw_size",
        "bw_one_time_burst",
        "bw_refill_time",
        "ops_size",
        "ops_one_time_burst",
        "ops_refill_time",
    ),
)
VSOCK_OPTION = OptionParser("--vsock", keys=("cid", "socket", "iommu", "id", "pci_segment"))

# `--api-socket /run/vm.sock` means path=/run/vm.sock, as in Cloud Hypervisor.
API_SOCKET_OPTION = OptionParser("--api-socket", keys=("path", "fd"), bare_key="path")
EVENT_MONITOR_OPTION = OptionParser("--event-monitor", keys=("path", "fd"))
# The VM options that only make sense with --kernel (with --api-socket alone, vm.create gives them).
_VM_OPTIONS = (
    *("initramfs", "cmdline", "cpus", "memory", "serial", "console", "disk", "rng", "net", "vsock"),
    "virtio_transport",
)
# The Cloud Hypervisor release whose interface `cloud-hypervisor --version` claims (see _print_version).
CH_COMPATIBLE_VERSION = "28.0.0"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aovisor`` with ``argv`` and return the exit status.

    Without ``argv`` this is the ``aovisor`` program (``sys.argv[1:]``), and every run but ``--version`` and
    ``image`` ends the process here instead of returning (see :func:`_end_process`).
    """
    started = time.time()
    args = sys.argv[1:] if argv is None else list(argv)
    # libvirt probes `--version` to gate features: answer it without even importing argparse.
    if args in (["--version"], ["-V"]):
        return _print_version()
    if args[:1] == ["image"]:  # `aovisor image build`: the default guest's builder, loaded only for it
        from aovisor.image.cli import main as image_main

        return image_main(args[1:])
    # Start-up allocates tens of thousands of objects that live as long as the process (modules, classes,
    # the VM): automatic collections would scan them again and again and free nothing.  The collector stays
    # off until the VM is booted (aovisor.vmm.runner turns it back on, and freezes what lives for good).
    collecting = gc.isenabled()
    gc.disable()
    try:
        status = _run(args, started)
    finally:
        if collecting:
            gc.enable()
    if argv is None:
        _end_process(status)
    return status


def _run(args: list[str], started: float) -> int:
    """:func:`main` for a VM or the API: parse, configure logging, hand over to the runner."""
    try:
        namespace = parse_namespace(args)
        if namespace.version:
            return _print_version()
        api_socket = None if namespace.api_socket is None else api_socket_spec(namespace.api_socket)
        config = _config_unless_api_only(namespace, api_socket is not None)
        log_setup = _LogSetup(namespace.verbose, namespace.log_file, started)
    except ParserExit as e:  # --help: argparse already printed it
        return e.status
    except AovisorError as e:
        return _fail(e, EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        # Imported only now: a bad command line must fail fast, without loading the VMM.
        if api_socket is None and namespace.event_monitor is None:
            from aovisor.vmm.runner import run_vm

            assert config is not None  # only the API mode runs without a VM config
            return run_vm(config)
        from aovisor.vmm.runner import run_vmm

        events = None if namespace.event_monitor is None else event_monitor(namespace.event_monitor)
        return run_vmm(
            config, api_socket=api_socket, events=events, hypervisor=_hypervisor(namespace.hypervisor)
        )
    except AovisorError as e:
        _log_traceback()
        return _fail(e, EXIT_FAILURE)
    except OSError as e:  # the host refused something (/dev/kvm, a file): the user can act on it
        _log_traceback()
        return _fail(e, EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        log_setup.close()


def _config_unless_api_only(namespace: SimpleNamespace, api: bool) -> VmConfig | None:
    """The VM config; ``None`` when only the API is served (``--api-socket`` without ``--kernel``)."""
    if api and namespace.kernel is None:
        given = [f"--{name}" for name in _VM_OPTIONS if getattr(namespace, name, None)]
        if given:
            raise ConfigError(f"{given[0]} needs --kernel (without it, vm.create describes the VM)")
        return None
    return build_config(namespace)


def api_socket_spec(text: str) -> ApiSocketSpec:
    """``--api-socket path=PATH|fd=N`` (a bare ``PATH`` is ``path=PATH``)."""
    from aovisor.api.server import ApiSocketSpec

    opts = API_SOCKET_OPTION.parse(text)
    path, fd = opts.get_str("path"), opts.get_int("fd", -1)
    if (path is None) == (fd < 0):
        raise ConfigError("--api-socket: give exactly one of path=PATH or fd=N")
    return ApiSocketSpec(path=path) if path is not None else ApiSocketSpec(fd=fd)


def event_monitor(text: str) -> EventMonitor:
    """``--event-monitor path=PATH|fd=N``: open where Cloud Hypervisor's JSON events are written."""
    from aovisor.vmm.events import EventMonitor

    opts = EVENT_MONITOR_OPTION.parse(text)
    fd = opts.get_int("fd", -1)
    return EventMonitor.open(path=opts.get_str("path"), fd=None if fd < 0 else fd)


def parse_args(argv: Sequence[str]) -> VmConfig:
    """The validated :class:`VmConfig` that ``argv`` describes; raises :class:`ConfigError` otherwise.

    Logging options and ``--version`` are accepted and ignored here (see :func:`main`).
    """
    try:
        return build_config(parse_namespace(argv))
    except ParserExit as e:
        raise ConfigError(f"argument parsing stopped (status {e.status})") from None


def build_config(namespace: SimpleNamespace) -> VmConfig:
    """Turn parsed arguments into a validated :class:`VmConfig`; every error names its option."""
    from aovisor.config import OutputConfig, OutputMode, PayloadConfig, VirtioTransport, VmConfig

    # The option grammars first: they are pure syntax, and their errors point at the typo.
    cpus = None if namespace.cpus is None else cpus_config(namespace.cpus)
    memory = None if namespace.memory is None else memory_config(namespace.memory)
    serial = None if namespace.serial is None else serial_config(namespace.serial)
    console = None if namespace.console is None else console_config(namespace.console)
    disks = tuple(disk_config(text) for text in namespace.disk or ())
    rng = None if namespace.rng is None else rng_config(namespace.rng)
    nets = tuple(net_config(text) for text in namespace.net or ())
    vsock = None if namespace.vsock is None else vsock_config(namespace.vsock)
    hypervisor = _hypervisor(namespace.hypervisor)

    if namespace.kernel is None:
        raise ConfigError("missing --kernel: give the guest kernel to boot (an ELF vmlinux or a bzImage)")
    payload = PayloadConfig(
        kernel=_readable_file("--kernel", namespace.kernel),
        initramfs=None if namespace.initramfs is None else _readable_file("--initramfs", namespace.initramfs),
        cmdline=namespace.cmdline or "",
    )
    config = VmConfig(payload=payload, hypervisor=hypervisor, disks=disks, nets=nets, vsock=vsock)
    if namespace.virtio_transport is not None:
        config = config._replace(virtio_transport=VirtioTransport(namespace.virtio_transport))
    if rng is not None:
        config = config._replace(rng=rng)
    if cpus is not None:
        config = config._replace(cpus=cpus)
    if memory is not None:
        config = config._replace(memory=memory)
    if serial is not None:
        config = config._replace(serial=serial)
    if console is not None:
        config = config._replace(console=console)
        if console.mode is OutputMode.TTY and serial is None:
            # The terminal goes to the virtio console, and the serial port to nowhere: Cloud Hypervisor's
            # defaults (serial null, console tty), which an explicit `--console tty` asks for.
            config = config._replace(serial=OutputConfig(OutputMode.NULL))
    config.validate()
    return config


def cpus_config(text: str) -> CpusConfig:
    """``--cpus boot=N[,max=M,...]``; only what we implement is accepted, the rest is "not yet supported"."""
    from aovisor.config import CpusConfig

    opts = CPUS_OPTION.parse(text)
    boot = opts.get_int("boot", 1)
    max_vcpus = opts.get_int("max", boot)
    if max_vcpus > boot:
        raise ConfigError(f"--cpus: max={max_vcpus} above boot={boot} (vCPU hotplug) is not yet supported")
    # Off is what we do (no Hyper-V enlightenments, no VMX/SVM in CPUID), so only `on` is refused.
    _refuse_if_true(opts, "kvm_hyperv", "nested")
    _refuse_if_given(opts, "max_phys_bits", "features", "core_scheduling", "profile")
    return CpusConfig(
        boot_vcpus=boot, max_vcpus=max_vcpus, topology=_cpu_topology(opts), affinity=_cpu_affinity(opts)
    )


def _cpu_affinity(opts: ParsedOptions) -> tuple[VcpuAffinity, ...]:
    """``affinity=[<vcpu>@[<host cpu>,<first>-<last>,...],...]`` (CH's grammar): host CPUs per vCPU."""
    from aovisor.config import VcpuAffinity

    entries = opts.get_list("affinity")
    if entries is None:
        return ()
    out = []
    for entry in entries:
        vcpu, at, cpus = entry.partition("@")
        if not at or not vcpu.strip().isdigit() or not (cpus.startswith("[") and cpus.endswith("]")):
            raise opts.error("affinity", f"{entry!r} is not <vcpu>@[<host cpus>]")
        host_cpus: list[int] = []
        for item in filter(None, (part.strip() for part in cpus[1:-1].split(","))):
            first, dash, last = item.partition("-")
            if not first.isdigit() or (dash and not last.isdigit()):
                raise opts.error("affinity", f"{item!r} in {entry!r} is not a host CPU or a range of them")
            if dash and int(last) < int(first):
                raise opts.error("affinity", f"{item!r} in {entry!r} is an empty range")
            host_cpus += range(int(first), int(last if dash else first) + 1)
        out.append(VcpuAffinity(int(vcpu), tuple(sorted(set(host_cpus)))))
    return tuple(out)


def _cpu_topology(opts: ParsedOptions) -> CpuTopology | None:
    """``topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>`` (CH's grammar)."""
    from aovisor.arch.x86_64.topology import CpuTopology

    text = opts.get_str("topology")
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        raise opts.error(
            "topology", f"{text!r} is not <threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>"
        )
    return CpuTopology(*(int(part) for part in parts))


def memory_config(text: str) -> MemoryConfig:
    """``--memory size=...[,...]``; only what we implement is accepted, the rest is "not yet supported"."""
    from aovisor.config import DEFAULT_MEMORY, MemoryConfig

    opts = MEMORY_OPTION.parse(text)
    size = opts.get_size("size", DEFAULT_MEMORY)
    # Off is what we do (private anonymous memory, no KSM, no huge pages, no prefault, no madvise).
    _refuse_if_true(opts, "mergeable", "shared", "hugepages", "prefault", "reserve", "thp")
    for key in ("hugepage_size", "hotplug_size", "hotplugged_size"):
        opts.get_size(key, 0)  # a malformed size is reported as such before "not yet supported"
    if opts.get_choice("hotplug_method", ("acpi", "virtio-mem"), "acpi") != "acpi":
        raise ConfigError("--memory: hotplug_method=virtio-mem is not yet supported")
    _refuse_if_given(opts, "hugepage_size", "hotplug_size", "hotplugged_size", "file")
    return MemoryConfig(size=size)


def disk_config(text: str) -> DiskConfig:
    """``--disk path=IMAGE[,readonly=on|off,direct=on|off,id=ID,serial=SERIAL]`` (a raw image)."""
    from aovisor.config import DiskConfig

    opts = DISK_OPTION.parse(text)
    path = opts.get_str("path")
    if path is None:
        raise opts.error("path", "missing: give the disk image (path=IMAGE)")
    readonly = opts.get_bool("readonly", False)
    direct = opts.get_bool("direct", False)
    _refuse_if_true(opts, "iommu", "vhost_user")
    if opts.get_int("num_queues", 1) != 1:
        raise opts.error("num_queues", "only 1 queue is supported yet")
    if opts.get_choice("image_type", ("raw", "qcow2", "vhd", "vhdx", "fixed_vhd"), "raw") != "raw":
        raise opts.error("image_type", "only raw images are supported yet")
    _refuse_if_given(
        opts,
        "queue_size",
        "socket",
        "bw_size",
        "bw_one_time_burst",
        "bw_refill_time",
        "ops_size",
        "ops_one_time_burst",
        "ops_refill_time",
        "pci_segment",
        "rate_limit_group",
        "queue_affinity",
    )
    _check_image(opts, path, readonly)
    serial = opts.get_str("serial")
    if serial is not None and (not serial.isascii() or len(serial) > 20):
        raise opts.error("serial", f"{serial!r} is not 1-20 ASCII characters")
    return DiskConfig(path, readonly=readonly, direct=direct, id=opts.get_str("id"), serial=serial)


def _check_image(opts: ParsedOptions, path: str, readonly: bool) -> None:
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise opts.error("path", f"cannot open {path!r}: {e.strerror}") from None
    except ValueError:  # an embedded NUL
        raise opts.error("path", f"{path!r} is not a valid path") from None
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise opts.error("path", f"{path!r} is not a disk image file or block device")
    if not os.access(path, os.R_OK if readonly else os.R_OK | os.W_OK):
        what = "readable" if readonly else "writable (use readonly=on)"
        raise opts.error("path", f"{path!r} is not {what}")


def rng_config(text: str) -> RngConfig:
    """``--rng src=PATH`` (default /dev/urandom); the device is present whether or not it is given."""
    from aovisor.config import DEFAULT_RNG_SOURCE, RngConfig

    opts = RNG_OPTION.parse(text)
    _refuse_if_true(opts, "iommu")
    src = opts.get_str("src") or str(DEFAULT_RNG_SOURCE)
    if not os.access(src, os.R_OK):
        raise opts.error("src", f"cannot read {src!r}")
    return RngConfig(src=src)


def net_config(text: str) -> NetConfig:
    """``--net tap=NAME[,mac=MAC,ip=IPV4,mask=IPV4,id=ID,fd=[N,...],offload_csum=,offload_tso=]``."""
    import ipaddress

    from aovisor.config import NetConfig
    from aovisor.virtio.devices.net import parse_mac, random_mac
    from aovisor.virtio.devices.tap import valid_interface_name

    opts = NET_OPTION.parse(text)
    tap = opts.get_str("tap")
    if tap is not None and not valid_interface_name(tap):
        raise opts.error("tap", f"{tap!r} is not a valid interface name (1-15 characters, no / : or spaces)")
    mac = opts.get_str("mac")
    if mac is not None:
        try:
            mac = ":".join(f"{b:02x}" for b in parse_mac(mac))
        except ValueError as e:
            raise opts.error("mac", str(e)) from None
    else:
        mac = random_mac()  # chosen once, so a guest reboot keeps its address
    addresses: dict[str, str | None] = {}
    for key in ("ip", "mask"):
        value = opts.get_str(key)
        if value is not None:
            try:
                value = str(ipaddress.IPv4Address(value))
            except ValueError:
                raise opts.error(key, f"{value!r} is not an IPv4 address") from None
        addresses[key] = value
    if addresses["mask"] is not None:
        bits = int(ipaddress.IPv4Address(addresses["mask"]))
        if bits and (bits | (bits - 1)) != 0xFFFF_FFFF and bits != 0xFFFF_FFFF:
            raise opts.error("mask", f"{addresses['mask']} is not a contiguous netmask")
    fds: tuple[int, ...] = ()
    if opts.has("fd"):
        text = opts.get_str("fd") or ""
        items = opts.get_list("fd") if text.startswith("[") else [text]
        try:
            fds = tuple(int(item) for item in items or ())
        except ValueError:
            raise opts.error("fd", f"{text!r} is not a file descriptor number or list") from None
        if any(fd < 0 for fd in fds):
            raise opts.error("fd", "file descriptors are not negative")
        if tap is not None and fds:
            raise opts.error("fd", "give either tap= or fd=, not both")
    _refuse_if_true(opts, "iommu", "vhost_user", "offload_ufo")
    if opts.get_int("num_queues", 2) != 2:
        raise opts.error("num_queues", "only one queue pair (num_queues=2) is supported yet")
    _refuse_if_given(
        opts,
        *("host_mac", "mtu", "queue_size", "socket", "vhost_mode", "pci_segment", "bw_size"),
        *("bw_one_time_burst", "bw_refill_time", "ops_size", "ops_one_time_burst", "ops_refill_time"),
    )
    offload_csum = opts.get_bool("offload_csum", True)
    offload_tso = opts.get_bool("offload_tso", True)
    if offload_tso and not offload_csum and opts.has("offload_tso"):
        raise opts.error("offload_tso", "needs offload_csum=on")
    return NetConfig(
        tap=tap,
        fds=fds,
        mac=mac,
        ip=addresses["ip"],
        mask=addresses["mask"],
        id=opts.get_str("id"),
        offload_csum=offload_csum,
        offload_tso=offload_tso and offload_csum,
    )


def vsock_config(text: str) -> VsockConfig:
    """``--vsock cid=N,socket=PATH[,id=ID]``: hybrid vsock, the host side a Unix socket at PATH."""
    from aovisor.config import VSOCK_MAX_GUEST_CID, VSOCK_MIN_GUEST_CID, VsockConfig

    opts = VSOCK_OPTION.parse(text)
    if not opts.has("cid"):
        raise opts.error("cid", "missing: give the guest's context id (cid=3 or above)")
    cid = opts.get_int("cid", 0)
    if not VSOCK_MIN_GUEST_CID <= cid <= VSOCK_MAX_GUEST_CID:
        span = f"{VSOCK_MIN_GUEST_CID} to {VSOCK_MAX_GUEST_CID}"
        raise opts.error("cid", f"{cid} is reserved or too large (use {span})")
    socket = opts.get_str("socket")
    if socket is None:
        raise opts.error("socket", "missing: give the host-side Unix socket path (socket=PATH)")
    parent = os.path.dirname(socket) or "."
    if not os.path.isdir(parent):
        raise opts.error("socket", f"the directory of {socket!r} does not exist")
    if len(os.fsencode(socket)) > 100:  # sun_path holds 108 bytes, and "_<port>" is appended for the guest
        raise opts.error("socket", f"{socket!r} is too long for a Unix socket path")
    _refuse_if_true(opts, "iommu")
    _refuse_if_given(opts, "pci_segment")
    return VsockConfig(cid=cid, socket=socket, id=opts.get_str("id"))


def serial_config(text: str) -> OutputConfig:
    """``--serial off|null|tty|pty|file=PATH`` (``socket=PATH`` is not yet supported)."""
    return _output_config(SERIAL_OPTION, text, supported=("off", "null", "tty", "pty", "file"))


def console_config(text: str) -> OutputConfig:
    """``--console off|null|tty|file=PATH``: the virtio console (the guest's /dev/hvc0)."""
    opts = CONSOLE_OPTION.parse(text)
    _refuse_if_true(opts, "iommu")
    _refuse_if_given(opts, "id", "pci_segment", "pci_device_id")
    return _output_config(CONSOLE_OPTION, text, supported=("off", "null", "tty", "file"))


def _output_config(parser: OptionParser, text: str, supported: tuple[str, ...]) -> OutputConfig:
    from aovisor.config import OutputConfig, OutputMode

    opts = parser.parse(text)
    option = parser.option
    modes = [key for key in opts.given() if key in (*_OUTPUT_FLAGS, *_OUTPUT_KEYS)]
    if not modes:
        raise ConfigError(f"{option}: give one of off, null, tty, pty, file=PATH, socket=PATH")
    if len(modes) > 1:
        raise ConfigError(f"{option}: give one mode, not both {modes[0]!r} and {modes[1]!r}")
    mode = modes[0]
    if mode not in supported:
        raise ConfigError(f"{option}: {mode} is not yet supported")
    _refuse_if_given(opts, *(k for k in opts.given() if k != mode and k in (*_OUTPUT_FLAGS, *_OUTPUT_KEYS)))
    if mode != "file":
        return OutputConfig(OutputMode(mode))
    path = opts.get_str("file")
    if path is None:
        raise opts.error("file", "needs a path (file=PATH)")
    return OutputConfig(OutputMode.FILE, path)


def _refuse_if_true(opts: ParsedOptions, *keys: str) -> None:
    for key in keys:
        if opts.get_bool(key, False):
            raise ConfigError(f"{opts.option}: {key}=on is not yet supported")


def _refuse_if_given(opts: ParsedOptions, *keys: str) -> None:
    for key in keys:
        if opts.has(key):
            raise ConfigError(f"{opts.option}: {key} is not yet supported")


def _hypervisor(given: str | None) -> str | None:
    if given is not None:
        return given  # argparse checked the choice
    from_env = os.environ.get(HYPERVISOR_ENV, "").strip()
    if not from_env:
        return None  # probe: KVM first, then MSHV
    if from_env not in HYPERVISORS:
        raise ConfigError(f"{HYPERVISOR_ENV}: unknown hypervisor {from_env!r} (use kvm or mshv)")
    return from_env


def _readable_file(option: str, text: str) -> str:
    """``text``, after checking that it names a file we can read (the loader reads it later)."""
    import stat

    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer here.
        fd = os.open(text, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"{option}: cannot read {text!r}: {e.strerror}") from None
    except ValueError:  # an embedded NUL: no such path can exist
        raise ConfigError(f"{option}: {text!r} is not a valid path") from None
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    if is_dir:
        raise ConfigError(f"{option}: {text!r} is a directory, not a file")
    return text


def _print_version() -> int:
    """``aovisor vX.Y.Z``; installed under Cloud Hypervisor's name, the CH release whose interface we follow.

    libvirt's ch driver runs ``cloud-hypervisor --version``, requires ``cloud-hypervisor v<X.Y.Z>`` and gates
    features on the version.  v28.0.0 is the claim that is true of aovisor: from v28 libvirt sends the
    ``payload`` object (which we take) and from v22 several TAP fds per ``vm.add-net`` (which we take);
    from v36 it would ask for a serial port on a Unix socket and from v40 restores, which we lack.
    """
    if os.path.basename(sys.argv[0]) == "cloud-hypervisor":
        print(f"cloud-hypervisor v{CH_COMPATIBLE_VERSION} (aovisor v{__version__})")
    else:
        print(f"{PROG} v{__version__}")
    return 0


def _end_process(status: int) -> NoReturn:
    """Exit without the interpreter's teardown, which frees every module and object one by one: several
    milliseconds of each run (start-up to exit is benchmarked against QEMU) for nothing, since the VMM has
    closed its VM, devices, files and log handler already, and its threads are daemons."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or its reader gone (EPIPE): nothing more can be said
            pass
    os._exit(status)


def _fail(error: BaseException, status: int) -> int:
    if isinstance(error, OSError) and error.strerror:
        message = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    else:
        message = str(error) or type(error).__name__
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)  # always one line
    return status


_LOG_FORMAT = "%(ms)8.1fms %(levelname).1s %(origin)s: %(message)s"


class _LogSetup:
    """The command line's log handler: stderr or ``--log-file``, at the level ``-v`` asks for.

    Without ``-v`` or ``--log-file`` only warnings and errors are shown, and a plain run has none: the handler
    (and :mod:`logging` itself) is then set up by the first warning, never at start-up (see aovisor.logs).
    """

    def __init__(self, verbosity: int, log_file: str | None, started: float) -> None:
        from aovisor import logs  # not at the top: `--version` loads nothing beyond this module

        self.level = logs.WARNING if verbosity == 0 else logs.INFO if verbosity == 1 else logs.DEBUG
        self.log_file, self.started = log_file, started
        self.handler: logging.Handler | None = None
        if verbosity == 0 and log_file is None:
            logs.defer_setup(self.level, self.install)
        else:
            self.install()
            logs.get_logger("aovisor").info("%s v%s starting", PROG, __version__)

    def install(self) -> None:
        """Log to stderr or the file: ``   12.3ms I vmm.runner: message`` (ms since :func:`main` started)."""
        import logging

        started = self.started

        def stamp(record: logging.LogRecord) -> bool:
            record.ms = (record.created - started) * 1000
            origin = record.name.removeprefix("aovisor.")
            if record.threadName != "MainThread":
                origin = f"{origin}[{record.threadName}]"  # vCPU threads are named vcpuN
            record.origin = origin
            return True

        handler: logging.Handler
        if self.log_file is None:
            handler = logging.StreamHandler(sys.stderr)
        else:
            try:
                handler = logging.FileHandler(self.log_file, mode="w", encoding="utf-8")  # like CH: truncate
            except OSError as e:
                raise ConfigError(f"--log-file: cannot open {self.log_file!r}: {e.strerror}") from None
            except ValueError:  # an embedded NUL
                raise ConfigError(f"--log-file: {self.log_file!r} is not a valid path") from None
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.addFilter(stamp)
        logger = logging.getLogger("aovisor")
        logger.setLevel(self.level)
        logger.addHandler(handler)
        self.handler = handler

    def close(self) -> None:
        from aovisor import logs

        logs.reset()  # main() may run again in this process (tests, the Python API)
        if self.handler is not None:
            import logging

            logging.getLogger("aovisor").removeHandler(self.handler)
            self.handler.close()


def _log_traceback() -> None:
    from aovisor import logs

    logs.get_logger("aovisor").debug("error details", exc_info=True)
