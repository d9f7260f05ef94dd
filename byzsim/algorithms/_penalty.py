"""The penalty family's round (:class:`PenaltyMethod`, RSA and AsynRSA-VR): l_p-penalised
model aggregation over the regular clients that take part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..protocols import Stateful
from ._kernels import axpy_rows
from ._problem import Problem
from ._replicas import attack_step, component_at, replica_generators
from ._rows import _byzantine_rows, _put_rows, _take_rows, row_set
from ._sampling import participation_masks, sample_batches
from ._settings import _Settings, scheduled_lr
from ._state import State, _init_state
from ._subgradients import _row_sum, _signs, segment_sums, subgradients_of_difference


@dataclass
class PenaltyMethod:
    """RSA / AsynRSA-VR: l_p-penalised model aggregation with participation γ.

    A round computes only the rows of the regular clients that take part: views of the
    model array when those rows are the same contiguous block in every replica (full
    participation, Byzantine clients in one block), else the gathered (replica, client)
    pairs, written back.  Clients that sit out keep their model and SAGA table
    untouched; Byzantine rows hold the server model (their "honest" message) for the
    attack to look at.  ``lr``, ``penalty``, ``participation``, ``server_l2``: a number,
    or ``(S,)`` one per replica.
    """

    problem: Problem
    estimator: object
    attack: Callable
    lr: float
    penalty: float
    p: float = 1.0
    batch_size: int = 1
    participation: float = 1.0
    server_l2: float = 0.0
    lr_schedule: Callable[[int], float] | None = None

    def __post_init__(self):
        P = self.problem
        self._regular_rows = row_set(P.regular) if P.byzantine.ndim == 1 else None
        # SAGA without model l2: take the raw correction from the estimator and fold the
        # combination ``g = diff (1/b − 1/J) + mean`` into the model update (two passes fewer)
        # (equal sizes only: ragged clients have one 1/J_w per row, the estimator combines)
        self._fuse = (hasattr(self.estimator, "correction") and not getattr(P.model, "l2", 0.0)
                      and not P.ragged)
        self._work = None
        self._memo: dict = {}
        self._settings = _Settings(("lr", "penalty", "participation", "server_l2"))
        self._byz = {}

    def init(self, x0: np.ndarray) -> State:
        """State at ``x0``: ``(d,)`` one run, ``(S, d)`` a replica batch."""
        state = _init_state(self, x0, per_client=True)
        attack = component_at(self.attack, None)
        if isinstance(attack, Stateful):
            S, d = state.replicas, state.x.shape[-1]
            state.attack_state = attack.init((S, self.problem.n, d), state.x.dtype)
        return state

    def _buffers(self, size: int, dt) -> dict:
        """Flat work buffers of ``size`` elements, allocated once (fresh large
        temporaries every round would page-fault); a round views their first elements."""
        w = self._work
        if w is None or w["g"].size < size or w["g"].dtype != dt:
            w = self._work = dict(g=np.empty(size, dt), pen=np.empty(size, dt), s=np.empty(size, np.int8),
                                  gt=np.empty(size, bool), lt=np.empty(size, bool))
        return w

    def _rows(self, active, byz, S: int):
        """The round's rows (see :func:`_lead_ids`), the server models broadcast to them,
        the replica of each leading row (``None``: axis 0 is the replica) and the rows
        per replica (flat rows only)."""
        if active is None and self._regular_rows is not None:
            return (slice(None), self._regular_rows), None
        reg = ~byz if byz.ndim == 2 else np.broadcast_to(~byz, (S, byz.shape[-1]))
        sel = reg & active if active is not None else reg
        if S == 1:  # one run: a slice (views) when the rows are contiguous
            return (slice(None), row_set(sel[0])), None
        s_idx, i_idx = np.nonzero(sel)
        return (s_idx, i_idx), sel.sum(axis=1)

    def step(self, state: State, rng) -> State:
        """One round of every replica (``rng``: one generator, or one per replica)."""
        P = self.problem
        x0, W, table = state.as_replicas()
        S, d = x0.shape
        gens = replica_generators(rng, S)
        dt = x0.dtype
        cfg = self._settings(self, S, dt)
        lr, lr_dt = scheduled_lr(cfg, self, state.round)
        lam = cfg["penalty"]
        active = participation_masks(gens, P.n, cfg["participation"])
        idx = sample_batches(gens, P.n, P.J, self.batch_size, P.replica_counts(S))
        if S not in self._byz:
            b = P.replica_byzantine(S)
            self._byz[S] = (b, bool(b.any()), int(b.sum()) * (S if b.ndim == 1 else 1) * d)
        byz, any_byz, zsize = self._byz[S]
        rows, counts = self._rows(active, byz, S)
        flat = counts is not None
        Wr = _take_rows(W, rows)  # lead + (d,): round-k models of the regular participants
        owner = rows[0] if flat else None  # replica of each flat row
        m = Wr.size
        work = self._buffers(m + zsize, dt)
        buf = {key: a[:m].reshape(Wr.shape) for key, a in work.items()}
        est = self.estimator.correction if self._fuse else self.estimator
        if S == 1:  # one run's shapes (the estimator adds the replica axis itself)
            res = est(table.replica(0) if table is not None else None, Wr[0], idx[0], out=buf["g"][0], rows=rows[1])
            res = tuple(r[None] for r in res) if self._fuse else res[None]
        else:
            res = est(table, Wr, idx, out=buf["g"], rows=rows)
        if self._fuse:
            diff, mean = res
        else:
            g = res
        # server direction at round-k values; ∂‖x0 − x_i‖ = −∂‖x_i − x0‖ (odd)
        if S == 1:  # one run: (k, d) rows (never flat)
            pen, pen_sum = subgradients_of_difference(Wr[0], x0, self.p, {k: a[0] for k, a in buf.items()})
            pen, pen_sum = pen[None], pen_sum[None]
        elif not flat:
            pen, pen_sum = subgradients_of_difference(Wr, x0[:, None, :], self.p, buf)
        else:
            pen, summand = _signs(Wr, x0[owner], self.p, buf)
            pen_sum = segment_sums(summand, counts, dt)
        server = -pen_sum  # (S, d)
        if any_byz:
            brows = _byzantine_rows(byz, S)
            W[brows] = x0[:, None, :] if byz.ndim == 1 else x0[brows[0]]  # "honest" message: the server model
            z, state.attack_state = attack_step(self.attack, state.attack_state, W, byz, gens, self._memo)  # (S, q, d)
            zbuf = {key: a[m : m + z[..., 0].size * d].reshape(z.shape) for key, a in work.items()}
            zpen, zsum = _signs(x0[:, None, :], z, self.p, zbuf)
            if active is not None:  # only the Byzantine clients that take part count
                zsum[~active[brows].reshape(z.shape[:2])] = 0
            server += _row_sum(zsum, dt)  # Σ ∂‖x0 − z_v‖_p
        server *= cfg["penalty_dt"][:, None]
        if cfg["server_l2"].any():
            server += cfg["server_l2_dt"][:, None] * x0
        # client updates x_i −= lr (g_i + λ pen_i)
        if self._fuse:  # g = diff (1/b − 1/J) + mean
            axpy_rows(-lr * (1.0 / idx.shape[-1] - 1.0 / P.J), diff, Wr, owner)
            axpy_rows(-lr, mean, Wr, owner)
        else:
            axpy_rows(-lr, g, Wr, owner)
        axpy_rows(-lr * lam, pen, Wr, owner)
        _put_rows(W, rows, Wr)
        server *= lr_dt[:, None]
        x0 -= server
        state.round += 1
        return state
