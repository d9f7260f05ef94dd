"""The diagnostic on ragged clients (padded layout, ``Problem.counts``): every number is
over the real rows only, each ``f_i`` the mean over its own ``J_i`` samples; padding
never enters (NaN padding gives the numbers of zero padding)."""

import dataclasses
import warnings

import numpy as np
import pytest

from byzsim.config import TheoryWarning, make_config
from byzsim.diagnose import _SoftmaxObjective, diagnose, penalised_objective, penalised_optimum
from byzsim.models import make_model
from byzsim.simulate import problem_for

SYN = dict(dataset="synthetic", dataset_params=dict(n_samples=300, n_test=60, n_features=5, n_classes=3),
           n_clients=6, n_byzantine=1, byzantine_indices=[5], partition="dirichlet",
           partition_params=dict(beta=0.5), batch_size=2, model_params=dict(l2=0.01), seed=0)


def cfg_of(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return make_config(**{**SYN, **kw})


def diag(cfg, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return diagnose(cfg, **kw)


def with_padding(problem, value):
    """``problem`` with every padding row of X set to ``value`` (labels stay −1)."""
    X = problem.X.copy()
    X[~problem.mask] = value
    return dataclasses.replace(problem, X=X)


NUMBERS = ("sigma2", "sigma2_max", "sigma2_batch", "delta2", "mu", "L_bound", "L_local", "test_accuracy",
           "train_loss", "lemma1_threshold", "lemma1_error")


# --------------------------------------------------------------------------------------
# by hand
# --------------------------------------------------------------------------------------
def ragged_two_clients(pad):
    """C = 2 classes, one feature, no bias; at w = 0 sample (x, y) has gradient
    ``x·(½ − [y=0], ½ − [y=1])``.
    client 1 (J_1 = 3): (1, 0), (3, 0), (2, 1) → (−½, ½), (−3/2, 3/2), (1, −1):
        G_1 = (−1/3, 1/3), mean ‖g‖² = (½ + 9/2 + 2)/3 = 7/3, σ_1² = 7/3 − 2/9 = 19/9;
    client 2 (J_2 = 1, two padding rows): (2, 1) → (1, −1): G_2 = (1, −1), σ_2² = 0.
    σ² = 19/18; Ḡ = (1/3, −1/3), δ² = ‖(∓2/3, ±2/3)‖² = 8/9.  F(0) = c·(log 2 + log 2).
    (Pooling the four samples instead would give Ḡ = (0, 0) and δ² = 10/9.)"""
    model = make_model("softmax", 1, 2, bias=False)
    X = np.array([[[1.0], [3.0], [2.0]], [[2.0], [pad], [pad]]])
    y = np.array([[0, 0, 1], [1, -1, -1]])
    return model, X, y, np.array([3, 1])


@pytest.mark.parametrize("pad", [0.0, np.nan, 1e300])
def test_ragged_client_stats_by_hand(pad):
    model, X, y, counts = ragged_two_clients(pad)
    obj = _SoftmaxObjective(model, X, y, c=1.0, kappa=0.0, counts=counts)
    G, s2 = obj.client_stats(np.zeros(2))
    np.testing.assert_allclose(G, [[-1 / 3, 1 / 3], [1.0, -1.0]], rtol=1e-14)
    np.testing.assert_allclose(s2, [19 / 9, 0.0], rtol=1e-14, atol=1e-15)
    assert np.mean(np.sum((G - G.mean(0)) ** 2, axis=1)) == pytest.approx(8 / 9, rel=1e-14)
    f, g = obj.value_grad(np.zeros(2))
    assert f == pytest.approx(2 * np.log(2), rel=1e-14)
    np.testing.assert_allclose(g, G.sum(0), rtol=1e-14)
    # curvature: client 1's ½ λ_max(X_1ᵀX_1/3) = ½·14/3, client 2's ½·4; mean of means ½·(14/3 + 4)/2
    np.testing.assert_allclose(obj.client_smoothness(), [7 / 3, 2.0], rtol=1e-6)
    per_sample, gram = obj.smoothness_bounds()
    assert per_sample == pytest.approx(4.5) and gram == pytest.approx(13 / 6, rel=1e-6)


def test_the_hand_example_catches_pooled_weights():
    """Broken variant: the four real samples pooled as one client-agnostic set (every
    sample weighted 1/N): the hand values above tell it apart."""
    model, X, y, counts = ragged_two_clients(0.0)
    mask = np.arange(3) < counts[:, None]
    pooled = _SoftmaxObjective(model, X[mask][None], y[mask][None], c=2.0, kappa=0.0)
    g_pooled = pooled.value_grad(np.zeros(2))[1]
    ragged = _SoftmaxObjective(model, X, y, c=1.0, kappa=0.0, counts=counts)
    assert not np.allclose(g_pooled, ragged.value_grad(np.zeros(2))[1])


def test_counts_are_checked():
    model, X, y, _ = ragged_two_clients(0.0)
    with pytest.raises(ValueError, match="counts"):
        _SoftmaxObjective(model, X, y, c=1.0, kappa=0.0, counts=np.array([3, 0]))
    with pytest.raises(ValueError, match="counts"):
        _SoftmaxObjective(model, X, y, c=1.0, kappa=0.0, counts=np.array([3, 1, 1]))


# --------------------------------------------------------------------------------------
# end to end on a ragged partition
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rsa", "byrd-saga"])
def test_nan_padding_gives_the_numbers_of_zero_padding(method):
    cfg = cfg_of(method=method)
    pr = problem_for(cfg)
    assert pr.ragged and (~pr.mask[pr.regular]).any()
    a = diag(cfg, problem=with_padding(pr, 0.0))
    b = diag(cfg, problem=with_padding(pr, np.nan))
    np.testing.assert_array_equal(a.optimum.x, b.optimum.x)
    for k in NUMBERS:
        assert getattr(a, k) == getattr(b, k) or (getattr(a, k) is None and getattr(b, k) is None), k
    assert np.isfinite(a.sigma2) and np.isfinite(a.L_bound)
    assert "ragged" in a.format()


@pytest.mark.parametrize("method", ["rsa", "byrd-saga"])
def test_ragged_numbers_against_per_client_model_gradients(method):
    """x* by its optimality condition and σ², δ², σ_b² against dense per-sample gradients
    of each client's real rows (the model's own code)."""
    cfg = cfg_of(method=method, server_l2=0.05)
    d = diag(cfg)
    pr = problem_for(cfg)
    model, x = pr.model, d.optimum.x
    reg = np.flatnonzero(pr.regular)
    R, b = reg.size, cfg.batch_size
    blocks = [(pr.X[i, :pr.counts[i]].astype(np.float64), pr.y[i, :pr.counts[i]]) for i in reg]
    grads = np.array([model.grad(x, Xi[None], yi[None])[0] for Xi, yi in blocks])  # ∇f_i with l2
    scale = 1.0 if cfg.family == "penalty" else 1.0 / R
    assert np.linalg.norm(scale * grads.sum(0) + 0.05 * x) <= d.optimum.tol * (1 + 1e-6)
    psg = [model.per_sample_grads(x, Xi[None], yi[None])[0] for Xi, yi in blocks]
    local = np.array([g.mean(0) for g in psg])
    s2 = np.array([np.mean(np.sum((g - g.mean(0)) ** 2, axis=1)) for g in psg])
    J = pr.counts[reg]
    assert d.sigma2 == pytest.approx(s2.mean(), rel=1e-9)
    assert d.sigma2_batch == pytest.approx(np.mean(s2 * (J - b) / (b * (J - 1))), rel=1e-9)
    assert d.delta2 == pytest.approx(np.mean(np.sum((local - local.mean(0)) ** 2, 1)), rel=1e-9)
    assert d.mu <= d.L_local <= d.L_bound * (1 + 1e-6)
    np.testing.assert_array_equal(d.counts, J)
    if cfg.family == "penalty":
        assert d.lemma1_threshold == pytest.approx(np.abs(grads).max(), rel=1e-9)


def test_equal_sizes_padded_take_the_ragged_path_and_give_the_equal_numbers():
    """An equal-size split is diagnosed as before; the same clients with extra padding
    rows (every J_i = J < J_max: the ragged code) give the same numbers to round-off."""
    cfg = cfg_of(method="byrd-saga", partition="iid", partition_params={})
    pr = problem_for(cfg)
    assert not pr.ragged
    n, J, p = pr.X.shape
    X = np.concatenate([pr.X, np.full((n, 3, p), np.nan, pr.X.dtype)], axis=1)
    y = np.concatenate([pr.y, np.full((n, 3), -1, pr.y.dtype)], axis=1)
    padded = dataclasses.replace(pr, X=X, y=y, counts=np.full(n, J), X_eval=pr.X_eval, y_eval=pr.y_eval)
    assert padded.ragged
    a, b = diag(cfg), diag(cfg, problem=padded)
    assert a.counts is None and b.counts is not None and a.J == J
    np.testing.assert_allclose(a.optimum.x, b.optimum.x, rtol=1e-6, atol=1e-8)
    for k in ("sigma2", "sigma2_max", "sigma2_batch", "delta2", "L_bound", "L_local", "test_accuracy"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=1e-6), k


def test_problem_3_refuses_ragged_clients():
    cfg = cfg_of(method="rsa")
    pr = problem_for(cfg)
    R, d = int(pr.regular.sum()), pr.model.dim
    with pytest.raises(ValueError, match="ragged"):
        penalised_objective(pr, np.zeros(d), np.zeros((R, d)), 0.1)
    with pytest.raises(ValueError, match="ragged"):
        penalised_optimum(cfg)
