"""The i8042 PS/2 controller at ports 0x60 (data) and 0x64 (status/command), with a keyless keyboard.

Registered as one device covering 0x60-0x64: offset 0 is the data port, offset 4 status (read) / command
(write).  Port 0x61 in between belongs to the PIT's speaker gate (in-kernel with KVM); reads of offsets 1-3
return all-ones.

It exists for two reasons: the reset line (command 0xFE, Linux's ``reboot=k`` and a fallback of the
default reboot path), and so Linux's i8042 and atkbd drivers find a well-behaved controller instead of
timing out.  Every controller command that returns a byte returns it at once (the driver waits up to 500 ms
for each missing one), and the keyboard answers the PS/2 commands atkbd sends (ACK 0xFA, reset 0xAA, ID
0xAB 0x83).  The keyboard never produces scan codes.  Responses reach the driver through the keyboard
interrupt (IRQ 1), so the VMM should wire ``kbd_irq``; without it the atkbd probe times out quietly.

There is no AUX (mouse) port: the AUX loopback command 0xD3 echoes its byte as keyboard data and the AUX
interface test 0xA9 reports a stuck clock line, which Linux's ``i8042_check_aux`` takes as "no AUX port"
without waiting for its 250 ms AUX interrupt test.  (Linux skips that probe anyway when ACPI lists a PNP
keyboard controller without a PNP mouse.)

Status and command bits: IBM PS/2 hardware technical reference, "Keyboard/Auxiliary Device Controller";
the names below match Linux's ``drivers/input/serio/i8042.h``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from aovisor.devices.irq import IrqLine
from aovisor.logs import get_logger

log = get_logger(__name__)

DATA = 0  # offsets from the base port 0x60
COMMAND = 4  # port 0x64
PORT_SPAN = 5

# --- Status register (read at 0x64) ---------------------------------------------------------------
STR_OBF = 0x01  # output buffer full: a byte is waiting at 0x60
STR_IBF = 0x02  # input buffer full: never, commands complete at once
STR_SYSFLAG = 0x04  # mirrors CTR_SYSFLAG (set by firmware after a successful self-test)
STR_CMDDAT = 0x08  # the last byte written went to 0x64 (command) rather than 0x60
STR_KEYLOCK = 0x10  # 1 = keyboard not inhibited by the keylock switch
STR_AUXDATA = 0x20  # the byte in the output buffer came from the AUX port: never, there is none

# --- Controller command byte (CTR) ---------------------------------------------------------------
CTR_KBDINT = 0x01  # raise IRQ 1 when the output buffer fills
CTR_AUXINT = 0x02
CTR_SYSFLAG = 0x04
CTR_KBDDIS = 0x10
CTR_AUXDIS = 0x20
CTR_XLATE = 0x40  # translate keyboard scan code set 2 to set 1
CTR_DEFAULT = CTR_KBDINT | CTR_SYSFLAG | CTR_AUXDIS | CTR_XLATE  # as a PC BIOS leaves it (0x65)

# --- Controller commands (written to 0x64) --------------------------------------------------------
CMD_READ_RAM = 0x20  # 0x20-0x3F: read controller RAM byte n; byte 0 is the CTR
CMD_WRITE_RAM = 0x60  # 0x60-0x7F: write controller RAM byte n from the next data byte
CMD_PASSWORD_TEST = 0xA4
CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_SELF_TEST = 0xAA
CMD_KBD_TEST = 0xAB
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_READ_OUTPUT_PORT = 0xD0
CMD_WRITE_OUTPUT_PORT = 0xD1
CMD_WRITE_KBD_OUTPUT = 0xD2
CMD_WRITE_AUX_OUTPUT = 0xD3  # AUX loopback
CMD_WRITE_AUX = 0xD4
CMD_READ_TEST_INPUTS = 0xE0
CMD_PULSE_OUTPUT = 0xF0  # 0xF0-0xFF: pulse output-port lines whose bit is 0 in the low nibble

SELF_TEST_OK = 0x55
INTERFACE_TEST_OK = 0x00
AUX_CLOCK_STUCK_HIGH = 0x02
NO_PASSWORD = 0xF1
OUTPUT_PORT_RESET = 0x01  # output port bit 0 drives the CPU reset line (active low)
OUTPUT_PORT_A20 = 0x02
OUTPUT_PORT_DEFAULT = OUTPUT_PORT_RESET | OUTPUT_PORT_A20

# --- PS/2 keyboard protocol (bytes written to 0x60 with no controller command pending) -----------
KBD_ACK = 0xFA
KBD_RESEND = 0xFE  # also "unknown command"
KBD_BAT_OK = 0xAA
KBD_ECHO = 0xEE
KBD_SET_LEDS = 0xED
KBD_SCANCODE_SET = 0xF0
KBD_GET_ID = 0xF2
KBD_SET_TYPEMATIC = 0xF3
KBD_RESET = 0xFF
KBD_ID = (0xAB, 0x83)  # an MF2 keyboard; behind translation the second byte reads 0x41
KBD_ID_TRANSLATED = 0x41

_COMMANDS_WITH_DATA = frozenset(
    (CMD_WRITE_OUTPUT_PORT, CMD_WRITE_KBD_OUTPUT, CMD_WRITE_AUX_OUTPUT, CMD_WRITE_AUX)
)
_KBD_COMMANDS_WITH_ARGUMENT = frozenset((KBD_SET_LEDS, KBD_SCANCODE_SET, KBD_SET_TYPEMATIC))
_OUTPUT_LIMIT = 16  # bytes queued for the guest; a guest that never reads cannot grow it


class I8042:
    """The PS/2 controller; ``reset()`` is called when the guest pulses the CPU reset line."""

    def __init__(self, reset: Callable[[], None], kbd_irq: IrqLine | None = None) -> None:
        self._reset = reset
        self._kbd_irq = kbd_irq
        self._irq_level = False
        self._ram = bytearray(32)  # controller RAM; byte 0 is the command byte (CTR)
        self._ram[0] = CTR_DEFAULT
        self._output_port = OUTPUT_PORT_DEFAULT
        self._output: deque[int] = deque()
        self._last_was_command = False
        self._pending_command: int | None = None  # controller command waiting for its data byte
        self._kbd_pending: int | None = None  # keyboard command waiting for its argument
        self._scancode_set = 2

    @property
    def _ctr(self) -> int:
        return self._ram[0]

    # --- BusDevice ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 1:
            return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0
        if offset == COMMAND:
            return self._status()
        if offset == DATA:
            return self._read_data()
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 1:
            return
        value &= 0xFF
        if offset == COMMAND:
            self._last_was_command = True
            self._command(value)
        elif offset == DATA:
            self._last_was_command = False
            self._data(value)
        self._update_irq()

    def _status(self) -> int:
        status = STR_KEYLOCK | (self._ctr & CTR_SYSFLAG)
        if self._output:
            status |= STR_OBF
        if self._last_was_command:
            status |= STR_CMDDAT
        return status

    def _read_data(self) -> int:
        if not self._output:
            return 0
        value = self._output.popleft()
        if self._output:
            # The next byte is a new "output buffer full" event: drop the line so an edge-triggered
            # IRQ 1 sees another rising edge (the chip loads the next byte only after this read).
            self._set_irq(False)
        self._update_irq()
        return value

    # --- Controller commands ------------------------------------------------------------------------
    def _command(self, cmd: int) -> None:
        self._pending_command = None
        if CMD_READ_RAM <= cmd < CMD_READ_RAM + 0x20:
            self._reply(self._ram[cmd & 0x1F])
        elif CMD_WRITE_RAM <= cmd < CMD_WRITE_RAM + 0x20 or cmd in _COMMANDS_WITH_DATA:
            self._pending_command = cmd  # completed by the next byte written to 0x60
        elif cmd == CMD_PASSWORD_TEST:
            self._reply(NO_PASSWORD)
        elif cmd == CMD_AUX_DISABLE:
            self._ram[0] |= CTR_AUXDIS
        elif cmd == CMD_AUX_ENABLE:
            self._ram[0] &= ~CTR_AUXDIS
        elif cmd == CMD_AUX_TEST:
            self._reply(AUX_CLOCK_STUCK_HIGH)  # no AUX port (see the module docstring)
        elif cmd == CMD_SELF_TEST:
            self._reply(SELF_TEST_OK)
        elif cmd == CMD_KBD_TEST:
            self._reply(INTERFACE_TEST_OK)
        elif cmd == CMD_KBD_DISABLE:
            self._ram[0] |= CTR_KBDDIS
        elif cmd == CMD_KBD_ENABLE:
            self._ram[0] &= ~CTR_KBDDIS
        elif cmd == CMD_READ_OUTPUT_PORT:
            self._reply(self._output_port)
        elif cmd == CMD_READ_TEST_INPUTS:
            self._reply(0x00)
        elif cmd >= CMD_PULSE_OUTPUT:
            if not cmd & OUTPUT_PORT_RESET:  # 0xFE and friends: pulse the reset line
                log.info("guest reset through the i8042")
                self._reset()
        else:
            log.debug("i8042: ignoring command %#x", cmd)

    def _data(self, value: int) -> None:
        cmd = self._pending_command
        if cmd is None:
            self._keyboard(value)
            return
        self._pending_command = None
        if CMD_WRITE_RAM <= cmd < CMD_WRITE_RAM + 0x20:
            self._ram[cmd & 0x1F] = value
        elif cmd == CMD_WRITE_OUTPUT_PORT:
            self._output_port = value
            if not value & OUTPUT_PORT_RESET:
                log.info("guest reset through the i8042 output port")
                self._reset()
        elif cmd in (CMD_WRITE_KBD_OUTPUT, CMD_WRITE_AUX_OUTPUT):
            self._reply(value)
        # CMD_WRITE_AUX: there is no AUX device to receive the byte.

    def _reply(self, value: int) -> None:
        """A controller response replaces whatever was waiting in the output buffer."""
        self._output.clear()
        self._output.append(value)

    # --- The keyboard -------------------------------------------------------------------------------
    def _keyboard(self, value: int) -> None:
        pending = self._kbd_pending
        self._kbd_pending = None
        if pending is not None:
            self._send(KBD_ACK)
            if pending == KBD_SCANCODE_SET:
                if value == 0:
                    self._send(self._scancode_set)  # query
                elif value <= 3:
                    self._scancode_set = value
            return
        if value in _KBD_COMMANDS_WITH_ARGUMENT:
            self._kbd_pending = value
            self._send(KBD_ACK)
        elif value == KBD_RESET:
            self._scancode_set = 2
            self._send(KBD_ACK, KBD_BAT_OK)
        elif value == KBD_GET_ID:
            second = KBD_ID_TRANSLATED if self._ctr & CTR_XLATE else KBD_ID[1]
            self._send(KBD_ACK, KBD_ID[0], second)
        elif value == KBD_ECHO:
            self._send(KBD_ECHO)
        elif value >= 0xF4:  # enable, disable, set defaults, set-3 key types, resend
            self._send(KBD_ACK)
        else:
            self._send(KBD_RESEND)

    def _send(self, *values: int) -> None:
        for value in values:
            if len(self._output) < _OUTPUT_LIMIT:
                self._output.append(value)

    # --- Interrupt ----------------------------------------------------------------------------------
    def _update_irq(self) -> None:
        self._set_irq(bool(self._output) and bool(self._ctr & CTR_KBDINT))

    def _set_irq(self, level: bool) -> None:
        if level != self._irq_level:
            self._irq_level = level
            if self._kbd_irq is not None:
                self._kbd_irq.set_level(level)
