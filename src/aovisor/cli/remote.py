"""``aovisor-remote``: drive a running aovisor (or Cloud Hypervisor) through its REST API, with ch-remote's
commands and option syntax.

    aovisor-remote --api-socket /run/vm.sock ping
    aovisor-remote --api-socket /run/vm.sock create vm.json    # CH's VmConfig JSON; - for stdin
    aovisor-remote --api-socket /run/vm.sock add-disk path=disk.img,readonly=on
    aovisor-remote --api-socket /run/vm.sock add-net tap=tap0,mac=12:34:56:78:9a:bc,fd=[3]

Output: ``ping``, ``info`` and ``counters`` print the JSON answer, indented; other commands print nothing.
Exit status: 0 on success; 1 when the server refuses (its error chain is printed, as ch-remote does) or
cannot be reached; 2 on a usage error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from aovisor.cli.options import OptionParser, ParsedOptions
from aovisor.errors import ConfigError

PROG = "aovisor-remote"
EXIT_FAILURE = 1
EXIT_USAGE = 2

DISK_OPTION = OptionParser(
    "add-disk",
    keys=("path", "readonly", "direct", "iommu", "num_queues", "queue_size", "id", "serial", "image_type"),
)
NET_OPTION = OptionParser(
    "add-net",
    keys=(
        *("tap", "ip", "mask", "mac", "host_mac", "mtu", "num_queues", "queue_size", "id", "fd", "iommu"),
        *("offload_tso", "offload_ufo", "offload_csum", "vhost_user", "socket", "vhost_mode"),
    ),
)
VSOCK_OPTION = OptionParser("add-vsock", keys=("cid", "socket", "id", "iommu"))

# command -> (HTTP method, endpoint, what the command prints)
SIMPLE_COMMANDS: dict[str, tuple[str, str, str]] = {
    "ping": ("GET", "vmm.ping", "Ping the VMM"),
    "info": ("GET", "vm.info", "Print the VM's configuration and state"),
    "counters": ("GET", "vm.counters", "Print the VM's device counters"),
    "boot": ("PUT", "vm.boot", "Boot the created VM"),
    "pause": ("PUT", "vm.pause", "Pause the VM"),
    "resume": ("PUT", "vm.resume", "Resume the paused VM"),
    "shutdown": ("PUT", "vm.shutdown", "Shut the VM down"),
    "reboot": ("PUT", "vm.reboot", "Reboot the VM"),
    "power-button": ("PUT", "vm.power-button", "Press the VM's ACPI power button"),
    "delete": ("PUT", "vm.delete", "Delete the VM"),
    "shutdown-vmm": ("PUT", "vmm.shutdown", "Shut the VMM down (the process exits)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog=PROG, description="Remotely control an aovisor (or Cloud Hypervisor) VMM through its REST API."
    )
    parser.add_argument("--api-socket", required=True, metavar="PATH", help="the VMM's API socket")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_text) in SIMPLE_COMMANDS.items():
        commands.add_parser(name, help=help_text)
    commands.add_parser("create", help="Create a VM from a VmConfig JSON file (- for stdin)").add_argument(
        "path", metavar="VM_CONFIG_JSON"
    )
    commands.add_parser("add-disk", help="Add a disk before boot").add_argument(
        "config", metavar="path=PATH[,readonly=on|off,direct=on|off,id=ID,serial=S]"
    )
    commands.add_parser(
        "add-net", help="Add a network device before boot (fds go by SCM_RIGHTS)"
    ).add_argument("config", metavar="tap=NAME|fd=[N,...][,mac=MAC,ip=IP,mask=MASK,id=ID,...]")
    commands.add_parser("add-vsock", help="Add a vsock device before boot").add_argument(
        "config", metavar="cid=CID,socket=PATH[,id=ID]"
    )
    args = parser.parse_args(argv)
    try:
        method, endpoint, body, fds = _request_for(args)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _run(args.api_socket, args.command, method, endpoint, body, fds)


def _request_for(args: Any) -> tuple[str, str, Any, list[int]]:
    command = args.command
    if command in SIMPLE_COMMANDS:
        method, endpoint, _ = SIMPLE_COMMANDS[command]
        return method, endpoint, None, []
    if command == "create":
        return "PUT", "vm.create", _read_json(args.path), []
    if command == "add-disk":
        return "PUT", "vm.add-disk", disk_json(args.config), []
    if command == "add-net":
        body, fds = net_json(args.config)
        return "PUT", "vm.add-net", body, fds
    if command == "add-vsock":
        return "PUT", "vm.add-vsock", vsock_json(args.config), []
    raise ConfigError(f"unknown command {command!r}")


def _read_json(path: str) -> Any:
    import json

    try:
        from pathlib import Path

        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"create: cannot read {path!r}: {e.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(f"create: {path}: not JSON: {e}") from None


def _copy(opts: ParsedOptions, out: dict[str, Any], keys: Sequence[str], kind: Callable[..., Any]) -> None:
    for key in keys:
        if opts.has(key):
            out[key] = kind(opts, key)


def _as_str(opts: ParsedOptions, key: str) -> str | None:
    return opts.get_str(key)


def _as_int(opts: ParsedOptions, key: str) -> int:
    return opts.get_int(key, 0)


def _as_bool(opts: ParsedOptions, key: str) -> bool:
    return opts.get_bool(key, False)


def disk_json(text: str) -> dict[str, Any]:
    """ch-remote's ``add-disk`` syntax -> CH's DiskConfig JSON."""
    opts = DISK_OPTION.parse(text)
    if not opts.has("path"):
        raise ConfigError("add-disk: path=PATH is required")
    out: dict[str, Any] = {}
    _copy(opts, out, ("path", "id", "serial"), _as_str)
    _copy(opts, out, ("readonly", "direct", "iommu"), _as_bool)
    _copy(opts, out, ("num_queues", "queue_size"), _as_int)
    if opts.has("image_type"):
        kinds = {"raw": "Raw", "qcow2": "Qcow2", "vhd": "FixedVhd", "vhdx": "Vhdx"}
        out["image_type"] = kinds[opts.get_choice("image_type", tuple(kinds), "raw")]
    return out


def net_json(text: str) -> tuple[dict[str, Any], list[int]]:
    """ch-remote's ``add-net`` syntax -> CH's NetConfig JSON and the fds to pass (``fd=[3,4]``)."""
    opts = NET_OPTION.parse(text)
    out: dict[str, Any] = {}
    _copy(opts, out, ("tap", "ip", "mask", "mac", "host_mac", "id", "vhost_mode"), _as_str)
    _copy(opts, out, ("mtu", "num_queues", "queue_size"), _as_int)
    _copy(opts, out, ("iommu", "offload_tso", "offload_ufo", "offload_csum", "vhost_user"), _as_bool)
    if opts.has("socket"):
        out["vhost_socket"] = opts.get_str("socket")
    fds: list[int] = []
    for item in opts.get_list("fd") or []:
        try:
            fds.append(int(item))
        except ValueError:
            raise ConfigError(f"add-net: fd: {item!r} is not a file descriptor number") from None
    return out, fds


def vsock_json(text: str) -> dict[str, Any]:
    opts = VSOCK_OPTION.parse(text)
    out: dict[str, Any] = {}
    _copy(opts, out, ("socket", "id"), _as_str)
    _copy(opts, out, ("cid",), _as_int)
    _copy(opts, out, ("iommu",), _as_bool)
    return out


def _run(socket_path: str, command: str, method: str, endpoint: str, body: Any, fds: list[int]) -> int:
    import json

    from aovisor.api.client import ApiClient, ApiClientError

    try:
        with ApiClient(socket_path) as client:
            response = client.request(method, endpoint, body, fds=fds)
    except (ApiClientError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if not response.ok:
        lines = [f"Server responded with {response.status} {response.reason}", *response.error_messages()]
        print(f"{PROG}: error: {command} failed", file=sys.stderr)
        for level, line in enumerate(lines):
            print(f"  {level}: {line}", file=sys.stderr)
        return EXIT_FAILURE
    if response.body:
        try:
            print(json.dumps(response.json(), indent=2))
        except ValueError:
            print(response.body.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
