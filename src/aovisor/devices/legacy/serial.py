"""A 16550A UART (the PC's COM1) as a pure state machine.

Register semantics follow the National/TI PC16550D datasheet ("PC16550D UART with FIFOs", section 8,
"Registers", and Table IV, "Interrupt Control Functions").  The transmitter is infinitely fast: a byte
written to THR goes straight to ``out`` and THR/TSR are always empty again, so LSR.THRE and LSR.TEMT always
read 1 and every THR write re-arms the THRE interrupt.

Receiving: bytes from the host (:meth:`Serial16550.enqueue_input`) wait "on the wire" in a bounded buffer and
move into the receiver as the guest reads them.  This is a line with perfect flow control, so host input
never overruns the receiver; FIFO resets (FCR bits 0/1) therefore discard only bytes that were looped back
in loopback mode, which is the only way the guest itself can fill the receiver.

Locking: ``enqueue_input`` runs on the host-input thread while vCPU threads read and write registers, so the
device carries its own :attr:`Serial16550.lock`, taken by all three entry points.  The bus's per-device lock
is taken outside it (always in that order), so the two never deadlock.  The ``irq`` and ``out`` callbacks
run with the lock held and must not call back into the device.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from aovisor.devices.irq import IrqLine

# --- Register offsets (datasheet Table II) ------------------------------------------------------
RBR_THR = 0  # read: receiver buffer; write: transmitter holding; DLL when LCR.DLAB
IER = 1  # interrupt enable; DLM when LCR.DLAB
IIR_FCR = 2  # read: interrupt identification; write: FIFO control
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7
REGISTER_COUNT = 8

# --- IER (§8.7) ------------------------------------------------------------------------------------
IER_ERBFI = 0x01  # received data available (and, in FIFO mode, character timeout)
IER_ETBEI = 0x02  # transmitter holding register empty
IER_ELSI = 0x04  # receiver line status
IER_EDSSI = 0x08  # modem status
IER_MASK = 0x0F  # bits 4-7 are always 0

# --- IIR (§8.6, Table IV): identification codes in priority order ---------------------------------
IIR_NONE = 0x01  # bit 0 set: no interrupt pending
IIR_LINE_STATUS = 0x06
IIR_RX_DATA = 0x04
IIR_RX_TIMEOUT = 0x0C  # FIFO mode only
IIR_THR_EMPTY = 0x02
IIR_MODEM_STATUS = 0x00
IIR_FIFO_ENABLED = 0xC0  # bits 6-7 mirror FCR bit 0

# --- FCR (§8.5) ------------------------------------------------------------------------------------
FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_CLEAR_TX = 0x04
RX_TRIGGER_LEVELS = (1, 4, 8, 14)  # indexed by FCR bits 7:6
RX_FIFO_SIZE = 16

# --- LCR / MCR / LSR / MSR (§8.1, §8.8, §8.4, §8.9) --------------------------------------------
LCR_DLAB = 0x80
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F  # bits 5-7 are always 0
LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80

# What the "cable" shows when not in loopback: the host end is always ready, no ring.
_MODEM_INPUTS_IDLE = MSR_CTS | MSR_DSR | MSR_DCD

INPUT_BUFFER_LIMIT = 64 * 1024

_ONE_BYTE = tuple(bytes((i,)) for i in range(256))  # THR writes are hot: no allocation per byte


class Serial16550:
    """COM-port UART at 8 consecutive ports; the interrupt line is ``irq``, transmitted bytes go to ``out``.

    The line is asserted while an enabled interrupt condition is pending *and* MCR.OUT2 is set: on a PC,
    OUT2 enables the tri-state buffer between the UART's INTR pin and the ISA IRQ line.  Linux's 8250 driver
    sets OUT2 whenever the port has an IRQ ("Most PC uarts need OUT2 raised to enable interrupts",
    serial8250_do_startup), so gating costs Linux nothing and matches real hardware for other guests.  In
    loopback mode the modem control outputs, OUT2 included, are forced inactive (§8.8, MCR bit 4), so the
    line is quiet there too.
    """

    def __init__(
        self,
        irq: IrqLine,
        out: Callable[[bytes], None],
        *,
        input_limit: int = INPUT_BUFFER_LIMIT,
    ) -> None:
        self.lock = threading.Lock()
        self._irq = irq
        self._out = out
        self._input_limit = input_limit
        self._input: deque[int] = deque()  # host bytes not yet read by the guest
        self._looped: deque[int] = deque()  # bytes in the receiver that came through loopback
        self.dropped_input = 0  # host bytes discarded because the input buffer was full
        self._irq_level = False
        self._dll = 0x0C  # 9600 baud; master reset leaves the divisor latch alone (Table III)
        self._dlm = 0x00
        self._scr = 0  # not touched by master reset either
        self._reset_registers()

    def reset(self) -> None:
        """Master reset (datasheet Table III): registers to defaults; pending host input is kept."""
        with self.lock:
            self._reset_registers()
            self._update_irq()

    def _reset_registers(self) -> None:
        self._ier = 0
        self._lcr = 0
        self._mcr = 0
        self._fifo_enabled = False
        self._rx_trigger = 1
        self._lsr_errors = 0  # OE; PE/FE/BI cannot happen on a virtual line
        self._msr_deltas = 0  # DCTS/DDSR/TERI/DDCD, cleared by reading MSR
        # The THRE interrupt is an event, not a level: set when THR empties (or ETBEI is enabled while it
        # is empty), cleared by a THR write (here at once followed by "empty" again) or by an IIR read
        # that reports it (Table IV).
        self._thre_pending = False
        self._looped.clear()

    # --- Host side --------------------------------------------------------------------------------
    def enqueue_input(self, data: bytes) -> int:
        """Queue bytes for the guest to receive (any thread); returns how many were accepted.

        Bytes beyond the buffer limit are dropped and counted in :attr:`dropped_input`.
        """
        with self.lock:
            room = self._input_limit - len(self._input)
            accepted = data if len(data) <= room else data[: max(room, 0)]
            self.dropped_input += len(data) - len(accepted)
            self._input.extend(accepted)
            self._update_irq()
            return len(accepted)

    @property
    def pending_input(self) -> int:
        """Host bytes the guest has not read yet (for back-pressure on the input source)."""
        return len(self._input)

    # --- BusDevice ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 1 or not 0 <= offset < REGISTER_COUNT:
            # Registers are byte-wide; a wider access is a guest bug, answered like an empty bus.
            return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0
        with self.lock:
            value = self._read_register(offset)
            self._update_irq()
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 1 or not 0 <= offset < REGISTER_COUNT:
            return
        with self.lock:
            self._write_register(offset, value & 0xFF)
            self._update_irq()

    # --- Registers ----------------------------------------------------------------------------------
    def _read_register(self, offset: int) -> int:
        if offset == RBR_THR:
            return self._dll if self._lcr & LCR_DLAB else self._receive()
        if offset == IER:
            return self._dlm if self._lcr & LCR_DLAB else self._ier
        if offset == IIR_FCR:
            iid = self._interrupt_id()
            if iid == IIR_THR_EMPTY:
                self._thre_pending = False  # reading IIR acknowledges THRE when it is the one reported
            return iid | (IIR_FIFO_ENABLED if self._fifo_enabled else 0)
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return self._mcr
        if offset == LSR:
            value = LSR_THRE | LSR_TEMT | self._lsr_errors | (LSR_DR if self._rx_count() else 0)
            self._lsr_errors = 0  # error bits clear on read (§8.4)
            return value
        if offset == MSR:
            value = self._modem_inputs() | self._msr_deltas
            self._msr_deltas = 0  # delta bits clear on read (§8.9)
            return value
        return self._scr

    def _write_register(self, offset: int, value: int) -> None:
        if offset == RBR_THR:
            if self._lcr & LCR_DLAB:
                self._dll = value
                return
            if self._mcr & MCR_LOOP:
                self._loop_back(value)  # §8.8: the transmitter shift register feeds the receiver
            else:
                self._out(_ONE_BYTE[value])
            self._thre_pending = True  # the byte left at once: THR is empty again
        elif offset == IER:
            if self._lcr & LCR_DLAB:
                self._dlm = value
                return
            value &= IER_MASK
            if (value ^ self._ier) & IER_ETBEI:
                # Enabling ETBEI while THR is empty raises THRE at once.  Linux's startup test toggles IER
                # to check that THRE is re-asserted (UART_BUG_THRE in serial8250_do_startup), and QEMU and
                # Bochs sample it on this rising edge too.
                self._thre_pending = bool(value & IER_ETBEI)
            self._ier = value
        elif offset == IIR_FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self._lcr = value
        elif offset == MCR:
            self._write_mcr(value & MCR_MASK)
        elif offset == SCR:
            self._scr = value
        # LSR and MSR are read-only: writes are ignored (factory-test use only, §8.4).

    def _write_fcr(self, value: int) -> None:
        enable = bool(value & FCR_ENABLE)
        if enable != self._fifo_enabled:
            self._looped.clear()  # switching between 16450 and FIFO mode empties both FIFOs (§8.5)
            self._fifo_enabled = enable
        if not enable:
            return  # "FCR0 must be 1 when other FCR bits are written to or they will not be programmed"
        if value & FCR_CLEAR_RX:
            self._looped.clear()
        # FCR_CLEAR_TX: the transmit FIFO is always empty here.
        self._rx_trigger = RX_TRIGGER_LEVELS[value >> 6]

    def _write_mcr(self, value: int) -> None:
        before = self._modem_inputs()
        self._mcr = value
        changed = before ^ self._modem_inputs()
        # Delta bits record changes of the modem inputs since MSR was last read (§8.9); TERI only on the
        # trailing edge of RI.
        deltas = (changed & (MSR_CTS | MSR_DSR | MSR_DCD)) >> 4  # DCTS/DDSR/DDCD sit 4 bits below
        if changed & MSR_RI and before & MSR_RI:
            deltas |= MSR_TERI
        self._msr_deltas |= deltas

    def _modem_inputs(self) -> int:
        """CTS/DSR/RI/DCD as MSR bits 4-7: the idle cable, or in loopback RTS/DTR/OUT1/OUT2 (§8.8)."""
        mcr = self._mcr
        if not mcr & MCR_LOOP:
            return _MODEM_INPUTS_IDLE
        return (
            (MSR_CTS if mcr & MCR_RTS else 0)
            | (MSR_DSR if mcr & MCR_DTR else 0)
            | (MSR_RI if mcr & MCR_OUT1 else 0)
            | (MSR_DCD if mcr & MCR_OUT2 else 0)
        )

    # --- Receiver -----------------------------------------------------------------------------------
    def _rx_count(self) -> int:
        """Bytes the guest can read now.  In loopback the serial input is disconnected (§8.8)."""
        if self._mcr & MCR_LOOP:
            return len(self._looped)
        return len(self._looped) + len(self._input)

    def _receive(self) -> int:
        if self._looped:
            return self._looped.popleft()
        if self._input and not self._mcr & MCR_LOOP:
            return self._input.popleft()
        return 0

    def _loop_back(self, value: int) -> None:
        capacity = RX_FIFO_SIZE if self._fifo_enabled else 1
        if len(self._looped) >= capacity:
            # Overrun: the new character is lost, the receiver contents are kept (§8.4, LSR bit 1).
            self._lsr_errors |= LSR_OE
        else:
            self._looped.append(value)

    # --- Interrupts ---------------------------------------------------------------------------------
    def _interrupt_id(self) -> int:
        """The highest-priority enabled pending interrupt (Table IV), as IIR bits 0-3."""
        ier = self._ier
        if ier & IER_ELSI and self._lsr_errors:
            return IIR_LINE_STATUS
        if ier & IER_ERBFI:
            count = self._rx_count()
            if count:
                # In FIFO mode, below the trigger level the character-timeout interrupt reports the data
                # instead; on a virtual line the "4 character times" without activity are already over.
                if not self._fifo_enabled or count >= self._rx_trigger:
                    return IIR_RX_DATA
                return IIR_RX_TIMEOUT
        if ier & IER_ETBEI and self._thre_pending:
            return IIR_THR_EMPTY
        if ier & IER_EDSSI and self._msr_deltas:
            return IIR_MODEM_STATUS
        return IIR_NONE

    def _update_irq(self) -> None:
        level = (self._mcr & (MCR_OUT2 | MCR_LOOP)) == MCR_OUT2 and self._interrupt_id() != IIR_NONE
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)
