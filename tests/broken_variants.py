"""Deliberately broken implementations: the property tests must reject every one of them.

A property test that passes on the library proves little unless the same check fails
on a plausible mistake.  Each function or class here is such a mistake, written the way
it might slip into the library; the test modules apply their property checks to them
and assert that the check FAILS (``test_*_catches_*``).

Nothing here is used by the library.  Signatures follow the library's contracts
(aggregators ``agg(z, mask=None, **params) -> (..., d)``, estimators
``est(table, w, idx, active, out=None) -> (n, d)``, ``lp_subgradient(u, p, out=None)``),
so the same test code runs on both.

Index (mistake -> property that catches it, test module):

aggregators (tests/test_aggregator_conformance.py)
    mean_called_median        "coordinate median" that averages       bounded output
    trimmed_mean_unsorted     trims by row order, forgets to sort     permutation invariance, bounded output
    median_axis0              np.median(z, axis=0): batch axis bug    batched == loop
    clipped_mean_at_origin    clips rows to norm 1 around 0           translation equivariance
    coordinatewise_geomed     l1-Weiszfeld (coordinate-wise scaling)  rotation equivariance
    weiszfeld_unsmoothed      1/‖z_i − y‖ without max(., eps)          identical rows, optimality
    weiszfeld_three_iters     fixed 3 updates from the mean (ByzFL)   optimality, Property 1
    weiszfeld_global_stop     one stopping decision for the batch     batched == loop
    weiszfeld_uncentered_gram distances from Z Zᵀ, never re-centered  mixed-scale accuracy
ties and duplicated rows (tests/test_ties.py)
    meamed_first_window       first window of smallest max deviation  nearest-subset brute force
    weiszfeld_from_medoid     starts on a duplicated row, stays there objective vs. a careful reference
resampling (tests/test_lemmas_paper_b.py)
    literal_index_distribution  Algorithm 1 line 4 read literally:    Lemma 2 (exact enumeration)
                                uniform over still-available indices
SAGA (tests/test_lemmas_paper_b.py, tests/test_lemmas_paper_a.py)
    SagaForgetsMean           never updates the running table mean    unbiasedness, table-mean invariant
    SagaMeanStepByB           mean += diff / b instead of diff / J    unbiasedness (b >= 2), table-mean invariant
    SagaNoCorrection          plain stochastic gradient (table kept)  variance bound, Theorem 1 bound
SGD (tests/test_estimators.py, tests/test_naive_yardstick.py)
    SgdSumsBatch              Σ over the batch, no division by b      unbiasedness (b >= 2), hand value,
                                                                      naive-loop trajectory (b >= 2)
penalty (tests/test_lemmas_paper_a.py)
    lp_subgradient_l2_normalised   p = 1 subgradient u/‖u‖₂         Theorem 1 ball shrinking with the step
    subgradients_of_difference_l2_normalised  the same, for the round's subgradients
    lemma1_threshold_of_the_mean   ‖mean_i ∇f_i(x̃*)‖_∞ (not max_i)   Lemma 1 (penalised optimum differs)
simulation (tests/test_determinism.py)
    gaussian_attack_global_rng     draws from np.random (global)     bit-identical reruns
"""

from __future__ import annotations

import numpy as np

from byzsim.aggregators import mean
from byzsim.algorithms import SagaEstimator, SGDEstimator, gather_batch


# --------------------------------------------------------------------------------------
# aggregators
# --------------------------------------------------------------------------------------
def mean_called_median(z, mask=None):
    """A "coordinate median" that averages the values (not robust at all)."""
    return mean(z, mask)


def trimmed_mean_unsorted(z, mask=None, *, f):
    """Trimmed mean that drops the first and last ``f`` *rows* instead of the ``f``
    smallest/largest values per coordinate (forgot the sort)."""
    z = np.asarray(z, dtype=float)
    n = z.shape[-2]
    return z[..., f : n - f, :].mean(axis=-2)


def median_axis0(z, mask=None):
    """Coordinate median over axis 0: right for ``(n, d)``, wrong for ``(..., n, d)``."""
    return np.median(np.asarray(z, dtype=float), axis=0)


def clipped_mean_at_origin(z, mask=None, *, radius=1.0):
    """Mean of the rows clipped to norm ``radius`` around the origin (not around a
    robust center): not translation equivariant."""
    z = np.asarray(z, dtype=float)
    nrm = np.linalg.norm(z, axis=-1, keepdims=True)
    return (z * np.minimum(1.0, radius / np.maximum(nrm, 1e-300))).mean(axis=-2)


def coordinatewise_geomed(z, mask=None, *, iters=200):
    """Weiszfeld with l1 distances (each row weighted by 1/‖z_i − y‖₁): a plausible
    "geometric median" that is not rotation equivariant."""
    z = np.asarray(z, dtype=float)
    y = z.mean(axis=-2)
    for _ in range(iters):
        dist = np.maximum(np.abs(z - y[..., None, :]).sum(axis=-1), 1e-12)
        w = 1.0 / dist
        y = (w[..., None] * z).sum(axis=-2) / w.sum(axis=-1)[..., None]
    return y


def _direct_weiszfeld(z, iters, eps, tol=None, global_stop=False):
    """Weiszfeld in coordinates on ``(..., n, d)``, started at the mean."""
    z = np.asarray(z, dtype=float)
    y = z.mean(axis=-2)
    for _ in range(iters):
        dist = np.linalg.norm(z - y[..., None, :], axis=-1)
        if eps is not None:
            dist = np.maximum(dist, eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dist
            y_new = (inv[..., None] * z).sum(axis=-2) / inv.sum(axis=-1)[..., None]
            step = np.linalg.norm(y_new - y, axis=-1)
            h = z.shape[-2] / inv.sum(axis=-1)
        y = y_new
        if tol is not None and global_stop and np.all(step <= tol * h):
            break
    return y


def weiszfeld_unsmoothed(z, mask=None, *, iters=100):
    """Weiszfeld with ``1/‖z_i − y‖`` (no smoothing): 0/0 = NaN as soon as the iterate
    lands on a row — e.g. when all rows are equal, or the mean is one of the rows."""
    return _direct_weiszfeld(z, iters, eps=None)


def weiszfeld_three_iters(z, mask=None):
    """Three Weiszfeld updates from the mean, no convergence test (ByzFL's choice)."""
    return _direct_weiszfeld(z, 3, eps=1e-8)


def weiszfeld_global_stop(z, mask=None, *, tol=1e-5, max_iter=200):
    """Batched Weiszfeld that stops when *every* batch element has converged, and keeps
    updating the converged ones meanwhile: a batched call differs from the loop."""
    return _direct_weiszfeld(z, max_iter, eps=1e-8, tol=tol, global_stop=True)


def weiszfeld_uncentered_gram(z, mask=None, *, iters=100, eps=1e-8):
    """Weiszfeld on convex weights with distances from ``G = Z Zᵀ`` only (never
    re-centered): roundoff ~ ε‖z‖² swamps distances of rows ~1e-3 around an offset."""
    z = np.asarray(z, dtype=float)
    n = z.shape[-2]
    g = z @ np.swapaxes(z, -1, -2)
    diag = np.diagonal(g, axis1=-2, axis2=-1)
    w = np.full(z.shape[:-1], 1.0 / n)
    for _ in range(iters):
        gw = (g @ w[..., None])[..., 0]
        d2 = diag - 2 * gw + (w * gw).sum(axis=-1, keepdims=True)
        v = 1.0 / np.sqrt(np.maximum(d2, eps * eps))
        w = v / v.sum(axis=-1, keepdims=True)
    return (w[..., None, :] @ z)[..., 0, :]


# --------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------
def literal_index_distribution(W: int, s: int):
    """Exact distribution of Algorithm 1 read literally: every draw is uniform over the
    indices still used fewer than ``s`` times (whatever their remaining uses).

    Returns ``(idx (P, W, s), prob (P,))`` over all reachable draw sequences (P is small
    for W ≤ 4, s ≤ 2).  Uses every index exactly ``s`` times, like the real scheme.
    """
    seqs = [((), np.zeros(W, dtype=int), 1.0)]
    for _ in range(W * s):
        nxt = []
        for seq, cnt, p in seqs:
            avail = np.flatnonzero(cnt < s)
            for i in avail:
                c = cnt.copy()
                c[i] += 1
                nxt.append((seq + (int(i),), c, p / len(avail)))
        seqs = nxt
    idx = np.array([sq for sq, _, _ in seqs], dtype=np.int64).reshape(-1, W, s)
    prob = np.array([p for _, _, p in seqs])
    return idx, prob


# --------------------------------------------------------------------------------------
# SAGA
# --------------------------------------------------------------------------------------
class SagaForgetsMean(SagaEstimator):
    """SAGA whose running table mean is never updated: the table entries change, the
    mean ``(1/J) Σ_j φ_j`` it adds stays at its initial value."""

    def correction(self, table, w, idx, active=None, out=None, rows=None):
        saved = table.mean.copy()
        diff, _ = super().correction(table, w, idx, active, out=out, rows=rows)
        table.mean[...] = saved
        return diff, saved if rows is None else saved[rows]


class SagaMeanStepByB(SagaEstimator):
    """Minibatch SAGA that updates the running mean by ``diff / b`` (the batch size)
    instead of ``diff / J`` (confusing the two denominators of the minibatch formula)."""

    def correction(self, table, w, idx, active=None, out=None, rows=None):
        before = table.mean.copy()
        diff, _ = super().correction(table, w, idx, active, out=out, rows=rows)
        J, b = self.problem.J, idx.shape[1]
        table.mean[...] = before + (table.mean - before) * (J / b)
        return diff, table.mean if rows is None else table.mean[rows]


class SagaNoCorrection:
    """Returns the plain minibatch stochastic gradient ``(1/b) Σ ∇f_{w,j}(x)`` (+ l2 x):
    the step ignores the SAGA correction, while a real SAGA table is still maintained
    (so the Lyapunov function of paper A, which reads the table, stays defined).

    Not a subclass of :class:`SagaEstimator` (it has no ``correction``), so the penalty
    round uses what it returns as the step direction.
    """

    def __init__(self, problem, table_kind="auto"):
        self.problem = problem
        self.inner = SagaEstimator(problem, table_kind)
        self.kind = self.inner.kind

    def init(self, w):
        return self.inner.init(w)

    def __call__(self, table, w, idx, active=None, out=None, rows=None):
        _, _, Xb, yb = gather_batch(self.problem, idx, rows)
        form = self.inner.form
        plain = form.grad_sum(Xb, form.sample(w, Xb, yb)) / idx.shape[1]
        plain = self.problem.model.add_regularizer_grad(plain, w)
        self.inner(table, w, idx, active, rows=rows)  # keeps the table (and its mean) current
        if out is not None:
            out[...] = plain
            return out
        return plain


# --------------------------------------------------------------------------------------
# SGD
# --------------------------------------------------------------------------------------
class SgdSumsBatch(SGDEstimator):
    """Minibatch SGD that returns ``Σ_{j∈batch} ∇f_{w,j}(w)`` (+ l2 w): the division by
    the batch size b is forgotten.  Identical to the library at b = 1."""

    def __call__(self, table, w, idx, active=None, out=None, rows=None):
        model = self.problem.model
        _, _, Xb, yb = gather_batch(self.problem, idx, rows)
        g = model.grad_from_factors(Xb, model.sample_factors(w, Xb, yb), out=out)
        return model.add_regularizer_grad(g, w)


# --------------------------------------------------------------------------------------
# penalty (paper A)
# --------------------------------------------------------------------------------------
def lp_subgradient_l2_normalised(u, p, out=None):
    """"Subgradient" of ‖u‖₁ normalised like the l2 one: ``u/‖u‖₂`` (0 at 0).  Its
    ∞-norm is ≤ 1, but ``⟨g, u⟩ = ‖u‖₂ ≠ ‖u‖₁``: it is the subgradient of the wrong norm."""
    u = np.asarray(u, dtype=np.float64)
    nrm = np.linalg.norm(u, axis=-1, keepdims=True)
    g = np.divide(u, nrm, out=np.zeros_like(u), where=nrm > 0)
    if out is not None:
        out[...] = g
        return out
    return g


def lemma1_threshold_of_the_mean(grads_at_opt, p=1):
    """Lemma 1's threshold with the max over clients replaced by the mean of the
    gradients: ``‖(1/r) Σ_i ∇f_i(x̃*)‖_∞`` — far too small for heterogeneous clients."""
    g = np.asarray(grads_at_opt, dtype=float)
    return float(np.abs(g.mean(axis=0)).max())


# --------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------
def gaussian_attack_global_rng(v, byzantine, rng, *, std=1.0):
    """Gaussian attack drawing from NumPy's hidden global RNG instead of ``rng``."""
    q = int(byzantine.sum())
    return np.random.normal(0.0, std, size=v.shape[:-2] + (q, v.shape[-1]))


def subgradients_of_difference_l2_normalised(a, b, p, buf):
    """The penalty round's row-wise subgradients (``∂‖a_i − b‖_p`` and their sum) with
    the same wrong normalisation as :func:`lp_subgradient_l2_normalised` for p = 1:
    ``(a_i − b)/‖a_i − b‖₂``."""
    pen = buf["pen"]
    pen[...] = lp_subgradient_l2_normalised(np.subtract(a, b), 1)
    return pen, pen.sum(axis=0)




# --------------------------------------------------------------------------------------
# ties and duplicated rows (tests/test_ties.py)
# --------------------------------------------------------------------------------------
def meamed_first_window(z, mask=None, *, f=None):
    """Meamed whose "m − f values nearest the median" are the window of consecutive
    sorted values with the smallest maximum deviation, the *first* such window on ties:
    when the value at the window's edge is repeated, it keeps the copies and drops
    closer values on the other side (n = 10, f = 3 hand example: −0.786 for 0.985)."""
    z = np.asarray(z, dtype=float)
    n = z.shape[-2]
    f = (n - 1) // 2 if f is None else f
    k = n - f
    s = np.sort(z, axis=-2)
    c = 0.5 * (s[..., (n - 1) // 2, :] + s[..., n // 2, :])
    starts = np.arange(n - k + 1)
    dev = np.maximum(c[..., None, :] - s[..., starts, :], s[..., starts + k - 1, :] - c[..., None, :])
    best = np.argmin(dev, axis=-2)  # first minimum
    win = (np.arange(n)[:, None] >= best[..., None, :]) & (np.arange(n)[:, None] < best[..., None, :] + k)
    return np.where(win, s, 0.0).sum(axis=-2) / k


def weiszfeld_from_medoid(z, mask=None, *, iters=80, eps=1e-8):
    """Smoothed Weiszfeld started on the medoid row (smallest sum of distances), as the
    default start did: the copies of a duplicated medoid get weight ``1/eps`` each, so
    the iterate stays on that row even where it is not the median."""
    z = np.asarray(z, dtype=float)
    D = np.linalg.norm(z[:, None, :] - z[None, :, :], axis=-1)
    y = z[np.argmin(D.sum(1))]
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(z - y, axis=1), eps)
        y = w @ z / w.sum()
    return y
