"""Coordinate-wise rules: coordinate median, trimmed mean, mean around the median
(Meamed) and median of means.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import (
    AGGREGATORS,
    _check_int,
    _majority_max_f,
    _prepare,
    _rows_and_f,
    _shared_doc,
)
from ._gram import _dists, _robust_gram
from ._order import (
    _mean_around_center,
    _median_sorted,
    _sort_present,
    _sorted_rows,
    _take_row,
)
from ._geomed import geometric_median

__all__ = ["coordinate_median", "meamed", "median_of_means", "trimmed_mean"]


@AGGREGATORS.register("coordinate_median", "median")
@_shared_doc
def coordinate_median(z: Any, mask: Any = None) -> np.ndarray:
    """Coordinate-wise median of the participating rows.

    .. math:: \\mathrm{med}(z)_j = \\tfrac12\\big(z_{(\\lfloor (m_p-1)/2 \\rfloor), j}
        + z_{(\\lfloor m_p/2 \\rfloor), j}\\big)

    where :math:`z_{(k),j}` is the ``k``-th smallest (0-based) participating value of
    coordinate ``j``.  Infinite values are ordered normally (a coordinate whose two
    middle values are ``-inf`` and ``+inf`` gives NaN); it never raises on them.

    Parameters
    ----------
    {z_mask}

    {returns}

    Examples
    --------
    >>> z = np.array([[1.0, -5.0], [2.0, 0.0], [1e9, 1.0]])          # (n, d) = (3, 2)
    >>> coordinate_median(z)
    array([2., 0.])
    >>> coordinate_median(z, np.array([True, True, False]))          # mean of the middle two
    array([ 1.5, -2.5])
    """
    z, wts, m = _prepare(z, mask)
    srt = _sorted_rows(z, wts, mask is not None)
    lo = _take_row(srt, np.maximum((m - 1) // 2, 0))
    hi = _take_row(srt, m // 2)
    with np.errstate(invalid="ignore", over="ignore"):
        out = 0.5 * lo + 0.5 * hi
    if mask is not None:
        out = np.where((m > 0)[..., None], out, 0.0).astype(z.dtype, copy=False)
    return out


@AGGREGATORS.register("trimmed_mean", max_f=_majority_max_f)
@_shared_doc
def trimmed_mean(z: Any, mask: Any = None, *, f: int) -> np.ndarray:
    """Coordinate-wise trimmed mean: drop the ``f`` smallest and ``f`` largest values.

    .. math:: \\mathrm{tm}(z)_j = \\frac{1}{m_p - 2f} \\sum_{k=f}^{m_p-f-1} z_{(k), j}

    with :math:`z_{(k),j}` the ``k``-th smallest participating value of coordinate ``j``.
    With a mask, ``f`` is clipped per batch element to ``(m_p − 1) // 2`` so that at least
    one value remains (an element with few participants degrades towards the median).
    Infinite values never raise (``+inf`` and ``-inf`` both kept give NaN).

    Parameters
    ----------
    {z_mask}
    f : int
        Values trimmed per side per coordinate; requires ``0 <= f`` and ``2f < n``.

    {returns}

    Raises
    ------
    ValueError
        If ``f`` is not an integer with ``0 <= 2f < n``.
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    f = _check_int("f", f, "trimmed_mean")
    if 2 * f >= n:
        raise ValueError(
            f"trimmed_mean needs 0 <= f <= {(n - 1) // 2} (2f < n) for n = {n} rows; got f = {f}"
        )
    srt = _sorted_rows(z, wts, mask is not None)
    with np.errstate(invalid="ignore", over="ignore"):
        if mask is None:
            return srt[..., f : n - f, :].sum(axis=-2) / np.asarray(n - 2 * f, dtype=z.dtype)
        fe = np.minimum(f, np.maximum((m - 1) // 2, 0))
        k = np.arange(n)
        keep = (k >= fe[..., None]) & (k < (m - fe)[..., None])  # (..., n)
        tot = np.where(keep[..., None], srt, 0.0).sum(axis=-2)
        cnt = np.maximum(m - 2 * fe, 1).astype(z.dtype)[..., None]
        out = tot / cnt
    return np.where((m > 0)[..., None], out, 0.0).astype(z.dtype, copy=False)


# --------------------------------------------------------------------------------------
# Meamed


@AGGREGATORS.register("meamed", max_f=_majority_max_f)
@_shared_doc
def meamed(z: Any, mask: Any = None, *, f: int | None = None) -> np.ndarray:
    """Mean around the median (Meamed; Xie, Koyejo & Gupta, 2018).

    Per coordinate ``j``, the mean of the ``m_p − f`` participating values closest to the
    coordinate median:

    .. math:: \\mathrm{meamed}(z)_j = \\frac{1}{m_p - f} \\sum_{i \\in N_j} z_{ij},
        \\qquad N_j = \\text{the } m_p - f \\text{ indices of smallest }
        |z_{ij} - \\mathrm{med}_j|

    (``f = 0`` is the mean).  The ``m_p − f`` nearest values form a window of consecutive
    sorted values, found exactly with one sort per coordinate.  **Ties**: when values at
    the edge distance are more than the places left (a repeated value, or values on both
    sides of the median at the same distance — the two middle values always are), the
    output averages over every choice of the nearest values, i.e. the tied values share
    the remaining places equally (:func:`~byzsim.aggregators._order._mean_around_center`);
    it is then a function of the multiset of values and keeps ``meamed(−z) = −meamed(z)``.
    With ``k`` copies of one row (the sample-duplicating attack) this is the mean of the
    ``m_p − f`` nearest values counted with multiplicity.

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        Values discarded per coordinate, ``0 <= f <= (n − 1) // 2``; ``None``: the maximum
        ``(m_p − 1) // 2`` (then Meamed averages the ``⌈(m_p+1)/2⌉`` central values).

    {returns}

    References
    ----------
    C. Xie, O. Koyejo, I. Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018.
    """
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "meamed")
    srt = _sort_present(z2, present)
    cnt = np.maximum(m2, 1)  # an element with no participant: computed on NaN, zeroed by _finish
    k = np.maximum(cnt - fe, 1)
    med = _median_sorted(srt, cnt)
    with np.errstate(invalid="ignore"):
        out = _mean_around_center(srt, cnt, k, med)
    return finish(out)




# --------------------------------------------------------------------------------------
# median of means


@AGGREGATORS.register("median_of_means", "mom", max_f=_majority_max_f)
@_shared_doc
def median_of_means(
    z: Any,
    mask: Any = None,
    *,
    f: int | None = None,
    groups: int | None = None,
    median: str = "coordinate",
    seed: int = 0,
) -> np.ndarray:
    """Median of means: average disjoint groups of rows, then take a median of the group
    means (Nemirovsky & Yudin, 1983; Minsker, 2015).

    .. math:: \\bar z_g = \\frac{1}{|B_g|} \\sum_{i \\in B_g} z_i,\\qquad
        \\mathrm{MoM}(z) = \\mathrm{med}(\\bar z_1, \\dots, \\bar z_G),

    with ``G = groups`` (default ``2f + 1``, so that at most ``f`` groups can hold a
    Byzantine row and the clean ones are a majority; at most ``m_p``) groups of sizes
    ``⌊m_p/G⌋`` or ``⌈m_p/G⌉``.

    **Deterministic grouping.**  Aggregators are functions of the messages only, so the
    "random" partition comes from ``seed``: rows are ranked by their outlyingness
    ``o_i = Σ_{j∈P} ‖z_i − z_j‖²`` (so the groups depend on the multiset of rows, not on
    their order, and are invariant to translations, rotations and scalings), and rank
    ``r`` goes to group ``π(r) mod G`` for a fixed permutation ``π`` of ``range(m_p)``
    drawn from ``(seed, m_p)``: the most outlying rows are spread over the groups
    pseudo-randomly.  Rows holding inf/NaN rank last.  For a fresh random partition every round use the
    ``bucketing`` pre-aggregator (it draws from the run's generator) followed by
    ``coordinate_median`` or ``geometric_median``.

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        Assumed Byzantine rows, sets the default ``groups = 2f + 1``;
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2`` (then every group has one
        row and MoM is the plain median).
    groups : int or None, default None
        Number of groups ``G >= 1`` (clipped to ``m_p``).
    median : {"coordinate", "geometric"}, default "coordinate"
        The median of the group means.
    seed : int, default 0
        Seed of ``π``.

    {returns}

    References
    ----------
    A. Nemirovsky, D. Yudin, "Problem Complexity and Method Efficiency in Optimization",
    1983; S. Minsker, "Geometric median and robust estimation in Banach spaces",
    Bernoulli 2015; used for Byzantine SGD by Y. Chen, L. Su, J. Xu, "Distributed
    Statistical Machine Learning in Adversarial Settings", 2017.
    """
    if median not in ("coordinate", "geometric"):
        raise ValueError(f"median_of_means: median must be 'coordinate' or 'geometric', got {median!r}")
    seed = _check_int("seed", seed, "median_of_means")
    if groups is not None:
        groups = _check_int("groups", groups, "median_of_means")
        if groups < 1:
            raise ValueError(f"median_of_means needs groups >= 1, got groups = {groups}")
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "median_of_means")
    n = z2.shape[-2]
    B = z2.shape[0]
    G = np.minimum(groups if groups is not None else 2 * fe + 1, np.maximum(m2, 1))
    finite = np.isfinite(z2).all(-1)
    zf = z2 if finite.all() else np.where(finite[:, :, None], z2, 0)
    _, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    o = np.where(np.isfinite(d2), d2, 0.0).sum(-1)  # outlyingness Σ_j ‖z_i − z_j‖²
    key = np.where(present, np.where(ok, o, np.finfo(o.dtype).max), np.inf)
    order = np.argsort(key, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    pos = np.zeros_like(rank)
    for mp in np.unique(m2):
        if mp == 0:
            continue
        pi = np.random.default_rng([seed, int(mp)]).permutation(int(mp))
        sel = m2 == mp
        pos[sel] = np.where(rank[sel] < mp, pi[np.minimum(rank[sel], mp - 1)], 0)
    grp = pos % G[:, None]
    gmax = int(G.max()) if B else 1
    W = (grp[:, None, :] == np.arange(gmax)[None, :, None]) & present[:, None, :]  # (B, g, n)
    cnt = W.sum(-1)
    Wf = W.astype(z2.dtype) / np.maximum(cnt, 1).astype(z2.dtype)[:, :, None]
    means = Wf @ zf
    if not finite.all():  # groups holding a non-finite row get their true (non-finite) mean
        dirty = (W & ~finite[:, None, :]).any(-1)
        with np.errstate(invalid="ignore", over="ignore"):
            exact = np.where(W[..., None], z2[:, None, :, :], 0).sum(2) / np.maximum(cnt, 1)[..., None]
        means = np.where(dirty[..., None], exact, means)
    gmask = cnt > 0
    inner = coordinate_median if median == "coordinate" else geometric_median
    out = inner(means, gmask)
    return finish(out)


