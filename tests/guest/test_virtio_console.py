"""virtio-console (hvc0): the virtio_console guest writes lines and echoes input at CPL3; the test reads the
``--console`` endpoint (a file, or aovisor's stdout with ``tty``) and types on its stdin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_aovisor

Guest = Callable[[str], Path]


def boot(
    hypervisor: str, guest: Guest, cmdline: str, *args: str, input: bytes | None = None
) -> tuple[int, str, str]:
    proc = run_aovisor(
        ["--hypervisor", hypervisor, "--kernel", str(guest("virtio_console")), "--memory", "size=64M",
         "--cmdline", cmdline, *args],
        input=input,
    )  # fmt: skip
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def test_guest_output_goes_to_the_console_file(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    rc, out, err = boot(hypervisor, guest, "lines=3 emerg=1", "--console", f"file={console}")
    assert rc == 0, err
    # The serial port is still the terminal; the console (no terminal: no size) went to the file.
    assert out == "virtio-console: size 0x0 features 0x4\nvirtio-console done\n"
    assert console.read_text() == "EMERG\nhvc0 line 1 of 3\nhvc0 line 2 of 3\nhvc0 line 3 of 3\n"


def test_console_tty_takes_the_terminal_and_echoes_input(
    hypervisor: str, guest: Guest, tmp_path: Path
) -> None:
    serial = tmp_path / "serial.log"
    rc, out, err = boot(
        hypervisor, guest, "lines=1 echo=14", "--console", "tty", "--serial", f"file={serial}",
        input=b"hello console\n",
    )  # fmt: skip
    assert rc == 0, err
    assert out == "hvc0 line 1 of 1\nHELLO CONSOLE\n"
    assert serial.read_text().endswith("virtio-console: echoed 14 bytes\nvirtio-console done\n")


def test_console_tty_alone_makes_the_serial_port_null(hypervisor: str, guest: Guest) -> None:
    """Cloud Hypervisor's defaults: with --console tty and no --serial, COM1 output goes nowhere."""
    rc, out, err = boot(hypervisor, guest, "lines=2", "--console", "tty")
    assert rc == 0, err
    assert out == "hvc0 line 1 of 2\nhvc0 line 2 of 2\n"


def test_console_null_discards_output(hypervisor: str, guest: Guest) -> None:
    rc, out, err = boot(hypervisor, guest, "lines=5", "--console", "null")
    assert rc == 0, err
    assert out == "virtio-console: size 0x0 features 0x4\nvirtio-console done\n"


def test_hostile_chains_come_back_unused(hypervisor: str, guest: Guest, tmp_path: Path) -> None:
    serial = tmp_path / "serial.log"
    rc, out, err = boot(
        hypervisor, guest, "lines=1 echo=3 hostile=1", "--console", "tty", "--serial", f"file={serial}",
        input=b"abc",
    )  # fmt: skip
    assert rc == 0, err
    assert out == "hvc0 line 1 of 1\nABC"  # nothing of the transmit chain with a writable buffer
    log = serial.read_text()
    assert "virtio-console: hostile rx buffer: len 0, untouched\n" in log, log
    assert log.endswith("virtio-console: echoed 3 bytes\nvirtio-console done\n")


def test_without_console_there_is_no_device(hypervisor: str, guest: Guest) -> None:
    rc, out, _err = boot(hypervisor, guest, "lines=1")
    assert rc == 0
    assert out == "virtio-console: FAILED: no virtio-console device (status 0x0)\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--console", "tty", "--serial", "tty"],
            "--console: tty: the serial port is on the terminal already",
        ),
        (["--console", "pty"], "--console: pty is not yet supported"),
        (["--console", "file="], "--console: file: needs a path"),
        (["--console", "tty,null"], "--console: give one mode"),
    ],
)
def test_bad_console_options_are_one_line_errors(guest: Guest, args: list[str], message: str) -> None:
    proc = run_aovisor(["--kernel", str(guest("hello")), *args])
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("aovisor: error: ") and message in err, err
