"""Nearest-neighbour scoring rules: Krum, multi-Krum, Bulyan (iterated Krum then a
trimmed mean) and MoNNA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import (
    AGGREGATORS,
    _average,
    _check_int,
    _majority_max_f,
    _prepare,
    _rows_and_f,
    _shared_doc,
    _subset_mean,
    _vecdot,
)
from ._gram import (
    _KRUM_REL,
    _dists,
    _finite_gram,
    _gram,
    _krum_scores_from,
    _recenter_threshold,
    _robust_gram,
    _sq_dists_from_gram,
)
from ._order import _mean_around_center, _median_sorted, _take_row

__all__ = ["bulyan", "krum", "monna", "multi_krum"]


# --------------------------------------------------------------------------------------
# Krum


def _krum_max_f(n: int) -> int:
    """Krum needs ``n − f − 2 >= 1`` neighbours: ``f <= n − 3``."""
    return max(int(n) - 3, 0)


def _krum_check(f: Any, n: int, who: str) -> int:
    f = _check_int("f", f, who)
    if n - f - 2 < 1:
        raise ValueError(
            f"{who} needs n - f - 2 >= 1 neighbours, i.e. 0 <= f <= n - 3 = {n - 3}, "
            f"for n = {n} rows; got f = {f}"
        )
    return f


def _krum_scores(z: np.ndarray, wts: np.ndarray, m: np.ndarray, f: int):
    """Krum scores of every row, ``(..., n)``, and the row order they induce.

    ``k = clip(m_p − f − 2, 1, m_p − 1)`` neighbours.  Distances come from ``Z Zᵀ``
    (:func:`_finite_gram`: participating rows holding inf/NaN are infinitely far — score
    ``+∞``, and a distance ``+∞`` to every other row, so they are nobody's neighbour;
    rows too large for the Gram matrix are scaled); elements where its roundoff may
    matter against the winner's neighbour distances are rescored with the Gram matrix
    centered at the winner.

    Returns ``(scores, order)``: ``order`` sorts the rows by score (stable: ties to the
    lowest index) with finite participating rows first — even those whose score is
    ``+∞`` for lack of ``k`` finite neighbours —, then participating non-finite rows,
    then absent rows.
    """
    present = wts > 0
    _, zs, g, ok, _ = _finite_gram(z, present)
    k = np.minimum(np.maximum(m - f - 2, 1), np.maximum(m - 1, 0))
    scores = _krum_scores_from(_sq_dists_from_gram(g), ok, k)
    best = np.argmin(scores, axis=-1)
    off2 = np.take_along_axis(np.diagonal(g, axis1=-2, axis2=-1), best[..., None], -1)[..., 0]
    sbest = np.take_along_axis(scores, best[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = off2 * k / sbest  # ||z_best||^2 / mean squared neighbour distance
        redo = (k > 0) & (rho > _recenter_threshold(z.dtype, _KRUM_REL))
    if redo.any():
        g2 = _gram(zs, _take_row(zs, best))
        s2 = _krum_scores_from(_sq_dists_from_gram(g2), ok, k)
        scores = np.where(redo[..., None], s2, scores)
    big = np.finfo(scores.dtype).max
    key = np.where(ok, np.minimum(scores, big), np.where(present, np.inf, np.nan))
    return scores, np.argsort(key, axis=-1, kind="stable")


@AGGREGATORS.register("krum", max_f=_krum_max_f)
@_shared_doc
def krum(z: Any, mask: Any = None, *, f: int) -> np.ndarray:
    """Krum (Blanchard et al., 2017): the row closest to its nearest neighbours.

    .. math:: \\mathrm{score}(i) = \\sum_{j \\in N_i} \\lVert z_i - z_j \\rVert^2,
        \\qquad \\mathrm{Krum}(z) = z_{i^*},\\ i^* = \\arg\\min_{i\\in P} \\mathrm{score}(i)

    where :math:`N_i` are the :math:`k = m_p - f - 2` nearest other participating rows
    (``m_p = n`` without a mask; with a mask ``k`` is clipped to ``[1, m_p − 1]``).  Ties
    go to the lowest index.  Absent rows are never selected nor counted as neighbours.
    Participating rows holding inf/NaN score ``+∞``, are at distance ``+∞`` from every
    other row (nobody's neighbour) and are never selected while a finite row
    participates; ``k`` still counts them (``m_p`` includes them).
    Distances come from a Gram matrix (see the module notes): first ``Z Zᵀ``; if the
    winner is far from the origin relative to its neighbours,
    ``ρ = ‖z_{i*}‖² · k / score(i*) > max(100, 1e-10 / ε_mach)``, the scores are
    recomputed with the Gram matrix centered at ``z_{i*}``, which makes the distances
    among the rows near the winner accurate to ``ε_mach`` relative.

    Parameters
    ----------
    {z_mask}
    f : int
        Assumed number of Byzantine rows; requires ``0 <= f <= n − 3``.

    {returns}
        A copy of the selected row.

    Raises
    ------
    ValueError
        If ``f`` is not an integer with ``n − f − 2 >= 1``.

    Examples
    --------
    >>> z = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [50.0, 50.0]])
    >>> krum(z, f=1)                    # (5, 2) -> (2,): an honest row (ties: lowest index)
    array([0., 0.])
    >>> krum(np.stack([z, -z]), f=1).shape          # one batch axis
    (2, 2)
    """
    z, wts, m = _prepare(z, mask)
    f = _krum_check(f, z.shape[-2], "krum")
    _, order = _krum_scores(z, wts, m, f)
    out = _take_row(z, order[..., 0])
    if mask is not None:
        out = np.where((m > 0)[..., None], out, 0.0).astype(z.dtype, copy=False)
    return out


@AGGREGATORS.register("multi_krum", max_f=_krum_max_f)
@_shared_doc
def multi_krum(z: Any, mask: Any = None, *, f: int, m: int | None = None) -> np.ndarray:
    """Multi-Krum: the mean of the ``m`` rows with the lowest Krum scores.

    .. math:: \\mathrm{MK}(z) = \\frac{1}{m} \\sum_{i \\in S_m} z_i

    with :math:`S_m` the ``m`` participating rows of smallest :func:`krum` score (ties to
    the lowest index; ``m = 1`` is Krum).  Default ``m = n − f``; with a mask the default
    is ``m_p − f`` and any ``m`` is clipped to ``[1, m_p]``.  Rows holding inf/NaN rank
    after every finite row (see :func:`krum`); they are averaged (non-finite output)
    only if ``m`` exceeds the number of finite participating rows.

    Parameters
    ----------
    {z_mask}
    f : int
        Assumed number of Byzantine rows; requires ``0 <= f <= n − 3``.
    m : int or None
        Number of rows averaged, ``1 <= m <= n``; ``None`` means ``n − f``.

    {returns}

    Raises
    ------
    ValueError
        If ``f`` violates ``n − f − 2 >= 1`` or ``m`` is outside ``[1, n]``.
    """
    z, wts, mp = _prepare(z, mask)
    n = z.shape[-2]
    f = _krum_check(f, n, "multi_krum")
    if m is not None:
        m = _check_int("m", m, "multi_krum")
        if not 1 <= m <= n:
            raise ValueError(f"multi_krum needs 1 <= m <= n = {n}; got m = {m}")
        m_eff = np.minimum(m, mp)
    else:
        m_eff = np.maximum(mp - f, 1)
    m_eff = np.minimum(m_eff, mp)
    _, order = _krum_scores(z, wts, mp, f)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    sel = (ranks < m_eff[..., None]).astype(z.dtype)
    # rows not selected (absent, or non-finite ones ranked last) have no influence
    return _average(sel, z) / np.maximum(m_eff, 1).astype(z.dtype)[..., None]


# --------------------------------------------------------------------------------------
# Bulyan


def _bulyan_max_f(n: int) -> int:
    return max((int(n) - 3) // 4, 0)


@AGGREGATORS.register("bulyan", max_f=_bulyan_max_f)
@_shared_doc
def bulyan(z: Any, mask: Any = None, *, f: int | None = None) -> np.ndarray:
    """Bulyan (El Mhamdi, Guerraoui & Rouault, 2018): iterated Krum, then a coordinate-wise
    trimmed mean around the median.

    1. **Selection.** ``θ = m_p − 2f`` rows are chosen one at a time: at step ``t`` Krum is
       applied to the ``r_t = m_p − t`` rows not chosen yet (score = sum of squared
       distances to the ``r_t − f − 2`` nearest other remaining rows, clipped to
       ``[1, r_t − 1]``), and its winner moves to the selection ``S``.
    2. **Aggregation.** With ``β = θ − 2f``, per coordinate ``j``

       .. math:: \\mathrm{Bulyan}(z)_j = \\frac{1}{\\beta} \\sum_{i \\in M_j} z_{ij},
           \\qquad M_j = \\text{the } \\beta \\text{ rows of } S \\text{ closest to }
           \\mathrm{med}_{i\\in S}\\, z_{ij}

       (ties at the edge distance share the remaining places equally, as in
       :func:`~byzsim.aggregators.meamed`).

    The guarantee requires ``m_p >= 4f + 3`` (the default ``f`` and ``max_f``); a larger
    ``f`` (up to ``2f < m_p``) still gives a value: when ``θ − 2f < 1`` step 2 is the
    coordinate median of ``S``.
    Distances come from one anchor-centered Gram matrix; the
    ``θ`` Krum steps are O(n² log n) each on the distance matrix (a loop over selection
    steps, not over clients).  Exact ties of Krum scores (two mutually nearest rows when
    ``r_t − f − 2 = 1``) go to the row with the smaller sum of squared distances to the
    remaining rows, which keeps the rule permutation invariant.

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        Assumed Byzantine rows, ``0 <= f <= (n − 1) // 2`` (robust for
        ``f <= (n − 3) // 4``); ``None``: ``(m_p − 3) // 4``.

    {returns}

    References
    ----------
    E. M. El Mhamdi, R. Guerraoui, S. Rouault, "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018.
    """
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "bulyan", default_f=_bulyan_max_f)
    B = z2.shape[0]
    zc, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    theta = np.maximum(m2 - 2 * fe, 0)
    # beyond the guarantee (θ − 2f < 1): the coordinate median of S (its 1 or 2 middle values)
    beta = np.where(theta - 2 * fe >= 1, theta - 2 * fe, 2 - theta % 2)
    alive = present.copy()
    chosen = np.zeros_like(present)
    rows = np.arange(B)
    for t in range(int(theta.max()) if B else 0):
        act = t < theta
        r = m2 - t
        k = np.minimum(np.maximum(r - fe - 2, 1), np.maximum(r - 1, 0))
        aw = alive.astype(z2.dtype)
        scores = _krum_scores_from(d2, aw, k)
        # exact ties (e.g. two mutually nearest rows when k = 1) go to the row with the
        # smaller total squared distance to the remaining rows, not to the lower index
        tied = scores == scores.min(axis=-1, keepdims=True)
        total = np.where(np.isfinite(d2), d2, 0.0) @ aw[:, :, None]
        win = np.argmin(np.where(tied, total[:, :, 0], np.inf), axis=-1)
        upd = act & alive[rows, win]
        chosen[rows[upd], win[upd]] = True
        alive[rows[upd], win[upd]] = False
    # gather the chosen rows first (θ_max of them), pad with NaN, sort per coordinate
    tmax = max(int(theta.max()) if B else 0, 1)
    order = np.argsort(~chosen, axis=-1, kind="stable")[:, :tmax]
    sel = np.take_along_axis(z2, order[:, :, None], axis=1)
    valid = np.arange(tmax)[None, :] < theta[:, None]
    sel = np.where(valid[:, :, None], sel, np.nan)
    sel.sort(axis=1)
    med = _median_sorted(sel, theta)
    out = _mean_around_center(sel, np.maximum(theta, 1), np.minimum(beta, np.maximum(theta, 1)), med)
    return finish(out)




# --------------------------------------------------------------------------------------
# MoNNA


@AGGREGATORS.register("monna", max_f=_majority_max_f)
@_shared_doc
def monna(z: Any, mask: Any = None, *, f: int | None = None, idx: int | None = None) -> np.ndarray:
    """MoNNA: the mean of the ``m_p − f`` nearest neighbours of a reference row
    (Farhadkhani et al., 2023).

    .. math:: \\mathrm{MoNNA}(z) = \\frac{1}{m_p - f} \\sum_{i \\in N_{r}} z_i,

    where :math:`N_r` is the set of the ``m_p − f`` participating rows nearest to
    :math:`z_r` (itself included; ties to the lowest index).  In the paper the reference
    ``r`` is the vector of a *trusted* (honest) node, as in peer-to-peer learning.  A
    parameter server has none, so by default ``r`` is the row whose own neighbourhood is
    tightest,

    .. math:: r = \\arg\\min_{i \\in P} \\sum_{j \\in N_i} \\lVert z_i - z_j \\rVert^2

    (Krum's score with ``m_p − f − 1`` neighbours), which keeps the rule permutation
    invariant.  ``idx`` selects a fixed trusted row instead (ByzFL's ``MoNNA(f, idx)``;
    not permutation invariant; an element where row ``idx`` does not participate falls
    back to the default).  With ``idx`` only the ``n`` distances to that row are needed:
    they are computed directly, O(n d), instead of the ``n × n`` Gram matrix.

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    idx : int or None, default None
        Index of a trusted row, ``0 <= idx < n``; ``None``: the tightest row (above).

    {returns}

    References
    ----------
    S. Farhadkhani, R. Guerraoui, N. Gupta, L.-N. Hoang, R. Pinot, J. Stephan, "Robust
    Collaborative Learning with Linear Gradient Overhead", ICML 2023.
    """
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "monna")
    n = z2.shape[-2]
    if idx is not None:
        idx = _check_int("idx", idx, "monna")
        if idx >= n:
            raise ValueError(f"monna needs 0 <= idx < n = {n}; got idx = {idx}")
    B = z2.shape[0]
    rows = np.arange(B)
    size = np.maximum(m2 - fe, 1)
    dr = None
    if idx is not None and present[:, idx].all():
        dr = _sq_dists_to_row(z2, idx)
    if dr is None:  # no trusted row, or distances to it overflow: the Gram matrix
        zc, g, ok = _robust_gram(z2, present)
        d2 = _dists(g, ok)
        scores = _krum_scores_from(d2, present.astype(z2.dtype), size - 1)
        anchor = np.argmin(scores, axis=-1)
        if idx is not None:
            anchor = np.where(present[:, idx], idx, anchor)
        dr = d2[rows, anchor]  # (B, n)
    big = np.finfo(dr.dtype).max
    key = np.where(present, np.where(np.isfinite(dr), dr, big), np.inf)
    rank = np.empty(key.shape, dtype=np.intp)
    order = np.argsort(key, axis=-1, kind="stable")
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    sel = present & (rank < size[:, None])
    return finish(_subset_mean(sel, z2))


def _sq_dists_to_row(z2: np.ndarray, r: int) -> np.ndarray | None:
    """``‖z_i − z_r‖²`` for every row of ``z2 (B, n, d)``, ``(B, n)``, computed directly
    (no Gram matrix: O(n d)) in blocks of rows that stay in cache; 0 for row ``r``
    itself, ``+inf`` for rows holding inf/NaN when row ``r`` is finite.  ``None`` if a
    distance between finite rows overflows or row ``r`` is not finite (the caller then
    uses the scaled Gram matrix)."""
    B, n, d = z2.shape
    ref = z2[:, r, None, :]
    out = np.empty((B, n), dtype=z2.dtype)
    step = max(1, (1 << 17) // max(d, 1))  # ~1 MB of float64 per block
    with np.errstate(invalid="ignore", over="ignore"):
        for i0 in range(0, n, step):
            diff = z2[:, i0 : i0 + step] - ref
            out[:, i0 : i0 + step] = _vecdot(diff, diff)
    out[:, r] = 0.0
    bad = ~np.isfinite(out)
    if bad.any():
        if not np.isfinite(z2[:, r]).all() or np.isfinite(z2[bad]).all(axis=-1).any():
            return None
        out[bad] = np.inf
    return out

