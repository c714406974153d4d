"""Per-vCPU CPUID: KVM's supported set with APIC ids, topology and the hypervisor leaf fixed up.

Topology (:mod:`.topology`): by default every vCPU is one core (one thread per core) of a single package, as
Cloud Hypervisor does; ``--cpus topology=`` changes it.  Linux reads it from leaf 0xB (and 0x1F), leaf 1
and, on AMD, leaves 0x80000008 and 0x8000001E.
"""

from __future__ import annotations

from aovisor.arch.x86_64.topology import CpuTopology
from aovisor.hypervisor.base import CpuidEntry

CPUID_FLAG_SIGNIFICANT_INDEX = 1
LEAF1_ECX_HYPERVISOR = 1 << 31
LEAF1_ECX_TSC_DEADLINE = 1 << 24
LEAF1_EDX_HTT = 1 << 28
BRAND_STRING_LEAVES = (0x80000002, 0x80000003, 0x80000004)
BRAND_STRING_BYTES = 48


def vcpu_cpuid(supported: list[CpuidEntry], vcpu_index: int, topology: CpuTopology) -> list[CpuidEntry]:
    """The CPUID table of vCPU ``vcpu_index``: ``supported`` with its APIC ids and ``topology`` filled in."""
    apic_id = topology.apic_id(vcpu_index)
    t = topology
    multi = t.logical_per_package > 1
    out: list[CpuidEntry] = []
    for e in supported:
        e = e.copy()
        if e.function == 1:
            # EBX[31:24] initial APIC id, EBX[23:16] addressable logical processors per package.
            logical = 1 << t.package_shift if multi else 1
            e.ebx = (e.ebx & 0x0000FFFF) | (min(logical, 255) << 16) | ((apic_id & 0xFF) << 24)
            e.ecx |= LEAF1_ECX_HYPERVISOR
            e.edx = e.edx | LEAF1_EDX_HTT if multi else e.edx & ~LEAF1_EDX_HTT
        elif e.function in (0xB, 0x1F):
            continue  # written whole below: KVM passes the host's levels (on AMD hosts often none)
        elif e.function == 4:
            # Intel deterministic cache parameters: EAX[31:26] addressable core ids per package - 1,
            # EAX[25:14] addressable logical processors sharing this cache - 1: a thread's core for L1/L2,
            # the package for L3.
            level = (e.eax >> 5) & 0x7
            sharing = (1 << (t.thread_bits if level <= 2 else t.package_shift)) - 1
            e.eax = (e.eax & 0x3FFF) | (sharing << 14) | (((1 << (t.core_bits + t.die_bits)) - 1) << 26)
        elif e.function == 0x80000008:
            # AMD: ECX[15:12] ApicIdCoreIdSize (APIC-id bits of the package), ECX[7:0] NC = logical - 1.
            e.ecx = (e.ecx & ~0xF0FF) | (t.package_shift << 12) | ((t.logical_per_package - 1) & 0xFF)
        elif e.function == 0x8000001E:
            # AMD topology extensions: EAX extended APIC id; EBX[15:8] threads per core - 1, EBX[7:0] core
            # id; ECX[10:8] nodes (dies) per package - 1, ECX[7:0] node id.
            core_id = (apic_id >> t.thread_bits) & 0xFF
            node_id = (apic_id >> (t.thread_bits + t.core_bits)) & 0xFF
            e.eax = apic_id
            e.ebx = ((t.threads_per_core - 1) << 8) | core_id
            e.ecx = ((t.dies_per_package - 1) << 8) | node_id
        out.append(e)
    out.extend(_extended_topology(0xB, apic_id, t))
    if any(e.function == 0x1F for e in supported):
        out.extend(_extended_topology(0x1F, apic_id, t))
    for e in out:
        if e.function == 0 and e.eax < 0xB:
            e.eax = 0xB  # the maximum basic leaf must cover the topology leaf written above
    return out


LEVEL_SMT, LEVEL_CORE, LEVEL_DIE = 1, 2, 5  # leaf 0xB/0x1F ECX[15:8] level types


def _extended_topology(function: int, apic_id: int, t: CpuTopology) -> list[CpuidEntry]:
    """Leaf 0xB/0x1F sub-leaves (SDM Vol. 2A, CPUID "Extended Topology Enumeration Leaf").

    One sub-leaf per level, then a terminating invalid level: SMT (threads per core), core, and for leaf
    0x1F with more than one die, die.  EAX = APIC-id bits to shift right to reach the next level's id,
    EBX = logical processors at this level, ECX = level type << 8 | sub-leaf, EDX = the x2APIC id.  The
    last level's shift reaches the package id.  KVM passes the host's levels through (on this AMD host:
    sub-leaf 0 only, all zero), so every sub-leaf is written rather than patched.
    """
    levels = [(LEVEL_SMT, t.thread_bits, t.threads_per_core)]
    if function == 0x1F and t.dies_per_package > 1:
        levels.append((LEVEL_CORE, t.thread_bits + t.core_bits, t.threads_per_core * t.cores_per_die))
        levels.append((LEVEL_DIE, t.package_shift, t.logical_per_package))
    else:
        levels.append((LEVEL_CORE, t.package_shift, t.logical_per_package))
    flags = CPUID_FLAG_SIGNIFICANT_INDEX
    entries = [
        CpuidEntry(function, sub, flags, shift, count, (kind << 8) | sub, apic_id)
        for sub, (kind, shift, count) in enumerate(levels)
    ]
    end = len(levels)
    return [*entries, CpuidEntry(function, end, flags, 0, 0, end, apic_id)]


def brand_string_leaves(brand: str) -> list[CpuidEntry]:
    """Leaves 0x80000002-4: the processor brand string, 48 bytes of NUL-padded ASCII (at most 47
    characters), four bytes per register in EAX, EBX, ECX, EDX order (AMD APM vol. 3, CPUID Fn8000_0002)."""
    raw = brand.encode("ascii", "replace")[: BRAND_STRING_BYTES - 1].ljust(BRAND_STRING_BYTES, b"\0")
    words = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, BRAND_STRING_BYTES, 4)]
    return [CpuidEntry(leaf, 0, 0, *words[4 * n : 4 * n + 4]) for n, leaf in enumerate(BRAND_STRING_LEAVES)]


def host_brand_string(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The host's brand string as Linux read it from CPUID (``model name``; leading and trailing blanks
    trimmed), or None where the file has none.  Python cannot execute CPUID itself; this costs ~50 us."""
    try:
        with open(cpuinfo, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    for line in head.split(b"\n"):
        key, sep, value = line.partition(b":")
        if sep and key.strip() == b"model name":
            return value.strip().decode("ascii", "replace") or None
    return None
