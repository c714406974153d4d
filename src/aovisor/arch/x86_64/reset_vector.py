"""A firmware stub at the real-mode reset vector, F000:FFF0 (physical 0xFFFF0), that resets the machine.

There is no firmware in the guest, but Linux may still jump there to reboot: on a hardware-reduced ACPI
machine, ``reboot_init()`` (arch/x86/kernel/reboot.c) picks ``BOOT_EFI`` whenever ``efi_reboot_required()``
says so (it does for every hardware-reduced platform); without EFI, ``efi_reboot()`` returns at once and
the next method, ``BOOT_BIOS``, is ``machine_real_restart()``: back to real mode and a far jump to the BIOS
entry F000:FFF0.  A PC BIOS would start over from there; this stub does the equivalent, the ACPI reset
(the FADT's RESET_REG), and the VMM rebuilds the VM.  Without it the vCPU runs off into empty memory.

0xFFFF0 is in [EBDA, 1 MiB), which the e820 map reserves, after the ACPI tables (a few KiB from 0xE0000).
"""

from __future__ import annotations

from aovisor.arch.x86_64 import layout
from aovisor.devices.legacy.acpi_pm import RESET_VALUE
from aovisor.memory import GuestMemory

RESET_VECTOR = 0xFFFF0  # CS base 0xF0000 + IP 0xFFF0: where a real-mode "jump to the BIOS" lands

# 16-bit code: mov al, RESET_VALUE; mov dx, PORT_ACPI_PM; out dx, al; then hlt forever (cli first: an
# interrupt must not take the vCPU away from the halt if the reset somehow did not happen).
RESET_STUB = bytes(
    [
        0xB0, RESET_VALUE,  # mov al, imm8
        0xBA, layout.PORT_ACPI_PM & 0xFF, layout.PORT_ACPI_PM >> 8,  # mov dx, imm16
        0xEE,  # out dx, al
        0xFA,  # cli
        0xF4,  # hlt
        0xEB, 0xFD,  # jmp short back to hlt
    ]
)  # fmt: skip


def write_reset_stub(memory: GuestMemory) -> None:
    """Put the stub at the reset vector (the 16 bytes up to 1 MiB hold it)."""
    memory.write(RESET_VECTOR, RESET_STUB)
