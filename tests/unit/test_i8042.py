"""The i8042 controller: reset, the commands Linux's i8042/atkbd probes send, and the keyboard interrupt."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aovisor.devices.irq import NullIrq
from aovisor.devices.legacy.i8042 import I8042

DATA = 0
CMD = 4
OBF = 0x01
IBF = 0x02
AUXDATA = 0x20
KEYLOCK = 0x10


class Controller:
    def __init__(self) -> None:
        self.resets = 0
        self.irq = NullIrq()
        self.dev = I8042(reset=self._reset, kbd_irq=self.irq)

    def _reset(self) -> None:
        self.resets += 1

    def status(self) -> int:
        return self.dev.read(CMD, 1)

    def command(self, cmd: int, *params: int) -> list[int]:
        """Linux's __i8042_command: write the command, its parameters, then collect every waiting byte."""
        assert not self.status() & IBF
        self.dev.write(CMD, 1, cmd)
        for p in params:
            assert not self.status() & IBF
            self.dev.write(DATA, 1, p)
        return self.collect()

    def kbd(self, byte: int) -> list[int]:
        self.dev.write(DATA, 1, byte)
        return self.collect()

    def collect(self) -> list[int]:
        out = []
        while self.status() & OBF:
            assert not self.status() & AUXDATA
            out.append(self.dev.read(DATA, 1))
        return out


@pytest.fixture
def kbc() -> Controller:
    return Controller()


def test_command_0xfe_pulses_the_reset_line(kbc: Controller) -> None:
    kbc.command(0xFE)
    assert kbc.resets == 1
    kbc.command(0xFF)  # pulses no line
    kbc.command(0xFD)  # bit 0 set: not the reset line
    assert kbc.resets == 1
    kbc.command(0xF0)  # pulses all four lines, reset among them
    assert kbc.resets == 2


def test_writing_the_output_port_with_bit_0_clear_resets(kbc: Controller) -> None:
    kbc.command(0xD1, 0xDF)  # the classic A20-enable write keeps the reset line high
    assert kbc.resets == 0
    assert kbc.command(0xD0) == [0xDF]
    kbc.command(0xD1, 0xDE)
    assert kbc.resets == 1


def test_status_has_no_data_and_no_keylock_at_start(kbc: Controller) -> None:
    status = kbc.status()
    assert not status & (OBF | IBF)  # i8042_controller_check: a flush finds nothing
    assert status & KEYLOCK  # otherwise Linux warns "Keylock active"
    assert status != 0xFF


def test_linux_probe_sequence(kbc: Controller) -> None:
    assert kbc.command(0xAA) == [0x55]  # self-test
    # i8042_controller_init: two identical CTR reads, then write it back.
    first, second = kbc.command(0x20), kbc.command(0x20)
    assert first == second and len(first) == 1
    ctr = first[0]
    assert ctr & 0x04  # system flag: POST passed
    ctr = (ctr | 0x10) & ~0x01  # disable the keyboard interface and its interrupt
    assert kbc.command(0x60, ctr) == []
    assert kbc.command(0x20) == [ctr]
    assert kbc.command(0xAB) == [0x00]  # keyboard interface test


def test_ctr_disable_enable_commands_toggle_their_bits(kbc: Controller) -> None:
    kbc.command(0xA7)
    assert kbc.command(0x20)[0] & 0x20
    kbc.command(0xA8)
    assert not kbc.command(0x20)[0] & 0x20
    kbc.command(0xAD)
    assert kbc.command(0x20)[0] & 0x10
    kbc.command(0xAE)
    assert not kbc.command(0x20)[0] & 0x10


def test_aux_probe_fails_fast_so_linux_sees_no_mouse_port(kbc: Controller) -> None:
    # i8042_check_aux: the loopback reply does not come from AUX, so Linux runs the AUX interface test,
    # which must report an error (not 0x00, 0xFA or 0xFF) for it to stop probing.
    kbc.dev.write(CMD, 1, 0xD3)
    kbc.dev.write(DATA, 1, 0x5A)
    assert kbc.status() & OBF
    assert not kbc.status() & AUXDATA
    # Linux does not read that byte; the next command's reply replaces it.
    reply = kbc.command(0xA9)
    assert len(reply) == 1
    assert reply[0] not in (0x00, 0xFA, 0xFF)


def test_a_controller_reply_replaces_unread_keyboard_bytes(kbc: Controller) -> None:
    kbc.dev.write(DATA, 1, 0xF2)  # ACK and ID bytes left unread
    assert kbc.command(0x20) == [0x65]  # i8042_command reads exactly one byte: it must be the CTR


def test_controller_ram_reads_back(kbc: Controller) -> None:
    kbc.command(0x65, 0x12)
    assert kbc.command(0x25) == [0x12]


def test_keyboard_answers_atkbd_probe(kbc: Controller) -> None:
    assert kbc.kbd(0xF2)[:2] == [0xFA, 0xAB]  # GETID: ACK then a keyboard ID
    kbc.command(0x60, 0x05)  # translation off
    assert kbc.kbd(0xF2) == [0xFA, 0xAB, 0x83]
    kbc.command(0x60, 0x45)  # translation on: the controller translates 0x83
    assert kbc.kbd(0xF2) == [0xFA, 0xAB, 0x41]
    assert kbc.kbd(0xED) == [0xFA]  # set LEDs ...
    assert kbc.kbd(0x00) == [0xFA]  # ... its argument
    assert kbc.kbd(0xF4) == [0xFA]  # enable scanning
    assert kbc.kbd(0xFF) == [0xFA, 0xAA]  # reset: ACK, self-test passed
    assert kbc.kbd(0xEE) == [0xEE]  # echo
    assert kbc.kbd(0x01) == [0xFE]  # not a command: resend


def test_scancode_set_query(kbc: Controller) -> None:
    assert kbc.kbd(0xF0) == [0xFA]
    assert kbc.kbd(0x00) == [0xFA, 0x02]
    kbc.kbd(0xF0)
    kbc.kbd(0x03)
    kbc.kbd(0xF0)
    assert kbc.kbd(0x00) == [0xFA, 0x03]


def test_keyboard_interrupt_follows_the_output_buffer(kbc: Controller) -> None:
    kbc.dev.write(DATA, 1, 0xF2)  # three bytes queued
    assert kbc.irq.level
    edges = kbc.irq.raised
    for _ in range(3):
        assert kbc.irq.level
        kbc.dev.read(DATA, 1)
    assert not kbc.irq.level
    # Each byte after the first is a new rising edge, so an edge-triggered IRQ 1 sees all three.
    assert kbc.irq.raised == edges + 2


def test_no_interrupt_while_ctr_disables_it(kbc: Controller) -> None:
    kbc.command(0x60, 0x64)  # KBDINT clear
    kbc.dev.write(DATA, 1, 0xF4)
    assert kbc.status() & OBF
    assert not kbc.irq.level


def test_a_guest_that_never_reads_cannot_grow_the_buffer(kbc: Controller) -> None:
    for _ in range(1000):
        kbc.dev.write(DATA, 1, 0xF2)
    assert len(kbc.collect()) <= 16


def test_works_without_an_interrupt_line() -> None:
    resets: list[int] = []
    dev = I8042(reset=lambda: resets.append(1))
    dev.write(DATA, 1, 0xF2)
    assert dev.read(DATA, 1) == 0xFA
    dev.write(CMD, 1, 0xFE)
    assert resets == [1]


@given(
    ops=st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3, 4, 5]), st.sampled_from([1, 2, 4]), st.integers(-1, 2**33)),
        max_size=60,
    )
)
def test_no_access_sequence_raises(ops: list[tuple[int, int, int]]) -> None:
    dev = I8042(reset=lambda: None, kbd_irq=NullIrq())
    for offset, size, value in ops:
        dev.write(offset, size, value)
        assert 0 <= dev.read(offset, size) < 1 << (8 * size)
