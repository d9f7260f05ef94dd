"""Name -> component registries with declared metadata and helpful errors.

Every pluggable family (aggregators, pre-aggregators, attacks, partitions, datasets,
models, methods) is a :class:`Registry`.  A registry holds one :class:`Entry` per
component: the component and the metadata declared when it was registered (e.g. the
largest ``f`` an aggregator tolerates), checked then against the registry's schema
(:class:`Meta`).  A lookup accepts hyphen and underscore spellings alike and
:meth:`Registry.canonical` gives the registered spelling.  A miss raises
:class:`UnknownNameError` that names the bad value, the valid choices, and the closest
match, before any work is done.

Parameters of a component are checked in one place, :func:`check_parameters` (names),
and :func:`check_values` (values): the type a parameter's default implies, the
:class:`Range` a component declares for it (``register(name, ranges={"std":
Range(lo=0)})``), and the component's own ``check(params, context)`` for rules across
fields (``register(name, check=fn)``); both keywords exist in every registry.

>>> r = Registry("colour", schema={"warm": Meta("a warm colour", default=False, check=bool_)})
>>> @r.register("dark-red", warm=True)
... def dark_red(*, shade=1.0): return "r"
>>> r["dark_red"](), r.canonical("dark_red"), r.entry("dark-red").meta["warm"]
('r', 'dark-red', True)
>>> r.parameters("dark-red")
{'shade': 1.0}
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, TypeVar

import numpy as np

__all__ = [
    "Entry",
    "Meta",
    "ParameterValueError",
    "Range",
    "REPLICA_PARAMS",
    "REQUIRED",
    "Registry",
    "STATEFUL",
    "UnknownNameError",
    "bind_parameters",
    "bool_",
    "callable_",
    "check_parameters",
    "check_values",
    "keyword_parameters",
    "normalize_name",
    "optional_callable",
    "parameters_of",
]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown component name. Subclasses ``ValueError`` (bad input) and ``KeyError``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a :class:`Meta` that every component must declare.
REQUIRED: Any = _Required()


def bool_(v: Any) -> str | None:
    """Check of a boolean metadata value (``None`` when valid, else what is expected)."""
    return None if isinstance(v, bool) else "True or False"


def callable_(v: Any) -> str | None:
    """Check of a callable metadata value."""
    return None if callable(v) else "a callable"


def optional_callable(v: Any) -> str | None:
    """Check of a callable-or-``None`` metadata value."""
    return None if v is None or callable(v) else "a callable or None"


@dataclass(frozen=True)
class Meta:
    """One declared property of a registry's components.

    Parameters
    ----------
    doc : str
        What the value means (shown in registration errors).
    default : Any
        Value when not declared; :data:`REQUIRED` makes the declaration mandatory.
    check : callable ``value -> None | str``, optional
        ``None`` when the value is valid, else a description of what is expected.
    required_if : callable ``component -> bool``, optional
        The declaration is mandatory for the components where this is true (e.g. the
        rules with an ``f`` parameter must declare ``max_f``).
    """

    doc: str
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None
    required_if: Callable[[Any], bool] | None = None


#: The ``stateful`` declaration shared by the component registries (aggregators,
#: pre-aggregators, attacks): ``stateful=True`` registers a *factory*
#: ``(**params) -> byzsim.protocols.Stateful`` (an ``init``/``apply`` pair whose state
#: the engine carries from round to round) instead of a pure rule.
STATEFUL = Meta("True if the registered object is a factory (**params) -> Stateful (init/apply "
                "with state carried across rounds)", default=False, check=bool_)


def _names(v: Any) -> str | None:
    ok = isinstance(v, tuple) and all(isinstance(k, str) for k in v)
    return None if ok else "a tuple of parameter names"


#: The ``replica_params`` declaration shared by the component registries (attacks,
#: aggregators, pre-aggregators): the numeric parameters that may differ between the
#: replicas of one batch.  The component accepts each of them as an array that
#: broadcasts against the leading batch axes of its input followed by two unit axes
#: (``(S, 1, 1)`` for messages ``(S, n, d)``), computes with element ``s`` exactly what
#: it computes with the number alone, and never lets it change a shape or the control
#: flow.  Runs that differ only in these parameters share a replica batch
#: (:func:`byzsim.simulate.replica_key`); every other parameter is structure.  A
#: component that declares none (the default, e.g. a plugin's) keeps all its parameters
#: in the key.
REPLICA_PARAMS = Meta("numeric parameters that may differ between the replicas of a batch, given as "
                      "arrays broadcasting against the input's leading axes + (1, 1)", default=(),
                      check=_names)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: its registered ``name``, ``aliases``, the component
    ``obj`` and the declared (validated, defaults filled) ``meta``."""

    name: str
    obj: T
    meta: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    ranges: Mapping[str, "Range"] = field(default_factory=dict)  # parameter -> valid values
    check: Callable[[Mapping[str, Any], Any], None] | None = None  # (params, context) -> None


def normalize_name(name: str) -> str:
    """The spelling-insensitive form of a name: ``"byrd_saga"`` and ``"byrd-saga"`` are
    the same name.

    >>> normalize_name("Trimmed-Mean")
    'trimmed_mean'
    """
    return name.replace("-", "_").lower()


class Registry(Generic[T]):
    """A mapping from names to components of one kind (e.g. ``"aggregator"``).

    Parameters
    ----------
    kind : str
        What the components are (used in messages).
    schema : mapping ``key -> Meta``, optional
        The metadata a component declares when it is registered
        (``register(name, **meta)``); unknown keys, missing required ones and invalid
        values fail at registration.

    >>> r = Registry("colour")
    >>> @r.register("red")
    ... def red(): return "r"
    >>> r["red"]()
    'r'
    """

    def __init__(self, kind: str, schema: Mapping[str, Meta] | None = None):
        self.kind = kind
        self.schema: Mapping[str, Meta] = types.MappingProxyType(dict(schema or {}))
        # _items (name -> component) is the source of truth (code that adds or removes
        # names directly, e.g. a plugin rollback, stays consistent); _entries holds the
        # declared metadata of the components registered through register().
        self._items: dict[str, T] = {}
        self._entries: dict[str, Entry[T]] = {}

    # ---------------------------------------------------------------- registration
    def register(self, name: str, *aliases: str, ranges: Mapping[str, "Range"] | None = None,
                 check: Callable[[Mapping[str, Any], Any], None] | None = None,
                 **meta: Any) -> Callable[[T], T]:
        """Decorator registering a component as ``name`` (and ``aliases``) with its
        declared metadata ``meta`` (checked against the schema at registration), the
        valid values of its parameters (``ranges``: name -> :class:`Range`) and its
        own check across fields (``check(params, context)``, raising
        :class:`ParameterValueError`; ``context`` is the run's config)."""
        ranges = dict(ranges or {})
        bad = [k for k, r in ranges.items() if not isinstance(r, Range)]
        if bad or not (check is None or callable(check)):
            raise ValueError(f"{self.kind} {name!r}: ranges must map parameters to Range, check be callable")

        def deco(obj: T) -> T:
            stackable = meta.get("replica_params", ())
            stackable = set(stackable) if isinstance(stackable, tuple) else set()  # else: _check_meta fails
            accepted = set(parameters_of(obj, meta.get("per_call", ()))) if ranges or stackable else set()
            for what, names in (("ranges", ranges), ("replica_params", stackable)):
                unknown = sorted(set(names) - accepted)
                if unknown:
                    raise ValueError(f"{self.kind} {name!r}: {what} for unknown parameter(s) {unknown}")
            entry = Entry(name, obj, self._check_meta(name, obj, meta), tuple(aliases),
                          types.MappingProxyType(ranges), check)
            keys = (name, *aliases)
            for key in keys:
                other = self._spelled(key)
                if key in self._items or (other is not None and self._items[other] is not obj):
                    raise ValueError(f"{self.kind} {key!r} is already registered")
            for key in keys:
                self._items[key] = obj
                self._entries[key] = entry
            return obj

        return deco

    def _check_meta(self, name: str, obj: Any, meta: Mapping[str, Any]) -> Mapping[str, Any]:
        unknown = sorted(set(meta) - set(self.schema))
        if unknown:
            valid = ", ".join(sorted(self.schema)) or "(none)"
            raise ValueError(
                f"{self.kind} {name!r}: unknown metadata {', '.join(map(repr, unknown))}; "
                f"valid metadata: {valid}"
            )
        out = {}
        for key, spec in self.schema.items():
            required = spec.default is REQUIRED or (spec.required_if is not None and spec.required_if(obj))
            if key not in meta:
                if required:
                    raise ValueError(
                        f"{self.kind} {name!r} must be registered with {key}=… ({spec.doc})"
                    )
                out[key] = spec.default
                continue
            problem = spec.check(meta[key]) if spec.check else None
            if problem:
                raise ValueError(
                    f"{self.kind} {name!r}: metadata {key} = {meta[key]!r} is invalid; "
                    f"expected {problem} ({spec.doc})"
                )
            out[key] = meta[key]
        return types.MappingProxyType(out)

    # ---------------------------------------------------------------- lookup
    def _spelled(self, name: str) -> str | None:
        """The registered name spelled like ``name`` up to hyphens/underscores/case."""
        key = normalize_name(name)
        return next((k for k in self._items if normalize_name(k) == key), None)

    def canonical(self, name: Any) -> str:
        """The registered spelling of ``name`` (hyphens and underscores are the same).

        Raises
        ------
        UnknownNameError
            If no spelling of ``name`` is registered.
        """
        if isinstance(name, str):
            if name in self._items:
                return name
            hit = self._spelled(name)
            if hit is not None:
                return hit
        raise UnknownNameError(self._miss_message(name))

    def __getitem__(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def entry(self, name: str) -> Entry[T]:
        """The :class:`Entry` (component and declared metadata) of ``name``."""
        key = self.canonical(name)
        obj = self._items[key]
        entry = self._entries.get(key)
        if entry is None or entry.obj is not obj:  # put into _items directly: schema defaults
            entry = self._entries[key] = Entry(key, obj, self._check_meta(key, obj, {}))
        return entry

    def entry_of(self, obj: Any) -> Entry[T] | None:
        """The entry whose component is ``obj`` (or ``obj.func`` for a bound
        ``functools.partial``), or ``None`` if it is not registered."""
        inner = obj.func if isinstance(obj, functools.partial) else obj
        for key, o in self._items.items():
            if o is inner:
                return self.entry(key)
        return None

    def parameters(self, name: str) -> dict[str, Any]:
        """The configurable parameters of ``name`` with their defaults
        (``inspect.Parameter.empty`` when required); see :func:`parameters_of`."""
        e = self.entry(name)
        return parameters_of(e.obj, e.meta.get("per_call", ()))

    def check(self, name: str, params: Mapping[str, Any], *, field: str | None = None,
              filled: Iterable[str] = (), context: Any = None) -> None:
        """:func:`check_parameters` and :func:`check_values` for the component ``name``;
        with a ``context`` (the run's config) also the component's own ``check``."""
        key = self.canonical(name)
        accepted = self.parameters(name)
        check_parameters(self.kind, key, accepted, params, field=field, filled=filled)
        e = self.entry(name)
        check_values(self.kind, key, accepted, params, e.ranges, field=field,
                     per_replica=e.meta.get("replica_params", ()))
        if e.check is not None and context is not None:
            try:
                e.check(params, context)
            except ParameterValueError as err:
                raise err.at(self.kind, key, field) from None

    def bind(self, name: str, params: Mapping[str, Any]) -> Callable:
        """``functools.partial(component, **params)`` after :meth:`check`."""
        self.check(name, params)
        return functools.partial(self[name], **params)

    def groups(self) -> list[tuple[str, list[str], T]]:
        """``(first registered name, other names, component)`` per component, sorted."""
        seen: dict[int, list[str]] = {}
        objs: dict[int, Any] = {}
        for n, obj in self._items.items():
            seen.setdefault(id(obj), []).append(n)
            objs[id(obj)] = obj
        return sorted(((names[0], names[1:], objs[i]) for i, names in seen.items()), key=lambda t: t[0])

    def _miss_message(self, name: Any) -> str:
        valid = ", ".join(sorted(self._items))
        msg = f"unknown {self.kind} {name!r}; valid choices: {valid}"
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return msg

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or self._spelled(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)


# --------------------------------------------------------------------------------------
# parameters: one checker for every component kind


def keyword_parameters(fn: Callable, per_call: Iterable[str] = ()) -> dict[str, Any]:
    """The keyword-only parameters of ``fn`` with their defaults
    (``inspect.Parameter.empty`` when required), except the ``per_call`` ones (supplied
    by the library on each call, e.g. the ``mix`` of
    :func:`byzsim.aggregators.geometric_median`; declared at registration).

    >>> def rule(z, mask=None, *, f, mix=None): ...
    >>> keyword_parameters(rule, per_call=("mix",))
    {'f': <class 'inspect._empty'>}
    """
    sig = inspect.signature(fn)
    skip = set(per_call)
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in skip
    }


def parameters_of(obj: Any, per_call: Iterable[str] = ()) -> dict[str, Any]:
    """Configurable parameters of a component with their defaults
    (``inspect.Parameter.empty`` when required).  Functions: keyword-only parameters
    (:func:`keyword_parameters`); dataclasses (models): their init fields other than
    ``n_features``/``n_classes``."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name in ("n_features", "n_classes") or not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
            else:
                out[f.name] = inspect.Parameter.empty
        return out
    return keyword_parameters(obj, per_call)


def check_parameters(kind: str, name: str, accepted: Mapping[str, Any], params: Mapping[str, Any], *,
                     field: str | None = None, filled: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` unless every key of ``params`` is in ``accepted`` and every
    required parameter (default ``inspect.Parameter.empty``) is in ``params`` or
    ``filled`` (supplied later by the library, e.g. an aggregator's ``f``).

    ``field`` (e.g. ``"attack_params"``) prefixes the message with the config field.

    >>> check_parameters("attack", "gaussian", {"std": 1.0}, {"sd": 2}, field="attack_params")
    Traceback (most recent call last):
    ...
    ValueError: invalid config field 'attack_params': attack 'gaussian' has no parameter 'sd' (did you mean attack_params.std?); valid parameters: std
    """
    where = f"invalid config field '{field}': " if field else ""
    unknown = [k for k in params if k not in accepted]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(accepted), n=1, cutoff=0.5)
        hint = f" (did you mean {field + '.' if field else ''}{close[0]}?)" if close else ""
        valid = ", ".join(sorted(accepted)) or "(none)"
        s = "" if len(unknown) == 1 else "s"
        raise ValueError(
            f"{where}{kind} {name!r} has no parameter{s} {', '.join(map(repr, unknown))}{hint}; "
            f"valid parameters: {valid}"
        )
    filled = set(filled)
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in params and k not in filled]
    if missing:
        eg = f" (e.g. {field}.{missing[0]}=…)" if field else ""
        raise ValueError(f"{where}{kind} {name!r} needs parameter(s): {', '.join(missing)}{eg}")


class ParameterValueError(ValueError):
    """A parameter value outside its valid range: ``param``, ``value``, ``valid`` (what
    is expected).  :meth:`at` names the config field."""

    def __init__(self, param: str, value: Any, valid: str):
        super().__init__(f"parameter {param!r} = {value!r}: {valid}")
        self.param, self.value, self.valid = param, value, valid

    def at(self, kind: str, name: str, field: str | None) -> ValueError:
        where = f"invalid config field '{field}.{self.param}'" if field else \
            f"invalid parameter {self.param!r} of {kind} {name!r}"
        return ValueError(f"{where} = {self.value!r}: {self.valid}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric parameter: an integer (``integer=True``) or a real
    number in the interval from ``lo`` to ``hi`` (either end open with ``lo_open`` /
    ``hi_open``; ``None`` = unbounded), finite unless ``finite=False``, or ``None``
    when ``optional``.

    >>> Range(lo=0, lo_open=True).problem(-1), Range(0, 1, integer=True).problem(1)
    ('expected a finite number > 0', None)
    """

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    finite: bool = True

    def __str__(self) -> str:
        what = "an integer" if self.integer else ("a finite number" if self.finite else "a number")
        lo_s = ("> " if self.lo_open else ">= ") + f"{self.lo:g}" if self.lo is not None else ""
        hi_s = ("< " if self.hi_open else "<= ") + f"{self.hi:g}" if self.hi is not None else ""
        if self.lo is not None and self.hi is not None:
            rng = f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        else:
            rng = f" {lo_s or hi_s}" if (lo_s or hi_s) else ""
        return f"{what}{rng}" + (" or null" if self.optional else "")

    def problem(self, v: Any) -> str | None:
        """``None`` if ``v`` is valid, else ``"expected …"``."""
        if v is None and self.optional:
            return None
        ok = _is_int(v) if self.integer else _is_real(v) and (not self.finite or math.isfinite(v))
        if ok and self.lo is not None:
            ok = v > self.lo if self.lo_open else v >= self.lo
        if ok and self.hi is not None:
            ok = v < self.hi if self.hi_open else v <= self.hi
        return None if ok else f"expected {self}"


def _default_type_problem(default: Any, v: Any) -> str | None:
    """What the type of a parameter's default implies about a value (``None`` = fine):
    a bool default wants a bool, an int default an integer, a float default a number, a
    string default a string.  ``None``, tuple and required defaults imply nothing."""
    if isinstance(default, bool):
        return None if isinstance(v, bool) else "expected true or false"
    if _is_int(default):
        return None if _is_int(v) else "expected an integer"
    if isinstance(default, float):
        return None if _is_real(v) else "expected a number"
    if isinstance(default, str):
        return None if isinstance(v, str) else "expected a string"
    return None


def check_values(kind: str, name: str, accepted: Mapping[str, Any], params: Mapping[str, Any],
                 ranges: Mapping[str, Range] = types.MappingProxyType({}), *,
                 field: str | None = None, per_replica: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming the field, the value and what is valid when a value
    in ``params`` has the wrong type for its parameter's default or is outside the
    parameter's declared :class:`Range`.  A parameter in ``per_replica`` (declared
    :data:`REPLICA_PARAMS`) may be a NumPy array of values, one per replica: each
    element is checked.

    >>> check_values("attack", "gaussian", {"std": 1.0}, {"std": -1}, {"std": Range(lo=0)},
    ...              field="attack_params")
    Traceback (most recent call last):
    ...
    ValueError: invalid config field 'attack_params.std' = -1: expected a finite number >= 0
    """
    stackable = set(per_replica)
    for k, v in params.items():
        r = ranges.get(k)
        values = v.ravel().tolist() if k in stackable and isinstance(v, np.ndarray) else [v]
        for x in values:
            problem = r.problem(x) if r is not None else _default_type_problem(accepted.get(k), x)
            if problem:
                raise ParameterValueError(k, x, problem).at(kind, name, field)


def bind_parameters(kind: str, name: str, fn: Callable, params: Mapping[str, Any],
                    per_call: Iterable[str] = ()) -> Callable:
    """``functools.partial(fn, **params)`` after :func:`check_parameters` against the
    keyword-only parameters of ``fn`` (less ``per_call``).  Prefer
    :meth:`Registry.bind`, which knows the declared ``per_call`` parameters."""
    check_parameters(kind, name, keyword_parameters(fn, per_call), params)
    return functools.partial(fn, **params)
