"""Per-vCPU CPUID: KVM's supported set with APIC ids, topology and the hypervisor leaf fixed up.

Topology: every vCPU is one core (one thread per core) of a single socket, as Cloud Hypervisor does by
default.  Linux reads it from leaf 0xB (and 0x1F), leaf 1 and, on AMD, leaf 0x80000008.
"""

from __future__ import annotations

from aovisor.hypervisor.base import CpuidEntry

CPUID_FLAG_SIGNIFICANT_INDEX = 1
LEAF1_ECX_HYPERVISOR = 1 << 31
LEAF1_ECX_TSC_DEADLINE = 1 << 24
LEAF1_EDX_HTT = 1 << 28
BRAND_STRING_LEAVES = (0x80000002, 0x80000003, 0x80000004)
BRAND_STRING_BYTES = 48


def _bits_for(count: int) -> int:
    """Number of APIC-id bits needed to number ``count`` items (SDM Vol. 3A §9.9.1)."""
    return max(0, (count - 1).bit_length())


def vcpu_cpuid(supported: list[CpuidEntry], vcpu_index: int, vcpu_count: int) -> list[CpuidEntry]:
    apic_id = vcpu_index
    core_bits = _bits_for(vcpu_count)
    out: list[CpuidEntry] = []
    for e in supported:
        e = e.copy()
        if e.function == 1:
            # EBX[31:24] initial APIC id, EBX[23:16] addressable logical processors per package.
            logical = 1 << core_bits if vcpu_count > 1 else 1
            e.ebx = (e.ebx & 0x0000FFFF) | (min(logical, 255) << 16) | (apic_id << 24)
            e.ecx |= LEAF1_ECX_HYPERVISOR
            e.edx = e.edx | LEAF1_EDX_HTT if vcpu_count > 1 else e.edx & ~LEAF1_EDX_HTT
        elif e.function in (0xB, 0x1F):
            continue  # written whole below: KVM passes the host's levels (on AMD hosts often none)
        elif e.function == 4:
            # Intel deterministic cache parameters: EAX[31:26] = cores per package - 1.
            e.eax = (e.eax & 0x03FFFFFF) | (((1 << core_bits) - 1 if vcpu_count > 1 else 0) << 26)
            e.eax &= ~(0xFFF << 14)  # threads sharing this cache - 1 = 0
        elif e.function == 0x80000008:
            # AMD: ECX[15:12] ApicIdCoreIdSize, ECX[7:0] NC = cores per package - 1.
            e.ecx = (e.ecx & ~0xF0FF) | (core_bits << 12) | (vcpu_count - 1)
        elif e.function == 0x8000001E:
            # AMD topology extensions: EAX extended APIC id, EBX[15:8] threads per core - 1, EBX[7:0] core id.
            e.eax, e.ebx, e.ecx = apic_id, apic_id & 0xFF, 0
        out.append(e)
    out.extend(_extended_topology(0xB, apic_id, core_bits, vcpu_count))
    if any(e.function == 0x1F for e in supported):
        out.extend(_extended_topology(0x1F, apic_id, core_bits, vcpu_count))
    for e in out:
        if e.function == 0 and e.eax < 0xB:
            e.eax = 0xB  # the maximum basic leaf must cover the topology leaf written above
    return out


def _extended_topology(function: int, apic_id: int, core_bits: int, vcpu_count: int) -> list[CpuidEntry]:
    """Leaf 0xB/0x1F sub-leaves (SDM Vol. 2A, CPUID "Extended Topology Enumeration Leaf").

    Sub-leaf 0 is the SMT level (one thread per core), 1 the core level (every vCPU in one package), 2 the
    terminating invalid level. EAX = APIC-id bits to shift to the next level, EBX = logical processors at
    this level, ECX = level type << 8 | sub-leaf, EDX = the x2APIC id.  KVM passes the host's levels through
    (on this AMD host: sub-leaf 0 only, all zero), so every sub-leaf is written rather than patched.
    """
    flags = CPUID_FLAG_SIGNIFICANT_INDEX
    return [
        CpuidEntry(function, 0, flags, 0, 1, (1 << 8) | 0, apic_id),
        CpuidEntry(function, 1, flags, core_bits, vcpu_count, (2 << 8) | 1, apic_id),
        CpuidEntry(function, 2, flags, 0, 0, 2, apic_id),
    ]


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
