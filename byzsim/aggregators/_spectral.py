"""Spectral and covariance rules: CAF, SMEA and DnC.
"""

from __future__ import annotations

import functools as _functools
import itertools as _itertools
import math as _math
from typing import Any

import numpy as np

from ._base import (
    AGGREGATORS,
    _average,
    _check_int,
    _majority_max_f,
    _matvec,
    _rows_and_f,
    _shared_doc,
    _subset_mean,
)
from ..protocols import EmptyState, Stateful
from ._gram import _dists, _double_center, _robust_gram

__all__ = ["caf", "dnc", "dnc_fresh", "smea"]


@AGGREGATORS.register("caf", max_f=_majority_max_f)
@_shared_doc
def caf(z: Any, mask: Any = None, *, f: int | None = None) -> np.ndarray:
    """Covariance-bound agnostic filter (CAF; Allouah et al., as implemented in ByzFL).

    A spectral filter that needs no bound on the honest covariance.  Start with weights
    ``c_i = 1`` on the participating rows and repeat:

    .. math::
        \\mu_c = \\frac{\\sum_i c_i z_i}{\\sum_i c_i},\\quad
        \\Sigma_c = \\frac{\\sum_i c_i (z_i - \\mu_c)(z_i - \\mu_c)^\\top}{\\sum_i c_i},\\quad
        (\\lambda, v) = \\text{top eigenpair of } \\Sigma_c,

    while ``Σ c_i > m_p − 2f``: record ``μ_c`` if ``λ`` is the smallest so far, then
    with :math:`\\tau_i = ((z_i - \\mu_c)^\\top v)^2`

    .. math:: c_i \\leftarrow c_i \\Big(1 - \\frac{\\tau_i}{\\max_{j: c_j > 0} \\tau_j}\\Big).

    Returns the recorded ``μ_c`` of smallest ``λ`` (``f = 0``: the loop never runs and
    the output is the mean).  As in the authors' reference loop (ByzFL's ``CAF``: "repeat
    until ``Σ c_i <= n − 2f``"), the state reached by the last update, with
    ``Σ c_i <= m_p − 2f``, is *not* a candidate (it has shed more than the ``2f`` of
    weight the loop condition allows).  Every step zeroes at least one weight, so there
    are at most ``m_p`` steps.  The eigenpair is exact: ``Σ_c`` shares its
    non-zero spectrum with the ``n × n`` matrix ``C^{1/2} G_c C^{1/2} / Σc`` (``G_c`` the
    Gram matrix centered at ``μ_c``), so after one ``n²d`` Gram product every step is
    O(n³).  Rows holding inf/NaN start with weight 0.  (ByzFL uses power iterations and
    takes the maximum of ``τ`` over all rows; here it is over rows still weighted, which
    guarantees the step count.)

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2`` (``f = 0``: the mean); ``None``: ``(m_p − 1) // 2``.

    {returns}

    References
    ----------
    Y. Allouah, R. Guerraoui, J. Stephan, "Towards Trustworthy Federated Learning with
    Untrusted Participants", ICML 2025 (arXiv:2505.01874), as implemented in ByzFL
    ``CAF`` (https://byzfl.epfl.ch/aggregators/classes/caf.html); the
    filter follows I. Diakonikolas, G. Kamath, D. Kane, J. Li, A. Moitra, A. Stewart,
    "Being Robust (in High Dimensions) Can Be Practical", ICML 2017.
    """
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "caf")
    n = z2.shape[-2]
    zc, g, ok = _robust_gram(z2, present)
    dt = z2.dtype
    c = ok.astype(dt)
    thr = (m2 - 2 * fe).astype(dt)
    best_lam = np.full(z2.shape[0], np.inf, dtype=dt)
    best_w = c / np.maximum(c.sum(-1), 1)[:, None]
    active = c.sum(-1) > 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _ in range(n + 1):
            S = c.sum(-1)
            w = c / np.where(S > 0, S, 1)[:, None]
            gc = _double_center(g, w)
            sq = np.sqrt(c)
            M = sq[:, :, None] * gc * sq[:, None, :] / np.where(S > 0, S, 1)[:, None, None]
            lam, U = np.linalg.eigh(M)
            lmax = np.maximum(lam[:, -1], 0)
            # only states with Σc > m_p − 2f are candidates (the loop condition)
            active &= S > thr
            if not active.any():
                break
            better = active & (lmax < best_lam)
            best_lam = np.where(better, lmax, best_lam)
            best_w = np.where(better[:, None], w, best_w)
            proj = _matvec(gc, sq * U[:, :, -1]) / np.sqrt(lmax * S)[:, None]
            tau = np.where(c > 0, proj * proj, 0.0)
            tmax = tau.max(axis=-1)
            active &= tmax > 0
            if not active.any():
                break
            c = np.where(active[:, None], np.maximum(c * (1.0 - tau / tmax[:, None]), 0.0), c)
    return finish(_average(best_w.astype(dt), z2))




# --------------------------------------------------------------------------------------
# SMEA


@_functools.lru_cache(maxsize=16)
def _combinations(m: int, f: int) -> np.ndarray:
    """All ``f``-subsets of ``range(m)`` in lexicographic order, ``(C(m, f), f)``."""
    dt = np.int8 if m <= 127 else np.int64
    if f == 0:
        return np.zeros((1, 0), dtype=dt)
    flat = np.fromiter(_itertools.chain.from_iterable(_itertools.combinations(range(m), f)),
                       dtype=dt, count=_math.comb(m, f) * f)
    out = flat.reshape(-1, f)
    out.flags.writeable = False
    return out


def _subset_top_eig(G: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """Largest eigenvalue of the covariance of each kept subset: ``G (m, m)`` any centered
    Gram matrix, ``keep (K, m)`` bool with ``k`` True per row."""
    S = np.argsort(~keep, axis=-1, kind="stable")[:, :k]
    Gs = G[S[:, :, None], S[:, None, :]]
    Gs = Gs - Gs.mean(axis=-1, keepdims=True)
    Gs = Gs - Gs.mean(axis=-2, keepdims=True)
    return np.linalg.eigvalsh(Gs)[:, -1] / k


def _top_directions(G: np.ndarray, rows: np.ndarray, r: int) -> np.ndarray:
    """Projections ``(m, r)`` of all rows on the top ``r`` principal directions of the
    rows ``rows`` (Gram form: direction ``u = Z̃ᵀa/√λ``, projection ``G[:, rows] a/√λ``),
    centered over all rows."""
    Gs = G[np.ix_(rows, rows)]
    Gs = Gs - Gs.mean(axis=-1, keepdims=True)
    Gs = Gs - Gs.mean(axis=-2, keepdims=True)
    lam, A = np.linalg.eigh(Gs)
    r = min(r, rows.size)
    lam, A = lam[-r:], A[:, -r:]
    good = lam > lam[-1] * 1e-12 if lam[-1] > 0 else np.zeros(r, bool)
    Pm = G[:, rows] @ (A[:, good] / np.sqrt(lam[good]))
    return Pm - Pm.mean(axis=0)


def _combination_chunks(V: np.ndarray, D: np.ndarray | None, f: int, chunk: int = 1 << 15):
    """For the ``f``-subsets ``R`` of ``range(n)`` in lexicographic order (as
    :func:`_combinations`), yield ``(start, S, PS)`` chunks: ``S = Σ_{i∈R} V_i``
    ``(K_chunk, r)`` and (if ``D`` is given) ``PS = Σ_{i<j∈R} D_ij``.

    Built level by level (each ``j``-subset extends a ``(j−1)``-subset by a larger
    element), so the work is ``Σ_j C(n, j)`` row additions instead of ``f·C(n, f)``
    gathers; the last level is produced in chunks of about ``chunk`` subsets (small
    temporaries that the allocator reuses)."""
    n = V.shape[0]
    last = np.arange(n)
    S = V.copy()
    W = None if D is None else D.copy()  # Σ_{i∈R} D[i, :] for the current level
    PS = None if D is None else np.zeros(n, dtype=D.dtype)
    if f == 0:
        yield 0, np.zeros((1, V.shape[1]), V.dtype), None if D is None else np.zeros(1, D.dtype)
        return
    if f == 1:
        yield 0, S, PS
        return

    def extend(par_lo, par_hi):
        cnt = n - 1 - last[par_lo:par_hi]
        parent = np.repeat(np.arange(par_lo, par_hi), cnt)
        start = np.cumsum(cnt) - cnt
        e = last[parent] + 1 + (np.arange(parent.size) - start[parent - par_lo])
        return parent, e

    for level in range(2, f):
        parent, e = extend(0, last.size)
        S = S[parent] + V[e]
        if D is not None:
            PS = PS[parent] + W[parent, e]
            W = W[parent] + D[e]
        last = e
    # the last level, in chunks of parents
    per = np.maximum(n - 1 - last, 0)
    bounds = np.searchsorted(np.cumsum(per), np.arange(chunk, per.sum() + chunk, chunk), side="right")
    lo, pos = 0, 0
    for hi in np.unique(np.minimum(np.r_[bounds, last.size], last.size)):
        hi = max(int(hi), lo + 1)
        if lo >= last.size:
            break
        parent, e = extend(lo, hi)
        Sc = S[parent] + V[e]
        PSc = None if D is None else PS[parent] + W[parent, e]
        yield pos, Sc, PSc
        pos += parent.size
        lo = hi


@AGGREGATORS.register("smea", max_f=_majority_max_f)
@_shared_doc
def smea(
    z: Any, mask: Any = None, *, f: int | None = None, max_subsets: int = 10**6
) -> np.ndarray:
    """Smallest maximum eigenvalue averaging (SMEA; Allouah et al., 2023).

    .. math:: S^* = \\arg\\min_{S \\subseteq P,\\ |S| = m_p - f}
        \\lambda_{\\max}\\Big(\\frac{1}{|S|} \\sum_{i\\in S} (z_i - \\bar z_S)
        (z_i - \\bar z_S)^\\top\\Big), \\qquad \\mathrm{SMEA}(z) = \\bar z_{S^*}.

    **Exact, by enumeration with pruning.**  Two lower bounds of ``λ_max(Σ_S)`` are
    computed for all ``C(m_p, f)`` subsets at once (vectorized, ``O(f²)`` per subset):
    ``tr(Σ_S)/(k − 1)`` (the covariance has rank ``<= k − 1``, ``k = m_p − f``; the trace
    is the sum of squared pairwise distances in ``S`` over ``k²``), and
    ``max_u uᵀ Σ_S u`` over 8 fixed unit directions ``u`` — the top principal directions of
    all rows and of the subset of smallest trace (a 1-D variance from running sums).
    The exact eigenvalue (``eigvalsh`` of the ``k × k`` doubly centered Gram block) is
    then computed, in batches in increasing bound order, only for subsets whose bound
    beats the best eigenvalue found so far.
    Subsets containing a row with inf/NaN have ``λ = ∞``.  The search runs per batch
    element (a Python loop over leading batch axes only).  Ties keep the subset found
    first (smallest lower bound, then lexicographic order of the removed rows).

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    max_subsets : int, default 1_000_000
        Refuse (``ValueError`` naming n, f and ``C(m_p, f)``) beyond this many subsets.
        (``C(30, 6) = 593,775``: about 0.2–0.5 s per call on a 2-core machine.)

    {returns}

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "On the Privacy-Robustness-
    Utility Trilemma in Distributed Learning", ICML 2023 (SMEA).
    """
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "smea")
    n = z2.shape[-2]
    max_subsets = _check_int("max_subsets", max_subsets, "smea")
    for mp, fb in set(zip(m2.tolist(), fe.tolist())):
        count = _math.comb(mp, fb)
        if count > max_subsets:
            raise ValueError(
                f"smea: C(m_p, f) = C({mp}, {fb}) = {count} subsets for n = {n}, f = {fb} "
                f"exceed max_subsets = {max_subsets}; lower f or raise max_subsets"
            )
    zc, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    keep_all = np.zeros_like(present)
    for b in range(z2.shape[0]):
        P = np.flatnonzero(present[b])
        mp, fb = P.size, int(fe[b])
        if mp == 0:
            continue
        k = mp - fb
        bad = ~ok[b, P]
        D = d2[b][np.ix_(P, P)]
        Df = np.where(np.isfinite(D), D, 0.0)
        o = np.where(bad, np.inf, Df.sum(-1))
        if fb == 0:
            keep = np.ones(mp, bool)
        elif k == 1:  # every singleton has λ = 0: keep the least outlying row
            keep = np.arange(mp) == np.argmin(o)
        else:
            C = _combinations(mp, fb)
            ss = np.empty(C.shape[0])  # squared distances within the kept rows
            tot, rsum = 0.5 * Df.sum(), Df.sum(-1)[:, None]
            for p0, rs, ps in _combination_chunks(rsum, Df, fb):
                ss[p0 : p0 + rs.shape[0]] = tot - rs[:, 0] + ps
            covered = (bad[C].sum(-1) == bad.sum()) if bad.any() else np.ones(C.shape[0], bool)
            lb = np.where(covered, ss / (k * k * (k - 1)), np.inf)
            G = g[b][np.ix_(P, P)]

            def keep_of(rows):
                kp = np.ones((rows.size, mp), bool)
                kp[np.arange(rows.size)[:, None], C[rows]] = False
                return kp

            first = int(np.argmin(lb))
            best_i = first
            best = _subset_top_eig(G, keep_of(np.array([first])), k)[0] if covered[first] else np.inf
            if np.isfinite(best):
                # sharper bounds: variance along the top directions of all finite rows
                # and of the first candidate (gradients are far from isotropic)
                S0 = np.flatnonzero(keep_of(np.array([first]))[0])
                Pm = np.concatenate([_top_directions(G, np.flatnonzero(~bad), 4),
                                     _top_directions(G, S0, 4)], axis=1)
                r = Pm.shape[1]
                T, Q = Pm.sum(0), (Pm * Pm).sum(0)
                for p0, sums, _ in _combination_chunks(np.concatenate([Pm, Pm * Pm], 1), None, fb) if r else ():
                    mu = (T - sums[:, :r]) / k
                    sl = slice(p0, p0 + sums.shape[0])
                    lb[sl] = np.maximum(lb[sl], ((Q - sums[:, r:]) / k - mu * mu).max(-1))
            lb = lb * (1.0 - 1e-9)  # margin for the roundoff of the bounds
            cand = np.flatnonzero(lb < best)
            cand = cand[np.argsort(lb[cand], kind="stable")]
            step = 2048
            for s0 in range(0, cand.size, step):
                rows = cand[s0 : s0 + step]
                rows = rows[lb[rows] < best]
                if rows.size == 0:
                    break
                lam = _subset_top_eig(G, keep_of(rows), k)
                j = int(np.argmin(lam))
                if lam[j] < best:
                    best, best_i = lam[j], int(rows[j])
            keep = keep_of(np.array([best_i]))[0]
        keep_all[b, P[keep]] = True
    return finish(_subset_mean(keep_all, z2))




# --------------------------------------------------------------------------------------
# DnC


@AGGREGATORS.register("dnc", max_f=_majority_max_f)
@_shared_doc
def dnc(
    z: Any,
    mask: Any = None,
    *,
    f: int | None = None,
    c: float = 1.0,
    niters: int = 1,
    sub_dim: int = 10000,
    seed: int = 0,
) -> np.ndarray:
    """Divide and conquer (DnC; Shejwalkar & Houmansadr, 2021): spectral outlier removal
    on random coordinate subsets.

    For ``t = 1..niters``: draw ``b = min(sub_dim, d)`` coordinates ``r_t``; center the
    participating rows on them, :math:`\\tilde z_i = z_{i,r_t} - \\mu_{r_t}` (plain mean);
    take the top right singular vector ``v`` of the centered matrix and the scores
    :math:`s_i = \\langle \\tilde z_i, v \\rangle^2`; the rows outside the ``⌊c f⌋``
    highest scores form ``G_t``.  Output

    .. math:: \\mathrm{DnC}(z) = \\frac{1}{|G|} \\sum_{i \\in G} z_i, \\qquad
        G = \\bigcap_t G_t,\\quad G_t = P \\setminus \\mathrm{top}_{\\lfloor c f \\rfloor}
        \\{ s_i^{(t)} \\},\\quad s^{(t)}_i = \\langle z_{i,r_t} - \\mu_{r_t}, v_t \\rangle^2 .

    Computed in Gram form: ``s_i = λ u_i²`` with ``(λ, u)`` the top eigenpair of the
    ``n × n`` centered Gram matrix (one ``n² b`` product per iteration).  If the
    intersection is empty (few rows, several iterations), the rows removed in the fewest
    iterations are averaged instead.  When
    ``sub_dim >= d`` every iteration uses all coordinates, so one is computed.

    **Randomness.**  Aggregators are deterministic functions of the messages: the
    coordinate subsets come from ``np.random.default_rng(seed)`` (the same subsets every
    call; vary ``seed`` to change them).  :func:`dnc_fresh` draws fresh subsets every
    round from the run's generator, as the paper does.  Rows holding inf/NaN score ``+∞`` (removed
    first) and are left out of the centering mean.

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    c : float, default 1.0
        Filtering fraction: ``⌊c f⌋`` rows removed per iteration (at most ``m_p − 1``).
    niters : int, default 1
        Number of coordinate subsets.
    sub_dim : int, default 10000
        Coordinates per subset (the paper's ``b``).
    seed : int, default 0
        Seed of the coordinate subsets.

    {returns}

    References
    ----------
    V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning", NDSS 2021.
    """
    seed = _check_int("seed", seed, "dnc")
    niters, sub_dim = _check_dnc(c, niters, sub_dim, "dnc")
    return _dnc(z, mask, f, c, niters, sub_dim, np.random.default_rng(seed))


def _check_dnc(c, niters, sub_dim, name: str) -> tuple[int, int]:
    if not (np.isfinite(c) and c >= 0):
        raise ValueError(f"{name}: c must be >= 0, got c = {c!r}")
    niters = _check_int("niters", niters, name)
    sub_dim = _check_int("sub_dim", sub_dim, name)
    if niters < 1 or sub_dim < 1:
        raise ValueError(f"{name} needs niters >= 1 and sub_dim >= 1; got niters = {niters}, sub_dim = {sub_dim}")
    return niters, sub_dim


def _dnc(z, mask, f, c, niters: int, sub_dim: int, rng) -> np.ndarray:
    """DnC of :func:`dnc` with the coordinate subsets drawn from ``rng``."""
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "dnc")
    n, d = z2.shape[-2:]
    nrem = np.minimum(np.floor(c * fe).astype(np.int64), np.maximum(m2 - 1, 0))
    flags = np.zeros(present.shape, dtype=np.int64)  # iterations that removed each row
    for _ in range(niters if sub_dim < d else 1):
        zs = z2 if sub_dim >= d else z2[:, :, np.sort(rng.choice(d, size=sub_dim, replace=False))]
        zc, g, ok = _robust_gram(zs, present)
        w = ok.astype(zs.dtype) / np.maximum(ok.sum(-1), 1).astype(zs.dtype)[:, None]
        gc = _double_center(g, w)
        gc = np.where(ok[:, :, None] & ok[:, None, :], gc, 0.0)
        lam, U = np.linalg.eigh(gc)
        score = np.maximum(lam[:, -1:], 0) * U[:, :, -1] ** 2
        score = np.where(present, np.where(ok, score, np.inf), -np.inf)
        order = np.argsort(-score, axis=-1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
        flags += rank < nrem[:, None]
    # G = ∩_t G_t: the rows never removed; if every row was removed at least once (a few
    # rows, many iterations), the rows removed least often
    flags = np.where(present, flags, np.iinfo(np.int64).max)
    good = present & (flags == flags.min(axis=-1, keepdims=True))
    return finish(_subset_mean(good, z2))




@AGGREGATORS.register("dnc_fresh", max_f=_majority_max_f, stateful=True)
def dnc_fresh(*, f: int | None = None, c: float = 1.0, niters: int = 1, sub_dim: int = 10000) -> Stateful:
    """DnC (Shejwalkar & Houmansadr, 2021) with fresh random coordinate subsets every
    round, drawn from the run's generator: the rule of :func:`dnc` (same formula,
    same parameters but ``seed``) where round ``t`` uses subsets
    ``r_{t,1}, …, r_{t,niters}``, each ``b = min(sub_dim, d)`` coordinates uniform
    without replacement (``rng.choice(d, b, replace=False)``).  Its state is empty;
    it is a :class:`~byzsim.protocols.Stateful` component because it needs the run's
    generator, which pure aggregators do not get.  With ``sub_dim >= d`` nothing is
    drawn and it equals :func:`dnc`.

    Returns
    -------
    :class:`byzsim.protocols.Stateful` ``apply(state, z (..., n, d), mask, rng) -> ((..., d), state)``

    References
    ----------
    V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning", NDSS 2021 (Algorithm 2: "b random
    dimensions" drawn in each iteration).
    """
    niters, sub_dim = _check_dnc(c, niters, sub_dim, "dnc_fresh")

    def init(shape, dtype=np.float64):
        return EmptyState()

    def apply(state, z, mask=None, rng=None):
        return _dnc(z, mask, f, c, niters, sub_dim, rng), state

    return Stateful(init, apply, "aggregator")
