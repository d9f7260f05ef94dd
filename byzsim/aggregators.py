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

Non-finite and huge messages
----------------------------
Participating rows holding inf/NaN (a crashed or malicious client) are *infinitely far*
from every other row: distance rules never prefer them (Krum scores them ``+∞`` and never
selects them; the geometric median gives them weight 0), filters remove them first, and
coordinate-wise rules order them as values.  So a robust rule returns a finite value
while at most its tolerated number of participating rows is non-finite; if it must keep
such a row (more of them than it can discard) its output is non-finite — the geometric
median returns NaN when half or more of the participating rows are non-finite.  The
mean is not robust: one non-finite row makes it non-finite (and a run using it is
recorded as diverged, see :mod:`byzsim.simulate`).  Finite rows too large for a Gram
matrix (squared norms overflow: ``‖z_i‖ >~ 1e154`` in float64) are handled exactly: the
Gram matrix is formed from the rows scaled by a power of two.  Inputs without such rows
cost one check of the Gram diagonal.

Registered rules
----------------
``mean``, ``geometric_median`` (``geomed``), ``coordinate_median`` (``median``),
``trimmed_mean``, ``krum``, ``multi_krum``, and the field's standard set: ``bulyan``,
``centered_clipping`` (``cc``), ``mda`` (exact minimum-diameter averaging by a bounded
search tree), ``meamed``, ``monna``, ``caf``, ``smea`` (exact, enumeration with
pruning), ``median_of_means`` (``mom``), ``dnc``.  Pre-aggregators (NNM, bucketing,
clipping, ARC, SignGuard) live in :mod:`byzsim.preaggregators`.

The Byzantine count ``f``
-------------------------
Every rule with an ``f`` parameter exposes ``rule.max_f(n)``, the largest ``f`` it is
meant for with ``n`` rows (``n − 3`` for Krum, ``(n − 3) // 4`` for Bulyan, ``(n − 1) // 2``
otherwise); the simulate layer caps its default ``f`` with it.  In the rules added for
issue 9, ``f=None`` (the default) means ``max_f(m_p)`` of each batch element, so that
``agg(z, mask) == agg(z[mask])``, and an explicit ``f`` is clipped per element to
``m_p``'s range.  Rules that need randomness (DnC's coordinate subsets, the grouping of
median of means) take a ``seed``: aggregators stay deterministic functions of
``(z, mask)``.

Adding an aggregator::

    @AGGREGATORS.register("my_rule")
    def my_rule(z, mask=None, *, p=1.0): ...
"""

from __future__ import annotations

import contextlib
import functools as _functools
import itertools as _itertools
import math as _math
import numbers
from typing import Any, Callable

import numpy as np

from .registry import Registry, bind_parameters

__all__ = [
    "AGGREGATORS",
    "bulyan",
    "caf",
    "centered_clipping",
    "coordinate_median",
    "dnc",
    "geometric_median",
    "get_aggregator",
    "gram_sq_distances",
    "krum",
    "mda",
    "meamed",
    "mean",
    "median_of_means",
    "monna",
    "multi_krum",
    "smea",
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


def _prepare(z: Any, mask: Any, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``z`` and ``mask``; return ``(z, wts, m_p)``.

    ``wts`` : float array ``(..., rows)`` of 0/1 participation weights (dtype of ``z``),
    ``m_p`` : int array ``(...,)`` of participating counts.  ``rows`` is the number of
    rows the mask refers to: ``n`` (default), or the ``m`` mixed rows of
    :func:`geometric_median`'s ``mix``.
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
    bshape = z.shape[:-1] if rows is None else z.shape[:-2] + (rows,)
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
            f"mask of shape {mask.shape} does not broadcast to "
            f"{'z.shape[:-1]' if rows is None else 'the mixed rows, z.shape[:-2] + (m,)'} = {bshape}"
        ) from None
    return z, mb.astype(z.dtype), mb.sum(axis=-1)


def _prepare_mixed(z: Any, mask: Any, mix: Any):
    """:func:`_prepare` for the mixed rows ``mix @ z`` (:func:`geometric_median`'s
    ``mix``); returns ``(z, mix, wts, m_p)``.

    ``mix`` : float array ``(..., m, n)`` in the dtype of ``z`` — nonnegative, finite,
    rows summing to 1 (up to ``√ε_mach`` of its dtype), leading axes broadcasting to those
    of ``z (..., n, d)`` without adding axes; ``wts (..., m)`` and ``m_p`` refer to the
    ``m`` mixed rows (so does ``mask``).
    """
    z = _prepare(z, None)[0]
    mix = np.asarray(mix)
    n = z.shape[-2]
    if not (np.issubdtype(mix.dtype, np.floating) or np.issubdtype(mix.dtype, np.integer)):
        raise ValueError(f"geometric_median: mix must be a real array; got dtype {mix.dtype}")
    if (mix.ndim < 2 or mix.shape[-1] != n or mix.shape[-2] == 0
            or np.broadcast_shapes(mix.shape[:-2], z.shape[:-2]) != z.shape[:-2]):
        raise ValueError(
            f"geometric_median: mix must have shape (m, n) or (..., m, n) with m >= 1, "
            f"n = {n} (the rows of z) and leading axes broadcasting to z's {z.shape[:-2]}; "
            f"got shape {mix.shape}"
        )
    rowsum = mix.sum(axis=-1, dtype=np.float64)
    tol = np.sqrt(np.finfo(mix.dtype if np.issubdtype(mix.dtype, np.floating) else np.float64).eps)
    if not (np.isfinite(mix).all() and (mix >= 0).all() and (np.abs(rowsum - 1.0) <= tol).all()):
        raise ValueError(
            "geometric_median: mix must be finite and nonnegative with rows summing to 1 "
            f"(each mixed row a convex combination of the rows of z); row sums lie in "
            f"[{rowsum.min()}, {rowsum.max()}], entries in [{mix.min()}, {mix.max()}]"
        )
    mix = mix.astype(z.dtype, copy=False)
    _, wts, m = _prepare(z, mask, mix.shape[-2])
    return z, mix, wts, m


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


# --------------------------------------------------------------------------------------
# mean


@AGGREGATORS.register("mean")
def mean(z: Any, mask: Any = None) -> np.ndarray:
    """Average of the participating rows.

    .. math:: \\bar z = \\frac{1}{m_p} \\sum_{i \\in P} z_i

    Not robust: a single participating row holding inf/NaN makes the output non-finite
    in the coordinates it spoils (by design: the baseline that a run with the ``inf``
    attack shows diverging).

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


def _weiszfeld(gram_at, g, var, w, wts, mf, active, tol, max_iter, eps2):
    """Weiszfeld on the weights ``w (..., n)`` of ``y = wᵀZ``, distances from the Gram
    matrix ``g (..., n, n)``.

    ``g`` is ``(Z − c)(Z − c)ᵀ`` for some center ``c`` per batch element.  Before each
    update, elements whose iterate is far from their center relative to the distances
    around it (``ρ = ‖y − c‖² / H² > threshold``) get ``(g, var) = gram_at(w)``, the
    Gram matrix centered at ``y = wᵀZ`` (at most ``_MAX_RECENTER`` times per element);
    the rows ``Z`` are seen only through ``gram_at``.  Only ``active`` elements are
    updated.  ``eps2``: the squared smoothing, a scalar or ``(..., 1)``.

    ``var (..., n)`` or None: for mixed rows (:func:`_mix_gram`), the spread of the rows
    mixed into each row, whose roundoff re-centering does not remove; elements where it
    is too large for the distances that matter (:func:`_mixing_unresolved`) stop.

    Returns ``(w, unresolved)``: ``unresolved (...,)`` bool marks the elements stopped
    that way (None when ``var`` is None).
    """
    thr = _recenter_threshold(g.dtype, _GEOMED_REL * tol)
    diag = np.diagonal(g, axis1=-2, axis2=-1)
    gw = _matvec(g, w)
    wgw = _vecdot(w, gw)  # ||y - c||^2
    tol2m2 = (tol * mf) ** 2
    everyone = bool(np.all(active))
    recenters = np.zeros(np.shape(active), dtype=np.int64)
    present = wts > 0
    unresolved = None
    if var is not None:
        unresolved = np.zeros(np.shape(active), dtype=bool)
        var = np.where(present, var, 0.0)

    def inverse_distances(diag, gw, wgw):
        # ||z_i - y||^2 = G_ii - 2 (G w)_i + wᵀGw, clipped at 0; smoothed: max(d, eps)
        d2 = diag - 2.0 * gw
        d2 += wgw[..., None]
        np.maximum(d2, eps2, out=d2)
        d = np.sqrt(d2, out=d2)
        v = wts / d
        return v, v.sum(axis=-1), d

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(max_iter):
            v, s_k, d = inverse_distances(diag, gw, wgw)
            # rho = ||y - c||^2 / H^2 > thr: re-center G at y (at most _MAX_RECENTER times)
            far = active & (wgw * (s_k / mf) ** 2 > thr) & (recenters < _MAX_RECENTER)
            if far.any():
                recenters = recenters + far
                g_new, var_new = gram_at(w)
                g = g_new if far.all() else np.where(far[..., None, None], g_new, g)
                if var is not None:
                    var = np.where(far[..., None] & present, var_new, var)
                diag = np.diagonal(g, axis1=-2, axis2=-1)
                gw = _matvec(g, w)
                wgw = _vecdot(w, gw)
                v, s_k, d = inverse_distances(diag, gw, wgw)
            if var is not None:
                bad = active & _mixing_unresolved(var, d, w, mf, s_k, thr)
                if bad.any():
                    unresolved |= bad
                    active = active & ~bad
                    if not active.any():
                        break
                    everyone = False
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
    return w, unresolved


def _mixing_unresolved(var, d, w, mf, s_k, thr):
    """Batch elements whose mixed-row distances are not accurate enough: with
    ``H = m_p / s_k`` (the harmonic mean distance of the iterate to the rows), some
    participating row has ``var_i > thr · max(d_i², H²)``, or
    ``(Σ_i w_i √var_i)² > thr · H²`` (the iterate's own spread).  Distances from the
    mixed Gram matrix then have roundoff above ``ε_mach · thr`` relative, which
    re-centering guarantees for unmixed rows (``var`` is 0 on absent rows).  Both need
    ``max_i var_i > thr · H²`` (``Σ w = 1``, ``w >= 0``), checked first (cheap)."""
    h2 = (mf / s_k) ** 2
    maybe = var.max(axis=-1) > thr * h2
    if not maybe.any():
        return maybe
    rows = (var > thr * np.maximum(d * d, h2[..., None])).any(axis=-1)
    sw = _vecdot(w, np.sqrt(var))
    return maybe & (rows | (sw * sw > thr * h2))


def _objective(g, w, wts):
    """``Σ_i wts_i ‖z_i − y‖`` for ``y = wᵀZ`` (``Σ w = 1``), from a centered Gram ``g``."""
    gw = _matvec(g, w)
    d2 = np.diagonal(g, axis1=-2, axis2=-1) - 2.0 * gw
    d2 += _vecdot(w, gw)[..., None]
    return _vecdot(wts, np.sqrt(np.maximum(d2, 0.0)))


#: The start of the geometric median blends the candidates (the mean and the _START_ROWS
#: rows of smallest objective) whose objective is within the fraction _START_REL of the
#: best one, with weights falling linearly to 0 at that gap (see :func:`_weiszfeld_start`).
_START_REL = 1e-3
_START_ROWS = 8


def _weiszfeld_start(g, wts, mf, eps):
    """Starting weights of :func:`geometric_median` (``init="auto"``), ``(..., n)``.

    Candidates: the mean, and for each of the ``K = min(n, 8)`` rows ``z_m`` of smallest
    objective ``F(z_m) = Σ_j ‖z_m − z_j‖`` the *Vardi–Zhang step* from it: with
    ``v_j = 1/max(‖z_j − z_m‖, ε)`` over the other rows, ``T = Σ v_j z_j / Σ v_j`` (the
    Weiszfeld step without the singular term) and ``r = Σ v_j · ‖T − z_m‖`` (the pull of
    the other rows), the point ``z_m + (1 − 1/r)(T − z_m)`` if ``r > 1``, else ``z_m``
    (which is then optimal; Vardi & Zhang, 2000).  The step never increases the
    objective, and far rows have weight ``~ 1/distance`` in it.

    With ``F*`` the smallest of the objectives of the mean and of the rows, candidate
    ``c`` gets weight ``p_c = max(0, 1 − (F_c − F*)/(10⁻³ F*))`` (``F_c`` of a row
    candidate: that of the row) and the start is ``Σ p_c w_c / Σ p_c``.  So the start is
    the mean when no row is within 0.1 % of it (high-dimensional data without outliers:
    the iterates are then exactly those from the mean), the step from the medoid when one
    row is clearly best (far outliers), and otherwise a blend that depends
    *continuously* on the rows: where the median is not unique (collinear rows, an even
    number of them) the output is the start, and a hard choice between tied candidates
    would be decided by roundoff, breaking permutation invariance and the equivariances.
    Cost O(K n²) from ``g`` (any centered Gram matrix).
    """
    n = g.shape[-1]
    D = np.sqrt(_sq_dists_from_gram(g))
    obj = _matvec(D, wts)
    present = wts > 0
    if not present.all():
        obj = np.where(present, obj, np.inf)
    w_mean = wts / np.maximum(mf, 1.0)[..., None]
    f_mean = _objective(g, w_mean, wts)
    f_best = np.minimum(obj.min(axis=-1), f_mean)[..., None]
    tau = _START_REL * f_best
    if not (obj < f_best + tau).any():  # no row within reach: the mean
        return w_mean
    K = min(n, _START_ROWS)
    cand = np.argsort(obj, axis=-1, kind="stable")[..., :K]  # (..., K)
    E = cand[..., None] == np.arange(n)  # (..., K, n)
    Dc = E.astype(g.dtype) @ D  # distances to the candidates (selection: exact)
    V = wts[..., None, :] / np.maximum(Dc, eps if np.ndim(eps) == 0 else eps[..., None])
    V[E] = 0.0
    sv = V.sum(axis=-1)
    U = V / np.maximum(sv, np.finfo(g.dtype).tiny)[..., None] - E  # T − z_m in weights
    r = sv * np.sqrt(np.maximum(_vecdot(U, U @ g), 0.0))
    lam = 1.0 - 1.0 / np.maximum(r, 1.0)  # 0 when r <= 1: the row is optimal
    W = E + lam[..., None] * U  # (..., K, n)
    # weights of [mean, candidate rows]: 1 at the best objective, 0 from a gap tau on
    F = np.concatenate([f_mean[..., None], np.take_along_axis(obj, cand, axis=-1)], axis=-1)
    if (tau > 0).all():
        p = np.maximum(1.0 - (F - f_best) / tau, 0.0)
    else:  # f_best = 0 (identical rows): the candidates at 0
        gap = (F - f_best) / np.where(tau > 0, tau, 1.0)
        p = np.where(tau > 0, np.maximum(1.0 - gap, 0.0), F <= f_best).astype(g.dtype, copy=False)
    w0 = p[..., :1] * w_mean + _vecmat(p[..., 1:], W)
    return w0 / p.sum(axis=-1, keepdims=True)


@AGGREGATORS.register("geometric_median", "geomed")
def geometric_median(
    z: Any,
    mask: Any = None,
    *,
    tol: float = 1e-5,
    max_iter: int = 80,
    eps: float = 1e-8,
    init: str = "auto",
    mix: Any = None,
) -> np.ndarray:
    """Geometric median of the participating rows by the smoothed Weiszfeld algorithm.

    Approximately solves :math:`\\min_y \\sum_{i \\in P} \\lVert z_i - y \\rVert`.
    Starting at :math:`y_0` (below), with
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

    **Start** (``init="auto"``, the default): the mean, unless a row has an objective
    ``Σ_j ‖z_m − z_j‖`` within 0.1 % of the mean's or below; then the *Vardi–Zhang step
    from the medoid* — the best row moved towards the others by one Weiszfeld step
    without its own singular term, which never increases the objective — or, when
    several of these candidates are within 0.1 % of the best objective, a blend of them
    that depends continuously on the rows (see :func:`_weiszfeld_start`; this keeps
    permutation invariance and the equivariances where the median is not unique).
    DESIGN §2.4 specifies "Weiszfeld, started at the mean"; that start is kept exactly
    whenever no row comes within 0.1 % of the mean's objective (typical of
    high-dimensional messages without outliers), and ``init="mean"`` restores it always
    (the iterates are then those of the textbook iteration).  Why: from the mean, far
    outliers are shed only at rate ``≈ B/R`` per update (``B`` outlying rows, ``R``
    others; the distance of the iterate to the bulk shrinks by that factor), so with the
    default ``max_iter = 80`` Byzantine rows ~1e12 away with ``B/R = 3/4`` left the
    output ~9× outside the geometric median's robustness radius.  The medoid step is a
    convex combination of the rows in which far rows have weight ``~ 1/distance`` from
    the first update; it costs O(K n²) (K <= 8) from the Gram matrix the iteration needs
    anyway (about 5–10 % of a call on 30 × 7850 messages).

    **Non-finite and huge rows.**  Participating rows holding inf/NaN are treated as
    infinitely far: weight 0 in every update (as in the other distance-based rules; the
    limit of a row moved to infinity in a fixed direction would pull with a unit force,
    but inf/NaN carry no usable direction).  If half or more of the participating rows
    are non-finite there is no finite median (the breakdown point): that batch element
    returns NaN.  Finite rows whose squared norm would overflow the Gram matrix
    (``‖z_i‖ >~ 1e150`` in float64) are handled exactly: the Gram matrix is formed from
    the rows scaled by a power of two (and ``ε`` with them), the output from the
    original rows.  Inputs without such rows take neither path (one check of the Gram
    diagonal).

    **Mixed rows** (``mix``).  ``geometric_median(z, mask, mix=A)`` equals
    ``geometric_median(A @ z, mask)`` up to roundoff, for ``A (m, n)`` or
    ``(..., m, n)`` nonnegative with rows summing to 1 (e.g. the averaging matrix of
    s-replacement resampling, :func:`byzsim.resampling.averaging_matrix`), without
    forming ``A Z``: the Gram matrix of the mixed rows is ``A G Aᵀ`` (a centered ``G``
    stays centered, since ``A(Z − 1cᵀ) = AZ − 1cᵀ``), weights ``w`` of the mixed rows are
    weights ``Aᵀw`` of the rows of ``z``, and the output is ``(Aᵀw)ᵀZ`` (one
    vector-matrix product instead of the ``(m, d)`` product ``A Z``).  ``mask`` and the
    counts above (participating, non-finite, breakdown) refer to the ``m`` mixed rows; a
    mixed row with nonzero weight on a row of ``z`` holding inf/NaN is non-finite.  Rows
    of ``z`` used by no participating finite mixed row have no influence.  One thing
    the Gram form cannot do is resolve a mixed row whose rows lie far apart but mix to
    a point close to the iterate (e.g. ``m + X`` and ``m − X`` in one group): its
    distances carry roundoff ``~ ε_mach var_i``, ``var_i = Σ_k A_ik ‖z_k − (AZ)_i‖²``,
    whatever the center.  So before each update the iteration checks
    ``var_i <= thr · max(d_i², H²)`` (``thr`` the re-centering threshold above, ``d_i``
    the row's distance to the iterate); a batch element that fails (such a pair, or the
    iterate on a mixed row formed from distinct rows) is computed from the formed rows
    ``A Z`` instead, so the result never depends on that roundoff.

    **Implementation.** Every iterate is a convex combination ``y = wᵀZ`` of the rows
    (``w`` starts at the weights of the start above).  With ``G = (Z − c)(Z − c)ᵀ``
    computed once (``n²d``), each iteration is O(n²):

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
        Participating rows; elements with none return zeros.  With ``mix``: ``(m,)`` /
        ``(..., m)``, over the mixed rows.
    tol : float, default 1e-5
        Relative stopping tolerance (see above), ``tol >= 0``.
    max_iter : int, default 80
        Maximum number of Weiszfeld updates (``0`` returns the mean).
    eps : float, default 1e-8
        Absolute smoothing of the distances, ``eps > 0``; avoids division by zero when
        the iterate reaches a row.
    init : {"auto", "mean"}, default "auto"
        Start of the iteration: the better of the mean and the medoid step (above), or
        the mean (DESIGN's original rule).
    mix : None or array_like, shape ``(m, n)`` or ``(..., m, n)``
        Take the median of the rows ``mix @ z`` (see "Mixed rows"); leading axes must
        broadcast to those of ``z``.  Supplied per call (by
        :func:`byzsim.resampling.resampled`), not a configurable parameter
        (``geometric_median.call_parameters``).

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    E. Weiszfeld, "Sur le point pour lequel la somme des distances de n points donnés est
    minimum", 1937; Y. Vardi, C.-H. Zhang, "The multivariate L1-median and associated data
    depth", PNAS 2000.
    """
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"geometric_median: tol must be >= 0, got tol = {tol!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"geometric_median: eps must be > 0, got eps = {eps!r}")
    max_iter = _check_int("max_iter", max_iter, "geometric_median")
    if init not in ("auto", "mean"):
        raise ValueError(f"geometric_median: init must be 'auto' or 'mean', got init = {init!r}")
    if mix is None:
        z, wts, m = _prepare(z, mask)
    else:  # the rows are mix @ z, never formed: wts and m refer to them
        z, mix, wts, m = _prepare_mixed(z, mask, mix)
    if max_iter == 0:
        return _center(z, _unmix(wts, mix), m, mask is not None or mix is not None)[1]
    present = wts > 0
    zo, zs, g, ok, k = _finite_gram(z, present, mix)
    g, var = _mix_gram(g, mix)
    eps2 = eps * eps
    eps_s = eps
    if k is not None:  # non-finite rows get weight 0; huge rows were scaled by 2^-k
        wts = ok.astype(z.dtype)
        eps_s = np.ldexp(np.asarray(eps, dtype=z.dtype), -k)[..., None]
        eps2 = eps_s * eps_s
    mf = wts.sum(axis=-1)
    if init == "mean":
        w = wts / np.maximum(mf, 1.0)[..., None]
    else:
        w = _weiszfeld_start(g, wts, mf, eps_s)

    def gram_at(w):  # Gram matrix of the (mixed) rows centered at the iterate wᵀ(A Zs)
        return _mix_gram(_gram(zs, _vecmat(_unmix(w, mix), zs)), mix)

    w, unresolved = _weiszfeld(gram_at, g, var, w, wts, mf, mf > 0, tol, max_iter, eps2)
    out = _vecmat(_unmix(w, mix), zo)
    if k is not None:  # half or more of the participating rows non-finite: no median
        broken = (m > 0) & (2 * (m - mf.astype(m.dtype)) >= m)
        if broken.any():
            out = np.where(broken[..., None], np.nan, out).astype(z.dtype, copy=False)
    if unresolved is not None and unresolved.any():
        # mixed rows too spread for the Gram form: form them (non-finite ones as NaN)
        zm = np.where((present & ~ok)[..., None], np.nan, mix @ zo).astype(z.dtype, copy=False)
        direct = geometric_median(zm, mask, tol=tol, max_iter=max_iter, eps=eps, init=init)
        out = np.where(unresolved[..., None], direct, out)
    return out


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


@AGGREGATORS.register("krum")
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
    _, order = _krum_scores(z, wts, m, f)
    out = _take_row(z, order[..., 0])
    if mask is not None:
        out = np.where((m > 0)[..., None], out, 0.0).astype(z.dtype, copy=False)
    return out


@AGGREGATORS.register("multi_krum")
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
    _, order = _krum_scores(z, wts, mp, f)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    sel = (ranks < m_eff[..., None]).astype(z.dtype)
    # rows not selected (absent, or non-finite ones ranked last) have no influence
    return _average(sel, z) / np.maximum(m_eff, 1).astype(z.dtype)[..., None]


# ======================================================================================
# The field's arsenal (issue 9): Bulyan, centered clipping, MDA, MoNNA, Meamed, CAF, SMEA,
# median of means, DnC.  Shared conventions:
#
# * ``f`` (assumed number of Byzantine rows) defaults to ``None``: the largest value the
#   rule tolerates for the *participating* count ``m_p`` of each batch element
#   (``rule.max_f(m_p)``), so that ``agg(z, mask) == agg(z[mask])``.  An explicit ``f`` is
#   validated against ``n`` (``ValueError`` naming n, f and the valid range; Bulyan accepts
#   any ``2f < n`` although it is only robust for ``n >= 4f + 3``) and then clipped per
#   batch element to the range of ``m_p``.
# * Distances and covariances come from one Gram matrix centered at an *anchor* row (the
#   row with the smallest sum of squared distances to its ``m_p // 2`` nearest others, found
#   from a first ``Z Zᵀ`` pass; re-centering only happens when that row is far from the
#   origin relative to its neighbours), so they are accurate to ε_mach relative near the
#   honest cluster whatever the offset or the scale of outliers.
# * Rows holding inf/NaN that take part are treated as *infinitely far* from every other
#   row (distance rules never prefer them; covariance rules give them weight 0 / remove
#   them first).  If a rule must still keep such a row (more of them than it can
#   discard) the output is non-finite, as it should be.
# --------------------------------------------------------------------------------------


def _majority_max_f(n: int) -> int:
    return max((int(n) - 1) // 2, 0)


def _max_f_array(max_f: Callable, m: np.ndarray) -> np.ndarray:
    return np.vectorize(max_f, otypes=[np.int64])(m) if np.ndim(m) else np.int64(max_f(int(m)))


def _resolve_f(
    f: Any, m: np.ndarray, n: int, who: str, max_f: Callable, rule: str, default_f: Callable | None = None
) -> np.ndarray:
    """Per-element ``f`` (int array of the shape of ``m``): ``None`` -> ``default_f(m_p)``
    (default ``max_f``); an explicit ``f`` is checked against ``max_f(n)`` then clipped to
    ``max_f(m_p)``."""
    cap = _max_f_array(max_f, np.asarray(m))
    if f is None:
        return np.asarray(_max_f_array(default_f or max_f, np.asarray(m)), dtype=np.int64)
    f = _check_int("f", f, who)
    if f > max_f(n):
        raise ValueError(
            f"{who} needs 0 <= f <= {max_f(n)} ({rule}) for n = {n} rows; got f = {f}"
        )
    return np.minimum(f, cap).astype(np.int64)


def _flatten(z: np.ndarray, wts: np.ndarray, m: np.ndarray):
    """``(..., n, d)`` -> ``(B, n, d)``; returns ``z2, present (B, n), m (B,), lead``."""
    lead = z.shape[:-2]
    n, d = z.shape[-2:]
    return (
        z.reshape((-1, n, d)),
        (wts > 0).reshape((-1, n)),
        np.asarray(m).reshape(-1),
        lead,
    )


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


def _average(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``Σ_i w_i z_i`` over rows (``w (B, n)``, ``z (B, n, d)``) where rows of weight 0
    have no influence even if they hold inf/NaN."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = _vecmat(w, z)
    if not np.isfinite(out).all():
        with np.errstate(invalid="ignore", over="ignore"):
            out = _vecmat(w, np.where(w[..., None] != 0, z, 0))
    return out


def _subset_mean(sel: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean of the rows with ``sel`` True (``(B, n)``); zeros where none."""
    cnt = sel.sum(axis=-1)
    w = sel.astype(z.dtype) / np.maximum(cnt, 1).astype(z.dtype)[:, None]
    return _average(w, z)


def _finish(out: np.ndarray, m: np.ndarray, lead: tuple, dtype) -> np.ndarray:
    out = np.where((m > 0)[:, None], out, 0.0).astype(dtype, copy=False)
    return out.reshape(lead + out.shape[-1:])


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
# Meamed


@AGGREGATORS.register("meamed")
def meamed(z: Any, mask: Any = None, *, f: int | None = None) -> np.ndarray:
    """Mean around the median (Meamed; Xie, Koyejo & Gupta, 2018).

    Per coordinate ``j``, the mean of the ``m_p − f`` participating values closest to the
    coordinate median:

    .. math:: \\mathrm{meamed}(z)_j = \\frac{1}{m_p - f} \\sum_{i \\in N_j} z_{ij},
        \\qquad N_j = \\text{the } m_p - f \\text{ indices of smallest }
        |z_{ij} - \\mathrm{med}_j|

    (``f = 0`` is the mean).  The ``m_p − f`` nearest values form a window of consecutive
    sorted values, found exactly with one sort per coordinate.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int or None, default None
        Values discarded per coordinate, ``0 <= f <= (n − 1) // 2``; ``None``: the maximum
        ``(m_p − 1) // 2`` (then Meamed averages the ``⌈(m_p+1)/2⌉`` central values).

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    C. Xie, O. Koyejo, I. Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018.
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "meamed", _majority_max_f, "2f < n")
    z2, present, m2, lead = _flatten(z, wts, m)
    srt = _sort_present(z2, present)
    cnt = m2
    k = np.maximum(cnt - fe.reshape(-1), 1)
    med = _median_sorted(srt, cnt)
    out = _mean_around_center(srt, cnt, k, med)
    return _finish(out, m2, lead, z.dtype)


meamed.max_f = _majority_max_f


# --------------------------------------------------------------------------------------
# Bulyan


def _bulyan_max_f(n: int) -> int:
    return max((int(n) - 3) // 4, 0)


@AGGREGATORS.register("bulyan")
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
           \\mathrm{med}_{i\\in S}\\, z_{ij}.

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
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int or None, default None
        Assumed Byzantine rows, ``0 <= f <= (n − 1) // 2`` (robust for
        ``f <= (n − 3) // 4``); ``None``: ``(m_p − 3) // 4``.

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    E. M. El Mhamdi, R. Guerraoui, S. Rouault, "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018.
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "bulyan", _majority_max_f, "2f < n", default_f=_bulyan_max_f)
    z2, present, m2, lead = _flatten(z, wts, m)
    fe = fe.reshape(-1)
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
    return _finish(out, m2, lead, z.dtype)


bulyan.max_f = _bulyan_max_f


# --------------------------------------------------------------------------------------
# centered clipping


def _masked_median_1d(x: np.ndarray, present: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Median over the last axis of the ``present`` entries (``x (B, n)``)."""
    s = np.sort(np.where(present, x, np.inf), axis=-1)
    lo = np.take_along_axis(s, np.maximum((cnt - 1) // 2, 0)[:, None], -1)[:, 0]
    hi = np.take_along_axis(s, np.minimum(cnt // 2, s.shape[-1] - 1)[:, None], -1)[:, 0]
    with np.errstate(invalid="ignore"):
        return 0.5 * lo + 0.5 * hi


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
    iteration (in units of ``2^k``, exact, when squared distances would overflow).

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
    if init == "medoid":
        v0 = _medoid(z2, present)
    else:
        v0 = (coordinate_median(z, mask) if init == "median" else mean(z, mask)).reshape(-1, z2.shape[-1])
    # work relative to v0: zc = z − v0 (rows near the bulk are small, so the distances
    # ‖zc_i − u‖² = ‖zc_i‖² − 2⟨zc_i, u⟩ + ‖u‖² below have ε_mach relative accuracy)
    with np.errstate(invalid="ignore", over="ignore"):
        zc = z2 - v0[:, None, :]
    finite = np.isfinite(zc).all(axis=-1)
    use = present & finite
    if not use.all():
        zc = np.where(use[:, :, None], zc, 0.0)
    with np.errstate(over="ignore"):
        rn2 = _vecdot(zc, zc)
    # rows so far from v0 that squared distances overflow: work in units of 2^k (exact)
    k = None
    if not (rn2 <= 2.0 ** (2 * _safe_exp(z2.dtype))).all():
        k = _pow2_exponent(zc)
        zc = zc * np.ldexp(np.ones((), z2.dtype), -k)[:, None, None]  # exact
        rn2 = _vecdot(zc, zc)
    w = use.astype(z2.dtype) / np.maximum(m2, 1).astype(z2.dtype)[:, None]
    u = np.zeros_like(v0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if tau is None:
            t = _masked_median_1d(np.where(use, np.sqrt(rn2), np.inf), present, m2)
        else:
            t = np.full(z2.shape[0], float(tau), dtype=z2.dtype)
            if k is not None:
                t = np.ldexp(t, -k).astype(z2.dtype, copy=False)
        for _ in range(iterations):
            zu = _matvec(zc, u)
            nrm = np.sqrt(np.maximum(rn2 - 2.0 * zu + _vecdot(u, u)[:, None], 0.0))
            scale = np.where(nrm > t[:, None], t[:, None] / nrm, 1.0) * w
            # u += Σ_i s_i (zc_i − u)
            u = u + _vecmat(scale, zc) - scale.sum(axis=-1)[:, None] * u
    if k is not None:
        u = np.ldexp(u, k[:, None]).astype(z2.dtype, copy=False)
    return _finish(v0 + u, m2, lead, z.dtype)


# --------------------------------------------------------------------------------------
# minimum-diameter averaging (exact, bounded search tree)


def _mda_removed(d2: np.ndarray, present: np.ndarray, fe: np.ndarray, o: np.ndarray, max_branches: int):
    """Removal sets ``(B, n)`` of exact minimum-diameter averaging (see :func:`mda`)."""
    B, n = present.shape
    iu, ju = np.triu_indices(n, 1)
    P = iu.size
    key = d2[:, iu, ju]
    key = np.where(present[:, iu] & present[:, ju], key, -np.inf)
    order = np.argsort(-key, axis=-1, kind="stable")  # descending distance
    Ds = np.concatenate([np.take_along_axis(key, order, -1), np.zeros((B, 1), key.dtype)], -1)
    pa = np.concatenate([iu[order], np.zeros((B, 1), np.intp)], -1)
    pb = np.concatenate([ju[order], np.zeros((B, 1), np.intp)], -1)
    # node arrays (B, N, ...)
    R = np.zeros((B, 1, n), bool)
    K = np.zeros((B, 1, n), bool)
    bud = fe.astype(np.int64)[:, None].copy()
    val = np.ones((B, 1), bool)
    absent = ~present[:, None, :]
    T_D, T_V, T_R, T_K, T_b = [], [], [], [], []
    eye = np.eye(n, dtype=bool)
    for _level in range(int(fe.max()) + 1 if B else 0):
        N = R.shape[1]
        rem = R | absent
        hit = (np.take_along_axis(rem, np.broadcast_to(pa[:, None, :P], (B, N, P)), -1)
               | np.take_along_axis(rem, np.broadcast_to(pb[:, None, :P], (B, N, P)), -1))
        first = np.argmin(np.concatenate([hit, np.zeros((B, N, 1), bool)], -1), axis=-1)
        sent = first == P
        D = np.take_along_axis(Ds, first, -1)
        A = np.take_along_axis(pa, first, -1)
        Bb = np.take_along_axis(pb, first, -1)
        onA = eye[A] & ~sent[..., None]
        onB = eye[Bb] & ~sent[..., None]
        Kt = K | onA | onB
        free = (present[:, None, :] & ~R & ~Kt).sum(-1)
        T_D.append(D)
        T_V.append(val & (free >= bud))
        T_R.append(R)
        T_K.append(Kt)
        T_b.append(bud)
        can = val & (bud > 0) & ~sent
        a_k = (K & onA).any(-1)
        b_k = (K & onB).any(-1)
        c1 = can & ~a_k
        c2 = can & ~b_k
        if not (c1 | c2).any():
            break
        if 2 * N > max_branches:  # pragma: no cover - guarded by the caller
            raise ValueError("mda: search tree exceeds max_branches")
        R = np.concatenate([R | onA, R | onB], axis=1)
        K = np.concatenate([K, K | onA], axis=1)
        bud = np.concatenate([bud - 1, bud - 1], axis=1)
        val = np.concatenate([c1, c2], axis=1)
    TD = np.concatenate(T_D, 1)
    TV = np.concatenate(T_V, 1)
    TR = np.concatenate(T_R, 1)
    TK = np.concatenate(T_K, 1)
    Tb = np.concatenate(T_b, 1)
    best = np.where(TV, TD, np.inf).min(axis=1)
    cand = TV & (TD == best[:, None])  # D may be +inf (more non-finite rows than f)
    # spend the free budget on the most outlying undecided rows
    U = present[:, None, :] & ~TR & ~TK
    ou = np.where(U, o[:, None, :], -np.inf)
    rank = np.argsort(np.argsort(-ou, axis=-1, kind="stable"), axis=-1, kind="stable")
    REM = TR | (U & (rank < Tb[..., None]))
    # tie-break: the removal set whose outlyingness, sorted decreasingly, is largest
    kcols = int(fe.max()) if B else 0
    if kcols:
        keyv = -np.sort(-np.where(REM, o[:, None, :], -np.inf), axis=-1)[..., :kcols]
        for c in range(kcols):
            col = np.where(cand, keyv[..., c], -np.inf)
            top = col.max(axis=1, keepdims=True)
            cand &= col == top
    pick = np.argmax(cand, axis=1)
    return REM[np.arange(B), pick]


@AGGREGATORS.register("mda")
def mda(z: Any, mask: Any = None, *, f: int | None = None, max_branches: int = 2**16) -> np.ndarray:
    """Minimum-diameter averaging (El Mhamdi, Guerraoui & Rouault, 2018), exact.

    .. math:: S^* = \\arg\\min_{S \\subseteq P,\\ |S| = m_p - f}\\ \\max_{i,j \\in S}
        \\lVert z_i - z_j \\rVert, \\qquad \\mathrm{MDA}(z) = \\frac{1}{|S^*|}
        \\sum_{i\\in S^*} z_i .

    **Exact search without enumerating the** ``C(m_p, f)`` **subsets.**  Sort the pairs by
    decreasing distance.  The diameter of ``P \\ R`` is the distance of the first pair not
    hit by the removal set ``R``.  A bounded search tree branches on that pair
    ``(a, b)``: remove ``a``; or keep ``a`` and remove ``b``; or keep both — which fixes
    the diameter at ``‖z_a − z_b‖`` for every completion (a leaf).  Each removal costs one
    unit of the budget ``f``, so the tree has at most ``2^{f+1}`` nodes and every removal
    set belongs to exactly one leaf: the minimum over leaves is the exact minimum
    diameter.  Each tree level is one vectorized step over all nodes and batch elements.

    **Ties** (several subsets of minimum diameter, e.g. a leaf with budget left, or
    duplicated rows): the removal set is the one whose *outlyingness*
    ``o_i = Σ_{j∈P} ‖z_i − z_j‖²`` values, sorted decreasingly, are lexicographically
    largest — the most outlying rows are discarded.  This keeps the rule permutation
    invariant (the original formulation takes the first subset in index order).

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int or None, default None
        Rows discarded, ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    max_branches : int, default 65536
        Refuse (``ValueError`` naming n, f, the subset count and the tree size) when
        ``2^f`` exceeds this.

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    E. M. El Mhamdi, R. Guerraoui, S. Rouault, "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018 (MDA); P. J. Rousseeuw, "Multivariate estimation
    with high breakdown point", 1985 (minimum-volume ideas).
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    max_branches = _check_int("max_branches", max_branches, "mda")
    fe = _resolve_f(f, m, n, "mda", _majority_max_f, "2f < n")
    fmax = int(np.max(fe)) if fe.size else 0
    if 2**fmax > max_branches:
        raise ValueError(
            f"mda: exact minimum-diameter search for n = {n}, f = {fmax} would explore up "
            f"to 2^f = {2**fmax} branches (the naive search has C(n, f) = "
            f"{_math.comb(n, fmax)} subsets), more than max_branches = {max_branches}; "
            "lower f or raise max_branches"
        )
    z2, present, m2, lead = _flatten(z, wts, m)
    zc, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    d2 = np.where(present[:, :, None] & present[:, None, :], d2, 0.0)  # absent: no pairs
    finite_d = np.where(np.isfinite(d2), d2, 0.0)
    o = np.where(ok, finite_d.sum(-1), np.inf)
    removed = _mda_removed(d2, present, fe.reshape(-1), o, max_branches)
    out = _subset_mean(present & ~removed, z2)
    return _finish(out, m2, lead, z.dtype)


mda.max_f = _majority_max_f


# --------------------------------------------------------------------------------------
# MoNNA


@AGGREGATORS.register("monna")
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
    back to the default).

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    idx : int or None, default None
        Index of a trusted row, ``0 <= idx < n``; ``None``: the tightest row (above).

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    S. Farhadkhani, R. Guerraoui, N. Gupta, L.-N. Hoang, R. Pinot, J. Stephan, "Robust
    Collaborative Learning with Linear Gradient Overhead", ICML 2023.
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "monna", _majority_max_f, "2f < n")
    if idx is not None:
        idx = _check_int("idx", idx, "monna")
        if idx >= n:
            raise ValueError(f"monna needs 0 <= idx < n = {n}; got idx = {idx}")
    z2, present, m2, lead = _flatten(z, wts, m)
    B = z2.shape[0]
    rows = np.arange(B)
    zc, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    size = np.maximum(m2 - fe.reshape(-1), 1)
    scores = _krum_scores_from(d2, present.astype(z2.dtype), size - 1)
    anchor = np.argmin(scores, axis=-1)
    if idx is not None:
        anchor = np.where(present[:, idx], idx, anchor)
    dr = d2[rows, anchor]  # (B, n)
    big = np.finfo(dr.dtype).max
    key = np.where(present, np.where(np.isfinite(dr), dr, big), np.inf)
    rank = np.empty_like(anchor, shape=key.shape)
    order = np.argsort(key, axis=-1, kind="stable")
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    sel = present & (rank < size[:, None])
    return _finish(_subset_mean(sel, z2), m2, lead, z.dtype)


monna.max_f = _majority_max_f


# --------------------------------------------------------------------------------------
# CAF


def _double_center(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(Z − μ)(Z − μ)ᵀ`` with ``μ = wᵀZ`` (``Σ w = 1``) from any centered Gram ``g``."""
    gw = _matvec(g, w)
    wgw = _vecdot(w, gw)
    return g - gw[:, :, None] - gw[:, None, :] + wgw[:, None, None]


@AGGREGATORS.register("caf")
def caf(z: Any, mask: Any = None, *, f: int | None = None) -> np.ndarray:
    """Covariance-bound agnostic filter (CAF; Allouah et al., as implemented in ByzFL).

    A spectral filter that needs no bound on the honest covariance.  Start with weights
    ``c_i = 1`` on the participating rows and repeat:

    .. math::
        \\mu_c = \\frac{\\sum_i c_i z_i}{\\sum_i c_i},\\quad
        \\Sigma_c = \\frac{\\sum_i c_i (z_i - \\mu_c)(z_i - \\mu_c)^\\top}{\\sum_i c_i},\\quad
        (\\lambda, v) = \\text{top eigenpair of } \\Sigma_c,

    record ``μ_c`` if ``λ`` is the smallest so far; stop once ``Σ c_i <= m_p − 2f``;
    otherwise, with :math:`\\tau_i = ((z_i - \\mu_c)^\\top v)^2`,

    .. math:: c_i \\leftarrow c_i \\Big(1 - \\frac{\\tau_i}{\\max_{j: c_j > 0} \\tau_j}\\Big).

    Returns the recorded ``μ_c`` of smallest ``λ``.  Every step zeroes at least one weight,
    so there are at most ``m_p`` steps.  The eigenpair is exact: ``Σ_c`` shares its
    non-zero spectrum with the ``n × n`` matrix ``C^{1/2} G_c C^{1/2} / Σc`` (``G_c`` the
    Gram matrix centered at ``μ_c``), so after one ``n²d`` Gram product every step is
    O(n³).  Rows holding inf/NaN start with weight 0.  (ByzFL uses power iterations and
    takes the maximum of ``τ`` over all rows; here it is over rows still weighted, which
    guarantees the step count.)

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2`` (``f = 0``: the mean); ``None``: ``(m_p − 1) // 2``.

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, G. Rizk, J. Stephan et al. (EPFL DCL),
    ByzFL ``CAF`` (https://byzfl.epfl.ch/aggregators/classes/caf.html), 2024–2025; the
    filter follows I. Diakonikolas, G. Kamath, D. Kane, J. Li, A. Moitra, A. Stewart,
    "Being Robust (in High Dimensions) Can Be Practical", ICML 2017.
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "caf", _majority_max_f, "2f < n")
    z2, present, m2, lead = _flatten(z, wts, m)
    zc, g, ok = _robust_gram(z2, present)
    dt = z2.dtype
    c = ok.astype(dt)
    thr = (m2 - 2 * fe.reshape(-1)).astype(dt)
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
            better = active & (lmax < best_lam)
            best_lam = np.where(better, lmax, best_lam)
            best_w = np.where(better[:, None], w, best_w)
            active &= S > thr
            proj = _matvec(gc, sq * U[:, :, -1]) / np.sqrt(lmax * S)[:, None]
            tau = np.where(c > 0, proj * proj, 0.0)
            tmax = tau.max(axis=-1)
            active &= tmax > 0
            if not active.any():
                break
            c = np.where(active[:, None], np.maximum(c * (1.0 - tau / tmax[:, None]), 0.0), c)
    return _finish(_average(best_w.astype(dt), z2), m2, lead, z.dtype)


caf.max_f = _majority_max_f


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


@AGGREGATORS.register("smea")
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
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    max_subsets : int, default 1_000_000
        Refuse (``ValueError`` naming n, f and ``C(m_p, f)``) beyond this many subsets.
        (``C(30, 6) = 593,775``: about 0.2–0.5 s per call on a 2-core machine.)

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "On the Privacy-Robustness-
    Utility Trilemma in Distributed Learning", ICML 2023 (SMEA).
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "smea", _majority_max_f, "2f < n").reshape(-1)
    max_subsets = _check_int("max_subsets", max_subsets, "smea")
    z2, present, m2, lead = _flatten(z, wts, m)
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
    return _finish(_subset_mean(keep_all, z2), m2, lead, z.dtype)


smea.max_f = _majority_max_f


# --------------------------------------------------------------------------------------
# median of means


@AGGREGATORS.register("median_of_means", "mom")
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
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
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

    Returns
    -------
    ndarray, shape ``(..., d)``

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
    z, wts, m = _prepare(z, mask)
    n, d = z.shape[-2:]
    fe = _resolve_f(f, m, n, "median_of_means", _majority_max_f, "2f < n")
    z2, present, m2, lead = _flatten(z, wts, m)
    B = z2.shape[0]
    G = np.minimum(groups if groups is not None else 2 * fe.reshape(-1) + 1, np.maximum(m2, 1))
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
    return _finish(out, m2, lead, z.dtype)


median_of_means.max_f = _majority_max_f


# --------------------------------------------------------------------------------------
# DnC


@AGGREGATORS.register("dnc")
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
    call; vary ``seed`` to change them).  Rows holding inf/NaN score ``+∞`` (removed
    first) and are left out of the centering mean.

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.
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

    Returns
    -------
    ndarray, shape ``(..., d)``

    References
    ----------
    V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning", NDSS 2021.
    """
    if not (np.isfinite(c) and c >= 0):
        raise ValueError(f"dnc: c must be >= 0, got c = {c!r}")
    niters = _check_int("niters", niters, "dnc")
    sub_dim = _check_int("sub_dim", sub_dim, "dnc")
    seed = _check_int("seed", seed, "dnc")
    if niters < 1 or sub_dim < 1:
        raise ValueError(f"dnc needs niters >= 1 and sub_dim >= 1; got niters = {niters}, sub_dim = {sub_dim}")
    z, wts, m = _prepare(z, mask)
    n, d = z.shape[-2:]
    fe = _resolve_f(f, m, n, "dnc", _majority_max_f, "2f < n").reshape(-1)
    z2, present, m2, lead = _flatten(z, wts, m)
    nrem = np.minimum(np.floor(c * fe).astype(np.int64), np.maximum(m2 - 1, 0))
    rng = np.random.default_rng(seed)
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
    return _finish(_subset_mean(good, z2), m2, lead, z.dtype)


dnc.max_f = _majority_max_f

# Keyword parameters supplied per call rather than bound from a config
# (byzsim.registry.keyword_parameters leaves them out): geometric_median takes the
# mixing matrix of resampling (byzsim.resampling.resampled passes mix=).
geometric_median.call_parameters = ("mix",)

# Byzantine-count limits of the original rules (used by the simulate layer's f default)
krum.max_f = lambda n: max(int(n) - 3, 0)
multi_krum.max_f = lambda n: max(int(n) - 3, 0)
trimmed_mean.max_f = _majority_max_f
