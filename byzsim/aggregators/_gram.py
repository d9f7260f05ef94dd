"""Distances through the Gram matrix: centering, finite (overflow-safe) Gram
matrices, re-centering thresholds, anchors and squared distances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import _matvec, _prepare, _quiet_if, _vecdot, _vecmat

__all__ = ["gram_sq_distances"]


# The Gram matrix is recomputed centered at the current answer when ρ = (offset of the
# answer from the center)² / (its typical squared distance to the nearby rows) is large:
# the roundoff of those distances is ~ ε_mach·ρ relative, and re-centering removes the
# factor ρ.  Condition: ρ > max(_MIN_GAIN, rel / ε_mach), rel = _GEOMED_REL·tol or _KRUM_REL.
_MIN_GAIN = 100.0
_GEOMED_REL = 1e-3
_KRUM_REL = 1e-10
_MAX_RECENTER = 8  # per batch element and geometric_median call


def _recenter_threshold(dtype: np.dtype, rel: float) -> float:
    return max(_MIN_GAIN, rel / np.finfo(dtype).eps)


def _center(z: np.ndarray, wts: np.ndarray, m: np.ndarray, masked: bool):
    """Masked mean ``c = Σ_P z_i / m_p`` (zeros when ``m_p = 0``).

    Absent rows enter with weight 0; if that makes ``c`` non-finite (an absent row holds
    inf/nan, since 0·inf = nan), the absent rows are zeroed (one copy) and ``c`` is
    recomputed.  Returns ``(z_used, c)``; use ``z_used`` downstream.
    """
    den = np.maximum(m, 1).astype(z.dtype)[..., None]
    with _quiet_if(masked):
        c = _vecmat(wts, z) / den
    if masked and not np.isfinite(c).all():
        z = np.where(wts[..., None] > 0, z, 0)
        c = _vecmat(wts, z) / den
    return z, c


def _gram(z: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    """``(Z − c)(Z − c)ᵀ`` (``c = None``: ``Z Zᵀ``), shape ``(..., n, n)``, exactly
    symmetric."""
    zc = z if c is None else z - c[..., None, :]
    g = zc @ np.swapaxes(zc, -1, -2)
    return 0.5 * (g + np.swapaxes(g, -1, -2))


def _safe_exp(dtype: np.dtype) -> int:
    """``E`` such that rows of norm ``<= 2^E`` give Gram entries, squared distances and
    sums of up to ``2^22`` of them far below overflow (500 for float64, 52 for float32)."""
    return (np.finfo(dtype).maxexp - 24) // 2


def _mix_gram(g: np.ndarray, mix: np.ndarray | None):
    """Gram matrix of the mixed rows ``A Z`` from that of ``Z``, and the spread of the
    rows mixed into each.

    ``g = (Z − c)(Z − c)ᵀ (..., n, n)``.  Returns ``(A G Aᵀ, var)``: ``(..., m, m)``,
    exactly symmetric — still centered at ``c``, since the rows of ``A`` sum to 1
    (``A(Z − 1cᵀ) = AZ − 1cᵀ``) — and ``var (..., m)``,
    ``var_i = Σ_k A_ik ‖z_k − c‖² − ‖(AZ)_i − c‖² = Σ_k A_ik ‖z_k − (AZ)_i‖²`` (clipped
    at 0; the same for every ``c``, computed most accurately with ``c`` near the rows).
    Entry ``i`` of ``A G Aᵀ`` is a sum of products of the ``‖z_k − c‖``, so distances
    from it carry an absolute roundoff ``~ ε_mach (‖(AZ)_i − c‖² + var_i)``: ``var_i``
    is the part that re-centering cannot remove (rows far apart whose mix is close to
    ``c``).  ``mix = None``: ``(g, None)``.
    """
    if mix is None:
        return g, None
    h = mix @ g @ np.swapaxes(mix, -1, -2)
    h = 0.5 * (h + np.swapaxes(h, -1, -2))
    var = _matvec(mix, np.diagonal(g, axis1=-2, axis2=-1)) - np.diagonal(h, axis1=-2, axis2=-1)
    return h, np.maximum(var, 0.0)


def _unmix(w: np.ndarray, mix: np.ndarray | None) -> np.ndarray:
    """Weights ``w (..., m)`` of the mixed rows as weights of the rows of ``Z``:
    ``wᵀ(AZ) = (Aᵀw)ᵀZ``, shape ``(..., n)`` (``mix = None``: ``w`` itself)."""
    return w if mix is None else _vecmat(w, mix)


def _finite_gram(z: np.ndarray, present: np.ndarray, mix: np.ndarray | None = None):
    """First-pass Gram matrix ``Z Zᵀ`` that survives rows holding inf/NaN and rows so
    large that their squared norm overflows (``>~ 1e154`` in float64).

    Returns ``(zo, zs, g, ok, k)``.

    * Fast path — every squared row norm is at most ``2^(2E)`` (:func:`_safe_exp`; a
      NaN or inf row fails this too): ``zo = zs = z``, ``g = Z Zᵀ``, ``ok = present``,
      ``k = None``.  The check reads the diagonal of ``g`` only (no pass over ``z``).
    * Otherwise rows holding inf/NaN are *infinitely far* from every other row:
      ``ok = present & finite``.  ``zo`` is ``z`` with the rows not ``ok`` zeroed (one
      copy); ``zs = 2^-k zo`` with, per batch element, the smallest integer ``k >= 0``
      that brings every row norm below ``2^E`` (a power of two: exact, unless rows
      ``~2^-1000`` times smaller than the largest one underflow); ``g = Zs Zsᵀ``.
      Distances from ``g`` are then ``4^-k`` times the true ones: comparisons and
      ratios are unchanged, absolute quantities (a smoothing ``eps``) must be scaled
      by ``2^-k`` as well.

    With ``mix`` (``A (..., m, n)``, rows summing to 1), ``present`` and ``ok`` refer to
    the *mixed* rows ``A Z`` (``(..., m)``) while ``g`` stays the Gram matrix of ``zs``
    (:func:`_mix_gram` mixes it).  A mixed row with nonzero weight on a non-finite row
    of ``z`` is not ``ok``, and ``zo``/``zs`` zero the rows of ``z`` that no ``ok``
    mixed row uses (for ``A = I`` exactly the rows not ``ok``).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        g = _gram(z, None)
    safe = np.diagonal(g, axis1=-2, axis2=-1) <= 2.0 ** (2 * _safe_exp(z.dtype))
    if safe.all():
        return z, z, g, present, None
    finite = np.isfinite(z).all(axis=-1)
    if mix is None:
        ok = used = present & finite
    else:
        nz = mix != 0
        ok = present & ~(nz & ~finite[..., None, :]).any(axis=-1)
        used = finite & (nz & ok[..., :, None]).any(axis=-2)
    zo = z.copy()
    zo[~used] = 0
    if (safe | ~used).all():  # only unused rows were in the way: zero them in g (exact)
        g = np.where(used[..., :, None] & used[..., None, :], g, 0.0).astype(z.dtype, copy=False)
        return zo, zo, g, ok, np.zeros(z.shape[:-2], dtype=np.int64)
    k = _pow2_exponent(zo)
    zs = zo * np.ldexp(np.ones((), z.dtype), -k)[..., None, None]  # a power of two: exact
    return zo, zs, _gram(zs, None), ok, k


def _pow2_exponent(z: np.ndarray) -> np.ndarray:
    """Per batch element of finite ``z (..., n, d)``, the smallest integer ``k >= 0`` such
    that every row of ``2^-k z`` has norm ``<= 2^E`` (:func:`_safe_exp`)."""
    k = np.zeros(z.shape[:-2], dtype=np.int64)
    if z.shape[-1] and z.shape[-2] and z.size:
        amax = np.maximum(z.max(axis=(-2, -1)), -z.min(axis=(-2, -1)))
        # ‖z_i‖ <= √d · max|z_ij| < 2^(e + ⌈log2(d)/2⌉) with max|z_ij| < 2^e
        e = np.frexp(amax)[1].astype(np.int64) + int(np.ceil(0.5 * np.log2(z.shape[-1])))
        k = np.maximum(e - _safe_exp(z.dtype), 0)
    return k


def _sq_dists_from_gram(g: np.ndarray) -> np.ndarray:
    diag = np.diagonal(g, axis1=-2, axis2=-1)
    d2 = diag[..., :, None] + diag[..., None, :] - 2.0 * g
    np.maximum(d2, 0.0, out=d2)
    return d2  # the diagonal is exactly 0: G_ii + G_ii - 2 G_ii (G symmetric)


def gram_sq_distances(z: Any) -> np.ndarray:
    """Pairwise squared Euclidean distances through the Gram matrix of centered rows.

    .. math::
        c = \\tfrac1n \\sum_i z_i,\\quad G = (Z - c)(Z - c)^\\top,\\quad
        D_{ij} = \\max(G_{ii} + G_{jj} - 2 G_{ij},\\, 0),\\quad D_{ii} = 0.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``

    Returns
    -------
    D : ndarray, shape ``(..., n, n)``
        Symmetric, non-negative, zero diagonal.  Absolute error about
        ``ε_mach · max_i ‖z_i − c‖²`` (centering removes any common offset of the rows).
    """
    z, _, _ = _prepare(z, None)
    c = z.mean(axis=-2)
    return _sq_dists_from_gram(_gram(z, c))


def _krum_scores_from(d2: np.ndarray, wts: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Scores ``(..., n)``: sum of the ``k`` smallest distances to other present rows;
    absent rows score +inf."""
    n = d2.shape[-1]
    present = wts > 0
    other = present[..., None, :] & ~np.eye(n, dtype=bool)
    srt = np.sort(np.where(other, d2, np.inf), axis=-1)
    take = np.arange(n) < k[..., None, None]
    scores = np.where(take, srt, 0.0).sum(axis=-1)
    return np.where(present, scores, np.inf)


def _robust_gram(z: np.ndarray, present: np.ndarray):
    """Gram matrix of ``z (B, n, d)`` centered at an anchor row near the bulk.

    Returns ``(zc, g, ok)``: ``ok = present & finite``; ``zc`` is ``z``, or, if some row
    is non-finite or too large for a Gram matrix, a copy with the rows not ``ok`` zeroed;
    ``g = (Zs − c)(Zs − c)ᵀ`` ``(B, n, n)`` where ``Zs = 2^-k Zc`` (``k = 0`` unless a
    row norm exceeds ~1e150, see :func:`_finite_gram`: distances from ``g`` are then
    scaled by ``4^-k``, which comparisons and ratios do not see).
    """
    z, zs, g, ok, _ = _finite_gram(z, present)
    d2 = _sq_dists_from_gram(g)
    mo = ok.sum(axis=-1)
    k = np.minimum(np.maximum(mo // 2, 1), np.maximum(mo - 1, 0))
    scores = _krum_scores_from(d2, ok.astype(z.dtype), k)
    best = np.argmin(scores, axis=-1)
    rows = np.arange(z.shape[0])
    off2 = np.diagonal(g, axis1=-2, axis2=-1)[rows, best]
    sbest = scores[rows, best]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = off2 * k / sbest
    redo = (mo > 1) & (rho > _MIN_GAIN)
    if redo.any():
        g2 = _gram(zs, zs[rows, best])
        g = g2 if redo.all() else np.where(redo[:, None, None], g2, g)
    return z, g, ok


def _medoid(z: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The participating finite row with the smallest sum of squared distances to its
    ``⌊m/2⌋`` nearest others (ties: smaller total squared distance, then lower index),
    ``(B, d)``; zeros for elements without such a row."""
    zc, g, ok = _robust_gram(z, present)
    d2 = _dists(g, ok)
    mo = ok.sum(-1)
    k = np.minimum(np.maximum(mo // 2, 1), np.maximum(mo - 1, 0))
    scores = _krum_scores_from(d2, ok.astype(z.dtype), k)
    tied = scores == scores.min(axis=-1, keepdims=True)
    total = np.where(np.isfinite(d2), d2, 0.0).sum(-1)
    best = np.argmin(np.where(tied & ok, total, np.inf), axis=-1)
    out = zc[np.arange(z.shape[0]), best]
    return np.where((mo > 0)[:, None], out, 0.0)


def _dists(g: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Squared distances from a Gram matrix; +inf for any pair with a row not ``ok``
    (absent or non-finite), 0 on the diagonal."""
    d2 = _sq_dists_from_gram(g)
    pair = ok[:, :, None] & ok[:, None, :]
    d2 = np.where(pair, d2, np.inf)
    n = d2.shape[-1]
    d2[:, np.arange(n), np.arange(n)] = 0.0
    return d2


# --------------------------------------------------------------------------------------
# CAF


def _double_center(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(Z − μ)(Z − μ)ᵀ`` with ``μ = wᵀZ`` (``Σ w = 1``) from any centered Gram ``g``."""
    gw = _matvec(g, w)
    wgw = _vecdot(w, gw)
    return g - gw[:, :, None] - gw[:, None, :] + wgw[:, None, None]
