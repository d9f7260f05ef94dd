"""The two algorithm families as vectorized rounds.

Shapes: n clients, J samples each, b = batch size, d = model dimension.

**Gradient family** (DESIGN §2.1; SGD, Byrd-SGD/Gm, Med, Krum, Byrd-SAGA, FedSGD…)::

    v_w   = estimator of ∇f_w at the server model x          (n, d)
    v_B   ← attack(v)                                        Byzantine rows replaced
    x     ← x − lr · (Agg(v, mask = participating) + server_l2 · x)

**Penalty family** (DESIGN §2.2; RSA, AsynRSA-VR), round k with participation set S::

    x_i   ← x_i − lr (g_i + λ ∂‖x_i − x0‖_p)                  regular i ∈ S
    x0    ← x0 − lr (server_l2 x0 + λ Σ_{i∈R∩S} ∂‖x0 − x_i‖_p + λ Σ_{v∈B∩S} ∂‖x0 − z_v‖_p)

with every right-hand side at the round-k values.  Byzantine clients hold no model;
their honest message is taken to be the server model ``x0`` (so the ``none`` attack
is harmless), and the attack replaces it by ``z_v``.

One round is one call of ``step(state, rng)``: no Python loop over clients.  For speed
``step`` updates the state's arrays in place (they are work buffers) and returns the
same state; copy it to keep a snapshot.  All randomness comes from the ``rng`` passed
in, drawn in a fixed order (participation, sample indices, attack), so a run is
reproducible from its seed.

SAGA (``estimator="saga"``): each client keeps one stored per-sample gradient per local
sample, logically an ``(n, J, d)`` table (kept for the Byzantine clients too: in the
gradient family they hold data and compute honest messages for attacks such as
sign-flipping; a penalty round computes and updates only the rows of the regular
clients that take part).  It is stored
either *dense* or, when the model provides per-sample gradient factors, *factored*
(:class:`SagaTable`); both give the same trajectory up to round-off.  The table is
initialised with every sample's gradient at the initial model (paper A, Algorithm 1,
line 3).  With a minibatch of b distinct indices the corrected gradient is
``(1/b) Σ_{j∈batch} (∇f_{w,j}(x) − φ_{w,j}) + (1/J) Σ_j φ_{w,j}`` and every drawn
entry is then replaced.  Clients that do not take part leave their table untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from scipy.linalg.blas import daxpy, saxpy

_AXPY = {np.dtype(np.float64): daxpy, np.dtype(np.float32): saxpy}

from .attacks import apply_attack


def axpy(a: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y += a · x`` in place, in one fused pass (BLAS ``daxpy``/``saxpy``) when both are
    C-contiguous float64/float32 arrays of the same shape and dtype; otherwise with NumPy.
    Returns ``y``.

    The hot path of a round is memory-bound: a fused ``y += a x`` reads two arrays and
    writes one, where ``y += a * x`` also writes and re-reads a temporary.
    """
    blas = _AXPY.get(y.dtype)
    if (
        blas is not None and x.shape == y.shape and x.dtype == y.dtype
        and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable and y.size
    ):
        blas(x.reshape(-1), y.reshape(-1), a=a)
    else:
        y += a * x
    return y


# --------------------------------------------------------------------------------------
# l_p subgradients
# --------------------------------------------------------------------------------------
def sign_of_difference(a: np.ndarray, b: np.ndarray, out: np.ndarray, work=None) -> np.ndarray:
    """``out = sign(a − b)`` (0 where equal or NaN) via two comparisons:
    ``(a > b) − (a < b)``, subtracted as int8 and cast into ``out``'s dtype (float, or
    int8 itself: then the signs are 8x smaller than a float array, and their column sum
    and their cast into a float buffer are each a fraction of one float pass).

    Several times faster than ``np.sign(a − b)`` (NumPy's ``sign`` is slow on arrays
    with many zeros, which the penalty family has: coordinates that no gradient moves
    stay exactly equal).  ``work``: optional pair of bool buffers shaped like ``out``.
    """
    if work is None:
        work = (np.empty(out.shape, bool), np.empty(out.shape, bool))
    gt, lt = work
    np.greater(a, b, out=gt)
    np.less(a, b, out=lt)
    return np.subtract(gt.view(np.int8), lt.view(np.int8), out=out)


def lp_subgradient(u: np.ndarray, p: float, out: np.ndarray | None = None) -> np.ndarray:
    """A subgradient of ``‖u‖_p`` at ``u``, row-wise: ``(..., d) -> (..., d)``.

    - ``p = 1``: ``sign(u)``;
    - ``p = 2``: ``u / ‖u‖₂`` (0 at u = 0);
    - ``1 < p < ∞``: ``sign(u) |u|^{p−1} / ‖u‖_p^{p−1}`` (0 at u = 0);
    - ``p = ∞``: ``sign(u_k) e_k`` spread evenly over the arg-max coordinates k
      (a convex combination of subgradients, so still a subgradient).

    Its dual norm is ≤ 1 and ``⟨g, u⟩ = ‖u‖_p``.  ``out`` (may be ``u`` itself) receives
    the result without a new allocation where the formula allows (p = 1).
    """
    u = np.asarray(u)
    if not np.issubdtype(u.dtype, np.floating):
        u = u.astype(np.float64)
    if p == 1:
        if out is None:
            out = np.empty_like(u)
        return sign_of_difference(u, 0, out)
    if out is not None:
        out[...] = lp_subgradient(u, p)
        return out
    if p == math.inf:
        a = np.abs(u)
        top = a == a.max(axis=-1, keepdims=True)
        top &= a > 0
        cnt = np.maximum(top.sum(axis=-1, keepdims=True), 1)
        return np.sign(u) * top / cnt
    if p == 2:  # rescale first: ‖u‖₂ of tiny or huge u under/overflows
        scale = np.abs(u).max(axis=-1, keepdims=True)
        r = np.divide(u, scale, out=np.zeros_like(u), where=scale > 0)
        nrm = np.linalg.norm(r, axis=-1, keepdims=True)
        return np.divide(r, nrm, out=np.zeros_like(u), where=nrm > 0)
    if not p > 1:
        raise ValueError(f"l_p subgradient: p must be >= 1 or inf, got {p!r}")
    a = np.abs(u)
    scale = a.max(axis=-1, keepdims=True)  # rescale against overflow of |u|^p
    safe = np.where(scale > 0, scale, 1.0)
    r = a / safe
    nrm = np.sum(r**p, axis=-1, keepdims=True) ** (1.0 / p)
    nrm = np.where(nrm > 0, nrm, 1.0)
    return np.sign(u) * (r / nrm) ** (p - 1)


# --------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------
def sample_batch(rng: np.random.Generator, n: int, J: int, b: int) -> np.ndarray:
    """``(n, b)`` sample indices: per client, b distinct indices uniform over ``range(J)``
    (uniform over b-subsets), each row sorted.

    Vectorized rejection of rows with repeats when ``b² ≤ J`` (accepts with probability
    ≳ 0.6), otherwise one random permutation per client.
    """
    if not 1 <= b <= J:
        raise ValueError(f"batch size must be in [1, J] = [1, {J}], got {b}")
    if b == 1:
        return rng.integers(J, size=(n, 1))
    if b * b > J:
        return np.sort(np.argsort(rng.random((n, J)), axis=1)[:, :b], axis=1)
    idx = np.sort(rng.integers(J, size=(n, b)), axis=1)
    bad = (idx[:, 1:] == idx[:, :-1]).any(axis=1)
    while bad.any():
        k = int(bad.sum())
        idx[bad] = np.sort(rng.integers(J, size=(k, b)), axis=1)
        bad = (idx[:, 1:] == idx[:, :-1]).any(axis=1)
    return idx


def participation_mask(rng: np.random.Generator, n: int, gamma: float) -> np.ndarray | None:
    """Bernoulli(γ) participation ``(n,)`` bool; ``None`` (everybody) when γ = 1."""
    if gamma >= 1.0:
        return None
    return rng.random(n) < gamma


# --------------------------------------------------------------------------------------
# the problem: data stacked over clients
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Everything a run computes on.

    ``X (n, J, p')`` prepared client features, ``y (n, J)``, ``byzantine (n,)`` bool,
    ``X_test (M, p')``, ``y_test (M,)``, the model, and ``X_eval (E, p')``, ``y_eval (E,)``
    the regular clients' training samples the training loss is evaluated on (default:
    all of them).
    """

    model: object
    X: np.ndarray
    y: np.ndarray
    byzantine: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_eval: np.ndarray | None = None
    y_eval: np.ndarray | None = None

    def __post_init__(self):
        if self.X_eval is None:
            reg = ~self.byzantine
            object.__setattr__(self, "X_eval", self.X[reg].reshape(-1, self.X.shape[-1]))
            object.__setattr__(self, "y_eval", self.y[reg].ravel())

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def J(self) -> int:
        return self.X.shape[1]

    @property
    def regular(self) -> np.ndarray:
        return ~self.byzantine


# --------------------------------------------------------------------------------------
# gradient estimators
# --------------------------------------------------------------------------------------
@dataclass
class SagaTable:
    """SAGA memory of n clients.

    ``entries``: tuple of ``(n, J, k)`` arrays, the stored per-sample gradient
    (dense: one entry, k = d) or its factors (softmax: the residuals, k = C).
    ``mean``: ``(n, d)`` = ``(1/J) Σ_j φ_{w,j}``, maintained exactly on every update.
    """

    entries: tuple[np.ndarray, ...]
    mean: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries) + self.mean.nbytes


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


def _row_ids(rows, n: int) -> np.ndarray:
    """``(k, 1)`` client indices of ``rows`` (``None`` = all n, a slice, or an index array),
    for fancy indexing ``A[ids, idx]`` together with an ``(k, b)`` index matrix."""
    return np.arange(n)[slice(None) if rows is None else rows][:, None]


def row_set(mask: np.ndarray) -> slice | np.ndarray:
    """The rows where ``mask (n,)`` holds: a slice when they are contiguous (then
    ``A[rows]`` is a view and needs no write-back), else an index array."""
    ids = np.flatnonzero(mask)
    if ids.size and ids[-1] - ids[0] + 1 == ids.size:
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def _take_rows(A: np.ndarray, rows) -> np.ndarray:
    return A if rows is None else A[rows]


def gather_batch(problem: Problem, idx: np.ndarray, rows=None):
    """The minibatches of the clients ``rows`` (``None`` = all n, a slice or an index
    array): returns ``ids (k, 1)``, their indices ``idx[rows] (k, b)``, ``Xb (k, b, p')``
    and ``yb (k, b)``."""
    ids = _row_ids(rows, problem.n)
    idx = _take_rows(idx, rows)
    return ids, idx, problem.X[ids, idx], problem.y[ids, idx]


def _put_rows(A: np.ndarray, rows, values: np.ndarray) -> None:
    """Write back rows taken by :func:`_take_rows` (nothing to do for views)."""
    if rows is not None and not isinstance(rows, slice):
        A[rows] = values


class SGDEstimator:
    """Minibatch stochastic gradient of the local empirical risk at ``w``: ``(n, d)``."""

    def __init__(self, problem: Problem):
        self.problem = problem

    def init(self, w):
        return None

    def __call__(self, table, w, idx, active=None, out=None, rows=None):
        """Gradients ``(k, d)`` of the clients ``rows`` (default all n) at ``w`` (``(d,)``
        or the rows' models ``(k, d)``) for their batches ``idx[rows]``."""
        model = self.problem.model
        _, idx, Xb, yb = gather_batch(self.problem, idx, rows)
        g = model.grad_from_factors(Xb, model.sample_factors(w, Xb, yb), out=out)
        g /= idx.shape[1]
        return model.add_regularizer_grad(g, w)


class SagaEstimator:
    """SAGA-corrected minibatch gradient at ``w`` (DESIGN §2.1/§4), updating the table in place.

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

    def init(self, w) -> SagaTable:
        """Every sample's gradient at the initial model ``w`` (``(d,)`` or ``(n, d)``)."""
        X, y = self.problem.X, self.problem.y
        entries = tuple(np.array(e, order="C") for e in self.form.sample(w, X, y))
        mean = self.form.grad_sum(X, entries) / X.shape[1]
        return SagaTable(entries, np.array(np.broadcast_to(mean, (X.shape[0], mean.shape[-1]))))

    def correction(self, table: SagaTable, w, idx, active=None, out=None, rows=None):
        """The SAGA step without its final combination: returns ``(diff, mean)`` with
        ``diff (k, d) = Σ_{j∈batch} (∇f_{w,j}(w) − φ_{w,j})`` and ``mean (k, d)`` the
        table means of the clients ``rows`` *after* the update ``mean += diff / J``
        (a view of ``table.mean`` when ``rows`` is ``None`` or a slice).  The corrected
        gradient is ``diff (1/b − 1/J) + mean`` (+ the regularizer).

        ``w``: ``(d,)`` or the rows' models ``(k, d)``; ``idx (n, b)``: every client's
        batch (the rows' are used); ``active (n,)``: clients whose table may change
        (others: computed, table untouched); ``rows``: ``None`` (all n), a slice or an
        index array.  ``out``: optional ``(k, d)`` buffer for ``diff``.
        """
        J = self.problem.J
        ids, idx, Xb, yb = gather_batch(self.problem, idx, rows)
        new = self.form.sample(w, Xb, yb)
        old = tuple(e[ids, idx] for e in table.entries)
        if active is not None:
            keep = ~_take_rows(active, rows)[:, None, None]
            new = tuple(np.where(keep, o, nw) for nw, o in zip(new, old))
        if self.form.linear:
            diff = self.form.grad_sum(Xb, tuple(nw - o for nw, o in zip(new, old)), out=out)
        elif self.form.grad_diff is not None:
            diff = self.form.grad_diff(Xb, new, old, out=out)
        else:
            diff = self.form.grad_sum(Xb, new, out=out)
            diff -= self.form.grad_sum(Xb, old)
        for e, nw in zip(table.entries, new):
            e[ids, idx] = nw
        mean = _take_rows(table.mean, rows)
        axpy(1.0 / J, diff, mean)
        _put_rows(table.mean, rows, mean)
        return diff, mean

    def __call__(self, table: SagaTable, w, idx, active=None, out=None, rows=None):
        """Corrected gradients ``(k, d)`` at ``w`` for the batches ``idx``; see
        :meth:`correction` for the arguments."""
        diff, mean = self.correction(table, w, idx, active, out=out, rows=rows)
        diff *= 1.0 / idx.shape[1] - 1.0 / self.problem.J
        diff += mean
        return self.problem.model.add_regularizer_grad(diff, w)


ESTIMATORS = {"sgd": SGDEstimator, "saga": SagaEstimator}


def make_estimator(name: str, problem: Problem, saga_table: str = "auto"):
    if name == "saga":
        return SagaEstimator(problem, saga_table)
    if name == "sgd":
        return SGDEstimator(problem)
    raise ValueError(f"unknown estimator {name!r}; valid choices: {', '.join(ESTIMATORS)}")


# --------------------------------------------------------------------------------------
# states and rounds
# --------------------------------------------------------------------------------------
@dataclass
class State:
    """``x (d,)`` server model; ``models (n, d)`` client models (penalty family, else
    None); ``table`` SAGA memory (or None); ``round`` rounds done."""

    x: np.ndarray
    models: np.ndarray | None
    table: SagaTable | None
    round: int = 0


Aggregate = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], np.ndarray]


@dataclass
class GradientMethod:
    """Gradient aggregation: estimator × attack × aggregator × participation."""

    problem: Problem
    estimator: object
    attack: Callable
    aggregate: Aggregate  # (v (n, d), mask (n,) | None, rng) -> (d,)
    lr: float
    batch_size: int = 1
    participation: float = 1.0
    server_l2: float = 0.0

    def init(self, x0: np.ndarray) -> State:
        x = np.array(x0, dtype=self.problem.X.dtype)
        return State(x=x, models=None, table=self.estimator.init(x))

    def step(self, state: State, rng: np.random.Generator) -> State:
        P = self.problem
        active = participation_mask(rng, P.n, self.participation)
        idx = sample_batch(rng, P.n, P.J, self.batch_size)
        v = getattr(self, "_v", None)  # message buffer, reused every round (no page faults)
        if v is None or v.shape != (P.n, state.x.shape[-1]) or v.dtype != state.x.dtype:
            v = self._v = np.empty((P.n, state.x.shape[-1]), dtype=state.x.dtype)
        v = self.estimator(state.table, state.x, idx, active, out=v)
        apply_attack(self.attack, v, P.byzantine, rng)
        agg = self.aggregate(v, active, rng)
        if self.server_l2:
            agg = agg + self.server_l2 * state.x
        state.x -= self.lr * agg
        state.round += 1
        return state


def column_sum(s: np.ndarray, dtype) -> np.ndarray:
    """``Σ_i s_i`` of an int8 ``(k, d)`` array of signs, as ``dtype`` ``(d,)`` (exact:
    accumulated in int16, or int32 for k ≥ 2¹⁵)."""
    acc = np.int16 if s.shape[0] < 2**15 else np.int32
    return s.sum(axis=0, dtype=acc).astype(dtype)


def subgradients_of_difference(a: np.ndarray, b: np.ndarray, p: float, buf: dict):
    """``∂‖a_i − b_i‖_p`` for the rows of ``a − b`` (``(k, d)``, broadcast from ``a`` and
    ``b``) into ``buf["pen"]``, and their sum ``(d,)``.

    ``buf``: ``(k, d)`` work buffers ``pen`` (float), and for ``p = 1`` ``s`` (int8),
    ``gt``, ``lt`` (bool).  For p = 1 the signs are formed as int8 (:func:`sign_of_difference`),
    summed exactly as integers and cast once into ``pen``: three cheap passes instead
    of a float subtraction and ``np.sign``.
    """
    pen = buf["pen"]
    if p == 1:
        s = sign_of_difference(a, b, buf["s"], (buf["gt"], buf["lt"]))
        np.copyto(pen, s)
        return pen, column_sum(s, pen.dtype)
    lp_subgradient(np.subtract(a, b, out=pen), p, out=pen)
    return pen, pen.sum(axis=0)


@dataclass
class PenaltyMethod:
    """RSA / AsynRSA-VR: l_p-penalised model aggregation with participation γ.

    A round computes only the rows of the regular clients that take part (``k`` of
    them): a view of the model array when those rows are contiguous (full
    participation with the Byzantine clients in one block), else a gathered copy that
    is written back.  Clients that sit out keep their model and SAGA table untouched;
    Byzantine rows hold the server model (their "honest" message) for the attack to
    look at.
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

    def __post_init__(self):
        P = self.problem
        self._regular_rows = row_set(P.regular)
        # SAGA without model l2: take the raw correction from the estimator and fold the
        # combination ``g = diff (1/b − 1/J) + mean`` into the model update (two passes fewer)
        self._fuse = hasattr(self.estimator, "correction") and not getattr(P.model, "l2", 0.0)
        self._work = None

    def init(self, x0: np.ndarray) -> State:
        x = np.array(x0, dtype=self.problem.X.dtype)
        models = np.repeat(x[None], self.problem.n, axis=0)
        return State(x=x, models=models, table=self.estimator.init(models))

    def _buffers(self, models: np.ndarray) -> dict:
        """The round's ``(n, d)`` work buffers, allocated once (fresh large temporaries
        every round would page-fault); a round uses the first k rows for the regular
        participants and the next ones for the Byzantine messages."""
        w = self._work
        if w is None or w["g"].shape != models.shape or w["g"].dtype != models.dtype:
            shape, dt = models.shape, models.dtype
            w = self._work = dict(
                g=np.empty(shape, dt), pen=np.empty(shape, dt), s=np.empty(shape, np.int8),
                gt=np.empty(shape, bool), lt=np.empty(shape, bool),
            )
        return w

    def step(self, state: State, rng: np.random.Generator) -> State:
        P = self.problem
        x0, W = state.x, state.models
        lr, lam = self.lr, self.penalty
        active = participation_mask(rng, P.n, self.participation)
        idx = sample_batch(rng, P.n, P.J, self.batch_size)
        rows = self._regular_rows if active is None else row_set(P.regular & active)
        Wr = _take_rows(W, rows)  # (k, d) round-k models of the regular participants
        k = Wr.shape[0]
        work = self._buffers(W)
        buf = {key: a[:k] for key, a in work.items()}
        if self._fuse:
            diff, mean = self.estimator.correction(state.table, Wr, idx, out=buf["g"], rows=rows)
        else:
            g = self.estimator(state.table, Wr, idx, out=buf["g"], rows=rows)
        # server direction at round-k values; ∂‖x0 − x_i‖ = −∂‖x_i − x0‖ (odd)
        pen, pen_sum = subgradients_of_difference(Wr, x0, self.p, buf)  # ∂‖x_i − x0‖_p, (k, d)
        server = -pen_sum
        byz = P.byzantine
        if byz.any():
            W[byz] = x0  # a Byzantine client's "honest" message is the server model
            z = self.attack(W, byz, rng)  # (q, d) Byzantine models
            if active is not None:
                z = z[active[byz]]
            zbuf = {key: a[k : k + z.shape[0]] for key, a in work.items()}  # k + q <= n rows
            server += subgradients_of_difference(x0, z, self.p, zbuf)[1]  # Σ ∂‖x0 − z_v‖_p
        server *= lam
        if self.server_l2:
            server += self.server_l2 * x0
        # client updates x_i −= lr (g_i + λ pen_i)
        if self._fuse:  # g = diff (1/b − 1/J) + mean
            axpy(-lr * (1.0 / idx.shape[1] - 1.0 / P.J), diff, Wr)
            axpy(-lr, mean, Wr)
        else:
            axpy(-lr, g, Wr)
        axpy(-lr * lam, pen, Wr)
        _put_rows(W, rows, Wr)
        server *= lr
        x0 -= server
        state.round += 1
        return state
