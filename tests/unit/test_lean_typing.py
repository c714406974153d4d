"""aovisor.lean_typing: its NamedTuple makes the classes typing.NamedTuple makes, without importing typing."""

from __future__ import annotations

import pickle
import subprocess
import sys
import typing

import pytest

from aovisor import lean_typing


class Lean(lean_typing.NamedTuple):
    """A record."""

    x: int
    y: str = "a"
    z: tuple[int, ...] = ()

    def double(self) -> int:
        return self.x * 2


class Typed(typing.NamedTuple):
    """A record."""

    x: int
    y: str = "a"
    z: tuple[int, ...] = ()

    def double(self) -> int:
        return self.x * 2


def test_the_record_behaves_as_typings() -> None:
    for cls in (Lean, Typed):
        record = cls(3, z=(1,))
        assert tuple(record) == (3, "a", (1,))
        assert record._replace(y="b") == cls(3, "b", (1,))
        assert record.double() == 6
        assert cls._fields == ("x", "y", "z")
        assert cls._field_defaults == {"y": "a", "z": ()}
        assert cls.__doc__ == "A record."
        assert repr(record) == f"{cls.__name__}(x=3, y='a', z=(1,))"
        assert pickle.loads(pickle.dumps(record)) == record
        assert isinstance(record, tuple)
        assert list(cls.__annotations__) == ["x", "y", "z"]
    assert Lean.__module__ == Typed.__module__ == __name__
    assert Lean.__qualname__ == "Lean"


def test_a_field_without_default_after_one_with_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default"):

        class Bad(lean_typing.NamedTuple):
            x: int = 0
            y: int  # type: ignore[misc]


def test_importing_it_imports_no_typing() -> None:
    code = "import sys; import aovisor.lean_typing; print('typing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
