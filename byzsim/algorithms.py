"""The two algorithm families as vectorized rounds.

Shapes: n clients, J samples each, b = batch size, d = model dimension.

**Gradient family** (SGD, Byrd-SGD/Gm, Med, Krum, Byrd-SAGA, FedSGD…), round t::

    v_w   = estimator of ∇f_w at the server model x          (n, d)
    v_w   ← Σ_{e=1}^{E} g_e  (E local SGD steps, see below)   E = local_steps > 1 only
    m_w   ← β m_w + (1 − β) v_w,  v_w ← m_w                   client momentum, β > 0 only
    v_B   ← attack(v)                                        Byzantine rows replaced
    x     ← x − lr_t · (Agg(v, mask = participating) + server_l2 · x)

with ``lr_t = lr · factor(t)`` (:data:`LR_SCHEDULES`; both families).  Momentum is the
form of El-Mhamdi, Guerraoui & Rouault (ICLR 2021) and Karimireddy, He & Jaggi (ICML
2021), ``m ← β m + (1 − β) g`` from ``m_0 = 0``; every client keeps one (the Byzantine
clients' honest momenta are what attacks such as sign flipping act on), a client that
sits out keeps its momentum.  Local steps: ``x_1 = x``, ``x_{e+1} = x_e − lr_t g_e`` on
fresh minibatches (``g_1`` from the configured estimator, later steps plain SGD), and
the message is the model delta in gradient units ``(x − x_{E+1}) / lr_t``, formed as
the sum of the local gradients (so ``E = 1`` is today's message bit for bit).
Stateful components (:class:`byzsim.protocols.Stateful`) have their state carried in
:class:`State` from round to round.

**Penalty family** (RSA, AsynRSA-VR), round k with participation set S::

    x_i   ← x_i − lr (g_i + λ ∂‖x_i − x0‖_p)                  regular i ∈ S
    x0    ← x0 − lr (server_l2 x0 + λ Σ_{i∈R∩S} ∂‖x0 − x_i‖_p + λ Σ_{v∈B∩S} ∂‖x0 − z_v‖_p)

with every right-hand side at the round-k values.  Byzantine clients hold no model;
their honest message is taken to be the server model ``x0`` (so the ``none`` attack
is harmless), and the attack replaces it by ``z_v``.

**Replicas.**  Runs that share their structure (method, sizes, model, …) advance
together: every array gets a leading replica axis S (server models ``(S, d)``, client
models ``(S, n, d)``, SAGA tables ``(S, n, J, k)``, participation ``(S, n)``, sample
indices ``(S, n, b)``), and the numeric settings ``lr``, ``penalty``,
``participation``, ``server_l2`` may be ``(S,)`` arrays.  Each replica draws from its
own generator (``step(state, [rng_1, …, rng_S])``) in the order of a run made alone,
and every operation acts on each replica's slice alone, so a replica's trajectory is
the one it has alone, whatever shares its array.  Components that draw random numbers
(a random attack, bucketing) are called replica by replica with that replica's
generator (:func:`replica_map`).  One run is the batch of one (``x (d,)``: views of
``(1, d)``): there is one round implementation.

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

from .protocols import Stateful, state_slice, state_stack
from .registry import Registry


def axpy(a: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y += a · x`` in place, in one fused pass (BLAS ``daxpy``/``saxpy``) when both are
    C-contiguous float64/float32 arrays of the same shape and dtype; otherwise with NumPy.
    Returns ``y``.

    The hot path of a round is memory-bound: a fused ``y += a x`` reads two arrays and
    writes one, where ``y += a * x`` also writes and re-reads a temporary.  Non-contiguous
    arrays (views of some rows of every replica) go block by block along the first axis,
    so every element is rounded by the same fused kernel wherever it is stored.
    """
    blas = _AXPY.get(y.dtype)
    if blas is None or x.shape != y.shape or x.dtype != y.dtype or not y.flags.writeable or not y.size:
        y += a * x
    elif x.flags.c_contiguous and y.flags.c_contiguous:
        blas(x.reshape(-1), y.reshape(-1), a=a)
    elif y.ndim > 1:  # e.g. the same rows of every replica: contiguous blocks per replica
        for xi, yi in zip(x, y):
            axpy(a, xi, yi)
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
# replicas: one random stream per run
# --------------------------------------------------------------------------------------
def replica_generators(rng, S: int | None = None) -> list[np.random.Generator]:
    """The per-replica generators: ``rng`` is one ``np.random.Generator`` (one run) or a
    sequence of them (one per replica, in replica order)."""
    gens = [rng] if isinstance(rng, np.random.Generator) else list(rng)
    if S is not None and len(gens) != S:
        raise ValueError(f"{S} replicas need {S} generators, got {len(gens)}")
    return gens


class _DrawRequested(Exception):
    """A component asked the stand-in generator for random numbers."""


class _NoDraws:
    """Stand-in for the generators of a batched component call: any use raises
    :class:`_DrawRequested` (the call is then made replica by replica)."""

    def __getattr__(self, name):
        raise _DrawRequested(name)


def replica_map(call: Callable, gens: list, memo: dict, key: str, batched: bool = True) -> np.ndarray:
    """``(S, ...)`` results of a component over the replicas.

    ``call(s, rng)`` evaluates the component on replica ``s``'s own arrays (``s`` an int:
    shapes ``(n, d)``, exactly as a run made alone) or, for ``s = None``, on all
    replicas at once (``(S, n, d)``).  The batched call is tried when ``batched`` and
    ``S > 1`` with a stand-in generator; a component that draws random numbers is
    remembered in ``memo[key]`` and called replica by replica with each replica's own
    generator, so its draws come from that replica's stream exactly as alone.
    """
    S = len(gens)
    if batched and S > 1 and not memo.get(key):
        try:
            return call(None, _NoDraws())
        except _DrawRequested:
            memo[key] = True
    out = [call(s, g) for s, g in enumerate(gens)]
    return np.stack(out) if S > 1 else np.asarray(out[0])[None]


def replica_apply(call: Callable, state, gens: list, memo: dict, key: str, batched: bool = True):
    """``((S, ...) results, new state)`` of a stateful component over the replicas:
    :func:`replica_map` for ``call(s, state, rng) -> (out, state')``, where ``state``
    is the whole state (``s = None``, one batched call) or replica ``s``'s slice
    (:func:`byzsim.protocols.state_slice`; the new slices are stacked back)."""
    S = len(gens)
    if batched and S > 1 and not memo.get(key):
        try:
            return call(None, state, _NoDraws())
        except _DrawRequested:
            memo[key] = True
    res = [call(s, state_slice(state, s), g) for s, g in enumerate(gens)]
    return np.stack([r[0] for r in res]), state_stack([r[1] for r in res])


def per_replica(value, S: int, dtype=np.float64) -> np.ndarray:
    """A numeric setting as an ``(S,)`` array (a scalar is repeated)."""
    a = np.asarray(value, dtype=dtype)
    if a.ndim == 0:
        return np.full(S, a, dtype=dtype)
    if a.shape != (S,):
        raise ValueError(f"a per-replica setting must be a scalar or have shape ({S},), got {a.shape}")
    return a


class _Settings:
    """The per-replica numeric settings of a method as ``(S,)`` arrays (float64, and in
    the state's dtype for elementwise use), recomputed only when they change."""

    def __init__(self, names: tuple[str, ...]):
        self.names, self.key, self.values = names, None, None

    def __call__(self, method, S: int, dt) -> dict:
        raw = tuple(getattr(method, k) for k in self.names)
        key = (S, dt) + tuple(v if np.isscalar(v) else np.asarray(v).tobytes() for v in raw)
        if key != self.key:
            vals = {k: per_replica(v, S) for k, v in zip(self.names, raw)}
            vals.update({k + "_dt": v.astype(dt) for k, v in list(vals.items())})
            self.key, self.values = key, vals
        return self.values


def axpy_rows(a: np.ndarray, x: np.ndarray, y: np.ndarray, owner: np.ndarray | None = None) -> np.ndarray:
    """``y[r] += a[owner[r]] · x[r]`` for every leading row ``r`` of ``x, y`` (``(L, ...)``);
    ``owner (L,)`` maps a row to its replica (default: row r is replica r).  One BLAS call
    when all coefficients are equal, else one per run of equal coefficients (BLAS
    ``axpy`` rounds each element alike wherever it sits in the array, so both give the
    same bits)."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or (a == a[0]).all():
        return axpy(float(a[0]) if a.size else 0.0, x, y)
    coef = a if owner is None else a[owner]
    cuts = np.flatnonzero(coef[1:] != coef[:-1]) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(coef)]):
        axpy(float(coef[lo]), x[lo:hi], y[lo:hi])
    return y


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


def participation_masks(gens: list, n: int, gammas: np.ndarray) -> np.ndarray | None:
    """``(S, n)`` participation of every replica (:func:`participation_mask` from each
    replica's own generator; a replica with γ = 1 draws nothing and takes part fully);
    ``None`` when every γ = 1."""
    if (gammas >= 1.0).all():
        return None
    out = np.ones((len(gens), n), bool)
    for s, (g, gam) in enumerate(zip(gens, gammas)):
        m = participation_mask(g, n, float(gam))
        if m is not None:
            out[s] = m
    return out


def sample_batches(gens: list, n: int, J: int, b: int) -> np.ndarray:
    """``(S, n, b)`` sample indices: :func:`sample_batch` from each replica's generator
    (the same draws in the same order), with the sorting and the repeat check done
    once for all replicas; only replicas with a repeat redraw, one by one."""
    if len(gens) == 1 or not 1 < b <= J:
        return np.stack([sample_batch(g, n, J, b) for g in gens])
    if b * b > J:
        keys = np.stack([g.random((n, J)) for g in gens])
        return np.sort(np.argsort(keys, axis=-1)[..., :b], axis=-1)
    idx = np.sort(np.stack([g.integers(J, size=(n, b)) for g in gens]), axis=-1)
    bad = (idx[..., 1:] == idx[..., :-1]).any(axis=-1)  # (S, n)
    for s in np.flatnonzero(bad.any(axis=1)):
        g, rows, bs = gens[s], idx[s], bad[s]
        while bs.any():  # the rejection loop of sample_batch
            k = int(bs.sum())
            rows[bs] = np.sort(g.integers(J, size=(k, b)), axis=1)
            bs = (rows[:, 1:] == rows[:, :-1]).any(axis=1)
    return idx


# --------------------------------------------------------------------------------------
# the problem: data stacked over clients (and over data sets of replicas)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Everything a run computes on.

    ``X (n, J, p')`` prepared client features, ``y (n, J)``, ``byzantine (n,)`` bool,
    ``X_test (M, p')``, ``y_test (M,)``, the model, and ``X_eval (E, p')``, ``y_eval (E,)``
    the regular clients' training samples the training loss is evaluated on (default:
    all of them).

    A replica batch whose runs have different data (different seeds: another Byzantine
    draw or partition) uses a *stacked* problem (:func:`stack_problems`): ``X (P, n, J,
    p')``, ``y (P, n, J)``, ``byzantine (n,)`` when equal for all, else ``(P, n)``, and
    ``slot (S,)`` the data set of each replica.
    """

    model: object
    X: np.ndarray
    y: np.ndarray
    byzantine: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_eval: np.ndarray | None = None
    y_eval: np.ndarray | None = None
    slot: np.ndarray | None = None

    def __post_init__(self):
        if self.X_eval is None and self.X.ndim == 3:
            reg = ~self.byzantine
            object.__setattr__(self, "X_eval", self.X[reg].reshape(-1, self.X.shape[-1]))
            object.__setattr__(self, "y_eval", self.y[reg].ravel())

    @property
    def n(self) -> int:
        return self.X.shape[-3]

    @property
    def J(self) -> int:
        return self.X.shape[-2]

    @property
    def regular(self) -> np.ndarray:
        return ~self.byzantine

    @property
    def stacked(self) -> bool:
        return self.X.ndim == 4

    def replica_byzantine(self, S: int) -> np.ndarray:
        """``(n,)`` when all replicas share the Byzantine clients, else ``(S, n)``."""
        if self.byzantine.ndim == 1:
            return self.byzantine
        return self.byzantine[self.slot]

    def data(self, s: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of replica ``s`` (``(n, J, p')``, ``(n, J)``)."""
        if not self.stacked:
            return self.X, self.y
        return self.X[self.slot[s]], self.y[self.slot[s]]

    def gather(self, ia: np.ndarray, ib: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``idx`` of the clients ``ib`` of the replicas ``ia`` (broadcasting index
        arrays): ``(…, b, p')`` features and ``(…, b)`` labels."""
        if not self.stacked:
            return self.X[ib, idx], self.y[ib, idx]
        sl = self.slot[ia]
        return self.X[sl, ib, idx], self.y[sl, ib, idx]


def stack_problems(problems: list[Problem], slot: np.ndarray) -> Problem:
    """One :class:`Problem` for a replica batch: ``problems[slot[s]]`` is replica s's data.
    A single data set is returned as it is (no copy); several are stacked (one copy)."""
    if len(problems) == 1:
        return problems[0]
    p0 = problems[0]
    byz = np.stack([p.byzantine for p in problems])
    X = np.stack([p.X for p in problems])
    y = np.stack([p.y for p in problems])
    for a in (X, y):
        a.flags.writeable = False
    return Problem(
        model=p0.model, X=X, y=y, byzantine=byz[0] if (byz == byz[0]).all() else byz,
        X_test=p0.X_test, y_test=p0.y_test, X_eval=p0.X_eval, y_eval=p0.y_eval,
        slot=np.asarray(slot, dtype=np.intp),
    )


# --------------------------------------------------------------------------------------
# rows of a round: which (replica, client) pairs it computes
# --------------------------------------------------------------------------------------
# ``rows`` index the leading ``(S, n)`` axes of the round's arrays:
#   None                   every client of every replica, lead shape (S, n);
#   (slice(None), r)       the clients r (a slice: views; an index array) of every
#                          replica, lead shape (S, k);
#   (s_idx, i_idx)         the pairs (s_idx[j], i_idx[j]), replica-major, lead (K,).


def _lead_ids(rows, S: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(ia, ib)`` (shapes ``lead + (1,)``) of the replicas and clients of
    ``rows``, for fancy indexing together with a ``lead + (b,)`` index matrix."""
    if rows is None:
        return np.arange(S)[:, None, None], np.arange(n)[None, :, None]
    a, b = rows
    if isinstance(a, slice):
        return np.arange(S)[a][:, None, None], np.arange(n)[b][None, :, None]
    return a[:, None], b[:, None]


def _row_ids(rows, n: int) -> np.ndarray:
    """``(k, 1)`` client indices of one run's ``rows`` (``None`` = all n, a slice, or an
    index array)."""
    return np.arange(n)[slice(None) if rows is None else rows][:, None]


def row_set(mask: np.ndarray) -> slice | np.ndarray:
    """The rows where ``mask (n,)`` holds: a slice when they are contiguous (then
    ``A[rows]`` is a view and needs no write-back), else an index array."""
    ids = np.flatnonzero(mask)
    if ids.size and ids[-1] - ids[0] + 1 == ids.size:
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def _flat_pairs(A: np.ndarray, rows):
    """``(A2, flat)``: for rows given as (replica, client) index pairs of a C-contiguous
    ``A (S, n, …)``, the view ``A (S·n, …)`` and the pairs as one row index (one-index
    gathers and scatters are several times faster than two-index ones); else ``None``."""
    if isinstance(rows, tuple) and not isinstance(rows[0], slice) and A.flags.c_contiguous:
        return A.reshape((-1,) + A.shape[2:]), rows[0] * A.shape[1] + rows[1]
    return None


def _take_rows(A: np.ndarray, rows) -> np.ndarray:
    if rows is None:
        return A
    fp = _flat_pairs(A, rows)
    return A[rows] if fp is None else fp[0][fp[1]]


def _put_rows(A: np.ndarray, rows, values: np.ndarray) -> None:
    """Write back rows taken by :func:`_take_rows` (nothing to do for views)."""
    if rows is None or all(isinstance(r, slice) for r in (rows if isinstance(rows, tuple) else (rows,))):
        return
    fp = _flat_pairs(A, rows)
    if fp is None:
        A[rows] = values
    else:
        fp[0][fp[1]] = values


def _as_replicas(w, idx, active, out, rows):
    """One run's estimator arguments (``idx (n, b)``, ``w (d,)`` or ``(k, d)``, ``rows``
    over the clients) as those of a batch of one replica; returns ``(single, args)``."""
    if idx.ndim == 3:
        return False, (w, idx, active, out, rows)
    w = np.asarray(w)
    w = w[None, None] if w.ndim == 1 else w[None]
    return True, (w, idx[None], None if active is None else active[None],
                  None if out is None else out[None], None if rows is None else (slice(None), rows))


def gather_batch(problem: Problem, idx: np.ndarray, rows=None):
    """The minibatches of ``rows``: returns ``ids`` (the index arrays), their indices
    ``idx[rows] (…, b)``, ``Xb (…, b, p')`` and ``yb (…, b)``.

    ``idx``: ``(S, n, b)`` (replicas; ``rows`` as above) or one run's ``(n, b)`` (``rows``
    ``None`` = all n, a slice or an index array; then ``ids (k, 1)``)."""
    if idx.ndim == 2:
        ids = _row_ids(rows, problem.n)
        idx = _take_rows(idx, rows)
        Xb, yb = problem.gather(None, ids, idx)
        return ids, idx, Xb, yb
    ids = _lead_ids(rows, idx.shape[0], problem.n)
    idx = _take_rows(idx, rows)
    Xb, yb = problem.gather(ids[0], ids[1], idx)
    return ids, idx, Xb, yb


# --------------------------------------------------------------------------------------
# gradient estimators
# --------------------------------------------------------------------------------------
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
        entries = tuple(np.array(e, order="C") for e in self.form.sample(w, X, y))
        mean = self.form.grad_sum(X, entries) / X.shape[1]
        return SagaTable(entries, np.array(np.broadcast_to(mean, (X.shape[0], mean.shape[-1]))))

    def correction(self, table: SagaTable, w, idx, active=None, out=None, rows=None):
        """The SAGA step without its final combination: returns ``(diff, mean)`` with
        ``diff = Σ_{j∈batch} (∇f_{w,j}(w) − φ_{w,j})`` and ``mean`` the table means of
        the clients ``rows`` *after* the update ``mean += diff / J`` (a view of
        ``table.mean`` when ``rows`` are slices).  The corrected gradient is
        ``diff (1/b − 1/J) + mean`` (+ the regularizer).

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
        J = self.problem.J
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
        axpy(1.0 / J, diff, mean)
        _put_rows(table.mean, rows, mean)
        return (diff[0], mean[0]) if single else (diff, mean)

    def __call__(self, table: SagaTable, w, idx, active=None, out=None, rows=None):
        """Corrected gradients at ``w`` for the batches ``idx``; see :meth:`correction`
        for the arguments."""
        diff, mean = self.correction(table, w, idx, active, out=out, rows=rows)
        diff *= 1.0 / idx.shape[-1] - 1.0 / self.problem.J
        diff += mean
        return self.problem.model.add_regularizer_grad(diff, w)


def make_estimator(name: str, problem: Problem, saga_table: str = "auto"):
    """The registered estimator ``name`` (``"sgd"``, ``"saga"``) for ``problem``."""
    return ESTIMATORS[name](problem, saga_table)


# --------------------------------------------------------------------------------------
# step-size schedules: round t (0-based) -> factor of lr
# --------------------------------------------------------------------------------------
#: Step-size schedules ``factor(t, **params)``: round ``t`` (0-based) uses
#: ``lr_t = lr · factor(t)`` in both families.
LR_SCHEDULES: Registry = Registry("lr schedule")


@LR_SCHEDULES.register("constant")
def constant_schedule(t: int) -> float:
    """``lr_t = lr``."""
    return 1.0


@LR_SCHEDULES.register("inv_sqrt")
def inv_sqrt_schedule(t: int) -> float:
    """``lr_t = lr / √(t + 1)``."""
    return 1.0 / math.sqrt(t + 1)


@LR_SCHEDULES.register("step")
def step_schedule(t: int, *, gamma: float = 0.1, every: int = 100) -> float:
    """Step decay ``lr_t = lr · γ^⌊t / T⌋`` (``gamma`` γ in (0, 1], ``every`` T >= 1 rounds)."""
    return float(gamma) ** (t // int(every))


def check_schedule_params(name: str, params) -> None:
    """Bad ``lr_schedule_params`` (unknown or out of range) -> ``ValueError``."""
    LR_SCHEDULES.check(name, params, field="lr_schedule_params")
    g, T = params.get("gamma", 0.1), params.get("every", 100)
    if not (isinstance(g, (int, float)) and not isinstance(g, bool) and 0 < g <= 1):
        raise ValueError(f"invalid config field 'lr_schedule_params': gamma = {g!r}, expected a number in (0, 1]")
    if not (isinstance(T, int) and not isinstance(T, bool) and T >= 1):
        raise ValueError(f"invalid config field 'lr_schedule_params': every = {T!r}, expected an integer >= 1")


def scheduled_lr(cfg: dict, method, t: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lr_t (S,) float64, lr_t in the state's dtype)`` of round ``t``; the constant
    schedule returns the settings' own arrays (bit-identical to no schedule)."""
    sched = getattr(method, "lr_schedule", None)
    if sched is None:
        return cfg["lr"], cfg["lr_dt"]
    lr = cfg["lr"] * sched(t)
    return lr, lr.astype(cfg["lr_dt"].dtype)


def attack_step(attack, attack_state, v: np.ndarray, byz: np.ndarray, gens: list, memo: dict):
    """``((S, q, d) Byzantine messages, new attack state)``: a pure attack through
    :func:`attack_replicas` (state ``None`` passed through), a :class:`Stateful` one
    with its state threaded (:func:`replica_apply`)."""
    if not isinstance(attack, Stateful):
        return attack_replicas(attack, v, byz, gens, memo), attack_state
    shared = byz.ndim == 1

    def call(s, st, rng):
        if s is None:
            return attack.apply(st, v, byz, rng=rng)
        return attack.apply(st, v[s], byz if shared else byz[s], rng=rng)

    return replica_apply(call, attack_state, gens, memo, "attack", batched=shared)


# --------------------------------------------------------------------------------------
# states and rounds
# --------------------------------------------------------------------------------------
@dataclass
class State:
    """``x`` server model; ``models`` client models (penalty family, else None);
    ``table`` SAGA memory (or None); ``round`` rounds done; the carried state of the
    stateful components (``None`` when the component is pure): ``aggregate_state`` (the
    gradient family's pipeline, a tuple, one state per part), ``attack_state``, and
    ``momentum`` the clients' momentum messages (gradient family with β > 0).

    One run: ``x (d,)``, ``models (n, d)``, table ``(n, …)``.  A replica batch:
    ``x (S, d)``, ``models (S, n, d)``, table ``(S, n, …)``.  The component states and
    ``momentum (S, n, d)`` always have the leading replica axis (S = 1 for one run).
    """

    x: np.ndarray
    models: np.ndarray | None
    table: SagaTable | None
    round: int = 0
    aggregate_state: object = None
    attack_state: object = None
    momentum: np.ndarray | None = None

    @property
    def replicas(self) -> int:
        return self.x.shape[0] if self.x.ndim == 2 else 1

    def as_replicas(self) -> tuple[np.ndarray, np.ndarray | None, SagaTable | None]:
        """``(x (S, d), models (S, n, d), table)`` views (one run: S = 1)."""
        if self.x.ndim == 2:
            return self.x, self.models, self.table
        return (self.x[None], None if self.models is None else self.models[None],
                None if self.table is None else self.table.replica(None))


def _init_state(method, x0: np.ndarray, per_client: bool) -> State:
    """The shared ``init``: ``x0 (d,)`` one run (views of a batch of one), ``(S, d)`` replicas."""
    x0 = np.asarray(x0)
    single = x0.ndim == 1
    P = method.problem
    x = np.array(np.atleast_2d(x0), dtype=P.X.dtype)
    S = x.shape[0]
    models = np.repeat(x[:, None], P.n, axis=1) if per_client else None
    w = models if per_client else x
    table = None
    for s in range(S):  # one replica at a time into the stacked table (no second copy)
        t = method.estimator.init(w[s]) if not P.stacked else method.estimator.init(w[s], slot=s)
        if t is None:
            break
        if table is None:
            table = SagaTable(tuple(np.empty((S,) + e.shape, e.dtype) for e in t.entries),
                              np.empty((S,) + t.mean.shape, t.mean.dtype))
        for e, te in zip(table.entries, t.entries):
            e[s] = te
        table.mean[s] = t.mean
    if single:
        return State(x=x[0], models=None if models is None else models[0],
                     table=None if table is None else table.replica(0))
    return State(x=x, models=models, table=table)


def _byzantine_rows(byz: np.ndarray, S: int) -> tuple:
    """Index of the Byzantine rows of ``(S, n, …)`` arrays: ``(slice(None), byz)`` when
    shared, else the pairs of ``byz (S, n)`` (replica-major)."""
    return (slice(None), byz) if byz.ndim == 1 else np.nonzero(byz)


def attack_replicas(attack: Callable, v: np.ndarray, byz: np.ndarray, gens: list, memo: dict) -> np.ndarray:
    """``(S, q, d)`` Byzantine messages of every replica from the honest ``v (S, n, d)``
    and the Byzantine masks ``byz (n,)`` (shared) or ``(S, n)``."""
    shared = byz.ndim == 1

    def call(s, rng):
        if s is None:
            return attack(v, byz, rng)
        return attack(v[s], byz if shared else byz[s], rng)

    return replica_map(call, gens, memo, "attack", batched=shared)


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
        self._stateful = bool(getattr(self.aggregate, "stateful", False)) or isinstance(self.aggregate, Stateful)
        self._resampled = None if self._stateful else _resampled_parts(self.aggregate)
        self._settings = _Settings(("lr", "participation", "server_l2"))
        self._sgd = SGDEstimator(self.problem) if self.local_steps > 1 else None

    def init(self, x0: np.ndarray) -> State:
        """State at ``x0``: ``(d,)`` one run, ``(S, d)`` a replica batch; the stateful
        components' states from their ``init``, momenta zero (``m_0 = 0``)."""
        state = _init_state(self, x0, per_client=False)
        shape = (state.replicas, self.problem.n, state.x.shape[-1])
        dt = state.x.dtype
        if self._stateful:
            state.aggregate_state = self.aggregate.init(shape, dt)
        if isinstance(self.attack, Stateful):
            state.attack_state = self.attack.init(shape, dt)
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
            idx = sample_batches(gens, P.n, P.J, self.batch_size)
            g = self._sgd(None, W, idx)
            v += g
            if e + 1 < self.local_steps:
                W -= lr[:, None, None] * g
        return v

    def _aggregate(self, v: np.ndarray, active, gens: list, state: State | None = None) -> np.ndarray:
        """``(S, d)`` aggregates of ``v (S, n, d)`` (each replica's own draws); a
        stateful aggregate reads and replaces ``state.aggregate_state``."""
        if self._stateful:
            agg = self.aggregate

            def sf_call(s, st, rng):
                if s is None:
                    return agg.apply(st, v, active, rng=rng)
                return agg.apply(st, v[s], None if active is None else active[s], rng=rng)

            out, state.aggregate_state = replica_apply(sf_call, state.aggregate_state, gens, self._memo, "aggregate")
            return out
        rs = self._resampled
        if rs is not None and len(gens) > 1:
            from .resampling import averaging_matrix, resample, resample_indices

            s, fn, mixes = rs
            if active is not None:
                return self.aggregate(v, active, gens[0])  # raises: resampling needs γ = 1
            idx = np.stack([resample_indices(g, v.shape[-2], s) for g in gens])
            if mixes:
                return fn(v, None, mix=averaging_matrix(idx))
            return fn(resample(v, idx), None)

        def call(s, rng):
            if s is None:
                return self.aggregate(v, active, rng)
            return self.aggregate(v[s], None if active is None else active[s], rng)

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
        idx = sample_batches(gens, P.n, P.J, self.batch_size)
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


def check_momentum_local_steps(momentum, local_steps) -> None:
    """β in [0, 1) and ``E`` an integer >= 1, else ``ValueError`` naming the field."""
    if not (isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and 0 <= momentum < 1):
        raise ValueError(f"invalid config field 'momentum' = {momentum!r}: the client momentum β must be in [0, 1)")
    if not (isinstance(local_steps, int) and not isinstance(local_steps, bool) and local_steps >= 1):
        raise ValueError(f"invalid config field 'local_steps' = {local_steps!r}: expected an integer >= 1")


def column_sum(s: np.ndarray, dtype) -> np.ndarray:
    """``Σ_i s_i`` over the rows axis (``-2``) of int8 signs ``(..., k, d)``, as ``dtype``
    ``(..., d)`` (exact: accumulated in int16, or int32 for k ≥ 2¹⁵)."""
    acc = np.int16 if s.shape[-2] < 2**15 else np.int32
    return s.sum(axis=-2, dtype=acc).astype(dtype)


def _signs(a: np.ndarray, b: np.ndarray, p: float, buf: dict) -> tuple[np.ndarray, np.ndarray]:
    """``∂‖a_i − b_i‖_p`` into ``buf["pen"]``; returns ``(pen, summand)`` where ``summand``
    is what to sum over rows (the int8 signs for p = 1, else ``pen``)."""
    pen = buf["pen"]
    if p == 1:
        s = sign_of_difference(a, b, buf["s"], (buf["gt"], buf["lt"]))
        np.copyto(pen, s)
        return pen, s
    lp_subgradient(np.subtract(a, b, out=pen), p, out=pen)
    return pen, pen


def _row_sum(summand: np.ndarray, dtype) -> np.ndarray:
    if summand.dtype == np.int8:
        return column_sum(summand, dtype)
    return summand.sum(axis=-2)


def subgradients_of_difference(a: np.ndarray, b: np.ndarray, p: float, buf: dict):
    """``∂‖a_i − b_i‖_p`` for the rows of ``a − b`` (``(..., k, d)``, broadcast from ``a``
    and ``b``) into ``buf["pen"]``, and their sum over the rows ``(..., d)``.

    ``buf``: work buffers shaped like the rows, ``pen`` (float), and for ``p = 1`` ``s``
    (int8), ``gt``, ``lt`` (bool).  For p = 1 the signs are formed as int8
    (:func:`sign_of_difference`), summed exactly as integers and cast once into ``pen``:
    three cheap passes instead of a float subtraction and ``np.sign``.
    """
    pen, summand = _signs(a, b, p, buf)
    return pen, _row_sum(summand, pen.dtype)


def segment_sums(summand: np.ndarray, counts: np.ndarray, dtype) -> np.ndarray:
    """Sums ``(S, d)`` of consecutive row blocks of ``summand (K, d)`` of sizes ``counts
    (S,)`` (replica-major rows; empty blocks give 0)."""
    S, d = len(counts), summand.shape[-1]
    out = np.zeros((S, d), dtype)
    nz = counts > 0
    if not summand.shape[0]:
        return out
    # each block summed as a run alone sums its rows: int8 signs exactly
    # (:func:`column_sum`; ``reduceat`` with an int16 accumulator is ~10x slower), floats
    # in NumPy's row-reduction order, which is not sequential (reduceat rounds otherwise)
    ends = np.cumsum(counts)
    for s in np.flatnonzero(nz):
        out[s] = _row_sum(summand[ends[s] - counts[s]:ends[s]], dtype)
    return out


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
        self._fuse = hasattr(self.estimator, "correction") and not getattr(P.model, "l2", 0.0)
        self._work = None
        self._memo: dict = {}
        self._settings = _Settings(("lr", "penalty", "participation", "server_l2"))
        self._byz = {}

    def init(self, x0: np.ndarray) -> State:
        """State at ``x0``: ``(d,)`` one run, ``(S, d)`` a replica batch."""
        state = _init_state(self, x0, per_client=True)
        if isinstance(self.attack, Stateful):
            S, d = state.replicas, state.x.shape[-1]
            state.attack_state = self.attack.init((S, self.problem.n, d), state.x.dtype)
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
        idx = sample_batches(gens, P.n, P.J, self.batch_size)
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
