"""The CMOS RAM and real-time clock (MC146818A-compatible) at ports 0x70 (index) and 0x71 (data).

The clock registers are a view of the host's current UTC time: the guest cannot set the clock (writes to the
time registers are ignored), and no RTC interrupts are generated (register C always reads 0).  Register
numbers and bits follow the Motorola MC146818A datasheet ("Address Map", "Register A-D"); the memory-size
bytes follow the IBM PC/AT CMOS layout that SeaBIOS and other firmware read, and bytes 0x5B-0x5D the QEMU
and Cloud Hypervisor convention for RAM above 4 GiB.

Bytes 14-127 are battery-backed RAM: :meth:`Cmos.nvram` and :meth:`Cmos.restore_nvram` carry them over a
guest reset (the VM is rebuilt then), as a PC keeps them across a reboot.  A guest can leave itself a note
for its next boot there (Linux: /dev/nvram).
"""

from __future__ import annotations

import time
from collections.abc import Callable

INDEX_PORT = 0  # offsets from the base port 0x70
DATA_PORT = 1
NVRAM_SIZE = 128
INDEX_MASK = 0x7F  # bit 7 of the index byte is the NMI-disable gate, not part of the address
USER_RAM_START = 0x0E  # the clock and its control registers A-D are below; RAM from here up (MC146818A)

# --- Clock registers ------------------------------------------------------------------------------
REG_SECONDS = 0x00
REG_MINUTES = 0x02
REG_HOURS = 0x04
REG_DAY_OF_WEEK = 0x06  # 1-7, Sunday = 1
REG_DAY_OF_MONTH = 0x07
REG_MONTH = 0x08
REG_YEAR = 0x09  # two digits
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C
REG_D = 0x0D
REG_CENTURY = 0x32  # the FADT's CENTURY field points here

REG_A_UIP = 0x80  # update in progress: the time registers are about to change
REG_A_DEFAULT = 0x26  # 32.768 kHz time base (DV = 010), 1.024 kHz periodic rate (RS = 0110)
REG_B_SET = 0x80
REG_B_DM_BINARY = 0x04  # data mode: 1 = binary, 0 = BCD
REG_B_24H = 0x02
REG_B_DEFAULT = REG_B_24H  # 24-hour, BCD: what PC firmware leaves
REG_D_VRT = 0x80  # valid RAM and time: the battery is good
HOURS_PM = 0x80  # in 12-hour mode, bit 7 of the hours register

# UIP is set for the last 244 us before each update (MC146818A, "Update Cycle"), so a reader that sees it
# clear may read all time registers without them changing under it.
_UIP_WINDOW = 244e-6

_TIME_REGISTERS = frozenset(
    (REG_SECONDS, REG_MINUTES, REG_HOURS, REG_DAY_OF_WEEK, REG_DAY_OF_MONTH, REG_MONTH, REG_YEAR, REG_CENTURY)
)

# --- Memory size (PC/AT layout) -------------------------------------------------------------------
REG_BASE_MEMORY = 0x15  # word: KiB of conventional memory (640)
REG_EXTENDED_MEMORY = 0x17  # word: KiB above 1 MiB, at most 0xFFFF
REG_EXTENDED_MEMORY_POST = 0x30  # word: the same, as found by POST
REG_CHECKSUM = 0x2E  # big-endian word: sum of bytes 0x10-0x2D
REG_MEMORY_ABOVE_16M = 0x34  # word: 64 KiB units between 16 MiB and 4 GiB, at most 0xFFFF
REG_MEMORY_ABOVE_4G = 0x5B  # 3 bytes: 64 KiB units above 4 GiB

_KiB = 1024
_MiB = 1024 * _KiB


class Cmos:
    """128 bytes of CMOS RAM with a read-only real-time clock; ``clock()`` returns POSIX time (UTC)."""

    def __init__(
        self,
        mem_below_4g: int,
        mem_above_4g: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._index = 0
        self._nvram = bytearray(NVRAM_SIZE)
        self._nvram[REG_A] = REG_A_DEFAULT
        self._nvram[REG_B] = REG_B_DEFAULT
        self._memory_sizes = (mem_below_4g, mem_above_4g)
        self._store_memory_sizes(mem_below_4g, mem_above_4g)

    def nvram(self) -> bytes:
        """The battery-backed RAM (bytes 14-127), for :meth:`restore_nvram` in the next boot's CMOS."""
        return bytes(self._nvram[USER_RAM_START:])

    def restore_nvram(self, saved: bytes) -> None:
        """Take back the RAM that :meth:`nvram` returned before a reset; the memory sizes are then written
        again, as firmware does at power-on self-test."""
        if len(saved) != NVRAM_SIZE - USER_RAM_START:
            raise ValueError(f"CMOS RAM is {NVRAM_SIZE - USER_RAM_START} bytes, not {len(saved)}")
        self._nvram[USER_RAM_START:] = saved
        self._store_memory_sizes(*self._memory_sizes)

    def _store_memory_sizes(self, below_4g: int, above_4g: int) -> None:
        ram = self._nvram
        ram[REG_BASE_MEMORY : REG_BASE_MEMORY + 2] = (640).to_bytes(2, "little")
        extended_kib = min(max(below_4g - _MiB, 0) // _KiB, 0xFFFF)
        ram[REG_EXTENDED_MEMORY : REG_EXTENDED_MEMORY + 2] = extended_kib.to_bytes(2, "little")
        ram[REG_EXTENDED_MEMORY_POST : REG_EXTENDED_MEMORY_POST + 2] = extended_kib.to_bytes(2, "little")
        above_16m = min(max(below_4g - 16 * _MiB, 0) // (64 * _KiB), 0xFFFF)
        ram[REG_MEMORY_ABOVE_16M : REG_MEMORY_ABOVE_16M + 2] = above_16m.to_bytes(2, "little")
        high = min(max(above_4g, 0) // (64 * _KiB), 0xFFFFFF)
        ram[REG_MEMORY_ABOVE_4G : REG_MEMORY_ABOVE_4G + 3] = high.to_bytes(3, "little")
        checksum = sum(ram[0x10:REG_CHECKSUM]) & 0xFFFF
        ram[REG_CHECKSUM : REG_CHECKSUM + 2] = checksum.to_bytes(2, "big")

    # --- BusDevice ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 1:
            return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0
        if offset == INDEX_PORT:
            return self._index
        if offset == DATA_PORT:
            return self._read_register(self._index & INDEX_MASK)
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 1:
            return
        value &= 0xFF
        if offset == INDEX_PORT:
            self._index = value  # bit 7 (NMI disable) is kept for read-back but otherwise ignored
        elif offset == DATA_PORT:
            self._write_register(self._index & INDEX_MASK, value)

    # --- Registers ----------------------------------------------------------------------------------
    def _read_register(self, reg: int) -> int:
        if reg in _TIME_REGISTERS:
            return self._time_register(reg)
        if reg == REG_A:
            return self._nvram[REG_A] | (REG_A_UIP if self._update_imminent() else 0)
        if reg == REG_C:
            return 0  # interrupt flags: we raise no RTC interrupts
        if reg == REG_D:
            return REG_D_VRT
        return self._nvram[reg]

    def _write_register(self, reg: int, value: int) -> None:
        if reg in _TIME_REGISTERS or reg in (REG_C, REG_D):
            return  # the clock follows the host; C and D are read-only
        if reg == REG_A:
            value &= ~REG_A_UIP  # UIP is read-only
        self._nvram[reg] = value

    def _update_imminent(self) -> bool:
        if self._nvram[REG_B] & REG_B_SET:
            return False  # SET halts updates, and clears UIP
        now = self._clock()
        return now - (now // 1) >= 1 - _UIP_WINDOW

    def _time_register(self, reg: int) -> int:
        tm = time.gmtime(self._clock() // 1)
        mode = self._nvram[REG_B]
        if reg == REG_SECONDS:
            value = tm.tm_sec
        elif reg == REG_MINUTES:
            value = tm.tm_min
        elif reg == REG_HOURS:
            if mode & REG_B_24H:
                value = tm.tm_hour
            else:
                # 12-hour mode: 12, 1..11 with bit 7 set after noon; the flag is not part of the number.
                pm = HOURS_PM if tm.tm_hour >= 12 else 0
                return self._encode(tm.tm_hour % 12 or 12, mode) | pm
        elif reg == REG_DAY_OF_WEEK:
            value = tm.tm_wday + 2 if tm.tm_wday < 6 else 1  # tm_wday: Monday = 0; RTC: Sunday = 1
        elif reg == REG_DAY_OF_MONTH:
            value = tm.tm_mday
        elif reg == REG_MONTH:
            value = tm.tm_mon
        elif reg == REG_YEAR:
            value = tm.tm_year % 100
        else:  # REG_CENTURY; Linux decodes it with the same BCD/binary mode as the other registers
            value = tm.tm_year // 100
        return self._encode(value, mode)

    @staticmethod
    def _encode(value: int, mode: int) -> int:
        if mode & REG_B_DM_BINARY:
            return value
        return ((value // 10) << 4) | (value % 10)
