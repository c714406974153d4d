"""The ``aovisor`` command line's arguments: one table, read by a small parser and by argparse.

Importing and building an argparse parser is ~10 ms of a VM's start-up here (argparse pulls in ``gettext``
and ``locale``), and start-up is benchmarked against QEMU.  So :func:`parse_namespace` first tries
:func:`_parse_plain`, which takes a well-formed command line of the options in :data:`ARGUMENTS` and
nothing else; anything it does not take at once (``--help``, an unknown or misspelt option, a missing or
``-``-led value, a bad choice) goes to the argparse parser built from the same table, which accepts it or
reports the error (tests/unit/test_cli_arguments.py checks that the two agree).
"""

from __future__ import annotations

import os
import sys

from aovisor.errors import ConfigError

# Annotation-only imports: `aovisor --version` loads nothing beyond aovisor's CLI modules, not even typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import SimpleNamespace
    from typing import Any, NoReturn

PROG = "aovisor"
HYPERVISOR_ENV = "AOVISOR_HYPERVISOR"
HYPERVISORS = ("kvm", "mshv")

# Cloud Hypervisor options that later work will implement.  They are not arguments of the table (nothing
# could be done with their values); an unrecognized argument that names one is reported as "not yet
# supported".
LATER_OPTIONS = (
    "--fs",
    "--pmem",
    "--restore",
    "--firmware",
    "--balloon",
    "--device",
    "--user-device",
    "--vdpa",
    "--numa",
    "--memory-zone",
    "--pci-segment",
    "--platform",
    "--tpm",
    "--watchdog",
    "--pvpanic",
    "--rate-limit-group",
    "--debug-console",
    "--gdb",
    "--landlock",
    "--landlock-rules",
    "--log-format",
    "--no-shutdown",
)

# How an argument takes its value(s), as argparse actions: "value" (store one), "flag" (store_true),
# "count" (count repeats: -v, -vv), "list" (nargs="+", action="extend": one or more, repeatable).
_VALUE, _FLAG, _COUNT, _LIST = "value", "flag", "count", "list"


class Argument:
    """One option: its spellings, where its value goes, how it takes values, and its ``--help`` text."""

    __slots__ = ("choices", "dest", "flags", "group", "help", "kind", "metavar")

    def __init__(
        self,
        flags: tuple[str, ...],
        dest: str,
        kind: str,
        help: str,
        metavar: str | None = None,
        choices: tuple[str, ...] | None = None,
        group: str | None = None,  # the --help section; None: the general options
    ) -> None:
        self.flags, self.dest, self.kind, self.help = flags, dest, kind, help
        self.metavar, self.choices, self.group = metavar, choices, group


_VM, _CONTROL = "virtual machine", "control"

ARGUMENTS = (
    Argument(("-V", "--version"), "version", _FLAG, f"print '{PROG} vX.Y.Z' and exit"),
    Argument(("-v",), "verbose", _COUNT, "more logging: -v info, -vv debug"),
    Argument(("--log-file",), "log_file", _VALUE, "write the log there instead of stderr", "PATH"),
    Argument(
        ("--hypervisor",),
        "hypervisor",
        _VALUE,
        f"backend (default: ${HYPERVISOR_ENV}, else probe kvm, mshv)",
        "kvm|mshv",
        HYPERVISORS,
    ),
    Argument(
        ("--seccomp",),
        "seccomp",
        _VALUE,
        "only 'false' for now: no seccomp filter",
        "false",
        ("true", "false", "log", "errno"),
    ),
    Argument(
        ("--kernel",), "kernel", _VALUE, "guest kernel: ELF vmlinux (PVH) or bzImage", "PATH", group=_VM
    ),
    Argument(("--initramfs",), "initramfs", _VALUE, "initial ramdisk", "PATH", group=_VM),
    Argument(("--cmdline",), "cmdline", _VALUE, "kernel command line", "STR", group=_VM),
    Argument(
        ("--cpus",),
        "cpus",
        _VALUE,
        "vCPUs (default boot=1)",
        "boot=N[,max=N,topology=T:C:D:P,affinity=[VCPU@[CPUS],...]]",
        group=_VM,
    ),
    Argument(
        ("--memory",),
        "memory",
        _VALUE,
        "guest RAM with K/M/G/T suffix (default size=512M)",
        "size=SIZE",
        group=_VM,
    ),
    Argument(
        ("--serial",), "serial", _VALUE, "COM1 output (default tty)", "off|null|tty|file=PATH", group=_VM
    ),
    Argument(
        ("--console",),
        "console",
        _VALUE,
        "virtio-console, the guest's hvc0 (default off; tty makes the serial port null unless --serial)",
        "off|null|tty|file=PATH",
        group=_VM,
    ),
    Argument(
        ("--disk",),
        "disk",
        _LIST,
        "virtio-blk disk on a raw image (repeat for more disks)",
        "path=IMAGE[,readonly=on,direct=on,id=,serial=]",
        group=_VM,
    ),
    Argument(
        ("--rng",), "rng", _VALUE, "virtio-rng entropy source (default /dev/urandom)", "src=PATH", group=_VM
    ),
    Argument(
        ("--net",),
        "net",
        _LIST,
        "virtio-net on a TAP (created if absent; ip/mask given to the host side; repeat for more)",
        "tap=NAME[,mac=MAC,ip=IPV4,mask=IPV4,id=,fd=]",
        group=_VM,
    ),
    Argument(
        ("--vsock",),
        "vsock",
        _VALUE,
        "virtio-vsock, host side on a Unix socket (CONNECT <port>; guest connections to PATH_<port>)",
        "cid=N,socket=PATH",
        group=_VM,
    ),
    Argument(
        ("--virtio-transport",),
        "virtio_transport",
        _VALUE,
        "how virtio devices appear: PCI functions (default), MMIO windows described in ACPI, or MMIO "
        "windows named on the kernel command line (virtio_mmio.device=, as Firecracker)",
        "pci|mmio|mmio-cmdline",
        ("pci", "mmio", "mmio-cmdline"),
        group=_VM,
    ),
    Argument(
        ("--api-socket",),
        "api_socket",
        _VALUE,
        "serve the REST API (Cloud Hypervisor's, /api/v1) on this Unix socket; without --kernel, "
        "wait for vm.create and vm.boot",
        "path=PATH|fd=N",
        group=_CONTROL,
    ),
    Argument(
        ("--event-monitor",),
        "event_monitor",
        _VALUE,
        "write lifecycle events there (CH's JSON events)",
        "path=PATH|fd=N",
        group=_CONTROL,
    ),
)


class ParserExit(Exception):
    """argparse wanted to exit (after --help): carries the status instead of calling sys.exit."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def parse_namespace(argv: Sequence[str]) -> SimpleNamespace:
    """The arguments' values by ``dest``; a usage error raises :class:`ConfigError` (nothing exits)."""
    namespace = _parse_plain(argv)
    if namespace is None:
        namespace = parse_with_argparse(argv)
    # No seccomp filter is installed: exactly what Cloud Hypervisor's `--seccomp false` asks for.
    if namespace.seccomp not in (None, "false"):
        raise ConfigError(f"--seccomp {namespace.seccomp} is not yet supported (only --seccomp false)")
    return namespace


def _defaults() -> dict[str, Any]:
    return {a.dest: (0 if a.kind == _COUNT else False if a.kind == _FLAG else None) for a in ARGUMENTS}


_BY_FLAG = {flag: argument for argument in ARGUMENTS for flag in argument.flags}


def _parse_plain(argv: Sequence[str]) -> SimpleNamespace | None:
    """What argparse would make of ``argv`` if it is a plain, valid command line; otherwise None.

    Takes ``--option value``, ``--option=value``, flags, ``-v``/``-vv``/``-vvv`` and list options with one
    or more values.  Declines (returns None) whatever needs argparse's judgement: any token it does not know,
    a value that starts with ``-`` (argparse refuses most), a missing value or a value outside ``choices``.
    """
    from types import SimpleNamespace

    values = _defaults()
    i, n = 0, len(argv)
    while i < n:
        token = argv[i]
        i += 1
        if len(token) > 2 and token == "-" + "v" * (len(token) - 1):  # -vv, -vvv: -v repeated
            values["verbose"] += len(token) - 1
            continue
        flag, equals, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        argument = _BY_FLAG.get(flag)
        if argument is None:
            return None
        if argument.kind in (_FLAG, _COUNT):
            if equals:
                return None
            values[argument.dest] = True if argument.kind == _FLAG else values[argument.dest] + 1
            continue
        if equals:
            taken = [inline]
        else:
            j = i
            while j < n and not argv[j].startswith("-") and (j == i or argument.kind == _LIST):
                j += 1
            taken, i = list(argv[i:j]), j
            if not taken:
                return None
        if argument.choices is not None and any(value not in argument.choices for value in taken):
            return None
        if argument.kind == _LIST:
            values[argument.dest] = [*(values[argument.dest] or ()), *taken]
        else:
            values[argument.dest] = taken[0]
    return SimpleNamespace(**values)


def parse_with_argparse(argv: Sequence[str]) -> SimpleNamespace:
    """argparse's view of ``argv``, with aovisor's errors; also what prints ``--help``."""
    from types import SimpleNamespace

    namespace, unrecognized = argument_parser().parse_known_args(list(argv))
    for token in unrecognized:
        option = token.partition("=")[0]
        if option in LATER_OPTIONS:
            raise ConfigError(f"{option} is not yet supported")
    if unrecognized:
        raise ConfigError(f"unrecognized arguments: {' '.join(unrecognized)} (see {PROG} --help)")
    return SimpleNamespace(**vars(namespace))


def argument_parser() -> argparse.ArgumentParser:
    """The argparse parser of :data:`ARGUMENTS`: it errors by raising, and exits by :class:`ParserExit`."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise ConfigError(f"{message} (see {PROG} --help)")

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            if message:
                sys.stderr.write(message)
            raise ParserExit(status)

    # argparse instantiates a formatter for every add_argument() and would import shutil each time just to
    # read the terminal width: read it once, directly.
    width = _terminal_width() - 2

    class Formatter(argparse.RawDescriptionHelpFormatter):  # raw: the option list below is wrapped by hand
        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=width)

    parser = Parser(
        prog=PROG,
        formatter_class=Formatter,
        description="Run a virtual machine. The options follow Cloud Hypervisor's command line. "
        f"`{PROG} image build` builds the default Linux guest (see `{PROG} image build --help`).",
        allow_abbrev=False,  # like CH: `--mem` is not `--memory`
    )
    groups: dict[str | None, argparse._ActionsContainer] = {None: parser}
    actions = {_FLAG: "store_true", _COUNT: "count", _VALUE: "store", _LIST: "extend"}
    for a in ARGUMENTS:
        if a.group not in groups:
            groups[a.group] = parser.add_argument_group(a.group)
        options: dict[str, object] = {"dest": a.dest, "action": actions[a.kind], "help": a.help}
        if a.kind == _COUNT:
            options["default"] = 0
        if a.kind == _LIST:
            options["nargs"] = "+"
        if a.metavar is not None:
            options["metavar"] = a.metavar
        if a.choices is not None:
            options["choices"] = a.choices
        groups[a.group].add_argument(*a.flags, **options)  # type: ignore[arg-type]
    parser.add_argument_group("not yet supported (Cloud Hypervisor's)", _wrap(LATER_OPTIONS, 76))
    return parser


def _wrap(words: Sequence[str], width: int) -> str:
    """``words`` joined by ", " in lines of at most ``width`` (textwrap would split "--event-monitor")."""
    lines = [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + len(word) + 2 > width:
            lines.append("")
        lines[-1] += f"{word}, " if word != words[-1] else word
    return "\n".join(line.rstrip() for line in lines)


def _terminal_width() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80
