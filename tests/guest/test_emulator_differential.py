"""The MMIO emulator (used on MSHV) against KVM's, instruction by instruction, on real guest code.

The guest ``guests/mmio_forms.c`` executes ~400 distinct MMIO instruction encodings at CPL3.  Each one is
bracketed by two port writes: ``out %al,$0xe0`` just before it and ``out %al,$0xe1`` just after, neither of
which changes a register or a flag.  A recording ``VmOps`` wrapped around the VM's buses therefore sees, for
each instruction:

* at the 0xe0 exit, the registers *before* it (KVM_GET_REGS) and where it is (RIP of the OUT + 2);
* then every MMIO access KVM's instruction emulator made for it, with the exact (address, size, data) —
  the recorder answers reads itself with deterministic values;
* at the 0xe1 exit, the registers *after* it, including the destination of a read and the flags.

After the run, each instruction's bytes (read from guest memory: identity-mapped, GVA = GPA) are given to
aovisor's emulator with the "before" registers and a memory that replays KVM's accesses; the emulator must
make the same accesses in the same order with the same data, write the same RAM, and end with the same
registers, RIP and (architecturally defined) flags.  Comparing at the bracketing port exits rather than at the
MMIO exits themselves avoids depending on how far KVM has written registers back when it exits mid-
instruction (for MMIO writes it already has, for reads it has not, and REP forms exit once per element).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iced_x86
import pytest

from conftest import GUEST_BUILD_DIR, selected_backends

PRE_PORT, POST_PORT = 0xE0, 0xE1
OUT_IMM8 = 0xE6  # out %al, $imm8
PROBE_START, PROBE_END = 0xD000_0000, 0xD010_0000  # where the guest's MMIO accesses go
RFLAGS_BITS = {
    "CF": 1 << 0,
    "PF": 1 << 2,
    "AF": 1 << 4,
    "ZF": 1 << 6,
    "SF": 1 << 7,
    "DF": 1 << 10,
    "OF": 1 << 11,
}


def build_mmio_forms() -> Path:
    from guests import build

    try:
        return build.build_guest("mmio_forms", GUEST_BUILD_DIR)
    except build.GuestBuildError as e:
        if "unknown guest" not in str(e):
            raise
    # Not registered in guests/build.py yet: build it exactly as a registered PVH guest is built.
    sources = (*build._RUNTIME_SOURCES, *build._PVH_ENTRY_SOURCES, "mmio_forms.c")
    output = GUEST_BUILD_DIR / "mmio_forms.elf"
    return build._build(build.GUESTS_DIR, sources, build._PVH_LINKER_SCRIPT, output, flat_binary=False)


@dataclass
class Form:
    pre: Any  # Regs before the instruction
    address: int  # where the instruction is
    code: bytes  # 15 bytes from there
    accesses: list[tuple[str, int, int, int]] = field(default_factory=list)
    post: Any = None  # Regs after it
    end: int = 0  # RIP after it


class Recorder:
    """The VM's VmOps with the probe ports and the probe MMIO range diverted into a log."""

    def __init__(self, vm: Any) -> None:
        self.vm = vm
        self.inner = vm.ops
        self.forms: list[Form] = []
        self.current: Form | None = None
        self.segment_bases: dict[str, int] = {}
        self.stray: list[tuple[str, int, int, int]] = []

    def _vcpu(self) -> Any:
        return self.vm.vcpus[0]

    def _out_address(self, rip: int, port: int) -> int:
        """Address of the ``out %al, $port`` that caused this exit: KVM reports RIP at it (mainline) or,
        on some implementations, already past it."""
        if self.vm.memory.read(rip, 2) == bytes([OUT_IMM8, port]):
            return rip
        assert self.vm.memory.read(rip - 2, 2) == bytes([OUT_IMM8, port]), f"no out at {rip:#x}"
        return rip - 2

    def pio_write(self, port: int, size: int, value: int) -> None:
        if port == PRE_PORT:
            vcpu = self._vcpu()
            regs = vcpu.get_regs()
            if not self.segment_bases:
                sregs = vcpu.get_sregs()
                self.segment_bases = {n: getattr(sregs, n).base for n in ("es", "cs", "ss", "ds", "fs", "gs")}
            address = self._out_address(regs.rip, PRE_PORT) + 2
            self.current = Form(regs, address, self.vm.memory.read(address, 15))
        elif port == POST_PORT:
            assert self.current is not None, "post marker without pre marker"
            self.current.post = self._vcpu().get_regs()
            self.current.end = self._out_address(self.current.post.rip, POST_PORT)
            self.forms.append(self.current)
            self.current = None
        else:
            self.inner.pio_write(port, size, value)

    def pio_read(self, port: int, size: int) -> int:
        return int(self.inner.pio_read(port, size))

    def mmio_read(self, addr: int, size: int) -> int:
        if not PROBE_START <= addr < PROBE_END:
            return int(self.inner.mmio_read(addr, size))
        log = self.current.accesses if self.current is not None else self.stray
        seed = f"{addr}:{size}:{len(self.forms)}:{len(log)}".encode()
        value = int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "little") & (
            (1 << (8 * size)) - 1
        )
        log.append(("r", addr, size, value))
        return value

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        if not PROBE_START <= addr < PROBE_END:
            self.inner.mmio_write(addr, size, value)
            return
        log = self.current.accesses if self.current is not None else self.stray
        log.append(("w", addr, size, value))


class Replay:
    """The emulator's Memory: probe addresses replay KVM's accesses, everything else is guest RAM."""

    def __init__(self, form: Form, memory: Any) -> None:
        self.expected = list(form.accesses)
        self.memory = memory
        self.made: list[tuple[str, int, int, int]] = []
        self.ram_writes: list[tuple[int, bytes]] = []

    def read(self, address: int, size: int) -> int:
        if PROBE_START <= address < PROBE_END:
            i = len(self.made)
            value = self.expected[i][3] if i < len(self.expected) and self.expected[i][0] == "r" else 0
            self.made.append(("r", address, size, value))
            return value
        return int.from_bytes(self.memory.read(address, size), "little")

    def write(self, address: int, size: int, value: int) -> None:
        if PROBE_START <= address < PROBE_END:
            self.made.append(("w", address, size, value))
        else:
            self.ram_writes.append((address, value.to_bytes(size, "little")))


def _defined_flags(code: bytes, rip: int) -> int:
    """RFLAGS bits the SDM defines after this instruction (undefined ones may differ between CPUs)."""
    instr = iced_x86.Decoder(64, code, ip=rip).decode()
    mask = sum(RFLAGS_BITS.values())
    for name, bit in RFLAGS_BITS.items():
        if instr.rflags_undefined & getattr(iced_x86.RflagsBits, name):
            mask &= ~bit
    return mask


def compare(form: Form, memory: Any, segment_bases: dict[str, int]) -> list[str]:
    """Run the emulator on one recorded instruction; describe every difference from KVM."""
    from aovisor.hypervisor.x86_emulator import GPR_NAMES, CpuState, EmulatorError, emulate

    cpu = CpuState(
        gprs=[getattr(form.pre, name) for name in GPR_NAMES],
        rip=form.address,
        rflags=form.pre.rflags,
        bitness=64,
        segment_base=segment_bases.__getitem__,
    )
    replay = Replay(form, memory)
    where = f"{form.code.hex()} at {form.address:#x}"
    try:
        result = emulate(form.code, cpu, replay)
    except EmulatorError as e:
        return [f"{where}: emulator refused it: {e}"]
    where = f"{form.code[: result.length].hex()} ({result.mnemonic}) at {form.address:#x}"
    problems = []
    if replay.made != form.accesses:
        problems.append(f"{where}: accesses {replay.made} but KVM made {form.accesses}")
    for address, data in replay.ram_writes:
        if memory.read(address, len(data)) != data:
            problems.append(f"{where}: RAM at {address:#x} should hold {data.hex()}")
    for i, name in enumerate(GPR_NAMES):
        if cpu.gprs[i] != getattr(form.post, name):
            problems.append(f"{where}: {name} = {cpu.gprs[i]:#x}, KVM {getattr(form.post, name):#x}")
    if cpu.rip != form.end:
        problems.append(f"{where}: rip = {cpu.rip:#x}, KVM {form.end:#x}")
    mask = _defined_flags(form.code, form.address) | ~sum(RFLAGS_BITS.values())
    if (cpu.rflags ^ form.post.rflags) & mask & ((1 << 64) - 1):
        problems.append(
            f"{where}: rflags = {cpu.rflags:#x}, KVM {form.post.rflags:#x} (compared {mask & 0xFFF:#x})"
        )
    return problems


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorder, list[list[str]], set[bytes], str]:
    """Boot mmio_forms once on KVM with the recorder; compare every form before guest memory goes away."""
    if "kvm" not in selected_backends():
        pytest.skip("KVM is this test's reference and AOVISOR_HYPERVISOR does not select it")
    if not os.path.exists("/dev/kvm"):
        pytest.fail("/dev/kvm does not exist: the differential test needs KVM as the reference")
    from aovisor.config import MemoryConfig, OutputConfig, OutputMode, PayloadConfig, VmConfig
    from aovisor.hypervisor.kvm.system import Kvm
    from aovisor.vmm.builder import build_vm
    from aovisor.vmm.serial_io import SerialEndpoint
    from aovisor.vmm.vm import ExitReason

    kernel = build_mmio_forms()
    serial_file = tmp_path_factory.mktemp("mmio_forms") / "serial.txt"
    config = VmConfig(
        payload=PayloadConfig(kernel=kernel),
        memory=MemoryConfig(size=128 << 20),
        serial=OutputConfig(OutputMode.FILE, file=serial_file),
        rng=None,
    )
    kvm = Kvm()
    serial = SerialEndpoint(config.serial)
    vm = build_vm(config, kvm, serial)
    try:
        recorder = Recorder(vm)
        vm.ops = recorder  # type: ignore[assignment]
        vm.start()
        reason = vm.wait(timeout=120)
        assert reason is ExitReason.POWEROFF, f"guest did not power off: {reason} {vm.exit_error!r}"
        problems = [compare(form, vm.memory, recorder.segment_bases) for form in recorder.forms]
        encodings = set()
        for form in recorder.forms:
            length = iced_x86.Decoder(64, form.code, ip=form.address).decode().len
            encodings.add(form.code[:length])
    finally:
        vm.close()
        serial.close()
        kvm.close()
    return recorder, problems, encodings, serial_file.read_text()


def test_guest_ran_every_form(recorded: tuple[Recorder, list[list[str]], set[bytes], str]) -> None:
    recorder, _, _, output = recorded
    assert output == f"mmio_forms: start\nmmio_forms done {len(recorder.forms)}\n"
    assert recorder.stray == [], "MMIO outside a bracketed instruction"
    assert all(form.accesses for form in recorder.forms), "a form made no MMIO access"


def test_at_least_200_distinct_encodings(recorded: tuple[Recorder, list[list[str]], set[bytes], str]) -> None:
    _, _, encodings, _ = recorded
    assert len(encodings) >= 200, len(encodings)


def test_emulator_matches_kvm_on_every_instruction(
    recorded: tuple[Recorder, list[list[str]], set[bytes], str],
) -> None:
    _, problems, _, _ = recorded
    failures = [p for form_problems in problems for p in form_problems]
    assert not failures, f"{len(failures)} differences, first ones:\n" + "\n".join(failures[:25])
