"""The ``key=value,key=value`` option grammar of Cloud Hypervisor's command line, with typed value helpers.

Grammar (the facts come from Cloud Hypervisor's ``option_parser`` crate; this is an independent
implementation):

- Items are separated by commas at the top level.  A comma inside ``"..."`` or inside ``[...]`` does not
  separate items, so ``cmdline="console=ttyS0,115200"`` and ``affinity=[0@[0,1],1@[2,3]]`` are one item each.
- Inside quotes only ``"`` is special; outside quotes brackets nest and must balance.
- An item is ``key=value`` (split at the first ``=``; surrounding whitespace of key and value is dropped),
  or a bare ``flag`` for keys declared valueless (``--serial tty``).
- Quotes are removed from values; inside a quoted run ``""`` stands for one literal ``"``
  (``"a""b"`` is ``a"b``).
- ``key=`` (nothing after ``=``) means "not given", as in Cloud Hypervisor: the key takes its default.
- Sizes take binary K/M/G/T suffixes (``512M``) or plain bytes; booleans are on/off/true/false; integers are
  decimal or ``0x`` hexadecimal.

Unlike Cloud Hypervisor, a key given twice is an error rather than "last one wins", and a valueless flag
given a value (``tty=1``) is an error rather than silently ignored: both are almost always typos.

Every error is a :class:`~aovisor.errors.ConfigError` whose message names the option and the key, e.g.
``--memory: size: '12Q' is not a size (use e.g. 512M, 1G)``.
"""

from __future__ import annotations

from aovisor.errors import ConfigError

# Annotation-only imports, kept out of the import path: `aovisor --version` should load almost nothing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

_SIZE_SHIFTS = {"K": 10, "M": 20, "G": 30, "T": 40}
_BOOLEANS = {"on": True, "true": True, "off": False, "false": False}
_U64_LIMIT = 1 << 64
# Characters a key may not contain: they would make "key=value" ambiguous in the grammar.
_KEY_FORBIDDEN = frozenset('"[]=,')


def parse_size(text: str) -> int:
    """Bytes in ``text``: digits with an optional binary suffix K, M, G or T (``"128M"`` -> 134217728)."""
    s = text.strip()
    shift = _SIZE_SHIFTS.get(s[-1:].upper(), 0)
    digits = s[:-1] if shift else s
    # isascii() first: str.isdigit() also accepts digits such as '²' or '٣' that int() may reject or accept.
    if not (digits.isascii() and digits.isdigit()):
        raise ConfigError(f"{text!r} is not a size (use e.g. 512M, 1G)")
    # Python refuses int() of more than 4300 digits; anything that long is too large anyway.
    value = int(digits) << shift if len(digits.lstrip("0")) <= 20 else _U64_LIMIT
    if value >= _U64_LIMIT:
        raise ConfigError(f"{text!r} is too large for a size")
    return value


def parse_bool(text: str) -> bool:
    """``on``/``true`` -> True, ``off``/``false`` -> False (any case)."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ConfigError(f"{text!r} is not on/off (use on, off, true or false)") from None


def parse_int(text: str) -> int:
    """A non-negative integer, decimal or ``0x`` hexadecimal (``"0x3f8"`` -> 1016)."""
    s = text.strip()
    base = 10
    digits = s
    if s[:2].lower() == "0x":
        base, digits = 16, s[2:]
    # int() alone would also accept "+5", "1_000", " 7" and non-ASCII digits: check the characters first.
    if digits.isascii() and digits.isalnum():
        try:
            return int(digits, base)
        except ValueError:
            pass
    raise ConfigError(f"{text!r} is not a number")


def split_items(text: str) -> list[str]:
    """Split at top-level commas (outside quotes and brackets); quotes are kept in the items.

    Raises ``ValueError`` naming the problem when quotes or brackets do not balance.
    """
    items: list[str] = []
    start = 0
    depth = 0
    in_quotes = False
    for i, c in enumerate(text):
        if c == '"':
            in_quotes = not in_quotes
        elif in_quotes:
            continue
        elif c == "[":
            depth += 1
        elif c == "]":
            if depth == 0:
                raise ValueError("unbalanced brackets")
            depth -= 1
        elif c == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise ValueError("unbalanced quotes")
    if depth:
        raise ValueError("unbalanced brackets")
    items.append(text[start:])
    return items


def dequote(text: str) -> str:
    """Remove the quoting from a value: ``"a,b"`` -> ``a,b``; ``""`` inside quotes is a literal quote."""
    if '"' not in text:
        return text
    out: list[str] = []
    in_quotes = False
    previous = ""
    for c in text:
        if c == '"':
            # A quote that re-opens a run just closed (`""` inside a quoted run) stands for itself.
            if previous == '"' and not in_quotes:
                out.append('"')
            in_quotes = not in_quotes
        else:
            out.append(c)
        previous = c
    return "".join(out)


def quote(value: str) -> str:
    """Render ``value`` so that it parses back unchanged (the inverse of :func:`dequote`)."""
    if value and value == value.strip() and not any(c in value for c in '",[]'):
        return value
    return '"' + value.replace('"', '""') + '"'


def render(values: Mapping[str, str | None]) -> str:
    """Render ``{key: value}`` (``None`` for a valueless flag) in the grammar, quoting where needed."""
    return ",".join(key if value is None else f"{key}={quote(value)}" for key, value in values.items())


class ParsedOptions:
    """The items given for one option, with typed getters whose errors name the option and the key.

    A getter returns ``default`` when the key was not given (or given as ``key=``): every key of Cloud
    Hypervisor's grammar has a default, and :meth:`has` tells whether a key was given at all.
    """

    __slots__ = ("_raw", "option")

    def __init__(self, option: str, raw: dict[str, str | None]) -> None:
        self.option = option
        self._raw = raw  # key -> value as written (quotes kept), None for a flag

    def __repr__(self) -> str:
        return f"ParsedOptions({self.option!r}, {self.as_dict()!r})"

    def given(self) -> list[str]:
        """The keys and flags given, in command-line order."""
        return list(self._raw)

    def as_dict(self) -> dict[str, str | None]:
        """``{key: dequoted value}``, ``None`` for flags, in command-line order."""
        return {k: None if v is None else dequote(v) for k, v in self._raw.items()}

    def has(self, key: str) -> bool:
        """Whether ``key`` (a flag or a key, even ``key=``) was given."""
        return key in self._raw

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for ``key`` of this option: ``--memory: size: <message>``."""
        return ConfigError(f"{self.option}: {key}: {message}")

    def _given(self, key: str) -> str | None:
        raw = self._raw.get(key)
        return raw if raw else None  # absent, a flag, or `key=`

    def get_str(self, key: str, default: str | None = None) -> str | None:
        raw = self._given(key)
        return default if raw is None else dequote(raw)

    def get_int(self, key: str, default: int) -> int:
        text = self.get_str(key)
        if text is None:
            return default
        try:
            return parse_int(text)
        except ConfigError as e:
            raise self.error(key, str(e)) from None

    def get_size(self, key: str, default: int) -> int:
        text = self.get_str(key)
        if text is None:
            return default
        try:
            return parse_size(text)
        except ConfigError as e:
            raise self.error(key, str(e)) from None

    def get_bool(self, key: str, default: bool) -> bool:
        text = self.get_str(key)
        if text is None:
            return default
        try:
            return parse_bool(text)
        except ConfigError as e:
            raise self.error(key, str(e)) from None

    def get_choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.get_str(key)
        if value is None:
            return default
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def get_list(self, key: str) -> list[str] | None:
        """A ``[a,b,...]`` list value as its dequoted items (``[]`` is the empty list)."""
        raw = self._given(key)
        if raw is None:
            return None
        body = raw.strip()
        if not (body.startswith("[") and body.endswith("]")):
            raise self.error(key, f"{dequote(raw)!r} is not a list (use e.g. [a,b])")
        body = body[1:-1]
        if not body.strip():
            return []
        # Balance was checked when the whole option was split, and the outer brackets match each other.
        return [dequote(item.strip()) for item in split_items(body)]


class OptionParser:
    """Declares the keys one command-line option accepts and parses its ``key=value,...`` text.

    ``keys`` take a value (``size=512M``); ``flags`` are bare words (``tty``, ``off``).  With ``bare_key``,
    a first item that is neither a key nor a flag and has no ``=`` is the value of that key
    (Cloud Hypervisor's ``--api-socket /run/ch.sock`` means ``path=/run/ch.sock``).
    """

    __slots__ = ("bare_key", "flags", "keys", "option")

    def __init__(
        self,
        option: str,
        keys: Iterable[str] = (),
        flags: Iterable[str] = (),
        bare_key: str | None = None,
    ) -> None:
        self.option = option
        self.keys = tuple(keys)
        self.flags = tuple(flags)
        self.bare_key = bare_key
        for name in (*self.keys, *self.flags):
            if not name or name != name.strip() or _KEY_FORBIDDEN.intersection(name):
                raise ValueError(f"{option}: invalid key name {name!r}")
        if len({*self.keys, *self.flags}) != len(self.keys) + len(self.flags):
            raise ValueError(f"{option}: a key is declared twice")
        if bare_key is not None and bare_key not in self.keys:
            raise ValueError(f"{option}: bare_key {bare_key!r} is not a key")

    def parse(self, text: str) -> ParsedOptions:
        """Parse ``text``; raises :class:`ConfigError` naming the option (and key) on any mistake."""
        text = text.strip()
        raw: dict[str, str | None] = {}
        if not text:
            return ParsedOptions(self.option, raw)
        try:
            items = split_items(text)
        except ValueError as e:
            raise ConfigError(f"{self.option}: {e} in {text!r}") from None
        for index, item in enumerate(items):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not key:
                what = "empty item (stray comma?)" if not sep else "empty key"
                raise ConfigError(f"{self.option}: {what} in {text!r}")
            if not sep and index == 0 and self.bare_key and key not in self.flags and key not in self.keys:
                key, value = self.bare_key, item
            elif key in self.flags:
                if sep:
                    raise ConfigError(f"{self.option}: {key}: takes no value (write just '{key}')")
            elif key in self.keys:
                if not sep:
                    raise ConfigError(f"{self.option}: {key}: needs a value ({key}=...)")
            else:
                raise ConfigError(f"{self.option}: {self._unknown(key)}")
            if key in raw:
                raise ConfigError(f"{self.option}: {key}: given twice")
            raw[key] = value.strip() if key not in self.flags else None
        return ParsedOptions(self.option, raw)

    def _unknown(self, key: str) -> str:
        known = (*self.keys, *self.flags)
        message = f"unknown key {key!r} (known: {', '.join(known)})"
        import difflib  # only on this error path: it is not cheap to import

        close = difflib.get_close_matches(key, known, n=1)
        return f"{message}; did you mean {close[0]!r}?" if close else message
