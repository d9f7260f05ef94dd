import copy
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize

from byzsim.algorithms import (
    GradientMethod,
    PenaltyMethod,
    Problem,
    SagaEstimator,
    SGDEstimator,
    lp_subgradient,
    row_set,
    sample_batch,
    subgradients_of_difference,
)
from byzsim.attacks import get_attack
from byzsim.models import SoftmaxRegression

P_VALUES = [1.0, 1.5, 2.0, 3.0, math.inf]
finite = st.floats(-1e3, 1e3, allow_nan=False)


def _dual(p):
    return math.inf if p == 1 else (1.0 if p == math.inf else p / (p - 1))


@pytest.mark.parametrize("p", P_VALUES)
@given(u=arrays(np.float64, st.integers(1, 8), elements=finite))
def test_lp_subgradient_dual_norm_and_inner_product(p, u):
    g = lp_subgradient(u, p)
    assert np.linalg.norm(g, ord=_dual(p)) <= 1 + 1e-9
    np.testing.assert_allclose(g @ u, np.linalg.norm(u, ord=p), rtol=1e-9, atol=1e-9)


def _round_buffers(k, d, dtype=np.float64):
    return dict(pen=np.empty((k, d), dtype), s=np.empty((k, d), np.int8),
                gt=np.empty((k, d), bool), lt=np.empty((k, d), bool))


@pytest.mark.parametrize("p", P_VALUES)
@given(
    a=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 9)),
             elements=st.sampled_from([-2.0, -1e-300, 0.0, 1e-300, 0.5, 3.0])),
    b=arrays(np.float64, st.integers(1, 9), elements=st.sampled_from([-1.0, 0.0, 1e-300, 0.5])),
)
def test_round_subgradients_equal_lp_subgradient(p, a, b):
    """The penalty round's fast path (int8 signs for p = 1, integer column sums) gives
    exactly ``lp_subgradient(a − b, p)`` and its sum, ties (a = b) and tiny gaps included."""
    d = min(a.shape[1], b.shape[0])
    a, b = a[:, :d], b[:d]
    pen, total = subgradients_of_difference(a, b, p, _round_buffers(*a.shape))
    ref = lp_subgradient(a - b, p)
    np.testing.assert_allclose(pen, ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(total, ref.sum(axis=0), rtol=1e-12, atol=1e-12)
    # broadcast the other way (the Byzantine messages: x0 − z_v)
    pen2, total2 = subgradients_of_difference(b, a, p, _round_buffers(*a.shape))
    np.testing.assert_allclose(pen2, lp_subgradient(b - a, p), rtol=1e-12, atol=0)


def test_round_subgradients_float32_and_many_rows():
    """int8 signs summed exactly: 40,000 rows of +1 (beyond int16) and float32 output."""
    a = np.ones((40_000, 3), np.float32)
    b = np.array([0.0, 1.0, 2.0], np.float32)
    pen, total = subgradients_of_difference(a, b, 1, _round_buffers(40_000, 3, np.float32))
    assert pen.dtype == np.float32 and total.dtype == np.float32
    np.testing.assert_array_equal(total, [40_000, 0, -40_000])


def test_row_set_is_a_slice_exactly_when_contiguous():
    assert row_set(np.array([False, True, True, False])) == slice(1, 3)
    assert row_set(np.ones(3, bool)) == slice(0, 3)
    np.testing.assert_array_equal(row_set(np.array([True, False, True])), [0, 2])
    empty = row_set(np.zeros(3, bool))
    assert np.zeros((3, 2))[empty].shape == (0, 2)


def test_lp_subgradient_hand_values_and_batching():
    u = np.array([[3.0, -4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(lp_subgradient(u, 1), [[1, -1], [0, 0]])
    np.testing.assert_allclose(lp_subgradient(u, 2), [[0.6, -0.8], [0, 0]])
    np.testing.assert_allclose(lp_subgradient(u, math.inf), [[0, -1], [0, 0]])
    np.testing.assert_allclose(lp_subgradient(np.array([2.0, -2.0]), math.inf), [0.5, -0.5])


@given(seed=st.integers(0, 2**32 - 1), J=st.integers(1, 60), b=st.integers(1, 10))
def test_sample_batch_distinct_sorted_in_range(seed, J, b):
    b = min(b, J)
    idx = sample_batch(np.random.default_rng(seed), 7, J, b)
    assert idx.shape == (7, b)
    assert (idx >= 0).all() and (idx < J).all()
    assert (np.diff(idx, axis=1) > 0).all()


def test_sample_batch_is_uniform_over_subsets():
    rng = np.random.default_rng(0)
    for J, b in [(5, 2), (9, 2)]:  # rejection path (b*b <= J) and permutation path
        idx = sample_batch(rng, 40000, J, b)
        codes = idx[:, 0] * J + idx[:, 1]
        counts = np.bincount(codes, minlength=J * J)
        counts = counts[counts > 0]
        assert counts.size == math.comb(J, b)
        expected = 40000 / counts.size
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 3 * counts.size  # far beyond the chi2 99.9% quantile would fail


def small_problem(n=4, J=6, p=3, C=3, seed=0, byz=()):
    rng = np.random.default_rng(seed)
    model = SoftmaxRegression(n_features=p, n_classes=C, bias=True)
    X = model.prepare(rng.normal(size=(n, J, p)))
    y = rng.integers(C, size=(n, J))
    b = np.zeros(n, bool)
    b[list(byz)] = True
    return Problem(model, X, y, b, model.prepare(rng.normal(size=(20, p))), rng.integers(C, size=20))


@pytest.mark.parametrize("kind", ["dense", "factored"])
def test_saga_corrected_gradient_is_unbiased_over_the_sample_index(kind):
    """E_j[g] = ∇f_w(x) exactly, for any table contents (enumerate all j)."""
    P = small_problem()
    est = SagaEstimator(P, kind)
    rng = np.random.default_rng(5)
    table = est.init(rng.normal(size=(P.n, P.model.dim)))  # table from other points
    W = rng.normal(size=(P.n, P.model.dim))
    full = P.model.grad(W, P.X, P.y)
    gs = []
    for j in range(P.J):
        t = copy.deepcopy(table)
        gs.append(est(t, W, np.full((P.n, 1), j), None))
    np.testing.assert_allclose(np.mean(gs, axis=0), full, atol=1e-12)


def test_saga_variance_vanishes_once_the_table_is_at_the_point():
    P = small_problem()
    est = SagaEstimator(P, "factored")
    W = np.random.default_rng(2).normal(size=(P.n, P.model.dim))
    table = est.init(np.zeros(P.model.dim))
    for j in range(P.J):  # visit every sample at W: the table now holds grads at W
        est(table, W, np.full((P.n, 1), j), None)
    full = P.model.grad(W, P.X, P.y)
    for j in range(P.J):
        np.testing.assert_allclose(est(table, W, np.full((P.n, 1), j), None), full, atol=1e-12)
    # ... and the running mean equals the table's true mean
    np.testing.assert_allclose(table.mean, full, atol=1e-12)


def test_saga_inactive_clients_leave_their_table_untouched():
    P = small_problem()
    est = SagaEstimator(P, "factored")
    table = est.init(np.zeros(P.model.dim))
    before = copy.deepcopy(table)
    active = np.array([True, False, True, False])
    W = np.random.default_rng(3).normal(size=(P.n, P.model.dim))
    est(table, W, np.zeros((P.n, 2), int), active)
    for e0, e1 in zip(before.entries, table.entries):
        np.testing.assert_array_equal(e0[~active], e1[~active])
        assert not np.array_equal(e0[active], e1[active])
    np.testing.assert_array_equal(before.mean[~active], table.mean[~active])


def _mean_agg(v, mask, rng):
    return v.mean(0) if mask is None else v[mask].mean(0) if mask.any() else np.zeros(v.shape[1])


@pytest.mark.parametrize("family", ["gradient", "penalty"])
def test_dense_and_factored_saga_give_the_same_trajectory(family):
    P = small_problem(byz=(3,))
    xs = []
    for kind in ("dense", "factored"):
        est = SagaEstimator(P, kind)
        attack = get_attack("gaussian", std=1.0)
        if family == "gradient":
            m = GradientMethod(P, est, attack, _mean_agg, lr=0.1, batch_size=2, participation=0.7)
        else:
            m = PenaltyMethod(P, est, attack, lr=0.05, penalty=0.3, p=1, batch_size=2, participation=0.7,
                              server_l2=0.01)
        s = m.init(np.zeros(P.model.dim))
        rng = np.random.default_rng(11)
        for _ in range(60):
            m.step(s, rng)
        xs.append(s.x.copy())
    assert np.abs(xs[0]).max() > 1e-3
    np.testing.assert_allclose(xs[0], xs[1], rtol=1e-9, atol=1e-12)


def _optimum(P, l2):
    """argmin of the mean over regular clients of f_w (+ l2/2‖x‖²), by L-BFGS."""
    m = P.model
    X = P.X[P.regular].reshape(-1, P.X.shape[-1])
    y = P.y[P.regular].ravel()
    f = lambda w: float(m.loss(w, X, y) + 0.5 * l2 * w @ w)
    g = lambda w: m.grad(w, X, y) + l2 * w
    return minimize(f, np.zeros(m.dim), jac=g, method="L-BFGS-B", options={"gtol": 1e-12, "maxiter": 5000}).x


def test_saga_with_mean_converges_to_the_known_optimum():
    """Strongly convex finite sum: SAGA with a constant step converges linearly to x*."""
    P = small_problem(n=5, J=8, seed=3)
    l2 = 0.1
    x_star = _optimum(P, l2)
    m = GradientMethod(P, SagaEstimator(P), get_attack("none"), _mean_agg, lr=0.2, batch_size=1, server_l2=l2)
    s = m.init(np.zeros(P.model.dim))
    rng = np.random.default_rng(0)
    for _ in range(6000):
        m.step(s, rng)
    # x* is the unique stationary point: SAGA reaches it to machine precision, which is
    # more accurate than the L-BFGS reference (hence the looser distance check)
    X = P.X.reshape(-1, P.X.shape[-1])
    assert np.linalg.norm(P.model.grad(s.x, X, P.y.ravel()) + l2 * s.x) < 1e-12
    assert np.linalg.norm(s.x - x_star) < 1e-4


def test_sgd_with_mean_stalls_in_a_noise_ball_but_saga_does_not():
    P = small_problem(n=5, J=8, seed=3)
    l2 = 0.1
    x_star = _optimum(P, l2)
    errs = {}
    for name, est in [("sgd", SGDEstimator(P)), ("saga", SagaEstimator(P))]:
        m = GradientMethod(P, est, get_attack("none"), _mean_agg, lr=0.2, batch_size=1, server_l2=l2)
        s = m.init(np.zeros(P.model.dim))
        rng = np.random.default_rng(0)
        for _ in range(3000):
            m.step(s, rng)
        errs[name] = np.linalg.norm(s.x - x_star)
    assert errs["saga"] < 1e-4 and errs["sgd"] > 1e-2


def test_penalty_method_with_large_lambda_reaches_the_unpenalized_optimum():
    """Paper A Lemma 1 in action: p = 1, λ ≥ max_i ‖∇f_i(x*)‖_∞, no Byzantine clients,
    full participation: the server model ends in a small ball (size ~ α λ) around x*."""
    P = small_problem(n=4, J=6, seed=4)
    n_reg = P.n
    l2 = 0.05
    # global objective of the penalty family: Σ_i f_i(x) + f0(x), f0 = l2/2 ‖x‖²
    m = P.model
    f = lambda w: float(m.loss(w, P.X, P.y).sum() + 0.5 * l2 * w @ w)
    g = lambda w: m.grad(w, P.X, P.y).sum(0) + l2 * w
    x_star = minimize(f, np.zeros(m.dim), jac=g, method="L-BFGS-B", options={"gtol": 1e-12}).x
    lam = 1.2 * np.abs(m.grad(x_star, P.X, P.y)).max()
    meth = PenaltyMethod(P, SagaEstimator(P), get_attack("none"), lr=2e-3, penalty=lam, p=1, server_l2=l2)
    s = meth.init(np.zeros(m.dim))
    rng = np.random.default_rng(0)
    for _ in range(40000):
        meth.step(s, rng)
    assert np.linalg.norm(s.x - x_star) < 0.05 * max(1.0, np.linalg.norm(x_star))
    assert np.abs(s.models - s.x).max() < 0.05
