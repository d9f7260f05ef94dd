"""Gradient estimators (the registry :data:`ESTIMATORS`): minibatch SGD and SAGA with
its table of stored per-sample gradients, dense or factored (:class:`SagaTable`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from ._kernels import axpy
from ._problem import Problem
from ._rows import _lead_ids, _put_rows, _row_ids, _take_rows, gather_batch


def _as_replicas(w, idx, active, out, rows):
    """One run's estimator arguments (``idx (n, b)``, ``w (d,)`` or ``(k, d)``, ``rows``
    over the clients) as those of a batch of one replica; returns ``(single, args)``."""
    if idx.ndim == 3:
        return False, (w, idx, active, out, rows)
    w = np.asarray(w)
    w = w[None, None] if w.ndim == 1 else w[None]
    return True, (w, idx[None], None if active is None else active[None],
                  None if out is None else out[None], None if rows is None else (slice(None), rows))


ESTIMATORS: Registry = Registry("estimator")


@dataclass
class SagaTable:
    """SAGA memory of n clients (of S replicas: every array with a leading S).

    ``entries``: tuple of ``([S,] n, J, k)`` arrays, the stored per-sample gradient
    (dense: one entry, k = d) or its factors (softmax: the residuals, k = C).
    ``mean``: ``([S,] n, d)`` = ``(1/J) Σ_j φ_{w,j}``, maintained exactly on every update.
    """

    entries: tuple[np.ndarray, ...]
    mean: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries) + self.mean.nbytes

    def replica(self, s: int | None) -> "SagaTable":
        """Views: replica ``s`` of a replica table, or (``s = None``) one run's table
        with a leading replica axis of length 1."""
        if s is None:
            return SagaTable(tuple(e[None] for e in self.entries), self.mean[None])
        return SagaTable(tuple(e[s] for e in self.entries), self.mean[s])


class _Dense:
    """Dense per-sample gradients: entries are the ``d``-vectors themselves."""

    linear = True
    grad_diff = None

    def __init__(self, model):
        self.model = model

    def sample(self, w, X, y):
        return (self.model.per_sample_grads(w, X, y),)

    def grad_sum(self, X, factors, out=None):
        return factors[0].sum(axis=-2, out=out)


class _Factored:
    """Per-sample gradient factors from the model (``sample_factors``/``grad_from_factors``)."""

    def __init__(self, model):
        self.model = model
        self.linear = bool(getattr(model, "factors_linear", False))
        # optional one-pass ``Σ_j ∇_j(new) − ∇_j(old)`` for non-linear factors (the MLP)
        self.grad_diff = getattr(model, "grad_diff_from_factors", None)

    def sample(self, w, X, y):
        return self.model.sample_factors(w, X, y)

    def grad_sum(self, X, factors, out=None):
        return self.model.grad_from_factors(X, factors, out=out)


@ESTIMATORS.register("sgd")
class SGDEstimator:
    """Minibatch stochastic gradient of the local empirical risk at ``w``: ``(n, d)``."""

    def __init__(self, problem: Problem, table_kind: str = "auto"):
        self.problem = problem

    def init(self, w, slot: int | None = None):
        return None

    def __call__(self, table, w, idx, active=None, out=None, rows=None):
        """Gradients of the clients ``rows`` at ``w`` for their batches ``idx[rows]``.

        Replicas: ``idx (S, n, b)``, ``w`` broadcasting against the rows' lead shape
        (``(S, 1, d)``: the server models; ``lead + (d,)``: the rows' own models),
        returns ``lead + (d,)``.  One run: ``idx (n, b)``, ``w (d,)`` or ``(k, d)``,
        returns ``(k, d)``."""
        single, (w, idx, active, out, rows) = _as_replicas(w, idx, active, out, rows)
        model = self.problem.model
        _, idx, Xb, yb = gather_batch(self.problem, idx, rows)
        g = model.grad_from_factors(Xb, model.sample_factors(w, Xb, yb), out=out)
        g /= idx.shape[-1]
        g = model.add_regularizer_grad(g, w)
        return g[0] if single else g


@ESTIMATORS.register("saga")
class SagaEstimator:
    """SAGA-corrected minibatch gradient at ``w`` (paper A, Algorithm 1; paper B,
    Algorithm 2), updating the table in place.

    ``table_kind``: ``"dense"``, ``"factored"`` or ``"auto"`` (factored when the model
    provides ``sample_factors``).
    """

    def __init__(self, problem: Problem, table_kind: str = "auto"):
        self.problem = problem
        model = problem.model
        has_factors = hasattr(model, "sample_factors")
        if table_kind == "factored" and not has_factors:
            raise ValueError(f"saga_table='factored' but model {type(model).__name__} has no sample_factors")
        self.kind = "factored" if (table_kind == "factored" or (table_kind == "auto" and has_factors)) else "dense"
        self.form = _Factored(model) if self.kind == "factored" else _Dense(model)

    def init(self, w, slot: int | None = None) -> SagaTable:
        """Every sample's gradient at the initial model ``w`` (``(d,)`` or ``(n, d)``) on
        the data of replica ``slot`` (default: the problem's only data set)."""
        X, y = self.problem.data(slot)
        if self.problem.ragged:
            return self._init_ragged(w, X, y, self.problem.data_counts(slot))
        entries = tuple(np.array(e, order="C") for e in self.form.sample(w, X, y))
        mean = self.form.grad_sum(X, entries) / X.shape[1]
        return SagaTable(entries, np.array(np.broadcast_to(mean, (X.shape[0], mean.shape[-1]))))

    def _init_ragged(self, w, X, y, counts) -> SagaTable:
        """:meth:`init` for ragged clients, one client at a time over its ``J_w`` real
        rows: the padding entries stay 0 and no padding row enters a gradient or a mean
        ``(1/J_w) Σ_{j<J_w} φ_{w,j}``."""
        w = np.asarray(w)
        n, J = X.shape[:2]
        entries, mean = None, None
        for i in range(n):
            c = int(counts[i])
            wi = w[i] if w.ndim == 2 else w
            ent = self.form.sample(wi, X[i, :c], y[i, :c])
            g = self.form.grad_sum(X[i, :c], ent) / c
            if entries is None:
                entries = tuple(np.zeros((n, J) + e.shape[1:], e.dtype) for e in ent)
                mean = np.empty((n, g.shape[-1]), g.dtype)
            for e, ei in zip(entries, ent):
                e[i, :c] = ei
            mean[i] = g
        return SagaTable(entries, mean)

    def correction(self, table: SagaTable, w, idx, active=None, out=None, rows=None):
        """The SAGA step without its final combination: returns ``(diff, mean)`` with
        ``diff = Σ_{j∈batch} (∇f_{w,j}(w) − φ_{w,j})`` and ``mean`` the table means of
        the clients ``rows`` *after* the update ``mean += diff / J`` (a view of
        ``table.mean`` when ``rows`` are slices).  The corrected gradient is
        ``diff (1/b − 1/J) + mean`` (+ the regularizer); ragged clients: ``J_w`` for
        ``J`` (:meth:`inverse_counts`).

        Replicas: ``table`` with a leading S, ``idx (S, n, b)``, ``active (S, n)``,
        ``rows`` as in :func:`_lead_ids`, ``w`` as in :class:`SGDEstimator`; results
        ``lead + (d,)``.  One run: ``table`` ``(n, …)``, ``idx (n, b)``, ``active (n,)``,
        ``rows`` ``None`` (all n), a slice or an index array, ``w (d,)`` or ``(k, d)``;
        results ``(k, d)``.  ``active``: clients whose table may change (others:
        computed, table untouched).  ``out``: optional buffer for ``diff``.
        """
        single, (w, idx, active, out, rows) = _as_replicas(w, idx, active, out, rows)
        if single:
            table = table.replica(None)
        inv_J = self.inverse_counts(idx, rows)  # 1/J, or 1/J_w per row: lead + (1,)
        ids, idx, Xb, yb = gather_batch(self.problem, idx, rows)
        # table entries (S, n, J, k) as (S·n, J, k): a (replica, client) pair is one row
        # index (two-index gathers and scatters are faster than three-index ones)
        if all(e.flags.c_contiguous for e in table.entries):
            entries = tuple(e.reshape((-1,) + e.shape[2:]) for e in table.entries)
            at = (ids[0] * table.entries[0].shape[1] + ids[1], idx)
        else:
            entries, at = table.entries, ids + (idx,)
        new = self.form.sample(w, Xb, yb)
        old = tuple(e[at] for e in entries)
        if active is not None:
            keep = ~_take_rows(active, rows)[..., None, None]
            new = tuple(np.where(keep, o, nw) for nw, o in zip(new, old))
        if self.form.linear:
            diff = self.form.grad_sum(Xb, tuple(nw - o for nw, o in zip(new, old)), out=out)
        elif self.form.grad_diff is not None:
            diff = self.form.grad_diff(Xb, new, old, out=out)
        else:
            diff = self.form.grad_sum(Xb, new, out=out)
            diff -= self.form.grad_sum(Xb, old)
        for e, nw in zip(entries, new):
            e[at] = nw  # into the table (the flat form is a view)
        mean = _take_rows(table.mean, rows)
        if np.ndim(inv_J):
            mean += diff * inv_J.astype(diff.dtype)
        else:
            axpy(inv_J, diff, mean)
        _put_rows(table.mean, rows, mean)
        return (diff[0], mean[0]) if single else (diff, mean)

    def inverse_counts(self, idx: np.ndarray, rows=None):
        """``1/J_w`` of the clients ``rows`` (arguments as :meth:`correction`): the number
        ``1/J`` for equal sizes, else an array broadcasting against their ``(…, d)``
        results (``lead + (1,)``; one run ``(k, 1)``)."""
        P = self.problem
        if not P.ragged:
            return 1.0 / P.J
        if idx.ndim == 2:
            return 1.0 / P.counts_at(None, _row_ids(rows, P.n))
        return 1.0 / P.counts_at(*_lead_ids(rows, idx.shape[0], P.n))

    def __call__(self, table: SagaTable, w, idx, active=None, out=None, rows=None):
        """Corrected gradients at ``w`` for the batches ``idx``; see :meth:`correction`
        for the arguments."""
        diff, mean = self.correction(table, w, idx, active, out=out, rows=rows)
        inv_J = self.inverse_counts(idx, rows)
        if np.ndim(inv_J):  # ragged: per-client 1/J_w
            diff *= (1.0 / idx.shape[-1] - inv_J).astype(diff.dtype)
        else:
            diff *= 1.0 / idx.shape[-1] - inv_J
        diff += mean
        return self.problem.model.add_regularizer_grad(diff, w)


def make_estimator(name: str, problem: Problem, saga_table: str = "auto"):
    """The registered estimator ``name`` (``"sgd"``, ``"saga"``) for ``problem``."""
    return ESTIMATORS[name](problem, saga_table)
