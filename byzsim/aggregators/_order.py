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
    """Per coordinate, the mean of the ``k`` values closest to ``center``.

    ``srt (B, n, d)``: values sorted along the row axis, the ``cnt (B,)`` valid ones first
    (the rest NaN); ``k (B,)`` with ``1 <= k <= cnt``; ``center (B, d)`` between the
    smallest and largest valid value.  The ``k`` nearest values form a window of
    consecutive sorted values; the window start ``i ∈ [0, cnt − k]`` minimizes
    ``max(center − s_i, s_{i+k−1} − center)`` (first minimum on ties).  The window sum is
    exact (no prefix-sum cancellation against far outliers outside the window).
    """
    B, n, d = srt.shape
    if B and np.all(cnt == cnt[0]) and np.all(k == k[0]):
        return _mean_around_center_uniform(srt, int(cnt[0]), int(k[0]), center)
    S = int(np.max(cnt - k)) + 1 if B else 1
    starts = np.arange(S)
    lo = srt[:, :S, :]
    hi_idx = np.minimum(starts[None, :] + (k - 1)[:, None], n - 1)  # (B, S)
    hi = np.take_along_axis(srt, hi_idx[:, :, None], axis=1)
    with np.errstate(invalid="ignore"):
        dev = np.maximum(center[:, None, :] - lo, hi - center[:, None, :])
    dev = np.where(np.isnan(dev), np.inf, dev)
    valid = starts[None, :] <= (cnt - k)[:, None]
    dev = np.where(valid[:, :, None], dev, np.inf)
    best = np.argmin(dev, axis=1)  # (B, d)
    r = np.arange(n)[None, :, None]
    keep = (r >= best[:, None, :]) & (r < (best + k[:, None])[:, None, :])
    with np.errstate(invalid="ignore", over="ignore"):
        tot = np.where(keep, srt, 0.0).sum(axis=1)
    return tot / np.maximum(k, 1).astype(srt.dtype)[:, None]


def _mean_around_center_uniform(srt: np.ndarray, cnt: int, k: int, center: np.ndarray) -> np.ndarray:
    """:func:`_mean_around_center` when every batch element has the same ``cnt`` and
    ``k`` (``S = cnt − k + 1`` candidate starts).  If ``k >= S``, the window always
    contains the core rows ``[S − 1, k)``, so its sum is the core sum plus a suffix of the
    ``S − 1`` rows before it and a prefix of the ``S − 1`` rows after it; otherwise the
    ``k`` rows of the window are gathered one offset at a time."""
    S = cnt - k + 1
    with np.errstate(invalid="ignore", over="ignore"):
        if S == 1:
            return srt[:, :k, :].sum(axis=1) / np.asarray(k, dtype=srt.dtype)
        lo = srt[:, :S, :]
        hi = srt[:, k - 1 : k - 1 + S, :]
        c = center[:, None, :]
        dev = np.maximum(c - lo, hi - c)
        if np.isnan(dev).any():
            dev = np.where(np.isnan(dev), np.inf, dev)
        best = np.argmin(dev, axis=1)[:, None, :]  # (B, 1, d) in [0, S)
        if k < S:
            tot = np.take_along_axis(srt, best, 1)[:, 0]
            for j in range(1, k):
                tot += np.take_along_axis(srt, best + j, 1)[:, 0]
            return tot / np.asarray(k, dtype=srt.dtype)
        core = srt[:, S - 1 : k, :].sum(axis=1)
        left = srt[:, : S - 1, :]
        right = srt[:, k : k + S - 1, :]
        # suffix sums of the left block (rows best .. S-2) and prefix sums of the right
        # block (rows k .. k+best-1); a zero row appended for best = S-1 / best = 0
        zero = np.zeros_like(core)[:, None, :]
        suf = np.concatenate([np.cumsum(left[:, ::-1], axis=1)[:, ::-1], zero], axis=1)
        pre = np.concatenate([zero, np.cumsum(right, axis=1)], axis=1)
        tot = core + np.take_along_axis(suf, best, 1)[:, 0] + np.take_along_axis(pre, best, 1)[:, 0]
    return tot / np.asarray(k, dtype=srt.dtype)


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
