"""Robust aggregators: pure functions ``(..., n, d) -> (..., d)`` in a registry.

Contract
--------
Every aggregator has the signature ``agg(z, mask=None, **keyword_only_params)``.

``z`` : array_like, shape ``(..., n, d)``
    ``n`` messages (rows) of dimension ``d``; any number of leading batch axes.
    Integer input is promoted to float64; float32 stays float32.  ``z`` is never
    modified and the result never aliases it.
``mask`` : None or bool array, shape ``(n,)`` or ``(..., n)``
    Must broadcast to ``z.shape[:-1]`` (without adding axes).  Only rows with ``True``
    take part (partial participation); ``None`` means all rows.  Shapes never change:
    weight-based rules (mean, Weiszfeld, Krum's average) give absent rows weight 0,
    order statistics (median, trimmed mean) fill them with NaN, which sorts last, and
    pick order statistics by the per-element count.  Absent rows have no influence
    whatever they contain (finite or not).  Write ``P`` for the participating rows and
    ``m_p = |P|`` (per batch element).  **A batch element with no participating row
    returns zeros.**
returns : ndarray, shape ``(..., d)``

Parameters that depend on ``n`` (``f``, ``m``) are validated at call time with a
``ValueError`` naming the value and the valid range.  :func:`get_aggregator` binds
parameters by name through :func:`byzsim.registry.bind_parameters`, so unknown or missing
parameters fail before any work is done.

Distances through the Gram matrix
---------------------------------
Krum's pairwise distances and the Weiszfeld iteration of the geometric median use
``G = (Z − c)(Z − c)ᵀ``: one ``n²d`` matrix product, after which every distance is
O(1), ``‖z_i − z_j‖² = G_ii + G_jj − 2 G_ij``.  The roundoff of such a distance is about
``ε_mach (‖z_i − c‖ + ‖z_j − c‖)²``, so it is accurate for the rows that matter only if
``c`` is near them.  A first pass uses ``c = 0`` (no ``(n, d)`` temporary; messages such
as gradients scatter around the origin, whereas the mean is dragged away by far Byzantine
rows).  When the first answer lies far from ``c`` compared with the distances around it
(ratio of squares ``ρ > max(100, rel / ε_mach)``), ``G`` is recomputed centered at that
answer, which makes the distances near it accurate to ``ε_mach`` relative, whatever the
scale of the other rows (e.g. honest rows ~1e-3 around an offset, Byzantine rows ~1e4).
:func:`gram_sq_distances` (public) centers at the mean of the rows.

Adding an aggregator::

    @AGGREGATORS.register("my_rule")
    def my_rule(z, mask=None, *, p=1.0): ...
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Callable

import numpy as np

from .registry import Registry, bind_parameters

__all__ = [
    "AGGREGATORS",
    "coordinate_median",
    "geometric_median",
    "get_aggregator",
    "gram_sq_distances",
    "krum",
    "mean",
    "multi_krum",
    "trimmed_mean",
]

AGGREGATORS: Registry = Registry("aggregator")

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


def get_aggregator(name: str, **params: Any) -> Callable:
    """The aggregator registered as ``name`` with keyword parameters bound.

    Parameters
    ----------
    name : str
        A name in ``AGGREGATORS`` (see ``AGGREGATORS.names()``).
    **params
        Keyword-only parameters of that aggregator (e.g. ``f=2`` for Krum).

    Returns
    -------
    callable ``agg(z, mask=None) -> (..., d)``

    Raises
    ------
    UnknownNameError
        (a ``ValueError`` and ``KeyError``) if ``name`` is not registered; the message
        lists the valid names.
    ValueError
        If a parameter is unknown (the message lists the valid ones), a required one is
        missing, or ``f``/``m`` is not a non-negative integer.
    """
    fn = AGGREGATORS[name]
    bound = bind_parameters("aggregator", name, fn, params)
    for key in ("f", "m"):
        if params.get(key) is not None:
            _check_int(key, params[key], name)
    return bound


# --------------------------------------------------------------------------------------
# helpers


def _check_int(key: str, value: Any, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{who}: {key} must be a non-negative integer, got {key} = {value!r}")
    return int(value)


def _prepare(z: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``z`` and ``mask``; return ``(z, wts, m_p)``.

    ``wts`` : float array ``(..., n)`` of 0/1 participation weights (dtype of ``z``),
    ``m_p`` : int array ``(...,)`` of participating counts.
    """
    z = np.asarray(z)
    if z.ndim < 2:
        raise ValueError(f"z must have shape (..., n, d); got shape {z.shape}")
    if z.shape[-2] == 0:
        raise ValueError(f"z has no rows (shape {z.shape})")
    if not np.issubdtype(z.dtype, np.floating):
        if np.issubdtype(z.dtype, np.complexfloating) or not (
            np.issubdtype(z.dtype, np.integer) or z.dtype == np.bool_
        ):
            raise ValueError(f"z must be a real numeric array; got dtype {z.dtype}")
        z = z.astype(np.float64)
    elif z.dtype.itemsize < 4:
        z = z.astype(np.float32)
    bshape = z.shape[:-1]
    if mask is None:
        wts = np.ones(bshape, dtype=z.dtype)
        m = np.full(bshape[:-1], bshape[-1], dtype=np.int64)
        return z, wts, m
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array of shape (n,) or (..., n); got dtype {mask.dtype}")
    try:
        mb = np.broadcast_to(mask, bshape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to z.shape[:-1] = {bshape}"
        ) from None
    return z, mb.astype(z.dtype), mb.sum(axis=-1)


if hasattr(np, "matvec"):  # numpy >= 2.2: batched gufuncs
    _matvec = np.matvec
    _vecdot = np.vecdot
else:  # pragma: no cover

    def _matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``(..., p, q) @ (..., q) -> (..., p)``."""
        return (a @ x[..., None])[..., 0]

    def _vecdot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``Σ_i x_i y_i`` over the last axis."""
        return np.einsum("...i,...i->...", x, y)


def _vecmat(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(..., p) @ (..., p, q) -> (..., q)``."""
    return (x[..., None, :] @ a)[..., 0, :]


def _quiet_if(masked: bool):
    """Silence inf/nan warnings of a first attempt that may be redone without absent rows."""
    return np.errstate(invalid="ignore", over="ignore") if masked else contextlib.nullcontext()


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


def _first_gram(z: np.ndarray, wts: np.ndarray, masked: bool):
    """``Z Zᵀ`` for a first pass; absent rows holding inf/nan are zeroed (one copy) if
    they make it non-finite.  Returns ``(z_used, G)``; use ``z_used`` downstream."""
    with _quiet_if(masked):
        g = _gram(z, None)
    if masked and not np.isfinite(g).all():
        z = np.where(wts[..., None] > 0, z, 0)
        g = _gram(z, None)
    return z, g


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


# --------------------------------------------------------------------------------------
# mean


@AGGREGATORS.register("mean")
def mean(z: Any, mask: Any = None) -> np.ndarray:
    """Average of the participating rows.

    .. math:: \\bar z = \\frac{1}{m_p} \\sum_{i \\in P} z_i

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.

    Returns
    -------
    ndarray, shape ``(..., d)``
    """
    z, wts, m = _prepare(z, mask)
    return _center(z, wts, m, mask is not None)[1]


# --------------------------------------------------------------------------------------
# geometric median


def _weiszfeld(z, g, w, wts, mf, active, tol, max_iter, eps):
    """Weiszfeld on the weights ``w`` of ``y = wᵀZ``, distances from the Gram matrix ``g``.

    ``g`` is ``(Z − c)(Z − c)ᵀ`` for some center ``c`` per batch element.  Before each
    update, elements whose iterate is far from their center relative to the distances
    around it (``ρ = ‖y − c‖² / H² > threshold``) get ``g`` recomputed centered at ``y``
    (at most ``_MAX_RECENTER`` times per element).  Only ``active`` elements are updated;
    returns ``w``.
    """
    thr = _recenter_threshold(z.dtype, _GEOMED_REL * tol)
    diag = np.diagonal(g, axis1=-2, axis2=-1)
    gw = _matvec(g, w)
    wgw = _vecdot(w, gw)  # ||y - c||^2
    eps2 = eps * eps
    tol2m2 = (tol * mf) ** 2
    everyone = bool(np.all(active))
    recenters = np.zeros(np.shape(active), dtype=np.int64)

    def inverse_distances(diag, gw, wgw):
        # ||z_i - y||^2 = G_ii - 2 (G w)_i + wᵀGw, clipped at 0; smoothed: max(d, eps)
        d2 = diag - 2.0 * gw
        d2 += wgw[..., None]
        np.maximum(d2, eps2, out=d2)
        v = wts / np.sqrt(d2, out=d2)
        return v, v.sum(axis=-1)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(max_iter):
            v, s_k = inverse_distances(diag, gw, wgw)
            # rho = ||y - c||^2 / H^2 > thr: re-center G at y (at most _MAX_RECENTER times)
            far = active & (wgw * (s_k / mf) ** 2 > thr) & (recenters < _MAX_RECENTER)
            if far.any():
                recenters = recenters + far
                g_new = _gram(z, _vecmat(w, z))
                g = g_new if far.all() else np.where(far[..., None, None], g_new, g)
                diag = np.diagonal(g, axis1=-2, axis2=-1)
                gw = _matvec(g, w)
                wgw = _vecdot(w, gw)
                v, s_k = inverse_distances(diag, gw, wgw)
            w_new = v / s_k[..., None]  # 0/0 only where m_p = 0 (never active)
            gw_new = _matvec(g, w_new)
            # ||y_{k+1} - y_k||^2 = dwᵀ G dw;  stop when ||y_{k+1} - y_k|| <= tol * m_p / s_k
            conv = _vecdot(w_new - w, gw_new - gw) * (s_k * s_k) <= tol2m2
            wgw_new = _vecdot(w_new, gw_new)
            if everyone:
                w, gw, wgw = w_new, gw_new, wgw_new
            else:
                w = np.where(active[..., None], w_new, w)
                gw = np.where(active[..., None], gw_new, gw)
                wgw = np.where(active, wgw_new, wgw)
            active = active & ~conv
            if not active.any():
                break
            everyone = everyone and bool(np.all(active))
    return w


@AGGREGATORS.register("geometric_median", "geomed")
def geometric_median(
    z: Any, mask: Any = None, *, tol: float = 1e-5, max_iter: int = 80, eps: float = 1e-8
) -> np.ndarray:
    """Geometric median of the participating rows by the smoothed Weiszfeld algorithm.

    Approximately solves :math:`\\min_y \\sum_{i \\in P} \\lVert z_i - y \\rVert`.
    Starting at the masked mean :math:`y_0`, with
    :math:`d_i = \\max(\\lVert z_i - y_k \\rVert, \\varepsilon)` and
    :math:`s_k = \\sum_{i\\in P} 1/d_i`,

    .. math:: y_{k+1} = \\frac{1}{s_k} \\sum_{i \\in P} \\frac{z_i}{d_i}.

    **Stopping rule** (per batch element): stop after the first update with

    .. math:: \\lVert y_{k+1} - y_k \\rVert \\le \\mathrm{tol} \\cdot H_k,
        \\qquad H_k = m_p / s_k,

    i.e. the change of the iterate relative to ``H_k``, the harmonic mean of the
    (smoothed) distances from ``y_k`` to the rows — a scale that is translation- and
    rotation-invariant and dominated by the nearby rows, not by far outliers.
    Equivalently :math:`\\lVert \\sum_{i\\in P} (z_i - y_k)/d_i \\rVert \\le
    \\mathrm{tol}\\cdot m_p`: the smoothed objective's gradient is at most ``tol`` times
    its largest possible norm.  Otherwise stop after ``max_iter`` updates (Weiszfeld
    converges linearly away from the rows but can be slow when the median is at or next
    to a row; then the budget ends the run).  Converged
    batch elements are frozen while the others continue, so a batched call equals a loop
    over the batch.

    **Implementation.** Every iterate is a convex combination ``y = wᵀZ`` of the rows
    (``w`` starts at ``1/m_p`` on ``P``).  With ``G = (Z − c)(Z − c)ᵀ`` computed once
    (``n²d``), each iteration is O(n²):

    .. math:: \\lVert z_i - y \\rVert^2 = G_{ii} - 2 (G w)_i + w^\\top G w
        \\quad (\\text{clipped at } 0),

    and the output is ``wᵀZ`` (the original rows, no re-added center).  These distances
    have absolute roundoff about ``ε_mach (‖z_i − c‖ + ‖y − c‖)²``.  The iteration starts
    with ``c = 0``; before each update, batch elements with
    ``ρ = ‖y_k − c‖² / H_k² > max(100, 1e-3 · tol / ε_mach)`` (the iterate far from ``c``
    compared with the distances around it) get ``G`` recomputed centered at ``y_k``, so
    the distances that carry the weight are accurate to ``ε_mach`` relative even for rows
    of scale ~1e-3 next to rows ~1e4 or around a large common offset.  The iterates are
    those of the direct (coordinate) form up to roundoff.  Cost: one Gram matrix (one or
    two more when re-centering, at most 8 per batch element) plus O(n²) per iteration.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    tol : float, default 1e-5
        Relative stopping tolerance (see above), ``tol >= 0``.
    max_iter : int, default 80
        Maximum number of Weiszfeld updates (``0`` returns the mean).
    eps : float, default 1e-8
        Absolute smoothing of the distances, ``eps > 0``; avoids division by zero when
        the iterate reaches a row.

    Returns
    -------
    ndarray, shape ``(..., d)``
    """
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"geometric_median: tol must be >= 0, got tol = {tol!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"geometric_median: eps must be > 0, got eps = {eps!r}")
    max_iter = _check_int("max_iter", max_iter, "geometric_median")
    z, wts, m = _prepare(z, mask)
    if max_iter == 0:
        return _center(z, wts, m, mask is not None)[1]
    z, g = _first_gram(z, wts, mask is not None)
    mf = m.astype(z.dtype)
    w = wts / np.maximum(mf, 1.0)[..., None]
    w = _weiszfeld(z, g, w, wts, mf, m > 0, tol, max_iter, eps)
    return _vecmat(w, z)


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


@AGGREGATORS.register("coordinate_median", "median")
def coordinate_median(z: Any, mask: Any = None) -> np.ndarray:
    """Coordinate-wise median of the participating rows.

    .. math:: \\mathrm{med}(z)_j = \\tfrac12\\big(z_{(\\lfloor (m_p-1)/2 \\rfloor), j}
        + z_{(\\lfloor m_p/2 \\rfloor), j}\\big)

    where :math:`z_{(k),j}` is the ``k``-th smallest (0-based) participating value of
    coordinate ``j``.  Infinite values are ordered normally (a coordinate whose two
    middle values are ``-inf`` and ``+inf`` gives NaN); it never raises on them.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.

    Returns
    -------
    ndarray, shape ``(..., d)``
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


@AGGREGATORS.register("trimmed_mean")
def trimmed_mean(z: Any, mask: Any = None, *, f: int) -> np.ndarray:
    """Coordinate-wise trimmed mean: drop the ``f`` smallest and ``f`` largest values.

    .. math:: \\mathrm{tm}(z)_j = \\frac{1}{m_p - 2f} \\sum_{k=f}^{m_p-f-1} z_{(k), j}

    with :math:`z_{(k),j}` the ``k``-th smallest participating value of coordinate ``j``.
    With a mask, ``f`` is clipped per batch element to ``(m_p − 1) // 2`` so that at least
    one value remains (an element with few participants degrades towards the median).
    Infinite values never raise (``+inf`` and ``-inf`` both kept give NaN).

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int
        Values trimmed per side per coordinate; requires ``0 <= f`` and ``2f < n``.

    Returns
    -------
    ndarray, shape ``(..., d)``

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
# Krum


def _krum_check(f: Any, n: int, who: str) -> int:
    f = _check_int("f", f, who)
    if n - f - 2 < 1:
        raise ValueError(
            f"{who} needs n - f - 2 >= 1 neighbours, i.e. 0 <= f <= n - 3 = {n - 3}, "
            f"for n = {n} rows; got f = {f}"
        )
    return f


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


def _krum_scores(z: np.ndarray, wts: np.ndarray, m: np.ndarray, f: int, masked: bool):
    """Krum scores of every row, ``(..., n)``, and the ``z`` to use downstream.

    ``k = clip(m_p − f − 2, 1, m_p − 1)`` neighbours.  Distances come from ``Z Zᵀ``;
    elements where its roundoff may matter against the winner's neighbour distances are
    rescored with the Gram matrix centered at the winner.
    """
    z, g = _first_gram(z, wts, masked)
    k = np.minimum(np.maximum(m - f - 2, 1), np.maximum(m - 1, 0))
    scores = _krum_scores_from(_sq_dists_from_gram(g), wts, k)
    best = np.argmin(scores, axis=-1)
    off2 = np.take_along_axis(np.diagonal(g, axis1=-2, axis2=-1), best[..., None], -1)[..., 0]
    sbest = np.take_along_axis(scores, best[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = off2 * k / sbest  # ||z_best||^2 / mean squared neighbour distance
        redo = (k > 0) & (rho > _recenter_threshold(z.dtype, _KRUM_REL))
    if redo.any():
        g2 = _gram(z, _take_row(z, best))
        s2 = _krum_scores_from(_sq_dists_from_gram(g2), wts, k)
        scores = np.where(redo[..., None], s2, scores)
    return z, scores


@AGGREGATORS.register("krum")
def krum(z: Any, mask: Any = None, *, f: int) -> np.ndarray:
    """Krum (Blanchard et al., 2017): the row closest to its nearest neighbours.

    .. math:: \\mathrm{score}(i) = \\sum_{j \\in N_i} \\lVert z_i - z_j \\rVert^2,
        \\qquad \\mathrm{Krum}(z) = z_{i^*},\\ i^* = \\arg\\min_{i\\in P} \\mathrm{score}(i)

    where :math:`N_i` are the :math:`k = m_p - f - 2` nearest other participating rows
    (``m_p = n`` without a mask; with a mask ``k`` is clipped to ``[1, m_p − 1]``).  Ties
    go to the lowest index.  Absent rows are never selected nor counted as neighbours.
    Distances come from a Gram matrix (see the module notes): first ``Z Zᵀ``; if the
    winner is far from the origin relative to its neighbours,
    ``ρ = ‖z_{i*}‖² · k / score(i*) > max(100, 1e-10 / ε_mach)``, the scores are
    recomputed with the Gram matrix centered at ``z_{i*}``, which makes the distances
    among the rows near the winner accurate to ``ε_mach`` relative.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int
        Assumed number of Byzantine rows; requires ``0 <= f <= n − 3``.

    Returns
    -------
    ndarray, shape ``(..., d)``
        A copy of the selected row.

    Raises
    ------
    ValueError
        If ``f`` is not an integer with ``n − f − 2 >= 1``.
    """
    z, wts, m = _prepare(z, mask)
    f = _krum_check(f, z.shape[-2], "krum")
    z, scores = _krum_scores(z, wts, m, f, mask is not None)
    out = _take_row(z, np.argmin(scores, axis=-1))
    if mask is not None:
        out = np.where((m > 0)[..., None], out, 0.0).astype(z.dtype, copy=False)
    return out


@AGGREGATORS.register("multi_krum")
def multi_krum(z: Any, mask: Any = None, *, f: int, m: int | None = None) -> np.ndarray:
    """Multi-Krum: the mean of the ``m`` rows with the lowest Krum scores.

    .. math:: \\mathrm{MK}(z) = \\frac{1}{m} \\sum_{i \\in S_m} z_i

    with :math:`S_m` the ``m`` participating rows of smallest :func:`krum` score (ties to
    the lowest index; ``m = 1`` is Krum).  Default ``m = n − f``; with a mask the default
    is ``m_p − f`` and any ``m`` is clipped to ``[1, m_p]``.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int
        Assumed number of Byzantine rows; requires ``0 <= f <= n − 3``.
    m : int or None
        Number of rows averaged, ``1 <= m <= n``; ``None`` means ``n − f``.

    Returns
    -------
    ndarray, shape ``(..., d)``

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
    z, scores = _krum_scores(z, wts, mp, f, mask is not None)
    order = np.argsort(scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    sel = (ranks < m_eff[..., None]).astype(z.dtype)
    return _vecmat(sel, z) / np.maximum(m_eff, 1).astype(z.dtype)[..., None]
