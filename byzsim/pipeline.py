"""The gradient family's server step as one type: pre-aggregation steps, then a rule.

A :class:`Pipeline` is ``aggregate(v, mask, rng) -> (..., d)``: the bound
pre-aggregators (:mod:`byzsim.preaggregators`) in order, then a bound aggregator
(:mod:`byzsim.aggregators`).  Paper B's s-replacement resampling is a step like the
others and, when present, the first one; when it is the only step and the aggregator
declares the per-call parameter ``mix`` (the geometric median), the resampled rows are
never formed: the aggregator gets ``(v, None, mix=A)`` with the averaging matrix ``A``
of the same draw (:func:`byzsim.resampling.resampled`).  Both
:func:`byzsim.preaggregators.compose` and :func:`byzsim.resampling.resampled` build one.

A step or the aggregator may be a :class:`byzsim.protocols.Stateful` component; the
pipeline is then stateful itself: ``init(shape, dtype)`` gives the tuple of its parts'
states (an :class:`~byzsim.protocols.EmptyState` for each pure part) and
``apply(state, v, mask, rng) -> (out, state')`` threads them; calling it like a pure
pipeline is an error (the engine carries the state, :class:`byzsim.algorithms.State`).

>>> import numpy as np
>>> from byzsim.aggregators import get_aggregator
>>> from byzsim.preaggregators import get_preaggregator
>>> p = Pipeline((get_preaggregator("resample", s=2), get_preaggregator("nnm", f=1)),
...              get_aggregator("krum", f=2))
>>> p.s, p(np.zeros((2, 8, 3)), None, np.random.default_rng(0)).shape   # (2, 8, 3) -> (2, 3)
(2, (2, 3))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .protocols import EmptyState, Stateful
from .resampling import averaging_matrix, resample_indices

__all__ = ["Pipeline"]


def _registered_name(registry: Any, fn: Callable) -> str | None:
    entry = registry.entry_of(fn)
    return None if entry is None else entry.name


@dataclass(frozen=True)
class Pipeline:
    """``aggregate(v (..., n, d), mask, rng) -> (..., d)``: ``steps`` in order, then
    ``aggregate_fn``.

    Parameters
    ----------
    steps : tuple of callables ``pre(z, mask, rng) -> (z', mask')``
        Bound pre-aggregators (:func:`byzsim.preaggregators.get_preaggregator`);
        resampling, if any, first.
    aggregate_fn : callable ``agg(z, mask) -> (..., d)``
        A bound aggregator.
    per_call : tuple of str, optional
        The aggregator's per-call parameters; default: those declared when it was
        registered (none for an unregistered callable).
    """

    steps: tuple[Callable, ...]
    aggregate_fn: Callable
    per_call: tuple[str, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        for i, step in enumerate(self.steps):
            if not (callable(step) or isinstance(step, Stateful)):
                raise ValueError(f"pipeline step {i} must be a callable pre(z, mask, rng), got {step!r}")
        if not (callable(self.aggregate_fn) or isinstance(self.aggregate_fn, Stateful)):
            raise ValueError(f"the pipeline's aggregator must be a callable agg(z, mask), got {self.aggregate_fn!r}")
        if self.per_call is None:
            from .aggregators import AGGREGATORS

            entry = AGGREGATORS.entry_of(self.aggregate_fn)
            object.__setattr__(self, "per_call", tuple(entry.meta["per_call"]) if entry else ())

    @property
    def preaggregators(self) -> tuple[Callable, ...]:
        """The steps (the name used by :func:`byzsim.preaggregators.compose`)."""
        return self.steps

    @property
    def s(self) -> int:
        """Resampling size of the first step (1: no resampling)."""
        from .preaggregators import PREAGGREGATORS

        if self.steps and _registered_name(PREAGGREGATORS, self.steps[0]) == "resample":
            return int(self.steps[0].keywords.get("s", 2)) if isinstance(self.steps[0], functools.partial) else 2
        return 1

    @property
    def name(self) -> str:
        """``step_then_…_then_rule`` (registered names where known)."""
        from .aggregators import AGGREGATORS
        from .preaggregators import PREAGGREGATORS

        def nm(reg, fn):
            if isinstance(fn, Stateful):
                return getattr(fn, "name", None) or getattr(fn.apply, "__qualname__", "stateful").split(".")[0]
            inner = fn.func if isinstance(fn, functools.partial) else fn
            return _registered_name(reg, fn) or getattr(inner, "__name__", type(inner).__name__)

        return "_then_".join([nm(PREAGGREGATORS, p) for p in self.steps] + [nm(AGGREGATORS, self.aggregate_fn)])

    @property
    def stateful(self) -> bool:
        """True when a step or the aggregator carries state (use :meth:`init` / :meth:`apply`)."""
        return any(isinstance(p, Stateful) for p in self.steps + (self.aggregate_fn,))

    def init(self, shape: tuple, dtype=np.float64) -> tuple:
        """The parts' states before round 1 (``shape``: the input ``(S, n, d)``)."""
        return tuple(p.init(shape, dtype) if isinstance(p, Stateful) else EmptyState()
                     for p in self.steps + (self.aggregate_fn,))

    def apply(self, state: tuple, v: Any, mask: Any, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
        """``(aggregate (..., d), new state)``: the steps then the aggregator, each
        stateful part with its own state (``state`` as from :meth:`init`)."""
        z, m, new = v, mask, []
        for step, st in zip(self.steps, state):
            if isinstance(step, Stateful):
                (z, m), st = step.apply(st, z, m, rng=rng)
            else:
                z, m = step(z, m, rng)
            new.append(st)
        agg = self.aggregate_fn
        if isinstance(agg, Stateful):
            out, st = agg.apply(state[-1], z, m, rng=rng)
        else:
            out, st = agg(z, m), state[-1]
        return out, tuple(new) + (st,)

    def __call__(self, v: Any, mask: Any, rng: np.random.Generator) -> np.ndarray:
        if self.stateful:
            raise ValueError(
                f"pipeline {self.name!r} holds a stateful component: it cannot be called as a "
                "pure aggregate(v, mask, rng) (e.g. as the inner aggregator of an optimizing "
                "attack); use init/apply, which the gradient family's engine does"
            )
        s = self.s
        if s > 1 and len(self.steps) == 1 and "mix" in self.per_call:
            if mask is not None:
                raise ValueError(
                    "resampling with partial participation is not supported "
                    f"(got a participation mask with s = {s}); use participation = 1 "
                    "or s = 1"
                )
            idx = resample_indices(rng, np.shape(v)[-2], s)
            return self.aggregate_fn(v, None, mix=averaging_matrix(idx))
        z, m = v, mask
        for step in self.steps:
            z, m = step(z, m, rng)
        return self.aggregate_fn(z, m)
