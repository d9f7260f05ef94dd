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

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Aggregate", "Aggregator", "Attack", "Estimator", "Model", "PreAggregator"]


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
