"""The contracts a component implements, as :class:`typing.Protocol` types.

A user's component need not inherit from anything: any callable (or object) with the
right call signature conforms.  Shapes: ``n`` clients (rows), ``d`` coordinates,
``q`` Byzantine clients, ``b`` samples per batch, ``J`` samples per client, ``...``
any leading batch axes.  The properties that are not part of the call (the largest
``f`` a rule tolerates, per-call parameters, the pipeline step of a pre-aggregator,
whether an attack needs the server's aggregate or is a data attack) are declared when
the component is registered (:class:`byzsim.registry.Registry`).  The conformance
properties are checked by :mod:`byzsim.testing`.

>>> from byzsim.aggregators import krum
>>> isinstance(krum, Aggregator)
True
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = ["Aggregate", "Aggregator", "Attack", "EmptyState", "Estimator", "Model", "PreAggregator",
           "Stateful", "is_stateful", "stateless", "state_slice", "state_stack"]


@runtime_checkable
class Aggregator(Protocol):
    """A robust rule ``(z (..., n, d), mask (n,)|(..., n)|None, **params) -> (..., d)``,
    pure, keyword-only parameters (:mod:`byzsim.aggregators`)."""

    def __call__(self, z: Any, mask: Any = None, /, **params: Any) -> np.ndarray: ...


@runtime_checkable
class PreAggregator(Protocol):
    """A transform ``(z (..., n, d), mask, rng, **params) -> (z' (..., n', d), mask')``
    applied before an aggregator (:mod:`byzsim.preaggregators`)."""

    def __call__(self, z: Any, mask: Any, rng: np.random.Generator, /,
                 **params: Any) -> tuple[np.ndarray, np.ndarray | None]: ...


@runtime_checkable
class Aggregate(Protocol):
    """The gradient family's server step ``(v (..., n, d), mask, rng) -> (..., d)``
    (pre-aggregators then an aggregator, bound)."""

    def __call__(self, v: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, /) -> np.ndarray: ...


@runtime_checkable
class Attack(Protocol):
    """Byzantine messages ``(v (..., n, d) honest, byzantine (n,) bool, rng, **params)
    -> (..., q, d)``, ``v`` not modified (:mod:`byzsim.attacks`)."""

    def __call__(self, v: np.ndarray, byzantine: np.ndarray, rng: np.random.Generator, /,
                 **params: Any) -> np.ndarray: ...


@runtime_checkable
class Estimator(Protocol):
    """Local gradient estimator: ``init(w (d,)|(n, d)) -> table``, then
    ``est(table, w, idx (n, b), active=None, out=None, rows=None) -> (k, d)`` for the
    clients ``rows`` (all ``n`` by default), updating ``table`` in place."""

    def init(self, w: np.ndarray) -> Any: ...

    def __call__(self, table: Any, w: np.ndarray, idx: np.ndarray, active: np.ndarray | None = None,
                 out: np.ndarray | None = None, rows: Any = None) -> np.ndarray: ...


@runtime_checkable
class Model(Protocol):
    """A differentiable classifier on flat parameters ``w (..., dim)``: inputs
    ``X (..., m, n_inputs)`` (after :meth:`prepare`), labels ``y (..., m)``
    (:mod:`byzsim.models`)."""

    dim: int

    def prepare(self, X: np.ndarray) -> np.ndarray: ...

    def init(self, rng: np.random.Generator) -> np.ndarray: ...

    def loss(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray: ...

    def grad(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray: ...

    def accuracy(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------------------
# stateful components: an ``init`` / ``apply`` pair (optax's GradientTransformation)
# --------------------------------------------------------------------------------------
class EmptyState(NamedTuple):
    """The state of a stateless component (no arrays)."""


class Stateful(NamedTuple):
    """A component that carries state from round to round, as a pair of pure functions.

    ``init(shape (S, n, d), dtype) -> state``: the state before round 1, a small
    immutable record (a ``NamedTuple`` of arrays) whose every array has the leading
    replica axis ``S``.  ``apply(state, *args, rng) -> (out, new_state)``: the
    component's call with the arguments of its stateless kind (an aggregator
    ``(z, mask)``, a pre-aggregator ``(z, mask)``, an attack ``(v, byzantine)``) and the
    run's generator; ``state`` and the arrays of ``args`` share their leading axes
    (``(S, n, d)`` with state ``(S, …)``, or one replica's ``(n, d)`` with its slice
    :func:`state_slice`).  ``apply`` never modifies ``state``: it returns a new one.

    ``kind`` says which call it is (``"aggregator"``, ``"preaggregator"``, ``"attack"``).

    >>> import numpy as np
    >>> st = stateless(lambda z, mask=None: z.mean(-2), "aggregator")
    >>> s0 = st.init((1, 3, 2), np.float64)
    >>> out, s1 = st.apply(s0, np.ones((3, 2)), None, rng=None)
    >>> out, s1 == s0
    (array([1., 1.]), True)
    """

    init: Callable[..., Any]
    apply: Callable[..., tuple[Any, Any]]
    kind: str = "aggregator"


def stateless(fn: Callable, kind: str = "aggregator") -> Stateful:
    """Lift a pure rule into :class:`Stateful` with an :class:`EmptyState` (optax's
    ``stateless``): ``apply(state, *args, rng)`` is ``fn(*args)`` (an aggregator) or
    ``fn(*args, rng)`` (a pre-aggregator, an attack), the state unchanged."""
    takes_rng = kind != "aggregator"

    def init(shape, dtype=np.float64):
        return EmptyState()

    def apply(state, *args, rng=None):
        return (fn(*args, rng) if takes_rng else fn(*args)), state

    return Stateful(init, apply, kind)


def is_stateful(obj: Any) -> bool:
    """True for a :class:`Stateful` component (or a pipeline holding one)."""
    return isinstance(obj, Stateful) or bool(getattr(obj, "stateful", False))


def state_slice(state: Any, s: int) -> Any:
    """Replica ``s`` of a state (every array's leading axis indexed; nested tuples too)."""
    if isinstance(state, tuple):
        return type(state)(*(state_slice(a, s) for a in state)) if hasattr(state, "_fields") \
            else tuple(state_slice(a, s) for a in state)
    return state[s]


def state_stack(states: list) -> Any:
    """The replica states of :func:`state_slice` stacked back along a new leading axis."""
    first = states[0]
    if isinstance(first, tuple):
        parts = [state_stack([st[k] for st in states]) for k in range(len(first))]
        return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)
    return np.stack(states)
