"""Order statistics over rows: sorted rows with absent rows last, medians, and
windows of values around a center.
"""

from __future__ import annotations


import numpy as np

__all__ = []


# --------------------------------------------------------------------------------------
# order statistics


def _sorted_rows(z: np.ndarray, wts: np.ndarray, masked: bool) -> np.ndarray:
    """Values sorted along the row axis; absent rows become NaN and sort last."""
    if masked:
        z = np.where(wts[..., None] > 0, z, np.nan)
        z.sort(axis=-2)
        return z
    return np.sort(z, axis=-2)


def _take_row(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[..., idx[...], :]`` for ``a (..., n, d)``, ``idx (...,)`` -> ``(..., d)``."""
    return np.take_along_axis(a, idx[..., None, None], axis=-2)[..., 0, :]


def _mean_around_center(srt: np.ndarray, cnt: np.ndarray, k: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Per coordinate, the mean of the ``k`` values nearest to ``center``; values tied at
    the edge of that set share its remaining places equally.

    ``srt (B, n, d)``: values sorted along the row axis, the ``cnt (B,)`` valid ones first
    (the rest NaN); ``k (B,)`` with ``1 <= k <= cnt``; ``center (B, d)``.  With
    ``δ_i = |s_i − c|`` and ``δ*`` the ``k``-th smallest of them (the radius of the
    ``k`` nearest values), ``I = {i: δ_i < δ*}`` (``a = |I| < k`` values, all kept) and
    ``T = {i: δ_i = δ*}`` (``t >= k − a`` values competing for the ``k − a`` remaining
    places):

    .. math:: \\mathrm{out} = \\frac1k\\Big(\\sum_{i\\in I} s_i
        + \\frac{k - a}{t} \\sum_{i \\in T} s_i\\Big),

    the average of the means of all ``C(t, k − a)`` choices of ``k`` nearest values.
    Every choice has the same multiset of distances, but not the same mean when ``T``
    holds values on both sides of the center (``c − δ*`` and ``c + δ*``); averaging over
    the choices makes the result a function of the multiset of values (no order, no
    "first window" on ties) that keeps ``agg(−z) = −agg(z)``.  When ``T`` holds copies
    of one value (a duplicated row) every choice has the same mean and this is it.

    **Ties in floating point.**  ``T`` is defined in exact arithmetic, where ties are
    common: the two middle values are always equidistant from the median (their
    midpoint), and so are their copies.  Computed distances carry the rounding of the
    center and of ``s_i − c`` (at most ``ε_mach (|c| + |s_i|)`` together, and
    ``|s_i| <= |c| + δ_i``), so a distance counts as equal to ``δ*`` when
    ``|δ_i − δ*| <= 8 ε_mach (|c| + δ*)``; without this the output jumps with the last
    bit of the center (e.g. under a translation).  Distinct values within that band of
    the edge would also count as tied; they are a few ulps apart at most.

    ``δ*`` is the smallest over the windows ``[i, i + k − 1]`` of consecutive sorted
    values of ``max(c − s_i, s_{i+k−1} − c)`` (the ``k`` nearest values form such a
    window, and every window holds ``k`` values within its own maximum); that
    maximum is one of the computed ``δ_i`` bit for bit.
    The sums are over the kept values only (no prefix-sum cancellation against far
    outliers).  Cost O(n d) after the sort.
    """
    delta = _kth_distance(srt, cnt, k, center)[:, None, :]
    with np.errstate(invalid="ignore", over="ignore"):
        c = center[:, None, :]
        dist = srt - c
        np.abs(dist, out=dist)
        # distances equal up to their rounding (and the center's) are tied
        tol = (2 * _TIE_ULPS * np.finfo(srt.dtype).eps) * (np.abs(c) + delta)  # (B, 1, d)
        tol[~np.isfinite(tol)] = 0.0  # an infinite edge (non-finite values kept): exact
        inner = dist < delta - tol
        edge = dist <= delta + tol
        edge &= ~inner
        a = np.count_nonzero(inner, axis=1)
        t = np.count_nonzero(edge, axis=1)
        s_in = np.where(inner, srt, 0.0).sum(axis=1)
        s_edge = np.where(edge, srt, 0.0).sum(axis=1)
        kf = np.maximum(k, 1).astype(srt.dtype)[:, None]
        if np.all(t == 1):  # no tie at the edge (continuous data): one value, weight 1
            return (s_in + s_edge) / kf
        share = (kf - a) / np.maximum(t, 1)
        return (s_in + share * s_edge) / kf


#: Distances within 2·_TIE_ULPS·ε_mach·(|c| + δ*) of the edge distance δ* are tied
#: (see :func:`_mean_around_center`).
_TIE_ULPS = 4


def _kth_distance(srt: np.ndarray, cnt: np.ndarray, k: np.ndarray, center: np.ndarray) -> np.ndarray:
    """``(B, d)``: the ``k``-th smallest ``|s_i − c|`` over the ``cnt`` valid values of
    ``srt (B, n, d)`` (sorted, NaN last), as the smallest window maximum (see
    :func:`_mean_around_center`)."""
    B, n, d = srt.shape
    c = center[:, None, :]
    with np.errstate(invalid="ignore", over="ignore"):
        if B and np.all(cnt == cnt[0]) and np.all(k == k[0]):
            S, k0 = int(cnt[0] - k[0]) + 1, int(k[0])
            dev = np.maximum(c - srt[:, :S, :], srt[:, k0 - 1 : k0 - 1 + S, :] - c)
        else:
            S = int(np.max(cnt - k)) + 1 if B else 1
            starts = np.arange(S)
            hi_idx = np.minimum(starts[None, :] + (k - 1)[:, None], n - 1)  # (B, S)
            hi = np.take_along_axis(srt, hi_idx[:, :, None], axis=1)
            dev = np.maximum(c - srt[:, :S, :], hi - c)
            valid = starts[None, :] <= (cnt - k)[:, None]
            dev = np.where(valid[:, :, None], dev, np.inf)
        if np.isnan(dev).any():
            dev = np.where(np.isnan(dev), np.inf, dev)
    return dev.min(axis=1)


def _median_sorted(srt: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Median of the first ``cnt`` values of ``srt (B, n, d)`` along axis 1."""
    lo = _take_row(srt, np.maximum((cnt - 1) // 2, 0))
    hi = _take_row(srt, np.maximum(cnt // 2, 0) if srt.shape[1] else cnt)
    with np.errstate(invalid="ignore", over="ignore"):
        return 0.5 * lo + 0.5 * hi


def _sort_present(z: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``z (B, n, d)`` sorted along rows with absent rows as NaN (last)."""
    if present.all():
        return np.sort(z, axis=1)
    s = np.where(present[:, :, None], z, np.nan)
    s.sort(axis=1)
    return s


# --------------------------------------------------------------------------------------
# centered clipping


def _masked_median_1d(x: np.ndarray, present: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Median over the last axis of the ``present`` entries (``x (B, n)``)."""
    s = np.sort(np.where(present, x, np.inf), axis=-1)
    lo = np.take_along_axis(s, np.maximum((cnt - 1) // 2, 0)[:, None], -1)[:, 0]
    hi = np.take_along_axis(s, np.minimum(cnt // 2, s.shape[-1] - 1)[:, None], -1)[:, 0]
    with np.errstate(invalid="ignore"):
        return 0.5 * lo + 0.5 * hi
