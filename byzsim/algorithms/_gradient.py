"""The gradient family's round (:class:`GradientMethod`): estimator × local steps ×
momentum × attack × aggregator × participation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..protocols import Stateful
from ._estimators import SGDEstimator
from ._kernels import axpy
from ._problem import Problem
from ._replicas import attack_step, component_at, replica_apply, replica_generators, replica_map
from ._rows import _byzantine_rows
from ._sampling import participation_masks, sample_batches
from ._settings import _Settings, check_momentum_local_steps, scheduled_lr
from ._state import State, _init_state


def _resampled_parts(aggregate):
    """``(s, aggregate_fn, mixes)`` of s-replacement resampling (``s ≥ 2``) around a plain
    aggregator (:func:`byzsim.resampling.resampled`), else ``None``."""
    s = getattr(aggregate, "s", 1)
    fn = getattr(aggregate, "aggregate_fn", None)
    if s is None or s < 2 or fn is None or hasattr(aggregate, "preaggregators"):
        return None
    return s, fn, "mix" in getattr(fn, "call_parameters", ())


Aggregate = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], np.ndarray]


@dataclass
class GradientMethod:
    """Gradient aggregation: estimator × attack × aggregator × participation.

    ``lr``, ``participation``, ``server_l2``: a number, or ``(S,)`` one per replica.
    ``attack``, ``aggregate``: the component, or a
    :class:`~byzsim.algorithms._replicas.PerReplica` when its numeric parameters
    differ between replicas.
    """

    problem: Problem
    estimator: object
    attack: Callable
    aggregate: Aggregate  # (v (n, d), mask (n,) | None, rng) -> (d,)
    lr: float
    batch_size: int = 1
    participation: float = 1.0
    server_l2: float = 0.0
    momentum: float = 0.0
    local_steps: int = 1
    lr_schedule: Callable[[int], float] | None = None

    def __post_init__(self):
        check_momentum_local_steps(self.momentum, self.local_steps)
        self._memo: dict = {}
        self._v = None
        agg = component_at(self.aggregate, None)
        self._stateful = bool(getattr(agg, "stateful", False)) or isinstance(agg, Stateful)
        self._resampled = None if self._stateful else _resampled_parts(agg)
        self._settings = _Settings(("lr", "participation", "server_l2"))
        self._sgd = SGDEstimator(self.problem) if self.local_steps > 1 else None

    def init(self, x0: np.ndarray) -> State:
        """State at ``x0``: ``(d,)`` one run, ``(S, d)`` a replica batch; the stateful
        components' states from their ``init``, momenta zero (``m_0 = 0``)."""
        state = _init_state(self, x0, per_client=False)
        shape = (state.replicas, self.problem.n, state.x.shape[-1])
        dt = state.x.dtype
        if self._stateful:
            state.aggregate_state = component_at(self.aggregate, None).init(shape, dt)
        if isinstance(component_at(self.attack, None), Stateful):
            state.attack_state = component_at(self.attack, None).init(shape, dt)
        if self.momentum:
            state.momentum = np.zeros(shape, dt)
        return state

    def _local_steps(self, v: np.ndarray, x: np.ndarray, gens: list, lr: np.ndarray) -> np.ndarray:
        """Messages after ``E = local_steps`` local SGD steps, in place in ``v`` (which
        holds each client's first gradient ``g_1`` at the server model ``x``):
        ``x_1 = x``, ``x_{e+1} = x_e − lr g_e`` with ``g_e`` a fresh minibatch gradient at
        ``x_e`` (``e ≥ 2``: plain SGD), and the message ``Σ_{e=1}^{E} g_e = (x − x_{E+1})/lr``,
        the model delta in gradient units (accumulated as a sum: for ``E = 1`` it is
        ``g_1`` exactly)."""
        P = self.problem
        W = x[:, None, :] - lr[:, None, None] * v  # (S, n, d) local models
        for e in range(1, self.local_steps):
            idx = sample_batches(gens, P.n, P.J, self.batch_size, P.replica_counts(len(gens)))
            g = self._sgd(None, W, idx)
            v += g
            if e + 1 < self.local_steps:
                W -= lr[:, None, None] * g
        return v

    def _aggregate(self, v: np.ndarray, active, gens: list, state: State | None = None) -> np.ndarray:
        """``(S, d)`` aggregates of ``v (S, n, d)`` (each replica's own draws); a
        stateful aggregate reads and replaces ``state.aggregate_state``."""
        agg = self.aggregate  # a PerReplica when its parameters differ between replicas
        if self._stateful:

            def sf_call(s, st, rng):
                if s is None:
                    return component_at(agg, None).apply(st, v, active, rng=rng)
                return component_at(agg, s).apply(st, v[s], None if active is None else active[s], rng=rng)

            out, state.aggregate_state = replica_apply(sf_call, state.aggregate_state, gens, self._memo, "aggregate")
            return out
        rs = self._resampled
        if rs is not None and len(gens) > 1:
            from ..resampling import averaging_matrix, resample, resample_indices

            s, fn, mixes = rs
            if active is not None:
                return component_at(agg, None)(v, active, gens[0])  # raises: resampling needs γ = 1
            idx = np.stack([resample_indices(g, v.shape[-2], s) for g in gens])
            if mixes:
                return fn(v, None, mix=averaging_matrix(idx))
            return fn(resample(v, idx), None)

        def call(s, rng):
            if s is None:
                return component_at(agg, None)(v, active, rng)
            return component_at(agg, s)(v[s], None if active is None else active[s], rng)

        return replica_map(call, gens, self._memo, "aggregate")

    def step(self, state: State, rng) -> State:
        """One round of every replica: ``rng`` is the run's generator (one run) or one
        generator per replica."""
        P = self.problem
        x, _, table = state.as_replicas()
        S, d = x.shape
        gens = replica_generators(rng, S)
        dt = x.dtype
        cfg = self._settings(self, S, dt)
        lr, lr_dt = scheduled_lr(cfg, self, state.round)
        active = participation_masks(gens, P.n, cfg["participation"])
        idx = sample_batches(gens, P.n, P.J, self.batch_size, P.replica_counts(S))
        v = self._v  # message buffer, reused every round (no page faults)
        if v is None or v.shape != (S, P.n, d) or v.dtype != dt:
            v = self._v = np.empty((S, P.n, d), dtype=dt)
        if S == 1:  # one run's shapes (the estimator adds the replica axis itself)
            v = self.estimator(table.replica(0) if table is not None else None, x[0], idx[0],
                               None if active is None else active[0], out=v[0])[None]
        else:
            v = self.estimator(table, x[:, None, :], idx, active, out=v)
        if self.local_steps > 1:
            v = self._local_steps(v, x, gens, lr_dt)
        beta = self.momentum
        if beta:  # m ← β m + (1 − β) g, formed in the message buffer (which becomes m)
            m = state.momentum
            np.multiply(v, 1.0 - beta, out=v)
            axpy(beta, m, v)
            if active is not None:  # clients that sit out keep their momentum
                v[~active] = m[~active]
        byz = P.replica_byzantine(S)
        if byz.any():
            rows = _byzantine_rows(byz, S)
            honest = v[rows] if beta else None  # the Byzantine clients' own momenta (a copy)
            z, state.attack_state = attack_step(self.attack, state.attack_state, v, byz, gens, self._memo)
            v[rows] = z if byz.ndim == 1 else z.reshape(-1, d)
        agg = self._aggregate(v, active, gens, state)
        if beta:
            if byz.any():
                v[rows] = honest
            state.momentum, self._v = v, m  # swap: the old momenta become next round's buffer
        if cfg["server_l2"].any():
            agg = agg + cfg["server_l2_dt"][:, None] * x
        x -= lr_dt[:, None] * agg
        state.round += 1
        return state
