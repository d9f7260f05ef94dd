"""Centered clipping.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import (
    AGGREGATORS,
    _check_int,
    _finish,
    _flatten,
    _matvec,
    _prepare,
    _vecdot,
    _vecmat,
)
from ._gram import _medoid, _pow2_exponent, _safe_exp
from ._order import _masked_median_1d
from ._mean import mean
from ._median import coordinate_median

__all__ = ["centered_clipping"]


@AGGREGATORS.register("centered_clipping", "cc")
def centered_clipping(
    z: Any, mask: Any = None, *, tau: float | None = None, iterations: int = 3, init: str = "medoid"
) -> np.ndarray:
    """Centered clipping (Karimireddy, He & Jaggi, 2021).

    Starting at ``v_0`` (by default the *medoid*: the participating row with the smallest
    sum of squared distances to its ``⌊m_p/2⌋`` nearest others), ``L = iterations`` times

    .. math:: v_{l+1} = v_l + \\frac{1}{m_p} \\sum_{i \\in P} (z_i - v_l)
        \\min\\Big(1, \\frac{\\tau}{\\lVert z_i - v_l \\rVert}\\Big).

    The paper starts at the previous round's aggregate (a momentum state) and uses
    ``L = 1``; aggregators here are stateless functions of the round's messages, so the
    start is a robust estimate of the same round (translation equivariant).  A row
    holding inf/NaN contributes 0 (clipping it has no defined direction).  Distances to
    the iterate are computed relative to ``v_0``: one matrix-vector product per
    iteration (in units of ``2^k``, exact, when squared distances would overflow or
    underflow; messages of tiny scale, ``max |z_ij| < 2^-500`` in float64, are scaled
    by a power of two before anything else), so the rule is scale equivariant from
    ``1e-300`` to ``1e300``.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    tau : float or None, default None
        Clipping radius (absolute, units of the messages).  ``None``: the median over
        participants of ``‖z_i − v_0‖`` (data-driven; makes the rule scale equivariant).
    iterations : int, default 3
        Number of clipping iterations ``L`` (``0`` returns ``v_0``).
    init : {"medoid", "median", "mean"}, default "medoid"
        Starting point ``v_0``: the medoid (rotation equivariant, robust), the coordinate
        median, or the mean (not robust).

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021.
    """
    if tau is not None and not (np.isfinite(tau) and tau >= 0):
        raise ValueError(f"centered_clipping: tau must be >= 0 or None, got tau = {tau!r}")
    iterations = _check_int("iterations", iterations, "centered_clipping")
    if init not in ("medoid", "median", "mean"):
        raise ValueError(
            f"centered_clipping: init must be 'medoid', 'median' or 'mean', got {init!r}"
        )
    z, wts, m = _prepare(z, mask)
    z2, present, m2, lead = _flatten(z, wts, m)
    E = _safe_exp(z2.dtype)
    # messages of tiny scale (max |z_ij| < 2^-E, e.g. 1e-160): their Gram entries and
    # squared distances underflow.  Work on 2^-s z (a power of two: exact, so the rule
    # stays exactly scale equivariant) and scale the result back.
    s = _tiny_exponent(z2 if mask is None else np.where(present[:, :, None], z2, 0.0), E)
    if s is not None:
        z2 = np.ldexp(z2, -s[:, None, None])
    if init == "medoid":
        v0 = _medoid(z2, present)
    else:
        sub = None if mask is None else present
        v0 = coordinate_median(z2, sub) if init == "median" else mean(z2, sub)
    # work relative to v0: zc = z − v0 (rows near the bulk are small, so the distances
    # ‖zc_i − u‖² = ‖zc_i‖² − 2⟨zc_i, u⟩ + ‖u‖² below have ε_mach relative accuracy)
    with np.errstate(invalid="ignore", over="ignore"):
        zc = z2 - v0[:, None, :]
    finite = np.isfinite(zc).all(axis=-1)
    use = present & finite
    if not use.all():
        zc = np.where(use[:, :, None], zc, 0.0)
    with np.errstate(over="ignore", under="ignore"):
        rn2 = _vecdot(zc, zc)
    # squared distances that overflow (rows far from v0) or underflow (every row within
    # ~2^-E of v0): work in units of 2^k (exact): the largest ‖zc_i‖ becomes <= 2^E
    # (overflow) or <= 1 (underflow)
    k = None
    top = rn2.max(axis=-1)
    if not ((top <= 2.0 ** (2 * E)) & (top >= 2.0 ** (-2 * E))).all():
        k = _pow2_exponent(zc)  # > 0 where rows overflow
        kt = _tiny_exponent(zc, E)
        if kt is not None:
            k = np.where(k > 0, k, kt)
        zc = np.ldexp(zc, -k[:, None, None])
        rn2 = _vecdot(zc, zc)
    w = use.astype(z2.dtype) / np.maximum(m2, 1).astype(z2.dtype)[:, None]
    u = np.zeros_like(v0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if tau is None:
            t = _masked_median_1d(np.where(use, np.sqrt(rn2), np.inf), present, m2)
        else:
            t = np.full(z2.shape[0], float(tau), dtype=z2.dtype)
            shift = (0 if s is None else s) + (0 if k is None else k)
            t = np.ldexp(t, -np.asarray(shift)).astype(z2.dtype, copy=False)
        for _ in range(iterations):
            zu = _matvec(zc, u)
            nrm = np.sqrt(np.maximum(rn2 - 2.0 * zu + _vecdot(u, u)[:, None], 0.0))
            scale = np.where(nrm > t[:, None], t[:, None] / nrm, 1.0) * w
            # u += Σ_i s_i (zc_i − u)
            u = u + _vecmat(scale, zc) - scale.sum(axis=-1)[:, None] * u
    if k is not None:
        u = np.ldexp(u, k[:, None]).astype(z2.dtype, copy=False)
    out = v0 + u
    if s is not None:
        out = np.ldexp(out, s[:, None]).astype(z2.dtype, copy=False)
    return _finish(out, m2, lead, z.dtype)


def _tiny_exponent(z: np.ndarray, E: int) -> np.ndarray | None:
    """Per batch element of ``z (B, n, d)``, ``s < 0`` such that ``2^-s z`` has entries
    of magnitude below 1 and at least 1/2 where ``0 < max |z_ij| < 2^-E`` (NaN ignored),
    else 0; ``None`` when no element is that small (the common case)."""
    if z.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        amax = np.maximum(np.fmax.reduce(z, axis=(1, 2)), -np.fmin.reduce(z, axis=(1, 2)))
    small = (amax > 0) & (amax < 2.0 ** -E)
    if not small.any():
        return None
    return np.where(small, np.frexp(amax)[1], 0).astype(np.int64)
