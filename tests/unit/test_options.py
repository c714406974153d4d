"""The `key=value,...` option grammar (Cloud Hypervisor's) and its value helpers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aovisor.cli.options import (
    OptionParser,
    dequote,
    parse_bool,
    parse_int,
    parse_size,
    quote,
    render,
    split_items,
)
from aovisor.errors import ConfigError

MEMORY = OptionParser("--memory", keys=("size", "mergeable", "shared", "hotplug_size"))
SERIAL = OptionParser("--serial", keys=("file", "socket"), flags=("off", "null", "tty", "pty"))
SOCKET = OptionParser("--api-socket", keys=("path", "fd"), bare_key="path")
KEYS = ("size", "path", "cmdline", "topology", "id")
FLAGS = ("tty", "off", "pty")
ANY = OptionParser("--any", keys=KEYS, flags=FLAGS)


# --- sizes, booleans, integers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("1K", 1 << 10),
        ("128M", 128 << 20),
        ("1G", 1 << 30),
        ("2T", 2 << 40),
        ("512m", 512 << 20),
        ("1g", 1 << 30),
        (" 64K ", 64 << 10),
        ("0016777215T", (16777215) << 40),
    ],
)
def test_parse_size_accepts_bytes_and_binary_suffixes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@given(st.integers(min_value=0, max_value=(1 << 24) - 1), st.sampled_from(["", "K", "M", "G", "T"]))
def test_parse_size_is_the_number_times_the_binary_multiple(number: int, suffix: str) -> None:
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[suffix]
    assert parse_size(f"{number}{suffix}") == number * 2**shift


@pytest.mark.parametrize(
    "text",
    ["", " ", "M", "12Q", "1.5G", "-1", "+1", "1_000", "0x1000", "1 G", "1GB", "\u0661G", "²", "G1", "1e6"],
)
def test_parse_size_rejects_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["16777216T", "18446744073709551616", "9" * 5000])
def test_parse_size_rejects_sizes_beyond_64_bits(text: str) -> None:
    with pytest.raises(ConfigError, match="too large"):
        parse_size(text)


def test_parse_size_largest_64_bit_value() -> None:
    assert parse_size(str(2**64 - 1)) == 2**64 - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on", True),
        ("true", True),
        ("ON", True),
        ("True", True),
        ("off", False),
        ("false", False),
        ("OFF", False),
    ],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize("text", ["", "yes", "no", "1", "0", "onn", "enabled"])
def test_parse_bool_rejects_other_words(text: str) -> None:
    with pytest.raises(ConfigError, match="is not on/off"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0), ("42", 42), ("0x3f8", 0x3F8), ("0XFF", 255), ("007", 7)]
)
def test_parse_int_decimal_and_hex(text: str, expected: int) -> None:
    assert parse_int(text) == expected


@pytest.mark.parametrize(
    "text", ["", "0x", "-1", "+1", "1_0", "x", "0b1", "0o7", "1.0", "\u0661", "12ab", "0xg"]
)
def test_parse_int_rejects_what_is_not_a_number(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a number"):
        parse_int(text)


@given(st.integers(min_value=0, max_value=2**64))
def test_parse_int_round_trips_decimal_and_hex(n: int) -> None:
    assert parse_int(str(n)) == n
    assert parse_int(hex(n)) == n


# --- the grammar -----------------------------------------------------------------------------------------


def test_key_values_in_order() -> None:
    opts = MEMORY.parse("size=1G,mergeable=on")
    assert opts.as_dict() == {"size": "1G", "mergeable": "on"}
    assert opts.given() == ["size", "mergeable"]
    assert opts.get_size("size", 0) == 1 << 30
    assert opts.get_bool("mergeable", False) is True


def test_defaults_for_keys_not_given_and_for_empty_values() -> None:
    opts = MEMORY.parse("size=,shared=off")
    assert opts.get_size("size", 512 << 20) == 512 << 20  # `key=` means "use the default", as in CH
    assert opts.has("size")
    assert not opts.has("mergeable")
    assert opts.get_bool("mergeable", True) is True
    assert MEMORY.parse("").given() == []
    assert MEMORY.parse("   ").given() == []


def test_whitespace_around_keys_and_values_is_ignored() -> None:
    assert MEMORY.parse(" size = 2G , shared=on ").as_dict() == {"size": "2G", "shared": "on"}


def test_quotes_protect_commas_and_are_removed() -> None:
    parser = OptionParser("--x", keys=("cmdline", "path"))
    opts = parser.parse('cmdline="console=ttyS0,115200 quiet",path=/a/"b,c"/d')
    assert opts.get_str("cmdline") == "console=ttyS0,115200 quiet"
    assert opts.get_str("path") == "/a/b,c/d"


def test_doubled_quote_inside_quotes_is_a_literal_quote() -> None:
    parser = OptionParser("--x", keys=("v",))
    assert parser.parse('v="say ""hi"""').get_str("v") == 'say "hi"'
    assert parser.parse('v=""""').get_str("v") == '"'
    assert parser.parse('v=""').get_str("v") == ""


def test_brackets_protect_commas_and_nest() -> None:
    parser = OptionParser("--cpus", keys=("boot", "affinity", "features"))
    opts = parser.parse("boot=2,affinity=[0@[0,1],1@[2,3]],features=[amx]")
    assert opts.get_str("affinity") == "[0@[0,1],1@[2,3]]"
    assert opts.get_list("affinity") == ["0@[0,1]", "1@[2,3]"]
    assert opts.get_list("features") == ["amx"]
    assert opts.get_int("boot", 1) == 2


def test_list_items_may_be_quoted_and_lists_may_be_empty() -> None:
    parser = OptionParser("--x", keys=("l",))
    assert parser.parse('l=[a,"b,c",""]').get_list("l") == ["a", "b,c", ""]
    assert parser.parse("l=[]").get_list("l") == []
    assert parser.parse("l=").get_list("l") is None


def test_a_value_that_is_not_a_list_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^--x: l: 'a,b' is not a list"):
        OptionParser("--x", keys=("l",)).parse('l="a,b"').get_list("l")


def test_flags_are_bare_words() -> None:
    assert SERIAL.parse("tty").as_dict() == {"tty": None}
    assert SERIAL.parse("file=/tmp/log").as_dict() == {"file": "/tmp/log"}
    assert SERIAL.parse("off").has("off")


def test_bare_value_goes_to_the_bare_key() -> None:
    assert SOCKET.parse("/run/vm.sock").as_dict() == {"path": "/run/vm.sock"}
    assert SOCKET.parse("path=/run/vm.sock").as_dict() == {"path": "/run/vm.sock"}
    assert SOCKET.parse("fd=3").get_int("fd", -1) == 3
    # Only the first item may be bare; later ones are ordinary keys.
    with pytest.raises(ConfigError, match="unknown key 'x'"):
        SOCKET.parse("fd=3,x")
    with pytest.raises(ConfigError, match="path: given twice"):
        SOCKET.parse("/a,path=/b")


def test_a_value_may_contain_equals_signs() -> None:
    parser = OptionParser("--x", keys=("cmdline",))
    assert parser.parse("cmdline=root=/dev/vda").get_str("cmdline") == "root=/dev/vda"


def test_get_choice() -> None:
    parser = OptionParser("--memory", keys=("hotplug_method",))
    assert parser.parse("hotplug_method=virtio-mem").get_choice(
        "hotplug_method", ("acpi", "virtio-mem"), "acpi"
    )
    assert parser.parse("").get_choice("hotplug_method", ("acpi",), "acpi") == "acpi"
    with pytest.raises(ConfigError, match=r"^--memory: hotplug_method: 'x' is not one of acpi, virtio-mem$"):
        parser.parse("hotplug_method=x").get_choice("hotplug_method", ("acpi", "virtio-mem"), "acpi")


# --- errors name the option and the key ------------------------------------------------------------------


def test_unknown_key_lists_the_known_keys_and_suggests_one() -> None:
    with pytest.raises(ConfigError) as info:
        MEMORY.parse("sise=1G")
    message = str(info.value)
    assert message.startswith("--memory: unknown key 'sise' (known: size, mergeable, shared, hotplug_size)")
    assert "did you mean 'size'?" in message


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        MEMORY.parse("qqqqqqqq=1")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        (MEMORY, "size=12Q", r"^--memory: size: '12Q' is not a size \(use e\.g\. 512M, 1G\)$"),
        (MEMORY, "mergeable=maybe", r"^--memory: mergeable: 'maybe' is not on/off"),
        (MEMORY, "size=1G,size=2G", r"^--memory: size: given twice$"),
        (MEMORY, "size", r"^--memory: size: needs a value \(size=\.\.\.\)$"),
        (MEMORY, "=1G", r"^--memory: empty key in '=1G'$"),
        (MEMORY, "size=1G,,shared=on", r"^--memory: empty item \(stray comma\?\)"),
        (MEMORY, "size=1G,", r"^--memory: empty item \(stray comma\?\)"),
        (MEMORY, 'size="1G', r"^--memory: unbalanced quotes in 'size=\"1G'$"),
        (MEMORY, "size=[1G", r"^--memory: unbalanced brackets"),
        (MEMORY, "size=1G]", r"^--memory: unbalanced brackets"),
        (MEMORY, "size=]1G[", r"^--memory: unbalanced brackets"),
        (SERIAL, "tty=yes", r"^--serial: tty: takes no value"),
        (SERIAL, "tty,tty", r"^--serial: tty: given twice$"),
    ],
)
def test_error_messages_name_option_and_key(option: OptionParser, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        opts = option.parse(text)
        opts.get_size("size", 0)
        opts.get_bool("mergeable", False)


def test_int_error_names_option_and_key() -> None:
    with pytest.raises(ConfigError, match=r"^--cpus: boot: 'x' is not a number$"):
        OptionParser("--cpus", keys=("boot",)).parse("boot=x").get_int("boot", 1)


@pytest.mark.parametrize("name", ["", " a", "a=b", "a,b", 'a"', "[a]"])
def test_declaring_an_impossible_key_is_a_programming_error(name: str) -> None:
    with pytest.raises(ValueError, match="invalid key name"):
        OptionParser("--x", keys=(name,))


def test_declaring_a_key_twice_or_a_bare_key_that_is_not_a_key_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        OptionParser("--x", keys=("a",), flags=("a",))
    with pytest.raises(ValueError, match="bare_key"):
        OptionParser("--x", keys=("a",), bare_key="b")


# --- properties: rendering round-trips, garbage only ever raises ConfigError ------------------------------

values = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@st.composite
def option_dicts(draw: st.DrawFn) -> dict[str, str | None]:
    names = draw(st.lists(st.sampled_from(KEYS + FLAGS), unique=True))
    return {name: None if name in FLAGS else draw(values) for name in names}


@given(option_dicts())
def test_rendered_options_parse_back_equal(options: dict[str, str | None]) -> None:
    assert ANY.parse(render(options)).as_dict() == options


@given(values)
def test_quote_then_dequote_is_identity(value: str) -> None:
    assert dequote(quote(value).strip()) == value
    assert split_items(quote(value)) == [quote(value)]  # a quoted value is always one item


@given(st.lists(values, max_size=6))
def test_rendered_lists_parse_back_equal(items: list[str]) -> None:
    text = "topology=[" + ",".join(quote(item) for item in items) + "],id=x"
    opts = ANY.parse(text)
    assert opts.get_list("topology") == items
    assert opts.get_str("id") == "x"


grammar_text = st.text(st.sampled_from('ab=,"[] \t' + "sizepathtyoff") | st.characters(), max_size=40)


@given(grammar_text)
def test_garbage_raises_only_config_error_naming_the_option(text: str) -> None:
    for parser in (ANY, SOCKET, SERIAL):
        try:
            opts = parser.parse(text)
            for key in parser.keys:
                opts.get_str(key)
                opts.get_int(key, 0)
                opts.get_size(key, 0)
                opts.get_bool(key, False)
                opts.get_list(key)
        except ConfigError as e:
            assert str(e).startswith(parser.option + ": ")


@given(st.text(max_size=30))
def test_helpers_raise_only_config_error(text: str) -> None:
    for helper in (parse_size, parse_int, parse_bool):
        with contextlib.suppress(ConfigError):
            helper(text)
