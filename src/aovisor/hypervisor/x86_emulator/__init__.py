"""An x86 instruction emulator for MMIO on hypervisors that report only the faulting address (MSHV).

The Microsoft hypervisor's memory intercepts give the guest-physical address and the instruction bytes, not
the data or the access size (mshv.md §6), so the VMM decodes the instruction (iced-x86), performs the access
through a :class:`Memory` and updates registers, flags and RIP in a :class:`CpuState`::

    cpu = CpuState(gprs, rip, rflags, bitness=64)
    emulate(instruction_bytes, cpu, memory)   # cpu now holds the result

Failures are :class:`EmulatorError` subclasses naming the fault the guest should take.
"""

from aovisor.hypervisor.x86_emulator.errors import (
    EmulatorError,
    GuestFault,
    InvalidInstruction,
    TruncatedInstruction,
    UnsupportedInstruction,
)
from aovisor.hypervisor.x86_emulator.execute import Emulated, emulate
from aovisor.hypervisor.x86_emulator.state import GPR_NAMES, CpuState, Memory

__all__ = [
    "GPR_NAMES",
    "CpuState",
    "Emulated",
    "EmulatorError",
    "GuestFault",
    "InvalidInstruction",
    "Memory",
    "TruncatedInstruction",
    "UnsupportedInstruction",
    "emulate",
]
