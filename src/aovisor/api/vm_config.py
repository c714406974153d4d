"""Cloud Hypervisor's ``VmConfig`` JSON <-> our :class:`~aovisor.vmm.definition.VmDefinition`.

Hand-written rather than pydantic: the API layer would pull in a compiled dependency and ~100 ms of import
for a few dozen fields, and what matters here is the *policy*, which is ours:

* Every field Cloud Hypervisor's OpenAPI document defines is recognised.  A field we implement is checked
  (type, range) and used.  A field we do not implement is accepted only with Cloud Hypervisor's default
  value (so generated clients, which send every default, work) and otherwise refused as "not yet
  supported" — never silently ignored.
* A field Cloud Hypervisor does not define is refused ("unknown field"): CH's serde ignores them, but a
  typo that silently changes nothing is worse than a 400.
* Disks and the RNG become :class:`~aovisor.config.DiskConfig`/:class:`~aovisor.config.RngConfig`.  Net
  and vsock devices are validated and kept as :class:`DeviceSpec` records (CH's JSON with the defaults
  filled in, and the TAP fds that came with them; see :mod:`aovisor.vmm.definition`).

Every error is a :class:`~aovisor.errors.ConfigError` whose message starts with the JSON path of the field,
e.g. ``memory.size: expected an integer, got "1G"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aovisor.errors import ConfigError

if TYPE_CHECKING:
    from aovisor.config import DiskConfig, OutputConfig, RngConfig, VmConfig
    from aovisor.vmm.definition import DeviceSpec, VmDefinition

U64_MAX = (1 << 64) - 1
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object", list: "an array"}
_ANY = object()  # "any value of the right type is accepted"


class JsonConfigError(ConfigError):
    """A VmConfig JSON value that is malformed, out of range, unknown or not yet supported."""


def _render(value: Any) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Object:
    """One JSON object being read: typed getters that consume keys, and :meth:`finish` for leftovers."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise JsonConfigError(f"{path or 'body'}: expected an object, got {_render(value)}")
        self.path = path
        self._values: dict[str, Any] = value
        self._seen: set[str] = set()

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> JsonConfigError:
        return JsonConfigError(f"{self._at(key)}: {message}")

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
        self._seen.add(key)
        value = self._values.get(key)
        if value is None:  # absent or null: serde takes the default for both
            if required:
                raise self.error(key, "is required")
            return default
        # bool is an int in Python: an integer field must not accept true/false.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {_TYPE_NAMES[kind]}, got {_render(value)}")
        return value

    def get_int(
        self,
        key: str,
        default: int | None = None,
        *,
        minimum: int = 0,
        maximum: int = U64_MAX,
        required: bool = False,
    ) -> int | None:
        value: int | None = self.get(key, int, default, required=required)
        if value is not None and not minimum <= value <= maximum:
            raise self.error(key, f"{value} is out of range ({minimum} to {maximum})")
        return value

    def get_str(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value: str | None = self.get(key, str, default, required=required)
        if value is not None and "\x00" in value:
            raise self.error(key, "contains a NUL character")
        return value

    def get_enum(self, key: str, choices: Sequence[str], default: str | None = None) -> str | None:
        value = self.get_str(key, default)
        if value is not None and value not in choices:
            raise self.error(key, f"{_render(value)} is not one of {', '.join(choices)}")
        return value

    def get_object(self, key: str) -> _Object | None:
        self._seen.add(key)
        value = self._values.get(key)
        return None if value is None else _Object(value, self._at(key))

    def get_list(self, key: str) -> list[Any]:
        value: list[Any] = self.get(key, list, [])
        return value

    def default_only(self, key: str, default: Any, what: str | None = None) -> None:
        """Accept ``key`` absent or equal to CH's ``default``; anything else is not yet supported."""
        self._seen.add(key)
        value = self._values.get(key)
        if value is None or value == default or (default is _ANY):
            return
        if isinstance(default, bool) and not isinstance(value, bool):
            raise self.error(key, f"expected a boolean, got {_render(value)}")
        raise self.error(key, f"{_render(value)} is not yet supported{f' ({what})' if what else ''}")

    def absent_only(self, *keys: str) -> None:
        """Fields of features we do not have: absent, null or empty only."""
        for key in keys:
            self._seen.add(key)
            value = self._values.get(key)
            if value not in (None, [], {}):
                raise self.error(key, "is not yet supported")

    def refuse_unknown(self, known: Sequence[str]) -> None:
        unknown = sorted(set(self._values) - set(known))
        if unknown:
            raise self.error(unknown[0], f"unknown field (known here: {', '.join(sorted(known))})")

    def finish(self) -> None:
        unknown = sorted(set(self._values) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen))
            raise self.error(unknown[0], f"unknown field (known here: {known})")


# --- VmConfig ---------------------------------------------------------------------------------------------
_UNSUPPORTED_TOP_LEVEL = (
    "rate_limit_groups",
    "balloon",
    "fs",
    "generic_vhost_user",
    "pmem",
    "debug_console",
    "devices",
    "user_devices",
    "vdpa",
    "numa",
    "rtc",
    "pci_segments",
    "tpm",
    "landlock_rules",
)


_TOP_LEVEL_FIELDS = (
    *("payload", "cpus", "memory", "serial", "console", "disks", "net", "vsock", "rng", "platform"),
    *("iommu", "watchdog", "pvpanic", "landlock_enable", *_UNSUPPORTED_TOP_LEVEL),
)


def definition_from_json(body: Any, *, check_files: bool = True) -> VmDefinition:
    """The :class:`VmDefinition` for a ``vm.create`` body (a parsed JSON value)."""
    from aovisor.config import CpusConfig, VmConfig
    from aovisor.vmm.definition import VmDefinition

    top = _Object(body, "")
    top.refuse_unknown(_TOP_LEVEL_FIELDS)  # a typo is reported before any file is looked at
    payload = _payload(top, check_files)
    cpus_obj = top.get_object("cpus")
    cpus = _cpus(cpus_obj) if cpus_obj is not None else CpusConfig()
    memory_obj = top.get_object("memory")
    serial_obj = top.get_object("serial")
    console_obj = top.get_object("console")
    disks = tuple(
        disk_from_json(disk, path=f"disks[{index}]", check_files=check_files)
        for index, disk in enumerate(top.get_list("disks"))
    )
    devices: list[DeviceSpec] = []
    for index, net in enumerate(top.get_list("net")):
        devices.append(device_from_json("net", net, path=f"net[{index}]"))
    if top.get_object("vsock") is not None:
        devices.append(device_from_json("vsock", top.get("vsock", dict), path="vsock"))
    rng_obj = top.get_object("rng")
    for flag in ("iommu", "watchdog", "pvpanic", "landlock_enable"):
        top.default_only(flag, False)
    platform = top.get_object("platform")
    if platform is not None:
        _platform(platform)
    top.absent_only(*_UNSUPPORTED_TOP_LEVEL)
    top.finish()

    config = VmConfig(payload=payload, cpus=cpus, disks=disks)
    replacements: dict[str, Any] = {}
    if rng_obj is not None:  # absent: CH's default, a virtio-rng reading /dev/urandom (VmConfig's too)
        replacements["rng"] = _rng(rng_obj, check_files)
    if memory_obj is not None:
        replacements["memory"] = _memory(memory_obj)
    if serial_obj is not None:
        replacements["serial"] = _output(serial_obj, ("Off", "Null", "Tty", "Pty", "File"))
    if console_obj is not None:
        replacements["console"] = _output(console_obj, ("Off", "Null", "Tty", "File"))
    if replacements:
        config = config._replace(**replacements)
    config.validate()  # the ranges were checked above, field by field: this is a second line of defence
    return VmDefinition(config, tuple(devices))


def _payload(top: _Object, check_files: bool) -> Any:
    from aovisor.config import PayloadConfig

    obj = top.get_object("payload")
    if obj is None:
        raise top.error("payload", "is required (payload.kernel: the guest kernel to boot)")
    kernel = obj.get_str("kernel")
    if kernel is None:
        raise obj.error("kernel", "is required (firmware and IGVM payloads are not yet supported)")
    initramfs = obj.get_str("initramfs")
    cmdline = obj.get_str("cmdline", "")
    obj.absent_only("firmware", "igvm", "host_data")
    obj.finish()
    if check_files:
        _check_readable(obj, "kernel", kernel)
        if initramfs is not None:
            _check_readable(obj, "initramfs", initramfs)
    return PayloadConfig(kernel=kernel, initramfs=initramfs, cmdline=cmdline or "")


def _check_readable(obj: _Object, key: str, path: str) -> None:
    import stat

    if not path:
        raise obj.error(key, "is empty")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise obj.error(key, f"cannot read {path!r}: {e.strerror}") from None
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    if is_dir:
        raise obj.error(key, f"{path!r} is a directory, not a file")


def _cpus(obj: _Object) -> Any:
    from aovisor.config import MAX_VCPUS, CpusConfig

    boot = obj.get_int("boot_vcpus", minimum=1, maximum=MAX_VCPUS, required=True)
    max_vcpus = obj.get_int("max_vcpus", minimum=1, maximum=MAX_VCPUS, required=True)
    assert boot is not None and max_vcpus is not None
    if max_vcpus < boot:
        raise obj.error("max_vcpus", f"{max_vcpus} is smaller than boot_vcpus {boot}")
    if max_vcpus > boot:
        raise obj.error(
            "max_vcpus", f"{max_vcpus} above boot_vcpus {boot} (vCPU hotplug) is not yet supported"
        )
    obj.default_only("kvm_hyperv", False)
    # CH's default is true and generated clients send it; the guest simply gets no VMX/SVM (see vm.info).
    obj.get("nested", bool, True)
    obj.get_int("max_phys_bits", maximum=64)  # a cap; ours is the host's, which is what CH does below it
    topology = _cpu_topology(obj, max_vcpus)
    affinity = _cpu_affinity(obj, max_vcpus)
    obj.absent_only("features")
    obj.default_only("core_scheduling", "Vm")
    obj.finish()
    return CpusConfig(boot_vcpus=boot, max_vcpus=max_vcpus, topology=topology, affinity=affinity)


def _cpu_affinity(cpus: _Object, max_vcpus: int) -> Any:
    """CH's ``[CpuAffinity]``: ``{"vcpu": N, "host_cpus": [...]}`` each, one per vCPU at most."""
    from aovisor.config import VcpuAffinity

    out: list[VcpuAffinity] = []
    for i, value in enumerate(cpus.get_list("affinity")):
        entry = _Object(value, f"{cpus._at('affinity')}[{i}]")
        vcpu = entry.get_int("vcpu", minimum=0, maximum=max_vcpus - 1, required=True)
        host_cpus = entry.get("host_cpus", list, required=True)
        if not host_cpus or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in host_cpus
        ):
            raise entry.error(
                "host_cpus", f"expected a non-empty list of host CPU numbers, got {_render(host_cpus)}"
            )
        entry.finish()
        if any(previous.vcpu == vcpu for previous in out):
            raise entry.error("vcpu", f"vCPU {vcpu} is given twice")
        assert vcpu is not None
        out.append(VcpuAffinity(vcpu, tuple(sorted(set(host_cpus)))))
    return tuple(out)


TOPOLOGY_FIELDS = ("threads_per_core", "cores_per_die", "dies_per_package", "packages")


def _cpu_topology(cpus: _Object, max_vcpus: int) -> Any:
    """CH's ``CpuTopology``: four counts whose product is ``max_vcpus`` (and, ours, APIC ids within xAPIC)."""
    from aovisor.arch.x86_64.topology import CpuTopology
    from aovisor.config import MAX_VCPUS, MAX_XAPIC_ID

    obj = cpus.get_object("topology")
    if obj is None:
        return None
    parts = [obj.get_int(field, minimum=1, maximum=MAX_VCPUS, required=True) for field in TOPOLOGY_FIELDS]
    obj.finish()
    topology = CpuTopology(*(part or 1 for part in parts))
    if topology.vcpus != max_vcpus:
        raise cpus.error("topology", f"describes {topology.vcpus} vCPUs, not max_vcpus {max_vcpus}")
    highest = topology.apic_id(max_vcpus - 1)
    if highest > MAX_XAPIC_ID:
        raise cpus.error(
            "topology", f"needs APIC ids up to {highest}, above the xAPIC limit of {MAX_XAPIC_ID}"
        )
    return topology


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 1 << 40


def _memory(obj: _Object) -> Any:
    from aovisor.config import MemoryConfig, MiB

    size = obj.get_int("size", required=True)
    assert size is not None
    if size < 16 * MiB:
        raise obj.error("size", f"{size} bytes is less than the minimum, 16 MiB")
    if size % 4096:
        raise obj.error("size", f"{size} is not a multiple of 4 KiB")
    host = _host_memory()
    if size > host:
        raise obj.error("size", f"{size} bytes is more than this host's {host} bytes of RAM")
    for flag in ("mergeable", "shared", "hugepages", "prefault", "reserve"):
        obj.default_only(flag, False)
    obj.get("thp", bool, True)  # a hint: we neither madvise for nor against huge pages
    obj.default_only("hotplug_method", "Acpi")
    for key in ("hotplug_size", "hotplugged_size", "hugepage_size"):
        obj.default_only(key, 0)
    obj.absent_only("zones")
    obj.finish()
    return MemoryConfig(size=size)


_CONSOLE_MODES = ("Off", "Pty", "Tty", "File", "Socket", "Null")


def _output(obj: _Object, supported: Sequence[str], hint: str = "") -> OutputConfig:
    from aovisor.config import OutputConfig, OutputMode

    mode = obj.get_enum("mode", _CONSOLE_MODES)
    if mode is None:
        raise obj.error("mode", f"is required (one of {', '.join(_CONSOLE_MODES)})")
    file = obj.get_str("file")
    obj.get_str("socket")
    obj.default_only("iommu", False)
    obj.get_str("id")
    obj.get_int("pci_segment", maximum=0xFFFF)
    obj.get_int("pci_device_id", maximum=31)
    obj.get_int("iobase", maximum=0xFFFF)
    obj.finish()
    if mode not in supported:
        raise obj.error("mode", f"{mode} is not yet supported" + (f" ({hint})" if hint else ""))
    if mode == "File":
        if not file:
            raise obj.error("file", "is required with mode File")
        return OutputConfig(OutputMode.FILE, file)
    return OutputConfig(OutputMode(mode.lower()))


def _platform(obj: _Object) -> None:
    obj.default_only("num_pci_segments", 1)
    obj.default_only("iommu_segments", [])
    obj.get_int("iommu_address_width_bits", maximum=64)
    for key in ("system_serial_number", "serial_number", "system_uuid", "uuid", "system_manufacturer"):
        obj.default_only(key, _ANY)
    for key in ("system_product_name", "system_version", "system_family", "system_sku_number"):
        obj.default_only(key, _ANY)
    obj.default_only("chassis_asset_tag", _ANY)
    obj.absent_only("oem_strings")
    for flag in ("tdx", "sev_snp", "iommufd"):
        obj.default_only(flag, False)
    obj.default_only("vfio_p2p_dma", True)
    obj.finish()


# --- Devices ----------------------------------------------------------------------------------------------
_IFNAMSIZ = 16  # Linux interface names: 15 characters and a NUL


def device_from_json(
    kind: str, body: Any, *, path: str | None = None, fds: Sequence[int] = (), check_files: bool = True
) -> DeviceSpec:
    """A :class:`DeviceSpec` of ``kind`` ("net" or "vsock") from its CH JSON object, with CH's defaults
    filled in; ``fds`` are the descriptors that came with it (net only)."""
    from aovisor.vmm.definition import DeviceSpec

    obj = _Object(body, path if path is not None else kind)
    normalized: dict[str, Any] = {}
    ident = _pci_common(obj)
    if ident is not None:
        normalized["id"] = ident
    if kind == "net":
        normalized.update(_net(obj))
    elif kind == "vsock":
        normalized.update(_vsock(obj, check_files))
    else:
        raise ValueError(f"unknown device kind {kind!r}")
    obj.finish()
    return DeviceSpec(kind, normalized, tuple(fds))


def _pci_common(obj: _Object) -> str | None:
    """The fields every CH PCI device has; returns the ``id``."""
    ident = obj.get_str("id")
    if ident is not None and (not ident or ident.startswith("__")):
        raise obj.error("id", f"{_render(ident)} is not a valid identifier (empty, or starts with '__')")
    obj.get_int("pci_segment", maximum=0xFFFF)
    obj.get_int("pci_device_id", maximum=31)
    obj.default_only("iommu", False)
    return ident


def disk_from_json(body: Any, *, path: str = "disk", check_files: bool = True) -> DiskConfig:
    """A :class:`DiskConfig` from CH's ``DiskConfig`` JSON (``vm.create``'s ``disks[]``, ``vm.add-disk``)."""
    from aovisor.config import DiskConfig

    obj = _Object(body, path)
    ident = _pci_common(obj)
    disk_path = obj.get_str("path")
    if disk_path is None:
        obj.default_only("vhost_user", False, "vhost-user disks")
        raise obj.error("path", "is required")
    if check_files:
        _check_readable(obj, "path", disk_path)
    readonly = obj.get("readonly", bool, False)
    direct = obj.get("direct", bool, False)
    serial = obj.get_str("serial")
    if serial is not None and len(serial.encode()) > 20:
        raise obj.error("serial", f"{_render(serial)} is longer than 20 bytes (virtio-blk's device id)")
    obj.default_only("num_queues", 1, "multi-queue disks")
    obj.default_only("queue_size", 128)
    image_type = obj.get_enum("image_type", ("FixedVhd", "Qcow2", "Raw", "Vhdx", "Unknown"))
    if image_type not in (None, "Raw", "Unknown"):
        raise obj.error("image_type", f"{image_type} is not yet supported (raw images only)")
    obj.default_only("vhost_user", False, "vhost-user disks")
    obj.absent_only("vhost_socket", "rate_limiter_config", "rate_limit_group", "queue_affinity")
    obj.default_only("backing_files", False)
    obj.default_only("sparse", True)
    obj.get_enum("lock_granularity", ("ByteRange", "Full"))
    obj.finish()
    return DiskConfig(path=disk_path, readonly=readonly, direct=direct, id=ident, serial=serial)


def _rng(obj: _Object, check_files: bool) -> RngConfig:
    from aovisor.config import RngConfig

    _pci_common(obj)
    src = obj.get_str("src", required=True)
    assert src is not None
    if check_files:
        _check_readable(obj, "src", src)
    obj.finish()
    return RngConfig(src=src)


def _net(obj: _Object) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tap = obj.get_str("tap")
    if tap is not None:
        if not 0 < len(tap.encode()) < _IFNAMSIZ or "/" in tap or tap.strip() != tap:
            raise obj.error("tap", f"{_render(tap)} is not a valid interface name (1-15 characters)")
        fields["tap"] = tap
    from aovisor.virtio.devices.net import parse_mac, random_mac

    mac = obj.get_str("mac")
    if mac is not None:
        try:
            parse_mac(mac)  # the CLI's check: six hex bytes, unicast, not null
        except ValueError as e:
            raise obj.error("mac", str(e)) from None
    else:  # as CH: chosen once at creation, so vm.info shows it and a reboot keeps it
        mac = random_mac()
    fields["mac"] = mac.lower()
    for key, default in (("ip", "192.168.249.1"), ("mask", "255.255.255.0")):
        value = obj.get_str(key, default)
        assert value is not None
        import ipaddress

        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise obj.error(key, f"{_render(value)} is not an IPv4 address") from None
        fields[key] = value
    # Our virtio-net has one queue pair of 256 entries and uses the TAP's MTU.
    obj.absent_only("host_mac", "mtu")
    num_queues = obj.get_int("num_queues", 2, minimum=2, maximum=256)
    assert num_queues is not None
    if num_queues % 2:
        raise obj.error("num_queues", f"{num_queues} is odd (one receive and one transmit queue per pair)")
    obj.default_only("num_queues", 2, "one queue pair")
    fields["num_queues"] = num_queues
    obj.default_only("queue_size", 256, "the queues have 256 entries")
    fields["queue_size"] = 256
    obj.default_only("vhost_user", False, "vhost-user net")
    obj.absent_only("vhost_socket", "rate_limiter_config")
    obj.default_only("vhost_mode", "Client")
    for flag in ("offload_tso", "offload_ufo", "offload_csum"):
        fields[flag] = obj.get(flag, bool, True)
    # CH accepts `fds` in the body but ignores it: only descriptors passed with SCM_RIGHTS are real.
    obj.get("fds", list, [])
    return fields


def _vsock(obj: _Object, check_files: bool) -> dict[str, Any]:
    cid = obj.get_int("cid", minimum=3, maximum=(1 << 32) - 2, required=True)
    socket = obj.get_str("socket", required=True)
    if not socket:
        raise obj.error("socket", "is empty")
    if len(os.fsencode(socket)) > 100:  # sun_path holds 108 bytes, and "_<port>" is appended for the guest
        raise obj.error("socket", f"{_render(socket)} is too long for a Unix socket path")
    if check_files and not os.path.isdir(os.path.dirname(socket) or "."):
        raise obj.error("socket", f"the directory of {_render(socket)} does not exist")
    return {"cid": cid, "socket": socket}


# --- Back to JSON (vm.info) ------------------------------------------------------------------------------
def _output_json(cfg: OutputConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": cfg.mode.value.capitalize()}
    if cfg.file is not None:
        out["file"] = str(cfg.file)
    return out


def config_to_json(config: VmConfig) -> dict[str, Any]:
    payload: dict[str, Any] = {"kernel": str(config.payload.kernel), "cmdline": config.payload.cmdline}
    if config.payload.initramfs is not None:
        payload["initramfs"] = str(config.payload.initramfs)
    out: dict[str, Any] = {
        "cpus": {
            "boot_vcpus": config.cpus.boot_vcpus,
            "max_vcpus": config.cpus.max_vcpus,
            "kvm_hyperv": False,
            "nested": False,
        },
        "memory": {
            "size": config.memory.size,
            "mergeable": False,
            "hotplug_method": "Acpi",
            "shared": False,
            "hugepages": False,
            "prefault": False,
        },
        "payload": payload,
        "serial": _output_json(config.serial),
        "console": _output_json(config.console),
        "iommu": False,
        "watchdog": False,
        "pvpanic": False,
        "landlock_enable": False,
    }
    if config.cpus.topology is not None:
        out["cpus"]["topology"] = dict(zip(TOPOLOGY_FIELDS, config.cpus.topology, strict=True))
    if config.cpus.affinity:
        out["cpus"]["affinity"] = [
            {"vcpu": a.vcpu, "host_cpus": list(a.host_cpus)} for a in config.cpus.affinity
        ]
    if config.disks:
        out["disks"] = [_disk_json(disk) for disk in config.disks]
    if config.rng is not None:
        out["rng"] = {"src": str(config.rng.src), "iommu": False}
    return out


def _disk_json(disk: DiskConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": str(disk.path),
        "readonly": disk.readonly,
        "direct": disk.direct,
        "iommu": False,
        "num_queues": 1,
        "queue_size": 128,
        "vhost_user": False,
        "image_type": "Raw",
    }
    if disk.id is not None:
        out["id"] = disk.id
    if disk.serial is not None:
        out["serial"] = disk.serial
    return out


def definition_to_json(definition: VmDefinition) -> dict[str, Any]:
    """The ``config`` of ``vm.info``: what we run, in CH's field names (devices kept as given)."""
    out = config_to_json(definition.config)
    net = definition.of_kind("net")
    if net:
        out["net"] = [dict(d.json) for d in net]
    vsock = definition.of_kind("vsock")
    if vsock:
        out["vsock"] = dict(vsock[0].json)
    return out


def parse_json_body(body: bytes) -> Any:
    """``body`` parsed as JSON; malformed JSON (or not UTF-8) is a :class:`JsonConfigError`."""
    import json

    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JsonConfigError(f"body: malformed JSON: {e}") from None
    except RecursionError:
        raise JsonConfigError("body: malformed JSON: nested too deeply") from None
