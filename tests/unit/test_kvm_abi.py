"""Every KVM ioctl number and struct size in aovisor.hypervisor.kvm.abi equals the installed kernel headers'.

A C program is compiled against <linux/kvm.h> at test time and prints the values; the headers come from
Debian's linux-libc-dev, which .ci/run installs.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from aovisor.hypervisor.kvm import abi

IOCTLS = [
    "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_GET_SUPPORTED_CPUID", "KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION", "KVM_SET_TSS_ADDR",
    "KVM_SET_IDENTITY_MAP_ADDR", "KVM_CREATE_IRQCHIP", "KVM_IRQ_LINE", "KVM_SET_GSI_ROUTING", "KVM_IRQFD",
    "KVM_CREATE_PIT2", "KVM_REINJECT_CONTROL", "KVM_IOEVENTFD", "KVM_SET_CLOCK", "KVM_GET_CLOCK",
    "KVM_SIGNAL_MSI", "KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS",
    "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_GET_FPU", "KVM_SET_FPU", "KVM_GET_LAPIC", "KVM_SET_LAPIC",
    "KVM_SET_CPUID2", "KVM_GET_MP_STATE", "KVM_SET_MP_STATE", "KVM_ENABLE_CAP",
]  # fmt: skip
CONSTANTS = [
    "KVM_API_VERSION", "KVM_EXIT_IO", "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN",
    "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTR", "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SYSTEM_EVENT",
    "KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT", "KVM_SYSTEM_EVENT_SHUTDOWN", "KVM_SYSTEM_EVENT_RESET",
    "KVM_SYSTEM_EVENT_CRASH", "KVM_CAP_IRQCHIP", "KVM_CAP_USER_MEMORY", "KVM_CAP_SET_TSS_ADDR",
    "KVM_CAP_EXT_CPUID", "KVM_CAP_IRQ_ROUTING", "KVM_CAP_IRQFD", "KVM_CAP_PIT2",
    "KVM_CAP_REINJECT_CONTROL", "KVM_CAP_IOEVENTFD", "KVM_CAP_ADJUST_CLOCK", "KVM_CAP_IMMEDIATE_EXIT",
    "KVM_CAP_NR_VCPUS", "KVM_CAP_MAX_VCPUS", "KVM_CAP_TSC_DEADLINE_TIMER", "KVM_MEM_READONLY",
    "KVM_PIT_SPEAKER_DUMMY", "KVM_IRQFD_FLAG_DEASSIGN", "KVM_IOEVENTFD_FLAG_DATAMATCH",
    "KVM_IOEVENTFD_FLAG_PIO", "KVM_IOEVENTFD_FLAG_DEASSIGN", "KVM_IRQ_ROUTING_IRQCHIP", "KVM_IRQ_ROUTING_MSI",
    "KVM_IRQCHIP_IOAPIC", "KVM_MP_STATE_RUNNABLE", "KVM_MP_STATE_UNINITIALIZED",
]  # fmt: skip
STRUCTS = [
    "kvm_userspace_memory_region", "kvm_regs", "kvm_segment", "kvm_dtable", "kvm_sregs", "kvm_fpu",
    "kvm_msr_entry", "kvm_msrs", "kvm_cpuid_entry2", "kvm_cpuid2", "kvm_lapic_state", "kvm_irq_level",
    "kvm_pit_config", "kvm_reinject_control", "kvm_irqfd", "kvm_ioeventfd", "kvm_irq_routing_entry",
    "kvm_irq_routing", "kvm_msi", "kvm_clock_data", "kvm_mp_state", "kvm_enable_cap",
]  # fmt: skip
# (field, offset) pairs of struct kvm_run that the run loop reads by offset.
KVM_RUN_FIELDS = {
    "immediate_exit": abi.KVM_RUN_IMMEDIATE_EXIT_OFFSET,
    "exit_reason": abi.KVM_RUN_EXIT_REASON_OFFSET,
    "io": abi.KVM_RUN_EXIT_UNION_OFFSET,
    "mmio.phys_addr": abi.KVM_RUN_MMIO_ADDR_OFFSET,
    "mmio.data": abi.KVM_RUN_MMIO_DATA_OFFSET,
    "mmio.len": abi.KVM_RUN_MMIO_LEN_OFFSET,
    "mmio.is_write": abi.KVM_RUN_MMIO_IS_WRITE_OFFSET,
    "system_event": abi.KVM_RUN_EXIT_UNION_OFFSET,
}


@pytest.fixture(scope="module")
def header_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed for the ABI test (apt-get install gcc)"
    assert Path("/usr/include/linux/kvm.h").exists(), "linux/kvm.h missing (apt-get install linux-libc-dev)"
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/kvm.h>", "int main(void) {"]
    for name in IOCTLS + CONSTANTS:
        lines.append(f'printf("{name} %lu\\n", (unsigned long)({name}));')
    for name in STRUCTS:
        lines.append(f'printf("sizeof:{name} %lu\\n", (unsigned long)sizeof(struct {name}));')
    for field in KVM_RUN_FIELDS:
        lines.append(f'printf("kvm_run:{field} %lu\\n", (unsigned long)offsetof(struct kvm_run, {field}));')
    lines.append("return 0; }")
    d = tmp_path_factory.mktemp("kvmabi")
    (d / "abi.c").write_text("\n".join(lines))
    subprocess.run([cc, "-o", str(d / "abi"), str(d / "abi.c")], check=True)
    out = subprocess.run([str(d / "abi")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("name", IOCTLS + CONSTANTS)
def test_constant_matches_header(header_values: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == header_values[name], name


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_size_matches_header(header_values: dict[str, int], name: str) -> None:
    assert ctypes.sizeof(getattr(abi, name)) == header_values[f"sizeof:{name}"], name


@pytest.mark.parametrize("field", list(KVM_RUN_FIELDS))
def test_kvm_run_offsets_match_header(header_values: dict[str, int], field: str) -> None:
    assert KVM_RUN_FIELDS[field] == header_values[f"kvm_run:{field}"], field
