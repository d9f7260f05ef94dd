"""The geometric median (Weiszfeld iteration on the Gram matrix), also on mixed
rows of resampling (``mix``).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import numpy as np

from ._base import (
    AGGREGATORS,
    _check_int,
    _matvec,
    _prepare,
    _prepare_mixed,
    _shared_doc,
    _vecdot,
    _vecmat,
)
from ._gram import (
    _GEOMED_REL,
    _MAX_RECENTER,
    _center,
    _finite_gram,
    _gram,
    _mix_gram,
    _recenter_threshold,
    _sq_dists_from_gram,
    _unmix,
)

__all__ = ["geometric_median"]


# --------------------------------------------------------------------------------------
# geometric median


_CONVERGENCE: contextvars.ContextVar = contextvars.ContextVar("geometric_median_convergence", default=None)


@contextlib.contextmanager
def geometric_median_convergence(elements: int | None = None):
    """Count the geometric medians computed inside the ``with`` block that stopped early.

    ::

        with geometric_median_convergence() as counts:
            ...  # any calls of geometric_median (directly or through other rules)
        counts["elements"], counts["unconverged"]

    ``elements``: batch elements with at least one participating row that ran the
    Weiszfeld iteration (``max_iter >= 1``); ``unconverged``: those of them that spent
    ``max_iter`` updates without meeting the stopping rule (their output is the last
    iterate, not a median within ``tol``).  The counts live in a context variable, set
    only inside the block (nested blocks count separately; threads and asyncio tasks
    started outside it do not count); outside any block nothing is recorded and nothing
    is paid.

    ``elements``: the leading size of the calls to attribute (a replica batch of S runs):
    ``counts["by_element"]`` is then an ``(S,)`` int array of the unconverged elements of
    each, counted from the calls whose batch has exactly S elements; calls of
    another size (a component called replica by replica) add to
    ``counts["unattributed"]``.
    """
    counts = {"elements": 0, "unconverged": 0, "unattributed": 0,
              "by_element": None if elements is None else np.zeros(int(elements), np.int64)}
    token = _CONVERGENCE.set(counts)
    try:
        yield counts
    finally:
        _CONVERGENCE.reset(token)


def _record_convergence(ran: np.ndarray, running: np.ndarray) -> None:
    """Add a call's batch elements (``ran``) and those stopped by ``max_iter``
    (``running``) to the counts of an enclosing :func:`geometric_median_convergence`."""
    counts = _CONVERGENCE.get()
    if counts is not None:
        stopped = np.asarray(running) & ran
        counts["elements"] += int(np.count_nonzero(ran))
        counts["unconverged"] += int(np.count_nonzero(stopped))
        by = counts["by_element"]
        if by is not None and stopped.size == by.size:
            by += stopped.reshape(by.shape)
        else:
            counts["unattributed"] += int(np.count_nonzero(stopped))


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

    Returns ``(w, unresolved, running)``: ``unresolved (...,)`` bool marks the elements
    stopped that way (None when ``var`` is None); ``running (...,)`` bool the elements
    that were still iterating when ``max_iter`` updates were spent (stopping rule not
    met).
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
    return w, unresolved, active


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

    **Points with multiplicity.**  Rows ``z_j`` with
    ``‖z_j − z_m‖² <= max(ε², 4 ε_mach (‖z_j‖² + ‖z_m‖²))`` (norms from the Gram
    matrix ``g``: exact duplicates, up to the Gram matrix's roundoff, or within the
    smoothing ``ε``) are one point of multiplicity ``η_m = Σ_j wts_j`` over them
    (``z_m`` included).  A duplicated row (the sample-duplicating attack sends ``k``
    copies) is thus one heavy point, as the Weiszfeld/Vardi–Zhang theory treats it.

    Candidates: the mean, and for each of the ``K = min(n, 8)`` distinct points ``z_m``
    of smallest objective ``F(z_m) = Σ_j ‖z_m − z_j‖`` the *Vardi–Zhang step* from it:
    with ``v_j = 1/‖z_j − z_m‖`` over the rows not at ``z_m``,
    ``T = Σ v_j z_j / Σ v_j`` (the Weiszfeld step without the singular term) and
    ``r = Σ v_j · ‖T − z_m‖ = ‖Σ v_j (z_j − z_m)‖`` (the pull of the other rows), the
    point ``z_m + (1 − η_m/r)(T − z_m)`` if ``r > η_m``, else ``z_m`` (which is then
    optimal: the subgradient condition ``r <= η_m``; Vardi & Zhang, 2000).  The step
    never increases the objective, and far rows have weight ``~ 1/distance`` in it.
    (Without the multiplicity, the copies of ``z_m`` would get weights ``1/ε`` and the
    step would be ``~ε`` long: the iteration then stays on a duplicated row for
    hundreds of updates.)

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
    d2 = _sq_dists_from_gram(g)
    D = np.sqrt(d2)
    obj = _matvec(D, wts)
    present = wts > 0
    if not present.all():
        obj = np.where(present, obj, np.inf)
    # rows at one point (duplicates up to the Gram matrix's roundoff, or within eps)
    diag = np.diagonal(g, axis1=-2, axis2=-1)
    e2 = eps * eps if np.ndim(eps) == 0 else (eps * eps)[..., None]
    same = d2 <= np.maximum(e2, 4.0 * np.finfo(g.dtype).eps * (diag[..., :, None] + diag[..., None, :]))
    same &= present[..., None, :]
    # one candidate per point: rows with an earlier row at their point are not candidates
    later = np.tril(same, k=-1).any(axis=-1)
    objc = np.where(later, np.inf, obj)
    w_mean = wts / np.maximum(mf, 1.0)[..., None]
    f_mean = _objective(g, w_mean, wts)
    f_best = np.minimum(objc.min(axis=-1), f_mean)[..., None]
    tau = _START_REL * f_best
    if not (objc < f_best + tau).any():  # no row within reach: the mean
        return w_mean
    K = min(n, _START_ROWS)
    cand = np.argsort(objc, axis=-1, kind="stable")[..., :K]  # (..., K)
    E = cand[..., None] == np.arange(n)  # (..., K, n)
    Ef = E.astype(g.dtype)
    at = (Ef @ same.astype(g.dtype)) > 0  # (..., K, n): rows at the candidate's point
    eta = (at * wts[..., None, :]).sum(axis=-1)  # multiplicity of the candidate's point
    Dc = Ef @ D  # distances to the candidates (selection: exact)
    V = np.where(at, 0.0, wts[..., None, :] / np.maximum(Dc, eps if np.ndim(eps) == 0 else eps[..., None]))
    sv = V.sum(axis=-1)
    U = V / np.maximum(sv, np.finfo(g.dtype).tiny)[..., None] - E  # T − z_m in weights
    r = sv * np.sqrt(np.maximum(_vecdot(U, U @ g), 0.0))
    move = r > eta  # else the point is optimal (an absent candidate has p = 0 below)
    lam = np.where(move, 1.0 - eta / np.where(move, r, 1.0), 0.0)
    W = E + lam[..., None] * U  # (..., K, n)
    # weights of [mean, candidate rows]: 1 at the best objective, 0 from a gap tau on
    F = np.concatenate([f_mean[..., None], np.take_along_axis(objc, cand, axis=-1)], axis=-1)
    if (tau > 0).all():
        p = np.maximum(1.0 - (F - f_best) / tau, 0.0)
    else:  # f_best = 0 (identical rows): the candidates at 0
        gap = (F - f_best) / np.where(tau > 0, tau, 1.0)
        p = np.where(tau > 0, np.maximum(1.0 - gap, 0.0), F <= f_best).astype(g.dtype, copy=False)
    w0 = p[..., :1] * w_mean + _vecmat(p[..., 1:], W)
    return w0 / p.sum(axis=-1, keepdims=True)


@AGGREGATORS.register("geometric_median", "geomed", per_call=("mix",))
@_shared_doc
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
    over the batch.  Elements that spend the budget without meeting the rule are counted
    by :func:`geometric_median_convergence` (a run can record how often that happened).

    **Start** (``init="auto"``, the default): the mean, unless a row has an objective
    ``Σ_j ‖z_m − z_j‖`` within 0.1 % of the mean's or below; then the *Vardi–Zhang step
    from the medoid* — the best row moved towards the others by one Weiszfeld step
    without its own singular term, which never increases the objective (a duplicated
    row counts as one point of multiplicity ``k``: its copies do not pin the step) — or, when
    several of these candidates are within 0.1 % of the best objective, a blend of them
    that depends continuously on the rows (see :func:`_weiszfeld_start`; this keeps
    permutation invariance and the equivariances where the median is not unique).
    The textbook rule is "Weiszfeld, started at the mean"; that start is kept exactly
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
        the mean (the textbook rule).
    mix : None or array_like, shape ``(m, n)`` or ``(..., m, n)``
        Take the median of the rows ``mix @ z`` (see "Mixed rows"); leading axes must
        broadcast to those of ``z``.  Supplied per call (by
        :func:`byzsim.resampling.resampled`), not a configurable parameter
        (declared ``per_call`` at registration).

    {returns}

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

    w, unresolved, running = _weiszfeld(gram_at, g, var, w, wts, mf, mf > 0, tol, max_iter, eps2)
    _record_convergence(mf > 0 if unresolved is None else (mf > 0) & ~unresolved, running)
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
