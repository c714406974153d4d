"""``NamedTuple``, ``Protocol`` and ``TYPE_CHECKING`` for the start-up path, without importing :mod:`typing`.

Importing :mod:`typing` (which pulls in ``re``, ``contextlib`` and more) costs ~9 ms of a VM's start-up on
our machines, and start-up is benchmarked against QEMU.  Modules on that path take these three names from
here instead.  The type checker sees :mod:`typing`'s own (the ``TYPE_CHECKING`` branch below); at run time:

* ``NamedTuple``: ``class Point(NamedTuple): x: int; y: int = 0`` makes the same
  :func:`collections.namedtuple` class that :class:`typing.NamedTuple` makes (fields in annotation order,
  defaults, methods, docstring), and nothing more: no generic named tuples, no functional form.
* ``Protocol``: a plain base class.  Protocols are structural types for the checker; aovisor never checks
  them at run time (no ``runtime_checkable``).
* ``TYPE_CHECKING``: False.  Annotation-only names (``Any``, ``Callable``...) are imported under
  ``if TYPE_CHECKING:``; with ``from __future__ import annotations`` no annotation is evaluated.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
    from typing import Protocol as Protocol
else:
    import collections

    # Names a class body has besides its fields, which the named tuple must not take over.
    _CLASS_ONLY = frozenset(("__module__", "__qualname__", "__annotations__", "__slots__", "__orig_bases__"))

    class _NamedTupleMeta(type):
        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
            if not bases:  # _NamedTupleBase itself
                return super().__new__(mcs, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            defaulted = [field for field in fields if field in namespace]
            if defaulted != fields[len(fields) - len(defaulted) :]:
                raise TypeError(f"{name}: a field without a default follows one with a default")
            defaults = [namespace[field] for field in defaulted]
            record: type = collections.namedtuple(
                name, fields, defaults=defaults, module=namespace["__module__"]
            )
            for key, value in namespace.items():
                if key not in _CLASS_ONLY and key not in fields:
                    setattr(record, key, value)
            record.__qualname__ = str(namespace.get("__qualname__", name))
            record.__annotations__ = dict(namespace.get("__annotations__", {}))
            return record

    class _NamedTupleBase(metaclass=_NamedTupleMeta):
        pass

    class _NamedTupleFactory:
        """What ``class X(NamedTuple)`` names: its ``__mro_entries__`` swaps in the metaclass's base."""

        def __mro_entries__(self, bases: tuple[object, ...]) -> tuple[type]:
            return (_NamedTupleBase,)

    NamedTuple = _NamedTupleFactory()

    class Protocol:
        __slots__ = ()
