"""Per-vCPU CPUID fix-ups: the ids and topology a guest reads agree with the MADT (one core per vCPU)."""

from __future__ import annotations

from pathlib import Path

from aovisor.arch.x86_64.cpuid import brand_string_leaves, host_brand_string, vcpu_cpuid
from aovisor.arch.x86_64.topology import CpuTopology
from aovisor.hypervisor.base import CpuidEntry


def _leaf(entries: list[CpuidEntry], function: int, index: int = 0) -> CpuidEntry:
    matches = [e for e in entries if (e.function, e.index) == (function, index)]
    assert len(matches) == 1, (function, index, matches)
    return matches[0]


# What KVM reports on an AMD host (this machine): leaf 0xB with sub-leaf 0 only, all zero; no 0x1F.
AMD_LIKE = [
    CpuidEntry(0, 0, 0, 0x1C, 0x68747541, 0x444D4163, 0x69746E65),
    CpuidEntry(1, 0, 0, 0x00A10F11, 0x00020800, 0x01202000, 0x078BFBFF),
    CpuidEntry(0xB, 0, 1),
    CpuidEntry(0x80000008, 0, 0, 0x3030, 0, 0x7001, 0),
    CpuidEntry(0x8000001E),
]


def test_every_id_a_guest_reads_is_the_vcpu_index() -> None:
    for index in range(4):
        out = vcpu_cpuid(AMD_LIKE, index, CpuTopology.flat(4))
        assert _leaf(out, 1).ebx >> 24 == index
        assert [_leaf(out, 0xB, sub).edx for sub in range(3)] == [index] * 3
        assert _leaf(out, 0x8000001E).eax == index
        assert _leaf(out, 1).ecx & (1 << 31)  # the hypervisor bit


def test_extended_topology_has_smt_core_and_terminating_levels() -> None:
    out = vcpu_cpuid(AMD_LIKE, 0, CpuTopology.flat(6))
    smt, core, end = (_leaf(out, 0xB, sub) for sub in range(3))
    assert (smt.eax, smt.ebx, smt.ecx >> 8) == (0, 1, 1)  # one thread per core
    assert (core.eax, core.ebx, core.ecx >> 8) == (3, 6, 2)  # 6 cores need 3 APIC-id bits
    assert (end.ebx, end.ecx >> 8, end.ecx & 0xFF) == (0, 0, 2)  # level type 0: no more levels
    assert all(e.flags & 1 for e in (smt, core, end))  # the sub-leaf index is significant
    assert _leaf(out, 0x80000008).ecx & 0xF0FF == (3 << 12) | 5


def test_leaf_0x1f_is_written_only_when_kvm_has_it_and_max_leaf_covers_0xb() -> None:
    old = [CpuidEntry(0, 0, 0, 0x7), CpuidEntry(1)]
    out = vcpu_cpuid(old, 1, CpuTopology.flat(2))
    assert _leaf(out, 0).eax == 0xB
    assert _leaf(out, 0xB, 1).ebx == 2
    assert not any(e.function == 0x1F for e in out)
    newer = [CpuidEntry(0, 0, 0, 0x1F), CpuidEntry(1), CpuidEntry(0x1F, 0, 1, 9, 9, 9, 9)]
    out = vcpu_cpuid(newer, 1, CpuTopology.flat(2))
    assert _leaf(out, 0).eax == 0x1F
    assert [(_leaf(out, 0x1F, sub).ebx, _leaf(out, 0x1F, sub).edx) for sub in range(3)] == [
        (1, 1),
        (2, 1),
        (0, 1),
    ]


def test_brand_string_is_48_nul_padded_bytes_in_eax_ebx_ecx_edx_order() -> None:
    leaves = brand_string_leaves("AMD EPYC 7763 64-Core Processor")
    assert [e.function for e in leaves] == [0x80000002, 0x80000003, 0x80000004]
    raw = b"".join(r.to_bytes(4, "little") for e in leaves for r in (e.eax, e.ebx, e.ecx, e.edx))
    assert raw == b"AMD EPYC 7763 64-Core Processor".ljust(48, b"\0")
    long = brand_string_leaves("x" * 60)  # 47 characters at most: the string stays NUL-terminated
    assert long[2].edx >> 24 == 0 and long[2].edx & 0xFFFFFF == 0x787878


def test_host_brand_string_reads_the_first_model_name(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  \nmodel name\t: other\n"
    )
    assert host_brand_string(str(cpuinfo)) == "AMD EPYC"
    cpuinfo.write_text("processor\t: 0\nfeatures\t: fp asimd\n")  # e.g. arm64: no model name
    assert host_brand_string(str(cpuinfo)) is None
    assert host_brand_string(str(tmp_path / "missing")) is None


def test_apic_ids_follow_cloud_hypervisors_bit_fields() -> None:
    assert CpuTopology(1, 3, 1, 2).apic_ids(6) == (0, 1, 2, 4, 5, 6)  # 3 cores: a 2-bit field
    assert CpuTopology(2, 3, 1, 2).apic_ids(12) == (0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13)
    assert CpuTopology(1, 2, 3, 1).apic_ids(6) == (0, 1, 2, 3, 4, 5)  # dies above cores: 0-1, 2-3, 4-5
    assert CpuTopology.flat(5).apic_ids(5) == (0, 1, 2, 3, 4)


def test_threads_cores_and_packages_reach_every_topology_leaf() -> None:
    topology = CpuTopology(2, 3, 1, 2)  # vCPU 7: package 1, core 0, thread 1 -> APIC id 0b1001
    out = vcpu_cpuid(AMD_LIKE, 7, topology)
    assert _leaf(out, 1).ebx >> 24 == 9
    assert (_leaf(out, 1).ebx >> 16) & 0xFF == 8  # addressable ids per package: 2 ** (1 + 2)
    smt, core, end = (_leaf(out, 0xB, sub) for sub in range(3))
    assert (smt.eax, smt.ebx, smt.ecx >> 8, smt.edx) == (1, 2, 1, 9)
    assert (core.eax, core.ebx, core.ecx >> 8, core.edx) == (3, 6, 2, 9)
    assert end.ecx >> 8 == 0
    assert _leaf(out, 0x80000008).ecx & 0xF0FF == (3 << 12) | 5
    ext = _leaf(out, 0x8000001E)
    assert (ext.eax, ext.ebx >> 8, ext.ebx & 0xFF) == (9, 1, 4)  # two threads per core, core id 9 >> 1


def test_leaf_0x1f_has_a_die_level_when_packages_have_several_dies() -> None:
    supported = [CpuidEntry(0, 0, 0, 0x1F), CpuidEntry(1), CpuidEntry(0x1F, 0, 1)]
    out = vcpu_cpuid(supported, 5, CpuTopology(1, 2, 3, 1))  # APIC id 5: die 2, core 1
    levels = [(e.eax, e.ebx, e.ecx >> 8) for e in (_leaf(out, 0x1F, sub) for sub in range(4))]
    assert levels == [(0, 1, 1), (1, 2, 2), (3, 6, 5), (0, 0, 0)]  # SMT, core, die, end
    assert [(e.eax, e.ebx, e.ecx >> 8) for e in (_leaf(out, 0xB, sub) for sub in range(3))] == [
        (0, 1, 1),
        (3, 6, 2),  # leaf 0xB has no die level: its core level reaches the package id
        (0, 0, 0),
    ]
