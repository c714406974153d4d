"""aovisor.cli.arguments: the plain parser takes exactly what argparse would, with the same values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aovisor.cli import arguments
from aovisor.cli.arguments import ARGUMENTS, ParserExit, _parse_plain, parse_with_argparse
from aovisor.errors import ConfigError

FLAGS = [flag for argument in ARGUMENTS for flag in argument.flags]
VALUES = ["kvm", "mshv", "false", "true", "mmio", "pci", "boot=2", "size=1G", "tty", "", "a b", "x=y,z=1"]
TOKENS = (
    st.sampled_from(FLAGS)
    | st.sampled_from(VALUES)
    | st.sampled_from(["-vv", "-vvv", "-vV", "--", "-", "-1", "-x y", "--kernel=", "--disk=a", "--help"])
    | st.builds(lambda f, v: f"{f}={v}", st.sampled_from(FLAGS), st.sampled_from(VALUES))
    | st.text(max_size=6)
)


VALUED = [flag for argument in ARGUMENTS if argument.kind in ("value", "list") for flag in argument.flags]
UNVALUED = ["-v", "-V", "--version", "-vv"]
# Mostly well-formed command lines (an option and its value), so that both parsers have much to accept.
WELL_FORMED = st.lists(
    st.tuples(st.sampled_from(VALUED), st.sampled_from(VALUES)).map(list)
    | st.sampled_from(UNVALUED).map(lambda flag: [flag])
    | st.lists(TOKENS, max_size=1),
    max_size=6,
).map(lambda groups: [token for group in groups for token in group])


def _argparse_view(argv: list[str]) -> dict[str, object] | None:
    try:
        return vars(parse_with_argparse(argv))
    except (ConfigError, ParserExit):
        return None


@settings(max_examples=1500)
@given(st.lists(TOKENS, max_size=8) | WELL_FORMED)
def test_whatever_the_plain_parser_takes_argparse_takes_the_same_way(argv: list[str]) -> None:
    plain = _parse_plain(argv)
    if plain is not None:
        assert vars(plain) == _argparse_view(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--kernel", "k.elf"],
        ["--kernel", "k.elf", "--cmdline", "console=ttyS0 quiet", "--cpus", "boot=2", "--memory", "size=1G"],
        ["--kernel=k.elf", "--cmdline=", "-vv", "-v", "--serial", "tty", "--seccomp", "false"],
        ["--kernel", "k", "--disk", "path=a", "path=b", "--net", "tap=t0", "--disk", "path=c", "-V"],
        ["--api-socket", "/tmp/s", "--hypervisor", "kvm", "--virtio-transport", "mmio", "--log-file", "l"],
    ],
)
def test_common_command_lines_take_the_plain_path(argv: list[str]) -> None:
    # These are what users, libvirt and the benchmarks run: none of them may need argparse.
    plain = _parse_plain(argv)
    assert plain is not None
    assert vars(plain) == _argparse_view(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kernel"], "--kernel: expected one argument"),
        (["--hypervisor", "xen"], "argument --hypervisor: invalid choice: 'xen'"),
        (["--kernel", "k", "--watchdog"], "--watchdog is not yet supported"),
        (["--kernel", "k", "--mem", "size=1G"], "unrecognized arguments: --mem size=1G"),
        (["--seccomp", "true"], "--seccomp true is not yet supported"),
    ],
)
def test_errors_come_from_argparse(argv: list[str], message: str) -> None:
    assert _parse_plain(argv) is None or argv[0] == "--seccomp"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        arguments.parse_namespace(argv)
