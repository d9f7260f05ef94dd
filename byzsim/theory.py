"""The papers' constants and bounds, as plain functions (no simulation here).

Paper B (RS-Byrd-SAGA, ``byzantine-vr-noniid``)
    ``C_a = (2 − 2a)/(1 − 2a)`` (Property 1, Lemma 1), ``d = (W − 1)/(sW − 1)``
    (Lemmas 1–3), and the learning-error factors of Table I / Fig. 3: ``C_α²`` for
    Byrd-SAGA (needs ``B < W/2``) and ``d·C_{sα}²`` for RS-Byrd-SAGA (needs
    ``B < W/(2s)``, i.e. ``sα < 1/2``), with ``α = B/W``.  E.g. ``W = 30, α = 0.1``:
    5.0625 vs 3.4953 (s=2), 3.9916 (s=3), 8.7731 (s=4).

Paper A (AsynRSA-VR, ``asynrsa-vr``)
    Theorem 1: step size ``α ≤ μ/(12 J (μ+L) L)`` (eq. 44, which implies the
    three-term condition (43)), linear rate ``1 − γμLα/(μ+L)`` and steady-state error
    ``Δ1`` (eq. 12); Lemma 1: the penalty ``λ ≥ max_i ‖∇f_i(x̃*)‖_b``, ``1/b + 1/p = 1``,
    makes the penalised optimum the true one.

Bounds on measured quantities (:class:`Bound`)
    :func:`paper_b_bounds` evaluates every learning error of Table I with the explicit
    constants of Theorems 1 and 3 (``Δ2``) for measured ``σ², δ², μ, L``;
    :func:`asynrsa_theorem1` evaluates Theorem 1's rate and ``Δ1``.  A bound is only a
    guarantee inside its theorem's range (``sα < 1/2``, ``μ > 0``, the step condition):
    outside it a :class:`~byzsim.config.TheoryWarning` names the failed condition and
    ``Bound.value`` is ``None`` (``Bound.formula`` keeps the expression's value when it
    is defined, e.g. a step above the condition).

Notation clash: paper A's ``α`` is a step size and ``γ`` a participation probability;
paper B's ``α`` is the Byzantine fraction ``B/W`` and ``γ`` its step size.  Each
function says which is meant.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "c_alpha",
    "variance_factor",
    "learning_error_factor",
    "fig3_curves",
    "resampling_guarantee",
    "asynrsa_step_terms",
    "asynrsa_step_bound",
    "asynrsa_step_bound_tight",
    "asynrsa_rate",
    "asynrsa_delta1",
    "lemma1_lambda_threshold",
    "Bound",
    "sgd_step_bound",
    "saga_step_bound",
    "rs_byrd_sgd_error",
    "rs_byrd_saga_error",
    "paper_b_bounds",
    "asynrsa_theorem1",
]


def _scalar_or_array(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


# --------------------------------------------------------------------------------------
# paper B
# --------------------------------------------------------------------------------------
def c_alpha(alpha):
    """Geometric-median constant ``C_α = (2 − 2α)/(1 − 2α)`` (paper B, Property 1).

    Parameters
    ----------
    alpha : float or array_like
        Byzantine fraction, ``0 ≤ α < 1/2``.  For RS-Byrd-SAGA pass ``s·α``.

    Returns
    -------
    float or ndarray
        ``C_α`` (≥ 2, increasing, → ∞ as ``α → 1/2``).

    Raises
    ------
    ValueError
        If any ``α`` is outside ``[0, 1/2)`` (or not finite).
    """
    a = np.asarray(alpha, dtype=float)
    bad = ~((a >= 0) & (a < 0.5))
    if np.any(bad):
        raise ValueError(
            f"C_alpha needs alpha in [0, 1/2); got {a[bad].ravel()[:5].tolist()}"
        )
    return _scalar_or_array((2 - 2 * a) / (1 - 2 * a))


def variance_factor(W: int, s: int) -> float:
    """Resampling variance factor ``d = (W − 1)/(sW − 1)`` (paper B, Lemmas 1–3).

    ``d = 1`` for ``s = 1``; ``d ≈ 1/s`` for large ``W``.  Exact variance factor of every
    resampled message when no message is Byzantine (see :mod:`byzsim.resampling`).

    Raises
    ------
    ValueError
        Unless ``W ≥ 2`` and ``1 ≤ s ≤ W`` are integers.
    """
    if int(W) != W or W < 2:
        raise ValueError(f"variance_factor needs an integer W >= 2, got W = {W!r}")
    if int(s) != s or not 1 <= s <= W:
        raise ValueError(f"invalid resampling size s = {s!r}: must lie in [1, W] = [1, {W}]")
    return (W - 1) / (s * W - 1)


def learning_error_factor(alpha, s: int = 1, W: int = 30):
    """Learning-error factor of Table I / Fig. 3 (the ``δ²`` coefficient up to constants).

    ``d · C_{sα}²`` with ``d = (W − 1)/(sW − 1)``: RS-Byrd-SAGA for ``s ≥ 2`` and
    Byrd-SAGA's ``C_α²`` for ``s = 1`` (where ``d = 1``).

    Parameters
    ----------
    alpha : float or array_like
        Byzantine fraction ``α = B/W`` in ``[0, 1]``.
    s : int
        Resampling size (``1`` = no resampling).
    W : int
        Number of workers (Fig. 3: 30).

    Returns
    -------
    float or ndarray
        The factor; ``+inf`` at and beyond the pole ``α ≥ 1/(2s)`` (where ``C_{sα}``
        is infinite or, past the pole, negative and meaningless: the theory gives no
        finite bound there).

    Raises
    ------
    ValueError
        If any ``α`` is outside ``[0, 1]`` or ``s``/``W`` are invalid.
    """
    d = variance_factor(W, s)
    a = np.asarray(alpha, dtype=float)
    if np.any(~((a >= 0) & (a <= 1))):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    sa = s * a
    ok = sa < 0.5
    out = np.full(a.shape, np.inf)
    c = (2 - 2 * sa[ok]) / (1 - 2 * sa[ok])
    out[ok] = d * c * c
    return _scalar_or_array(out)


def fig3_curves(W: int = 30, s_values=(2, 3, 4), n_points: int | None = None) -> dict:
    """The curves of paper B, Fig. 3: learning-error factor versus ``α``.

    Parameters
    ----------
    W : int
        Number of workers.
    s_values : iterable of int
        Resampling sizes for RS-Byrd-SAGA.
    n_points : int, optional
        ``None`` (default): ``α = B/W`` for ``B = 0..W`` (the attainable fractions);
        otherwise a fine grid ``linspace(0, 1/2, n_points)``.

    Returns
    -------
    dict
        ``"alpha"``: ``(m,)`` grid; ``"Byrd-SAGA"``: ``C_α²``; ``"RS-Byrd-SAGA s=<s>"``
        for every ``s``: ``d·C_{sα}²``.  All values are ``(m,)`` float arrays with
        ``+inf`` at and beyond each curve's pole ``α = 1/(2s)``.
    """
    if n_points is None:
        alpha = np.arange(W + 1) / W
    else:
        alpha = np.linspace(0.0, 0.5, int(n_points))
    out = {"alpha": alpha, "Byrd-SAGA": learning_error_factor(alpha, 1, W)}
    for s in s_values:
        out[f"RS-Byrd-SAGA s={s}"] = learning_error_factor(alpha, s, W)
    return out


def resampling_guarantee(W: int, B: int, s: int) -> bool:
    """Whether paper B's guarantee applies: ``B < W/(2s)``, i.e. ``sα < 1/2``.

    Lemma 1 and Theorem 1 assume ``2sB < W`` (for ``s = 1``: Byrd-SAGA's ``B < W/2``).
    (Lemmas 2–3 alone need only ``sB < W``: some resampled message is uncontaminated.)
    Meant for warnings; nothing is refused.
    """
    return 2 * s * B < W


# --------------------------------------------------------------------------------------
# paper A
# --------------------------------------------------------------------------------------
def _check_mu_L(mu: float, L: float) -> None:
    if not (mu > 0 and L >= mu):
        raise ValueError(f"need 0 < mu <= L, got mu = {mu!r}, L = {L!r}")


def asynrsa_step_terms(mu: float, L: float, J: int) -> tuple[float, float, float]:
    """The three step-size conditions of paper A's proof, eq. (43).

    Returns
    -------
    (t19, t38, t35) : tuple of float
        ``1/(2(μ+L))`` from (19), ``(μ+L)/(2JμL)`` from (38), ``μ/(12(μ+L)L)`` from
        (35); the step ``α`` must be at most each of them.
    """
    _check_mu_L(mu, L)
    return (1 / (2 * (mu + L)), (mu + L) / (2 * J * mu * L), mu / (12 * (mu + L) * L))


def asynrsa_step_bound_tight(mu: float, L: float, J: int) -> float:
    """``min`` of the three terms of eq. (43) (the weakest sufficient step condition)."""
    return min(asynrsa_step_terms(mu, L, J))


def asynrsa_step_bound(mu: float, L: float, J: int) -> float:
    """Step-size bound of paper A, Theorem 1 / eq. (44): ``α ≤ μ/(12 J (μ+L) L)``.

    It implies all three conditions of (43) when ``μ ≤ L`` and ``J ≥ 1``, so it is at
    most :func:`asynrsa_step_bound_tight`.

    Raises
    ------
    ValueError
        Unless ``0 < μ ≤ L`` and ``J ≥ 1``.
    """
    _check_mu_L(mu, L)
    if J < 1:
        raise ValueError(f"J (samples per client) must be >= 1, got {J!r}")
    return mu / (12 * J * (mu + L) * L)


def asynrsa_rate(mu: float, L: float, alpha: float, gamma: float) -> float:
    """Linear rate of paper A, Theorem 1, eq. (11): ``1 − γ μ L α/(μ + L)``.

    ``alpha`` is the step size, ``gamma`` the participation probability.
    """
    _check_mu_L(mu, L)
    return 1 - gamma * mu * L * alpha / (mu + L)


def asynrsa_delta1(mu, L, alpha, gamma, lam, r, q, d) -> float:
    """Steady-state error ``Δ1`` of paper A, Theorem 1, eq. (12)::

        Δ1 = (μ+L)/(γμL) · α · (γ·16λ²rd + 16λ²r²d + 2λ²q²d)
             + (μ+L)² λ² q² d / (γ μ² L²)
             + (1 − γ)(μ+L)² λ² r² d / (γ μ² L²)

    ``alpha`` step size, ``gamma`` participation probability ``(0, 1]``, ``lam`` penalty
    λ, ``r``/``q`` numbers of regular/Byzantine clients, ``d`` model dimension.
    """
    _check_mu_L(mu, L)
    if not 0 < gamma <= 1:
        raise ValueError(f"participation probability gamma must lie in (0, 1], got {gamma!r}")
    lam2 = lam * lam
    a = (mu + L) / (gamma * mu * L) * alpha * (
        gamma * 16 * lam2 * r * d + 16 * lam2 * r * r * d + 2 * lam2 * q * q * d
    )
    b = (mu + L) ** 2 * lam2 * q * q * d / (gamma * mu**2 * L**2)
    c = (1 - gamma) * (mu + L) ** 2 * lam2 * r * r * d / (gamma * mu**2 * L**2)
    return float(a + b + c)


def lemma1_lambda_threshold(grads_at_opt, p: float = 1) -> float:
    """Smallest penalty of paper A, Lemma 1: ``max_i ‖∇f_i(x̃*)‖_b``, ``1/b + 1/p = 1``.

    Parameters
    ----------
    grads_at_opt : array_like, shape ``(r, d)``
        Regular clients' local gradients at the optimum ``x̃*`` of problem (1).
    p : float
        Penalty norm ``p ≥ 1`` (paper A: ``p = 1`` → ``b = ∞``; ``p = 2`` → ``b = 2``;
        ``p = ∞`` → ``b = 1``).

    Returns
    -------
    float
        ``λ`` at or above which the penalised and the original optima coincide.
    """
    g = np.asarray(grads_at_opt, dtype=float)
    if g.ndim != 2:
        raise ValueError(f"grads_at_opt must have shape (r, d), got {g.shape}")
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    if p == 1:
        b = np.inf
    elif np.isinf(p):
        b = 1.0
    else:
        b = p / (p - 1)
    return float(np.linalg.norm(g, ord=b, axis=1).max())


# --------------------------------------------------------------------------------------
# bounds evaluated on measured quantities
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """One theorem's bound evaluated on given numbers.

    ``name``: what it bounds (e.g. ``"RS-Byrd-SAGA"``); ``formula``: the expression's value
    (``None`` where it is undefined, e.g. ``sα ≥ 1/2`` or ``μ = 0``); ``conditions``:
    ``((description, holds), …)`` of the theorem's range; ``value``: ``formula`` when every
    condition holds, else ``None`` (no guarantee); ``source``: theorem and equation.
    """

    name: str
    formula: float | None
    conditions: tuple[tuple[str, bool], ...]
    source: str

    @property
    def holds(self) -> bool:
        return all(ok for _, ok in self.conditions)

    @property
    def value(self) -> float | None:
        return self.formula if self.holds else None

    def failed(self) -> list[str]:
        return [c for c, ok in self.conditions if not ok]


def _bound(name, formula, conditions, source, warn: bool) -> Bound:
    b = Bound(name, formula, tuple((c, bool(ok)) for c, ok in conditions), source)
    if warn and not b.holds:
        from .config import TheoryWarning

        warnings.warn(
            f"{name}: outside {source}'s range, which needs {'; '.join(b.failed())}: "
            "no bound reported",
            TheoryWarning, stacklevel=3,
        )
    return b


def _resampling_terms(B: int, W: int, s: int):
    """``(sα, d, C_{sα}² or None)`` of paper B for ``α = B/W``."""
    if int(B) != B or not 0 <= B < W:
        raise ValueError(f"B (Byzantine workers) must be an integer in [0, W) = [0, {W}), got {B!r}")
    d = variance_factor(W, s)
    sa = s * B / W
    c2 = c_alpha(sa) ** 2 if sa < 0.5 else None
    return sa, d, c2


def sgd_step_bound(mu: float, L: float) -> float:
    """Step condition of paper B, Theorem 3 (RS-Byrd-SGD; ``s = 1``: Byrd-SGD):
    ``γ ≤ μ/(2L²)``."""
    _check_mu_L(mu, L)
    return mu / (2 * L * L)


def saga_step_bound(mu: float, L: float, J: int, B: int, W: int, s: int = 1) -> float | None:
    """Step condition of paper B, Theorem 1 (RS-Byrd-SAGA; ``s = 1``: Byrd-SAGA):
    ``γ ≤ μ/(2 √(10 J² L² C_{sα}))``; ``None`` when ``sα ≥ 1/2`` (no condition exists)."""
    _check_mu_L(mu, L)
    _, _, c2 = _resampling_terms(B, W, s)
    if c2 is None:
        return None
    return mu / (2 * math.sqrt(10 * J * J * L * L * math.sqrt(c2)))


def rs_byrd_sgd_error(sigma2, delta2, mu, B, W, s=1, *, L=None, step=None, warn=True) -> Bound:
    """Learning error of RS-Byrd-SGD, paper B Theorem 3, eq. (65) (``s = 1``: Byrd-SGD)::

        Δ2 = 2/μ² · ((d + (1 − d)/R) C_{sα}² σ² + d C_{sα}² δ²)

    with ``α = B/W``, ``R = W − B``, ``d = (W−1)/(sW−1)`` (``s = 1``: ``d = 1``, so
    ``Δ2 = 2 C_α² (σ² + δ²)/μ²``, Table I's Byrd-SGD).  Range: ``sα < 1/2``, ``μ > 0``
    and, when ``L`` and ``step`` are given, ``step ≤ μ/(2L²)``.

    ``sigma2``: inner variation of the stochastic gradient actually used (a minibatch's);
    ``delta2``: outer variation; ``mu``: strong convexity of ``f``.
    """
    sa, d, c2 = _resampling_terms(B, W, s)
    R = W - B
    ok_mu = mu > 0
    formula = None
    if c2 is not None and ok_mu:
        formula = 2 / mu**2 * ((d + (1 - d) / R) * c2 * sigma2 + d * c2 * delta2)
    conds = [(f"s·α = {sa:.3g} < 1/2", c2 is not None), (f"μ = {mu:.3g} > 0", ok_mu)]
    if step is not None and L is not None and ok_mu and L >= mu:
        sb = sgd_step_bound(mu, L)
        conds.append((f"step {step:.3g} ≤ μ/(2L²) = {sb:.3g}", step <= sb))
    name = "Byrd-SGD" if s == 1 else f"RS-Byrd-SGD s={s}"
    return _bound(name, formula, conds, "paper B Theorem 3, eq. (65)", warn)


def rs_byrd_saga_error(delta2, mu, B, W, s=1, *, L=None, J=None, step=None, warn=True) -> Bound:
    """Learning error of RS-Byrd-SAGA, paper B Theorem 1, eq. (22) (``s = 1``: Byrd-SAGA)::

        Δ2 = 5 d C_{sα}² δ² / μ²

    Range: ``sα < 1/2``, ``μ > 0`` and, when ``L``, ``J`` and ``step`` are given,
    ``step ≤ μ/(2 √(10 J² L² C_{sα}))``.  The inner variation does not enter.
    """
    sa, d, c2 = _resampling_terms(B, W, s)
    ok_mu = mu > 0
    formula = 5 * d * c2 * delta2 / mu**2 if (c2 is not None and ok_mu) else None
    conds = [(f"s·α = {sa:.3g} < 1/2", c2 is not None), (f"μ = {mu:.3g} > 0", ok_mu)]
    if step is not None and L is not None and J is not None and c2 is not None and ok_mu and L >= mu:
        sb = saga_step_bound(mu, L, J, B, W, s)
        conds.append((f"step {step:.3g} ≤ μ/(2√(10J²L²C)) = {sb:.3g}", step <= sb))
    name = "Byrd-SAGA" if s == 1 else f"RS-Byrd-SAGA s={s}"
    return _bound(name, formula, conds, "paper B Theorem 1, eq. (22)", warn)


def paper_b_bounds(sigma2, delta2, mu, B, W, s=2, *, L=None, J=None, step=None, warn=True) -> dict:
    """Table I of paper B with its explicit constants: ``{name: Bound}`` for Byrd-SGD,
    RS-Byrd-SGD (resampling size ``s``), Byrd-SAGA and RS-Byrd-SAGA (``s``), evaluated on
    measured ``σ², δ², μ`` (and, if given, the step conditions with ``L``, ``J``,
    ``step``).  Plain SGD (mean aggregation) has no bound in paper B and is not listed."""
    kw = dict(L=L, step=step, warn=warn)
    return {
        "Byrd-SGD": rs_byrd_sgd_error(sigma2, delta2, mu, B, W, 1, **kw),
        "RS-Byrd-SGD": rs_byrd_sgd_error(sigma2, delta2, mu, B, W, s, **kw),
        "Byrd-SAGA": rs_byrd_saga_error(delta2, mu, B, W, 1, J=J, **kw),
        "RS-Byrd-SAGA": rs_byrd_saga_error(delta2, mu, B, W, s, J=J, **kw),
    }


def asynrsa_theorem1(mu, L, J, alpha, gamma, lam, r, q, d, *, warn=True) -> tuple[Bound, Bound]:
    """Paper A, Theorem 1 on given numbers: ``(rate, Δ1)`` as two :class:`Bound`.

    ``rate = 1 − γμLα/(μ+L)`` (eq. 11) and ``Δ1`` (eq. 12, :func:`asynrsa_delta1`).
    Range: ``μ > 0`` (Assumption 1: every ``f_i`` and ``f0`` ``μ``-strongly convex),
    ``μ ≤ L`` and the step ``α ≤ μ/(12J(μ+L)L)`` (eq. 44).
    """
    ok_mu = mu > 0 and L >= mu
    conds = [(f"0 < μ = {mu:.3g} ≤ L = {L:.3g}", ok_mu)]
    rate = delta1 = None
    if ok_mu:
        sb = asynrsa_step_bound(mu, L, J)
        conds.append((f"α = {alpha:.3g} ≤ μ/(12J(μ+L)L) = {sb:.3g}", alpha <= sb))
        rate = asynrsa_rate(mu, L, alpha, gamma)
        delta1 = asynrsa_delta1(mu, L, alpha, gamma, lam, r, q, d)
    src = "paper A Theorem 1"
    return (_bound("AsynRSA-VR rate", rate, conds, src + ", eq. (11)", warn),
            _bound("AsynRSA-VR Δ1", delta1, conds, src + ", eq. (12)", False))
