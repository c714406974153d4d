"""The 16550A UART: register semantics, interrupts, FIFO and loopback, checked as a guest driver sees them."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aovisor.devices.bus import Bus
from aovisor.devices.irq import NullIrq
from aovisor.devices.legacy.serial import Serial16550

THR = RBR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

OUT2 = 0x08
LOOP = 0x10
DLAB = 0x80


class Uart:
    """A UART with its line and output captured."""

    def __init__(self, input_limit: int = 64 * 1024) -> None:
        self.irq = NullIrq()
        self.sent: list[bytes] = []
        self.dev = Serial16550(self.irq, self.sent.append, input_limit=input_limit)

    def r(self, reg: int) -> int:
        return self.dev.read(reg, 1)

    def w(self, reg: int, value: int) -> None:
        self.dev.write(reg, 1, value)

    def output(self) -> bytes:
        return b"".join(self.sent)

    def drain(self) -> bytes:
        got = bytearray()
        while self.r(LSR) & 0x01:
            got.append(self.r(RBR))
        return bytes(got)


@pytest.fixture
def uart() -> Uart:
    return Uart()


# --- Transmit, identification, plain registers --------------------------------------------------------


def test_thr_writes_reach_the_host_and_the_transmitter_is_always_empty(uart: Uart) -> None:
    for byte in b"hi\n":
        uart.w(THR, byte)
        assert uart.r(LSR) & 0x60 == 0x60  # THRE and TEMT
    assert uart.output() == b"hi\n"
    assert all(len(chunk) == 1 for chunk in uart.sent)


def test_divisor_latch_is_separate_from_thr_and_ier(uart: Uart) -> None:
    uart.w(IER, 0x05)
    uart.w(LCR, DLAB | 0x03)
    uart.w(DLL, 0x01)
    uart.w(DLM, 0x02)
    assert (uart.r(DLL), uart.r(DLM)) == (0x01, 0x02)
    assert uart.output() == b""  # a DLL write is not a transmitted byte
    uart.w(LCR, 0x03)
    assert uart.r(IER) == 0x05
    assert uart.r(LCR) == 0x03
    uart.w(LCR, DLAB)
    assert (uart.r(DLL), uart.r(DLM)) == (0x01, 0x02)


def test_linux_existence_test_sees_a_four_bit_ier(uart: Uart) -> None:
    # autoconfig(): IER=0 must read 0, IER=0x0F must read 0x0F; the upper nibble never sticks.
    uart.w(IER, 0)
    assert uart.r(IER) & 0x0F == 0
    uart.w(IER, 0xFF)
    assert uart.r(IER) == 0x0F


def test_scratch_lcr_and_mcr_read_back(uart: Uart) -> None:
    uart.w(SCR, 0xA5)
    uart.w(LCR, 0x1B)
    uart.w(MCR, 0xFF)
    assert uart.r(SCR) == 0xA5
    assert uart.r(LCR) == 0x1B
    assert uart.r(MCR) == 0x1F  # MCR bits 5-7 are always 0


def test_fifo_enable_shows_in_iir_bits_6_and_7(uart: Uart) -> None:
    assert uart.r(IIR) == 0x01  # 16450 mode, nothing pending
    uart.w(FCR, 0x01)
    assert uart.r(IIR) >> 6 == 3  # Linux's autoconfig: 3 means "16550A"
    uart.w(FCR, 0x00)
    assert uart.r(IIR) == 0x01


def test_msr_shows_a_ready_cable_and_loopback_maps_the_outputs(uart: Uart) -> None:
    assert uart.r(MSR) & 0xF0 == 0xB0  # DCD, DSR, CTS; no ring
    # Linux's loopback existence test: MCR = LOOP | OUT2 | RTS must show DCD | CTS.
    uart.w(MCR, LOOP | 0x0A)
    assert uart.r(MSR) & 0xF0 == 0x90
    uart.w(MCR, LOOP | 0x05)  # DTR -> DSR, OUT1 -> RI
    assert uart.r(MSR) & 0xF0 == 0x60


# --- THRE interrupt and the OUT2 gate ------------------------------------------------------------------


def test_enabling_etbei_raises_thre_and_reading_iir_acknowledges_it(uart: Uart) -> None:
    uart.w(MCR, OUT2)
    uart.w(IER, 0x02)
    assert uart.irq.level
    assert uart.r(IIR) == 0x02
    assert not uart.irq.level
    assert uart.r(IIR) == 0x01
    uart.w(THR, ord("x"))  # the byte leaves at once: THR empty again
    assert uart.irq.level
    assert uart.r(IIR) == 0x02
    assert not uart.irq.level


def test_linux_thre_retest_sees_thre_reasserted(uart: Uart) -> None:
    # serial8250_do_startup: a UART that does not re-raise THRE on re-enabling IER gets UART_BUG_THRE.
    uart.w(MCR, OUT2)
    uart.w(IER, 0x02)
    iir1 = uart.r(IIR)
    uart.w(IER, 0)
    uart.w(IER, 0x02)
    iir2 = uart.r(IIR)
    uart.w(IER, 0)
    assert iir1 & 0x01 == 0
    assert iir2 & 0x01 == 0


def test_disabling_etbei_withdraws_thre(uart: Uart) -> None:
    uart.w(MCR, OUT2)
    uart.w(IER, 0x02)
    uart.w(IER, 0x00)
    assert uart.r(IIR) == 0x01
    assert not uart.irq.level


def test_out2_gates_the_interrupt_line(uart: Uart) -> None:
    uart.w(IER, 0x02)  # THRE is pending inside the UART ...
    assert not uart.irq.level  # ... but OUT2 is clear, so the ISA line stays low
    uart.w(MCR, OUT2)
    assert uart.irq.level
    uart.w(MCR, 0)
    assert not uart.irq.level
    uart.w(MCR, OUT2 | LOOP)  # loopback forces OUT2 inactive
    assert not uart.irq.level
    uart.w(MCR, OUT2)
    assert uart.irq.level


# --- Receiving -----------------------------------------------------------------------------------------


def test_received_bytes_raise_rda_and_arrive_in_order(uart: Uart) -> None:
    uart.w(MCR, OUT2)
    uart.w(IER, 0x01)
    assert not uart.irq.level
    assert uart.dev.enqueue_input(b"abc") == 3
    assert uart.irq.level
    assert uart.r(IIR) == 0x04
    assert uart.r(LSR) & 0x01
    assert uart.drain() == b"abc"
    assert not uart.irq.level
    assert uart.r(IIR) == 0x01
    assert uart.r(RBR) == 0  # empty receiver


def test_fifo_trigger_level_chooses_between_rda_and_character_timeout(uart: Uart) -> None:
    uart.w(MCR, OUT2)
    uart.w(IER, 0x01)
    uart.w(FCR, 0x81)  # FIFO on, trigger level 8
    uart.dev.enqueue_input(b"123")
    assert uart.r(IIR) == 0xCC  # below the trigger: character timeout
    assert uart.irq.level
    uart.dev.enqueue_input(b"45678")
    assert uart.r(IIR) == 0xC4  # 8 bytes: data available
    uart.r(RBR)
    assert uart.r(IIR) == 0xCC
    assert uart.drain() == b"2345678"
    assert not uart.irq.level


def test_rx_interrupt_outranks_thre(uart: Uart) -> None:
    uart.w(MCR, OUT2)
    uart.w(IER, 0x03)
    uart.dev.enqueue_input(b"z")
    assert uart.r(IIR) == 0x04
    assert uart.r(RBR) == ord("z")
    assert uart.r(IIR) == 0x02  # THRE was pending underneath all along
    assert uart.r(IIR) == 0x01


def test_input_beyond_the_limit_is_dropped_and_counted() -> None:
    uart = Uart(input_limit=4)
    assert uart.dev.enqueue_input(b"abc") == 3
    assert uart.dev.enqueue_input(b"defg") == 1
    assert uart.dev.dropped_input == 3
    assert uart.dev.pending_input == 4
    assert uart.drain() == b"abcd"
    assert uart.dev.enqueue_input(b"xy") == 2
    assert uart.drain() == b"xy"


def test_fifo_resets_do_not_lose_host_input(uart: Uart) -> None:
    uart.dev.enqueue_input(b"typed early")
    uart.w(FCR, 0x01)
    uart.w(FCR, 0x07)  # clear both FIFOs
    uart.w(FCR, 0x00)
    assert uart.drain() == b"typed early"


def test_reset_restores_defaults_but_keeps_host_input(uart: Uart) -> None:
    uart.w(MCR, OUT2)
    uart.w(IER, 0x0F)
    uart.w(LCR, 0x83)
    uart.dev.enqueue_input(b"k")
    assert uart.irq.level
    uart.dev.reset()
    assert not uart.irq.level
    assert (uart.r(IER), uart.r(LCR), uart.r(MCR)) == (0, 0, 0)
    assert uart.drain() == b"k"


# --- Loopback ------------------------------------------------------------------------------------------


def test_loopback_returns_transmitted_bytes_and_disconnects_the_line(uart: Uart) -> None:
    uart.dev.enqueue_input(b"host")
    uart.w(MCR, LOOP)
    assert not uart.r(LSR) & 0x01  # serial input disconnected
    uart.w(THR, 0x42)
    assert uart.output() == b""
    assert uart.drain() == b"\x42"
    uart.w(MCR, 0)
    assert uart.drain() == b"host"


def test_loopback_fifo_holds_16_bytes_then_overruns(uart: Uart) -> None:
    # Linux's size_fifo(): in loopback, count how many bytes the receiver keeps.
    uart.w(FCR, 0x07)
    uart.w(MCR, LOOP)
    uart.w(IER, 0x04)  # receiver line status interrupt
    for i in range(20):
        uart.w(THR, i)
    lsr = uart.r(LSR)
    assert lsr & 0x02  # overrun
    assert not uart.r(LSR) & 0x02  # cleared by the read
    assert uart.drain() == bytes(range(16))


def test_loopback_without_fifo_holds_one_byte(uart: Uart) -> None:
    uart.w(MCR, LOOP)
    uart.w(THR, 1)
    uart.w(THR, 2)
    assert uart.r(LSR) & 0x03 == 0x03
    assert uart.drain() == b"\x01"


def test_fifo_clear_discards_looped_back_bytes(uart: Uart) -> None:
    uart.w(FCR, 0x01)
    uart.w(MCR, LOOP)
    uart.w(THR, 7)
    uart.w(FCR, 0x03)
    assert uart.drain() == b""


def test_modem_status_interrupt_reports_loopback_changes(uart: Uart) -> None:
    uart.w(MCR, LOOP)
    uart.r(MSR)  # entering loopback changed CTS/DSR/DCD; consume those deltas
    uart.w(IER, 0x08)
    uart.w(MCR, LOOP | 0x02)  # RTS -> CTS rises
    assert uart.r(IIR) == 0x00
    assert uart.r(MSR) == 0x11  # CTS with DCTS
    assert uart.r(IIR) == 0x01
    uart.w(MCR, LOOP | 0x04)  # OUT1 -> RI rises, CTS falls
    assert uart.r(MSR) == 0x41
    uart.w(MCR, LOOP)  # RI falls: trailing-edge RI
    assert uart.r(MSR) == 0x04


# --- Robustness and threads ----------------------------------------------------------------------------


def test_wide_and_out_of_range_accesses_are_harmless(uart: Uart) -> None:
    assert uart.dev.read(0, 2) == 0xFFFF
    assert uart.dev.read(0, 4) == 0xFFFF_FFFF
    assert uart.dev.read(8, 1) == 0xFF
    uart.dev.write(0, 2, 0x4141)
    uart.dev.write(0, 4, 0x41414141)
    uart.dev.write(9, 1, 0x41)
    assert uart.output() == b""


@given(
    offset=st.integers(-4, 16),
    size=st.sampled_from([0, 1, 2, 3, 4, 8, 16]),
    value=st.integers(-(2**70), 2**70),
)
def test_no_access_raises(offset: int, size: int, value: int) -> None:
    uart = Uart()
    uart.dev.write(offset, size, value)
    uart.dev.read(offset, size)


def test_input_from_another_thread_arrives_complete_and_in_order() -> None:
    irq = NullIrq()
    uart = Serial16550(irq, lambda _data: None)
    bus = Bus("pio")
    bus.insert(uart, 0x3F8, 8)
    payload = bytes(range(256)) * 40
    chunks = [payload[i : i + 37] for i in range(0, len(payload), 37)]

    def feed() -> None:
        for chunk in chunks:
            uart.enqueue_input(chunk)

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = bytearray()
    while len(got) < len(payload):
        if bus.read(0x3F8 + LSR, 1) & 0x01:
            got.append(bus.read(0x3F8 + RBR, 1))
    feeder.join()
    assert bytes(got) == payload
    assert uart.dropped_input == 0


# --- A reference model, written from the datasheet's Table IV, against random register traffic -------


class UartModel:
    """An independent, deliberately plain restatement of what the guest must observe."""

    def __init__(self) -> None:
        self.ier = self.lcr = self.mcr = self.scr = 0
        self.dll, self.dlm = 0x0C, 0
        self.fifo = False
        self.trigger = 1
        self.thre = False
        self.oe = False
        self.deltas = 0
        self.looped: list[int] = []
        self.input: list[int] = []
        self.out: list[int] = []

    def loop(self) -> bool:
        return bool(self.mcr & LOOP)

    def modem_inputs(self) -> int:
        if not self.loop():
            return 0xB0
        m = self.mcr
        return (m & 2) << 3 | (m & 1) << 5 | (m & 4) << 4 | (m & 8) << 4

    def rx(self) -> list[int]:
        return self.looped if self.loop() else self.looped + self.input

    def iid(self) -> int:
        n = len(self.rx())
        if self.ier & 4 and self.oe:
            return 0x06
        if self.ier & 1 and n:
            return 0x04 if not self.fifo or n >= self.trigger else 0x0C
        if self.ier & 2 and self.thre:
            return 0x02
        if self.ier & 8 and self.deltas:
            return 0x00
        return 0x01

    def line(self) -> bool:
        return bool(self.mcr & OUT2) and not self.loop() and self.iid() != 0x01

    def write(self, reg: int, v: int) -> None:
        dlab = self.lcr & DLAB
        if reg == 0 and dlab:
            self.dll = v
        elif reg == 1 and dlab:
            self.dlm = v
        elif reg == 0:
            if self.loop():
                if len(self.looped) < (16 if self.fifo else 1):
                    self.looped.append(v)
                else:
                    self.oe = True
            else:
                self.out.append(v)
            self.thre = True
        elif reg == 1:
            if (v ^ self.ier) & 2:
                self.thre = bool(v & 2)
            self.ier = v & 0x0F
        elif reg == 2:
            if bool(v & 1) != self.fifo:
                self.looped.clear()
                self.fifo = bool(v & 1)
            if self.fifo:
                if v & 2:
                    self.looped.clear()
                self.trigger = (1, 4, 8, 14)[v >> 6]
        elif reg == 3:
            self.lcr = v
        elif reg == 4:
            before = self.modem_inputs()
            self.mcr = v & 0x1F
            after = self.modem_inputs()
            for bit, delta in ((0x10, 1), (0x20, 2), (0x80, 8)):
                if (before ^ after) & bit:
                    self.deltas |= delta
            if before & 0x40 and not after & 0x40:
                self.deltas |= 4
        elif reg == 7:
            self.scr = v

    def read(self, reg: int) -> int:
        dlab = self.lcr & DLAB
        if reg == 0 and dlab:
            return self.dll
        if reg == 1 and dlab:
            return self.dlm
        if reg == 0:
            if self.looped:
                return self.looped.pop(0)
            if self.input and not self.loop():
                return self.input.pop(0)
            return 0
        if reg == 1:
            return self.ier
        if reg == 2:
            iid = self.iid()
            if iid == 0x02:
                self.thre = False
            return iid | (0xC0 if self.fifo else 0)
        if reg == 3:
            return self.lcr
        if reg == 4:
            return self.mcr
        if reg == 5:
            value = 0x60 | (0x02 if self.oe else 0) | (0x01 if self.rx() else 0)
            self.oe = False
            return value
        if reg == 6:
            value = self.modem_inputs() | self.deltas
            self.deltas = 0
            return value
        return self.scr


# Values that steer the machine into interesting states more often than uniform bytes would.
_interesting = st.sampled_from(
    [0x00, 0x01, 0x02, 0x03, 0x07, 0x08, 0x0B, 0x0F, 0x10, 0x18, 0x1A, 0x41, 0x80, 0xC7]
)
byte_values = st.one_of(_interesting, st.integers(0, 255))


class UartMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.uart = Uart(input_limit=1 << 20)
        self.model = UartModel()

    @rule(reg=st.integers(0, 7), value=byte_values)
    def write(self, reg: int, value: int) -> None:
        self.uart.w(reg, value)
        self.model.write(reg, value)

    @rule(reg=st.integers(0, 7))
    def read(self, reg: int) -> None:
        assert self.uart.r(reg) == self.model.read(reg), f"register {reg}"

    @rule(data=st.binary(min_size=1, max_size=20))
    def host_input(self, data: bytes) -> None:
        assert self.uart.dev.enqueue_input(data) == len(data)
        self.model.input.extend(data)

    @invariant()
    def line_matches_pending_enabled_condition(self) -> None:
        assert self.uart.irq.level == self.model.line()

    @invariant()
    def transmitted_bytes_match(self) -> None:
        assert self.uart.output() == bytes(self.model.out)


UartMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestUartAgainstModel = UartMachine.TestCase
