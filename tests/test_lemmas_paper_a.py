"""Paper A (AsynRSA-VR): Lemma 1 solved independently with scipy, and Theorem 1's
linear convergence to a ball checked on a strongly convex problem.

(The l_p subgradient's dual norm ≤ 1 and ⟨g, u⟩ = ‖u‖_p are property-tested in
tests/test_algorithms.py and not repeated here.)

**Lemma 1** (p = 1).  Problem (1): ``x̃* = argmin Σ_i f_i(x) + f0(x)``; problem (3):
``min Σ_i f_i(x_i) + λ‖x_i − x0‖₁ + f0(x0)``.  (3) is nonsmooth; it is solved as a
smooth bound-constrained problem by eliminating ``x_i = x0 + u_i⁺ − u_i⁻`` with
``u_i^± ≥ 0`` (L-BFGS-B).  With ``λ ≥ max_i ‖∇f_i(x̃*)‖_∞`` its solution is the
consensus ``[x̃*; …; x̃*]``; with λ below the threshold the consensus is not optimal
(its objective exceeds the solver's).  Softmax regression with l2 (strongly convex f_i)
on non-i.i.d. clients, f0 = 0.01/2 ‖x‖² (paper A).

**Theorem 1.**  The library's :class:`PenaltyMethod` with SAGA on per-sample
quadratics ``f_i(x; j) = h_ij/2 ‖x − c_ij‖²`` with ``h_ij ∈ {1, 2}`` (so μ = 1,
L = 2), ``f0 = μ0/2 ‖x‖²`` (μ0 = 1), where x̃*, x* (for λ above Lemma 1's threshold)
and the SAGA table points ``φ_ij = c_ij + table_ij / h_ij`` are known exactly, so the
Lyapunov function ``T^k = ‖x^k − x*‖² + (2JμLα/(3(μ+L)))·S^k`` is computed exactly.
With the theorem's step ``α = μ/(12J(μ+L)L)``, the mean of ``T^k`` over seeds must stay
below ``ρ^k T^0 + Δ1`` (``byzsim.theory.asynrsa_rate`` / ``asynrsa_delta1``) at every
checkpoint, for full/partial participation and with a Byzantine client.  A step that
ignores the SAGA correction violates the bound (large within-client noise), and the
ball shrinks with the step size (Δ1 ∝ α when q = 0, γ = 1) — which a wrongly
normalised l1 subgradient does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import minimize

import broken_variants as bv
import byzsim.algorithms._penalty as penalty_round
import byzsim.algorithms._subgradients as subgradients
from byzsim.algorithms import PenaltyMethod, Problem, SagaEstimator
from byzsim.attacks import get_attack
from byzsim.models import SoftmaxRegression
from byzsim.theory import (
    asynrsa_delta1,
    asynrsa_rate,
    asynrsa_step_bound,
    lemma1_lambda_threshold,
)


# ======================================================================================
# Lemma 1
# ======================================================================================
F0 = 0.01  # f0(x) = F0/2 ‖x‖² (paper A)


@pytest.fixture(scope="module")
def lemma1_instance():
    """Three non-i.i.d. clients (client i holds mostly class i), softmax with l2."""
    rng = np.random.default_rng(7)
    r, J, p, C = 3, 12, 2, 3
    model = SoftmaxRegression(n_features=p, n_classes=C, bias=True, l2=0.1)
    centers = 2.0 * rng.normal(size=(C, p))
    y = np.where(rng.random((r, J)) < 0.8, np.arange(r)[:, None], rng.integers(C, size=(r, J)))
    X = model.prepare(centers[y] + rng.normal(size=(r, J, p)))
    return model, X, y


def solve_unpenalized(model, X, y):
    d = model.dim
    f = lambda w: float(model.loss(w, X, y).sum() + 0.5 * F0 * w @ w)  # noqa: E731
    g = lambda w: model.grad(w, X, y).sum(0) + F0 * w  # noqa: E731
    res = minimize(f, np.zeros(d), jac=g, method="L-BFGS-B",
                   options=dict(gtol=1e-13, ftol=1e-16, maxiter=20000))
    return res.x


def penalized_objective(model, X, y, lam, x0, xs):
    """Objective of (3) at server model x0 and client models xs (r, d)."""
    return float(model.loss(xs, X, y).sum() + lam * np.abs(xs - x0).sum() + 0.5 * F0 * x0 @ x0)


def solve_penalized(model, X, y, lam):
    """(3) with p = 1 via x_i = x0 + u_i⁺ − u_i⁻, u^± ≥ 0: a smooth problem with bounds."""
    r, d = X.shape[0], model.dim

    def unpack(v):
        return v[:d], v[d : d + r * d].reshape(r, d), v[d + r * d :].reshape(r, d)

    def fun(v):
        x0, up, um = unpack(v)
        xs = x0 + up - um
        G = model.grad(xs, X, y)  # (r, d): ∇f_i(x_i)
        val = model.loss(xs, X, y).sum() + lam * (up.sum() + um.sum()) + 0.5 * F0 * x0 @ x0
        grad = np.concatenate([G.sum(0) + F0 * x0, (G + lam).ravel(), (lam - G).ravel()])
        return float(val), grad

    bounds = [(None, None)] * d + [(0.0, None)] * (2 * r * d)
    res = minimize(fun, np.zeros(d + 2 * r * d), jac=True, method="L-BFGS-B", bounds=bounds,
                   options=dict(gtol=1e-12, ftol=1e-16, maxiter=50000, maxcor=30))
    x0, up, um = unpack(res.x)
    return x0, x0 + up - um


def lemma1_conclusion_holds(instance, lam, tol=1e-5):
    """Whether the solution of (3) is the consensus at x̃* (to ``tol``), and the
    objective gap F3(consensus) − F3(solution) (> 0 when the consensus is not optimal)."""
    model, X, y = instance
    x_star = solve_unpenalized(model, X, y)
    x0, xs = solve_penalized(model, X, y, lam)
    gap = penalized_objective(model, X, y, lam, x_star, np.tile(x_star, (len(X), 1))) \
        - penalized_objective(model, X, y, lam, x0, xs)
    same = np.abs(x0 - x_star).max() <= tol and np.abs(xs - x_star).max() <= tol
    return same, gap


def threshold(instance, fn=lemma1_lambda_threshold):
    model, X, y = instance
    x_star = solve_unpenalized(model, X, y)
    return fn(model.grad(x_star, X, y), 1)


def test_lemma1_threshold_is_heterogeneous(lemma1_instance):
    """Sanity: the clients disagree at x̃* (the lemma is not trivially true), and the
    local gradients balance the regulariser: Σ_i ∇f_i(x̃*) + ∇f0(x̃*) = 0."""
    model, X, y = lemma1_instance
    x_star = solve_unpenalized(model, X, y)
    G = model.grad(x_star, X, y)
    np.testing.assert_allclose(G.sum(0) + F0 * x_star, 0.0, atol=1e-7)
    assert np.abs(G).max() > 0.1
    assert threshold(lemma1_instance) == pytest.approx(np.abs(G).max())


@pytest.mark.parametrize("factor", [1.0001, 1.05, 2.0])
def test_lemma1_penalized_optimum_equals_true_optimum_above_threshold(lemma1_instance, factor):
    lam = factor * threshold(lemma1_instance)
    same, gap = lemma1_conclusion_holds(lemma1_instance, lam)
    assert same
    assert gap >= -1e-10  # the solver found nothing better than the consensus


@pytest.mark.parametrize("factor", [0.5, 0.9])
def test_lemma1_below_threshold_the_optimum_differs(lemma1_instance, factor):
    """Below the threshold the consensus at x̃* is not optimal for (3): the solver
    finds a strictly lower objective with client models away from the server's."""
    lam = factor * threshold(lemma1_instance)
    same, gap = lemma1_conclusion_holds(lemma1_instance, lam)
    assert not same
    assert gap > 1e-7


def test_lemma1_catches_a_threshold_without_the_max_over_clients(lemma1_instance):
    """Lemma 1 with a broken threshold (the norm of the *mean* gradient, ≈ ‖∇f0‖/r):
    applying the lemma with it gives a wrong conclusion."""
    lam_bad = 1.05 * threshold(lemma1_instance, bv.lemma1_threshold_of_the_mean)
    assert lam_bad < 0.5 * threshold(lemma1_instance)
    same, gap = lemma1_conclusion_holds(lemma1_instance, lam_bad)
    assert not same and gap > 1e-7


# ======================================================================================
# Theorem 1
# ======================================================================================
MU, L, MU0 = 1.0, 2.0, 1.0


@dataclass(frozen=True)
class PerSampleQuadratic:
    """``f(x; c, h) = h/2 ‖x − c‖²`` with ``X`` holding the centers ``c (n, J, d)`` and
    ``y`` the curvatures ``h (n, J)``: the dense-SAGA model interface of byzsim."""

    dim: int
    l2: float = 0.0

    def per_sample_grads(self, w, X, y):
        return y[..., None] * (np.asarray(w)[..., None, :] - X)

    def grad(self, w, X, y):
        return self.per_sample_grads(w, X, y).mean(-2)

    def add_regularizer_grad(self, g, w):
        return g


def quadratic_problem(r=4, q=0, J=2, d=4, delta=0.5, noise=150.0, seed=0):
    """Regular client i has f_i(x) = h̄/2 ‖x − m_i‖² + const with m_i = δ·s_i for sign
    vectors s_i summing to 0 (so x̃* = 0 and every ∇f_i(x̃*) has equal-magnitude
    coordinates: the l∞ threshold is h̄δ, the l2 one √d times larger), and per-sample
    centers scattered around m_i with std ``noise`` (inner variation)."""
    rng = np.random.default_rng(seed)
    n = r + q
    s = rng.choice([-1.0, 1.0], size=(r // 2, d))
    m = np.zeros((n, d))
    m[:r] = delta * np.concatenate([s, -s])
    h = np.tile(np.resize([1.0, 2.0], J), (n, 1))
    e = noise * rng.normal(size=(n, J, d))
    e -= (h[..., None] * e).sum(1, keepdims=True) / h.sum(1)[:, None, None]  # Σ_j h_j e_j = 0
    X = m[:, None, :] + e
    byz = np.zeros(n, bool)
    byz[r:] = True
    return Problem(PerSampleQuadratic(d), X, h, byz, X[0], h[0])


def exact_solution(P):
    """x̃* of (1) in closed form (and, above Lemma 1's threshold, every block of x*)."""
    h, c = P.y[P.regular], P.X[P.regular]
    return (h[..., None] * c).mean(1).sum(0) / (h.mean(1).sum() + MU0)


def lyapunov(P, state, x_star, c):
    """``T = ‖x − x*‖² + c·S`` and ``‖x − x*‖²`` (regular clients and the server)."""
    reg = P.regular
    dist = ((state.models[reg] - x_star) ** 2).sum() + ((state.x - x_star) ** 2).sum()
    phi = P.X[reg] + state.table.entries[0][reg] / P.y[reg][..., None]  # points of the table
    S = ((x_star - phi) ** 2).sum(-1).mean(1).sum()
    return dist + c * S, dist


def run_theorem1(P, estimator_cls, *, gamma, attack, lam, alpha, steps, every, seeds, x_init):
    x_star = exact_solution(P)
    J = P.J
    c = 2 * J * MU * L * alpha / (3 * (MU + L))
    T = []
    for seed in seeds:
        meth = PenaltyMethod(P, estimator_cls(P, "dense"), attack, lr=alpha, penalty=lam, p=1,
                             participation=gamma, server_l2=MU0)
        s = meth.init(np.full(P.model.dim, x_init))
        rng = np.random.default_rng(seed)
        row = [lyapunov(P, s, x_star, c)[0]]
        for k in range(1, steps + 1):
            meth.step(s, rng)
            if k % every == 0:
                row.append(lyapunov(P, s, x_star, c)[0])
        T.append(row)
    return np.arange(0, steps + 1, every), np.array(T).mean(0)


def theorem1_bound(P, ks, T0, *, gamma, lam, alpha):
    r, q, d = int(P.regular.sum()), int(P.byzantine.sum()), P.model.dim
    rate = asynrsa_rate(MU, L, alpha, gamma)
    return rate**ks * T0 + asynrsa_delta1(MU, L, alpha, gamma, lam, r, q, d)


def lemma1_lambda(P, factor=1.2):
    x_star = exact_solution(P)
    return factor * lemma1_lambda_threshold(P.model.grad(x_star, P.X[P.regular], P.y[P.regular]), 1)


THEOREM1_CASES = [
    # (q, gamma, attack)
    (0, 1.0, "none"),
    (0, 0.5, "none"),
    (1, 0.5, "same_value"),
]


@pytest.mark.parametrize("q,gamma,attack", THEOREM1_CASES)
def test_theorem1_linear_convergence_to_the_ball(q, gamma, attack):
    P = quadratic_problem(q=q)
    alpha = asynrsa_step_bound(MU, L, P.J)
    lam = lemma1_lambda(P)
    ks, ET = run_theorem1(P, SagaEstimator, gamma=gamma, attack=get_attack(attack), lam=lam,
                          alpha=alpha, steps=2400, every=200, seeds=range(4), x_init=-30.0)
    bound = theorem1_bound(P, ks, ET[0], gamma=gamma, lam=lam, alpha=alpha)
    assert (ET <= bound).all(), np.c_[ks, ET, bound]
    assert ET[-1] < 1e-3 * ET[0]  # it did converge (the bound is not met trivially)


def test_theorem1_catches_a_step_without_the_saga_correction():
    """Plain stochastic gradients (table kept, correction ignored) stall in a noise ball
    ~ α·σ² far above Δ1: the same check fails at the late checkpoints."""
    P = quadratic_problem()
    alpha = asynrsa_step_bound(MU, L, P.J)
    lam = lemma1_lambda(P)
    kw = dict(gamma=1.0, attack=get_attack("none"), lam=lam, alpha=alpha, steps=2400, every=200,
              seeds=range(4), x_init=-30.0)
    ks, ET = run_theorem1(P, bv.SagaNoCorrection, **kw)
    bound = theorem1_bound(P, ks, ET[0], gamma=1.0, lam=lam, alpha=alpha)
    assert not (ET <= bound).all()
    assert ET[-1] > 3 * bound[-1]


def steady_state_error(P, lam, alpha, steps, seed=0):
    """Mean ‖x^k − x*‖² over the second half of a run started at x* (table at x*)."""
    x_star = exact_solution(P)
    meth = PenaltyMethod(P, SagaEstimator(P, "dense"), get_attack("none"), lr=alpha, penalty=lam,
                         p=1, server_l2=MU0)
    s = meth.init(x_star.copy())
    rng = np.random.default_rng(seed)
    vals = []
    for k in range(steps):
        meth.step(s, rng)
        if k >= steps // 2:
            vals.append(lyapunov(P, s, x_star, 0.0)[1])
    return float(np.mean(vals))


def ball_shrinks_with_the_step(P, lam):
    """q = 0, γ = 1: Δ1 ∝ α, so quartering α must (at least) quarter the steady-state
    error, and the error must stay within Δ1 at both steps."""
    a = asynrsa_step_bound(MU, L, P.J)
    e1 = steady_state_error(P, lam, a, 1600)
    e4 = steady_state_error(P, lam, a / 4, 4000)
    r, d = int(P.regular.sum()), P.model.dim
    within = e1 <= asynrsa_delta1(MU, L, a, 1.0, lam, r, 0, d) and \
        e4 <= asynrsa_delta1(MU, L, a / 4, 1.0, lam, r, 0, d)
    return within and e4 <= 0.25 * e1, (e1, e4)


def test_theorem1_ball_shrinks_with_the_step_size():
    P = quadratic_problem(noise=2.0)
    ok, (e1, e4) = ball_shrinks_with_the_step(P, lemma1_lambda(P))
    assert ok, (e1, e4)
    assert e1 > 0  # the subgradient oscillation is there


def test_ball_check_catches_a_wrongly_normalised_l1_subgradient(monkeypatch):
    """With ∂‖u‖₁ computed as u/‖u‖₂ the method solves the l2-penalised problem, whose
    threshold is √d times larger: for λ between the two thresholds its fixed point is
    not the consensus and the error does not shrink with the step."""
    P = quadratic_problem(noise=2.0)
    lam = lemma1_lambda(P)
    x_star = exact_solution(P)
    G = P.model.grad(x_star, P.X[P.regular], P.y[P.regular])
    assert lam < lemma1_lambda_threshold(G, 2)  # between the l∞ and the l2 thresholds
    monkeypatch.setattr(subgradients, "lp_subgradient", bv.lp_subgradient_l2_normalised)
    # the round's own row-wise subgradients (the p = 1 fast path)
    monkeypatch.setattr(penalty_round, "subgradients_of_difference", bv.subgradients_of_difference_l2_normalised)
    ok, (e1, e4) = ball_shrinks_with_the_step(P, lam)
    assert not ok and e4 > 0.5 * e1
