"""Name -> component registries with helpful errors.

Every pluggable family (aggregators, attacks, partitions, datasets, models, methods)
is a :class:`Registry`.  A miss raises :class:`UnknownNameError` that names the bad
value, the valid choices, and the closest match, before any work is done.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown component name. Subclasses ``ValueError`` (bad input) and ``KeyError``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A mapping from names to components of one kind (e.g. ``"aggregator"``).

    >>> r = Registry("colour")
    >>> @r.register("red")
    ... def red(): return "r"
    >>> r["red"]()
    'r'
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
                self._items[key] = obj
            return obj

        return deco

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self._miss_message(name)) from None

    def _miss_message(self, name: Any) -> str:
        valid = ", ".join(sorted(self._items))
        msg = f"unknown {self.kind} {name!r}; valid choices: {valid}"
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return msg

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)


def keyword_parameters(fn: Callable) -> dict[str, Any]:
    """The configurable keyword-only parameters of ``fn`` with their defaults
    (``inspect.Parameter.empty`` when required).  Names listed in
    ``fn.call_parameters`` (if set) are left out: the library supplies them per call
    (e.g. the ``mix`` of :func:`byzsim.aggregators.geometric_median`)."""
    sig = inspect.signature(fn)
    per_call = set(getattr(fn, "call_parameters", ()))
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in per_call
    }


def bind_parameters(kind: str, name: str, fn: Callable, params: dict[str, Any]) -> Callable:
    """``functools.partial(fn, **params)`` after checking that every key is a keyword-only
    parameter of ``fn`` (:func:`keyword_parameters`) and that every required one is given.
    The attributes of a function ``fn`` (e.g. ``max_f``, ``call_parameters``) are copied
    to the partial, so the bound callable advertises them too."""
    accepted = keyword_parameters(fn)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = ", ".join(sorted(accepted)) or "(none)"
        raise ValueError(
            f"{kind} {name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid parameters: {valid}"
        )
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"{kind} {name!r} needs parameter(s): {', '.join(missing)}")
    bound = functools.partial(fn, **params)
    if inspect.isfunction(fn):  # not __wrapped__ & co: inspect.signature would follow it
        bound.__dict__.update({k: v for k, v in vars(fn).items() if not k.startswith("__")})
    return bound
