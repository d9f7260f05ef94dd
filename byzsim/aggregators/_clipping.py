"""Centered clipping.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..protocols import Stateful

from ._base import (
    AGGREGATORS,
    _check_int,
    _finish,
    _flatten,
    _matvec,
    _per_element,
    _prepare,
    _shared_doc,
    _vecdot,
    _vecmat,
)
from ._gram import _medoid, _pow2_exponent, _safe_exp
from ._order import _masked_median_1d
from ._mean import mean
from ._median import coordinate_median

__all__ = ["CenteredClippingState", "centered_clipping", "centered_clipping_momentum"]


@AGGREGATORS.register("centered_clipping", "cc", replica_params=("tau",))
@_shared_doc
def centered_clipping(
    z: Any, mask: Any = None, *, tau: float | None = None, iterations: int = 3, init: str = "medoid"
) -> np.ndarray:
    """Centered clipping (Karimireddy, He & Jaggi, 2021).

    Starting at ``v_0`` (by default the *medoid*: the participating row with the smallest
    sum of squared distances to its ``⌊m_p/2⌋`` nearest others), ``L = iterations`` times

    .. math:: v_{l+1} = v_l + \\frac{1}{m_p} \\sum_{i \\in P} (z_i - v_l)
        \\min\\Big(1, \\frac{\\tau}{\\lVert z_i - v_l \\rVert}\\Big).

    The paper starts at the previous round's aggregate (a momentum state) and uses
    ``L = 1``: that is :func:`centered_clipping_momentum`.  This pure rule starts at a
    robust estimate of the same round (translation equivariant).  A row
    holding inf/NaN contributes 0 (clipping it has no defined direction).  Distances to
    the iterate are computed relative to ``v_0``: one matrix-vector product per
    iteration (in units of ``2^k``, exact, when squared distances would overflow or
    underflow; messages of tiny scale, ``max |z_ij| < 2^-500`` in float64, are scaled
    by a power of two before anything else), so the rule is scale equivariant from
    ``1e-300`` to ``1e300``.

    Parameters
    ----------
    {z_mask}
    tau : float, array or None, default None
        Clipping radius (absolute, units of the messages).  ``None``: the median over
        participants of ``‖z_i − v_0‖`` (data-driven; makes the rule scale equivariant).
        Per replica (declared ``replica_params``): an array broadcasting against
        ``z.shape[:-2] + (1, 1)``.
    iterations : int, default 3
        Number of clipping iterations ``L`` (``0`` returns ``v_0``).
    init : {"medoid", "median", "mean"}, default "medoid"
        Starting point ``v_0``: the medoid (rotation equivariant, robust), the coordinate
        median, or the mean (not robust).

    {returns}

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021.
    """
    iterations = _check_clipping("centered_clipping", tau, iterations, "init", init, ("medoid", "median", "mean"))
    z, wts, m = _prepare(z, mask)
    z2, present, m2, lead = _flatten(z, wts, m)
    t = None if tau is None else _per_element(tau, lead)
    return _finish(_clip_from(z2, present, m2, init, t, iterations, mask is not None), m2, lead, z.dtype)


def _check_clipping(name: str, tau, iterations, key: str, start: str, choices: tuple) -> int:
    """Check the parameters of a centered-clipping rule; returns ``iterations``."""
    if tau is not None and not np.all(np.isfinite(tau) & (np.asarray(tau) >= 0)):
        raise ValueError(f"{name}: tau must be >= 0 or None, got tau = {tau!r}")
    iterations = _check_int("iterations", iterations, name)
    if start not in choices:
        listed = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
        raise ValueError(f"{name}: {key} must be {listed}, got {start!r}")
    return iterations


def _clip_from(z2: np.ndarray, present: np.ndarray, m2: np.ndarray, start, tau, iterations: int,
               masked: bool) -> np.ndarray:
    """``(B, d)`` centered clipping of the flattened ``z2 (B, n, d)`` from ``start``: a
    rule name (``"medoid"``, ``"median"``, ``"mean"``) or the start points ``(B, d)``
    themselves (:func:`centered_clipping_momentum`: the previous round's output);
    ``tau``: ``(B,)`` float64 radii or ``None`` (data-driven); ``masked``: a
    participation mask was given."""
    E = _safe_exp(z2.dtype)
    # messages of tiny scale (max |z_ij| < 2^-E, e.g. 1e-160): their Gram entries and
    # squared distances underflow.  Work on 2^-s z (a power of two: exact, so the rule
    # stays exactly scale equivariant) and scale the result back.
    s = _tiny_exponent(np.where(present[:, :, None], z2, 0.0) if masked else z2, E)
    if s is not None:
        z2 = np.ldexp(z2, -s[:, None, None])
    if not isinstance(start, str):
        v0 = np.asarray(start, dtype=z2.dtype)
        if s is not None:
            v0 = np.ldexp(v0, -s[:, None]).astype(z2.dtype, copy=False)
    elif start == "medoid":
        v0 = _medoid(z2, present)
    else:
        sub = present if masked else None
        v0 = coordinate_median(z2, sub) if start == "median" else mean(z2, sub)
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
            t = tau.astype(z2.dtype)
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
    return out


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


class CenteredClippingState(NamedTuple):
    """State of :func:`centered_clipping_momentum`: ``center (S, d)`` the previous
    round's output, ``started (S,)`` bool (False before round 1)."""

    center: np.ndarray
    started: np.ndarray


@AGGREGATORS.register("centered_clipping_momentum", "cc_momentum", stateful=True, replica_params=("tau",))
def centered_clipping_momentum(*, tau: float | None = None, iterations: int = 1, first: str = "zero") -> Stateful:
    """Centered clipping with its centre carried across rounds (Karimireddy, He & Jaggi,
    2021, Algorithm 2).

    Round ``t`` starts at the previous round's output, ``v^{(0)} = v_{t−1}``, and
    repeats ``L = iterations`` times

    .. math:: v^{(l+1)} = v^{(l)} + \\frac{1}{m_p} \\sum_{i \\in P}
        \\mathrm{clip}_\\tau\\big(m_i - v^{(l)}\\big), \\qquad
        \\mathrm{clip}_\\tau(u) = u \\min\\Big(1, \\frac{\\tau}{\\lVert u \\rVert}\\Big),

    with ``P`` the ``m_p`` participating rows; ``v_t = v^{(L)}`` is the output and the
    next round's centre.  With client momentum (``Config.momentum``) the ``m_i`` are the
    clients' momenta, the paper's setting.  Round 1 starts at ``first``: ``"zero"``
    (``v_0 = 0``) or the pure rule's robust start (``"medoid"``, ``"median"``,
    ``"mean"``; then round 1 equals :func:`centered_clipping` with the same ``tau`` and
    ``iterations``).  Numerics (scaling, non-finite rows) as :func:`centered_clipping`.

    Example with pencil and paper (1-D, ``τ = 1``, ``L = 1``, ``v_0 = 0``): messages
    ``(0, 2, 10)`` give ``v_1 = 0 + (0 + 1 + 1)/3 = 2/3``; then ``(1, 1, −10)`` give
    ``v_2 = 2/3 + (1/3 + 1/3 − 1)/3 = 5/9``.

    Parameters
    ----------
    tau : float, array or None, default None
        Clipping radius ``τ`` (units of the messages); ``None``: the median over the
        participants of ``‖m_i − v^{(0)}‖`` each round.  Per replica: an array
        broadcasting against ``z.shape[:-2] + (1, 1)``, as :func:`centered_clipping`.
    iterations : int, default 1
        ``L`` (the paper's default is 1).
    first : {"zero", "medoid", "median", "mean"}, default "zero"
        The centre of round 1.

    Returns
    -------
    :class:`byzsim.protocols.Stateful`
        ``init((S, n, d), dtype) -> CenteredClippingState`` (centre ``(S, d)`` zeros) and
        ``apply(state, z (..., n, d), mask, rng) -> ((..., d), state')``.

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021.
    """
    iterations = _check_clipping("centered_clipping_momentum", tau, iterations, "first", first,
                                 ("zero", "medoid", "median", "mean"))

    def init(shape, dtype=np.float64) -> CenteredClippingState:
        S, d = shape[0], shape[-1]
        return CenteredClippingState(np.zeros((S, d), dtype), np.zeros(S, bool))

    def apply(state: CenteredClippingState, z, mask=None, rng=None):
        z, wts, m = _prepare(z, mask)
        z2, present, m2, lead = _flatten(z, wts, m)
        d = z2.shape[-1]
        center = np.asarray(state.center).reshape(-1, d).astype(z2.dtype, copy=False)
        started = np.asarray(state.started).reshape(-1)
        start = center
        if first != "zero" and not started.all():
            rule = _clip_from(z2, present, m2, first, None, 0, mask is not None)  # the pure start
            start = np.where(started[:, None], center, rule)
        t = None if tau is None else _per_element(tau, lead)
        out = _clip_from(z2, present, m2, start, t, iterations, mask is not None)
        res = _finish(out, m2, lead, z.dtype)
        keep = np.where((m2 > 0)[:, None], out, center)  # nobody took part: the centre stays
        new = CenteredClippingState(keep.reshape(np.shape(state.center)).astype(state.center.dtype, copy=False),
                                    np.ones(np.shape(state.started), bool))
        return res, new

    return Stateful(init, apply, "aggregator")
