"""The MLP model (tanh hidden layers, softmax output) and its exact factored SAGA table."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from numerics import fd_grad

from byzsim.aggregators import get_aggregator
from byzsim.algorithms import GradientMethod, PenaltyMethod, Problem, SagaEstimator
from byzsim.attacks import get_attack
from byzsim.models import MLP, MODELS, SoftmaxRegression, make_model




def _data(rng, m, lead=(), p=4, C=3):
    return rng.normal(size=lead + (m, p)), rng.integers(C, size=lead + (m,))


@given(
    seed=st.integers(0, 2**31 - 1),
    hidden=st.sampled_from([(), (5,), (3, 6), (4, 2, 3)]),
    l2=st.sampled_from([0.0, 0.3]),
)
def test_mlp_grad_matches_finite_differences(seed, hidden, l2):
    rng = np.random.default_rng(seed)
    m = MLP(n_features=4, n_classes=3, hidden=hidden, l2=l2)
    X, y = _data(rng, 6)
    w = rng.normal(size=m.dim)  # larger than the init: exercises tanh's curvature
    g = m.grad(w, X, y)
    np.testing.assert_allclose(g, fd_grad(lambda v: m.loss(v, X, y), w), rtol=1e-5, atol=1e-7)


def test_mlp_dim_layout_and_registry():
    m = make_model("mlp", 784, 10)
    assert MODELS["mlp"] is MLP
    assert m.hidden == (50, 50) and m.sizes == (784, 50, 50, 10)
    assert m.dim == 784 * 50 + 50 + 50 * 50 + 50 + 50 * 10 + 10 == 42310
    assert make_model("mlp", 54, 7).dim == 54 * 50 + 50 + 2550 + 50 * 7 + 7 == 5657
    # the slices tile [0, d) in order: W_1, b_1, W_2, b_2, ...
    ends = [s.stop for pair in m.layer_slices() for s in pair]
    starts = [s.start for pair in m.layer_slices() for s in pair]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == m.dim
    w = np.arange(m.dim, dtype=float)
    (W1, b1), (W2, b2), (W3, b3) = m.unflatten(w)
    assert W1.shape == (784, 50) and W1[0, 1] == 1 and b1[0] == 784 * 50 and W3.shape == (50, 10)
    # TOML lists become tuples; the model stays hashable and comparable
    m2 = make_model("mlp", 784, 10, hidden=[50, 50])
    assert m2 == m and hash(m2) == hash(m)


@pytest.mark.parametrize("bad", [(50, 0), (-3,), (2.5,), (True,), ("50",), (50, None)])
def test_mlp_rejects_hidden_sizes_that_are_not_positive_integers(bad):
    culprit = next(v for v in bad if not (type(v) is int and v > 0))
    with pytest.raises(ValueError, match="positive integers") as e:
        make_model("mlp", 5, 3, hidden=bad)
    assert repr(culprit) in str(e.value)


@pytest.mark.parametrize("bad", [50, "50", None])
def test_mlp_rejects_a_hidden_that_is_not_a_list(bad):
    with pytest.raises(ValueError, match=r"hidden must be a list .*" + repr(bad).replace("'", ".")):
        MLP(n_features=5, n_classes=3, hidden=bad)


def test_mlp_rejects_bad_l2_and_unknown_parameters():
    with pytest.raises(ValueError, match="l2"):
        MLP(n_features=5, n_classes=3, l2=-1.0)
    with pytest.raises(ValueError, match="valid parameters: hidden, l2"):
        make_model("mlp", 5, 3, width=50)


def test_mlp_init_is_pytorch_linear_default_and_uses_the_rng():
    m = MLP(n_features=400, n_classes=10, hidden=(300, 50))
    w = m.init(np.random.default_rng(0))
    np.testing.assert_array_equal(w, m.init(np.random.default_rng(0)))
    assert not np.array_equal(w, m.init(np.random.default_rng(1)))
    for (W, b), fan_in in zip(m.unflatten(w), m.sizes[:-1]):
        bound = 1 / np.sqrt(fan_in)
        for a in (W, b):
            assert np.abs(a).max() <= bound
        # U(-bound, bound): std bound/√3, and it fills the interval
        assert abs(W.std() / (bound / np.sqrt(3)) - 1) < 0.05
        assert abs(W.mean()) < 0.05 * bound
        assert np.abs(W).max() > 0.99 * bound


def _mlp_to_softmax_layout(w, p, C):
    """MLP(hidden=()) flat ``[W (p, C), b (C)]`` -> SoftmaxRegression's ``W' (C, p + 1)``
    (class-major, bias last column): ``W' = [W | b]ᵀ``."""
    lead = w.shape[:-1]
    Wb = np.concatenate([w[..., : p * C].reshape(lead + (p, C)), w[..., None, p * C :]], axis=-2)
    return np.swapaxes(Wb, -1, -2).reshape(lead + (-1,))


def test_mlp_without_hidden_layers_is_softmax_regression_with_bias():
    """hidden=() is SoftmaxRegression(bias=True) up to the parameter layout: MLP keeps
    ``W (p, C)`` then ``b``; softmax is class-major ``(C, p + 1)``."""
    rng = np.random.default_rng(3)
    mlp, soft = MLP(4, 3, hidden=()), SoftmaxRegression(4, 3, bias=True)
    assert mlp.dim == soft.dim
    X, y = _data(rng, 7, lead=(2,))
    W = rng.normal(size=(2, mlp.dim))
    Ws = _mlp_to_softmax_layout(W, 4, 3)
    np.testing.assert_allclose(mlp.loss(W, X, y), soft.loss(Ws, soft.prepare(X), y))
    np.testing.assert_allclose(
        _mlp_to_softmax_layout(mlp.grad(W, X, y), 4, 3), soft.grad(Ws, soft.prepare(X), y), atol=1e-14
    )


def test_mlp_vectorized_over_clients_equals_loop():
    rng = np.random.default_rng(0)
    m = MLP(n_features=4, n_classes=3, hidden=(5, 6), l2=0.1)
    X, y = _data(rng, 7, lead=(6,))
    W = rng.normal(size=(6, m.dim))
    G, L, A = m.grad(W, X, y), m.loss(W, X, y), m.accuracy(W, X, y)
    for i in range(6):
        np.testing.assert_allclose(G[i], m.grad(W[i], X[i], y[i]), atol=1e-15)
        np.testing.assert_allclose(L[i], m.loss(W[i], X[i], y[i]))
        assert A[i] == m.accuracy(W[i], X[i], y[i])
    # one shared model (one GEMM over every client's samples) broadcasts over the client axis
    np.testing.assert_allclose(m.grad(W[0], X, y)[3], m.grad(W[0], X[3], y[3]), atol=1e-15)
    assert m.logits(W[0], X).shape == (6, 7, 3)


def test_mlp_factors_are_exact_and_do_not_store_the_input():
    rng = np.random.default_rng(1)
    m = MLP(n_features=9, n_classes=3, hidden=(4, 5))
    X, y = _data(rng, 8, lead=(2,), p=9)
    W = rng.normal(size=(2, m.dim))
    f = m.sample_factors(W, X, y)
    # one packed array [a_1 | a_2 | δ_1 | δ_2 | δ_3]: hidden activations only, never X itself
    assert len(f) == 1 and f[0].shape == (2, 8, 4 + 5 + 4 + 5 + 3)
    assert not np.shares_memory(f[0], X)
    parts = m.split_factors(f)
    assert [a.shape[-1] for a in parts] == list(m.factor_sizes()) == [4, 5, 4, 5, 3]
    assert all(a.shape[:-1] == (2, 8) and np.shares_memory(a, f[0]) for a in parts)
    a1, a2, d1, d2, d3 = parts
    (W1, b1), (W2, b2), (W3, b3) = m.unflatten(W)
    np.testing.assert_allclose(a1, np.tanh(X @ W1 + b1[:, None]), atol=1e-15)
    np.testing.assert_allclose(a2, np.tanh(a1 @ W2 + b2[:, None]), atol=1e-15)
    np.testing.assert_allclose(d3.sum(-1), 0, atol=1e-12)  # softmax − one-hot
    np.testing.assert_allclose(d1, (d2 @ np.swapaxes(W2, 1, 2)) * (1 - a1**2), atol=1e-15)
    # the split tuple is accepted as well
    np.testing.assert_allclose(m.grad_from_factors(X, parts), m.grad_from_factors(X, f), atol=1e-15)
    with pytest.raises(ValueError, match="packed factors"):
        m.grad_from_factors(X, (f[0][..., :-1],))
    dense = m.per_sample_grads(W, X, y)  # (2, 8, d)
    np.testing.assert_allclose(dense.mean(1), m.grad(W, X, y), atol=1e-15)
    np.testing.assert_allclose(m.grad_from_factors(X, f), dense.sum(1), atol=1e-14)
    # per-sample gradient j = the gradient of the one-sample loss
    np.testing.assert_allclose(dense[1, 3], m.grad(W[1], X[1, 3:4], y[1, 3:4]), atol=1e-15)
    # out= writes in place; the one-pass difference equals the difference of sums
    out = np.full((2, m.dim), np.nan)
    assert m.grad_from_factors(X, f, out=out) is out
    np.testing.assert_allclose(out, dense.sum(1), atol=1e-14)
    f_old = m.sample_factors(W * 0.7, X, y)
    diff = m.grad_diff_from_factors(X, f, f_old, out=np.full((2, m.dim), np.nan))
    np.testing.assert_allclose(
        diff, m.grad_from_factors(X, f) - m.grad_from_factors(X, f_old), atol=1e-13
    )


def _mlp_problem(n=4, J=6, p=3, C=3, seed=0, byz=(), hidden=(4, 3)):
    rng = np.random.default_rng(seed)
    model = MLP(n_features=p, n_classes=C, hidden=hidden)
    X = model.prepare(rng.normal(size=(n, J, p)))
    y = rng.integers(C, size=(n, J))
    b = np.zeros(n, bool)
    b[list(byz)] = True
    return Problem(model, X, y, b, model.prepare(rng.normal(size=(20, p))), rng.integers(C, size=20))


def test_saga_auto_picks_the_factored_table_for_the_mlp_and_it_is_small():
    P = _mlp_problem(n=5, J=40, p=30, hidden=(6, 4))
    est = SagaEstimator(P)
    assert est.kind == "factored"
    x0 = P.model.init(np.random.default_rng(0))
    table = est.init(x0)
    k = sum(P.model.factor_sizes())
    assert len(table.entries) == 1 and table.entries[0].shape == (P.n, P.J, k)
    assert table.nbytes == 8 * (P.n * P.J * k + P.n * P.model.dim)
    dense = SagaEstimator(P, "dense").init(x0)
    assert dense.nbytes == 8 * (P.n * P.J * P.model.dim + P.n * P.model.dim)
    np.testing.assert_allclose(table.mean, dense.mean, atol=1e-15)


@pytest.mark.parametrize("family", ["gradient", "penalty"])
def test_dense_and_factored_saga_give_the_same_mlp_trajectory(family):
    """The factored table (activations and deltas, grad_sum(new) − grad_sum(old)) is exact:
    same trajectory as the dense (n, J, d) table, with partial participation."""
    P = _mlp_problem(byz=(3,))
    mean = get_aggregator("mean")
    xs = []
    for kind in ("dense", "factored"):
        est = SagaEstimator(P, kind)
        attack = get_attack("gaussian", std=1.0)
        if family == "gradient":
            m = GradientMethod(P, est, attack, lambda v, mask, rng: mean(v, mask), lr=0.3,
                               batch_size=2, participation=0.7)
        else:
            m = PenaltyMethod(P, est, attack, lr=0.05, penalty=0.3, p=1, batch_size=2,
                              participation=0.7, server_l2=0.01)
        s = m.init(P.model.init(np.random.default_rng(4)))
        x_start = s.x.copy()
        rng = np.random.default_rng(11)
        for _ in range(60):
            m.step(s, rng)
        xs.append(s.x.copy())
    assert np.abs(xs[0] - x_start).max() > 1e-3
    np.testing.assert_allclose(xs[0], xs[1], rtol=1e-9, atol=1e-12)


def test_mlp_learns_in_a_short_simulation():
    """End to end through the config and the round loop (synthetic data: 20 features, 4 classes)."""
    from byzsim.config import make_config
    from byzsim.simulate import run

    cfg = make_config(
        method="rs-byrd-saga", dataset="synthetic", model="mlp", model_params={"hidden": [8]},
        n_clients=6, lr=0.2, batch_size=4, rounds=200, eval_every=100, seed=1,
    )
    res = run(cfg)
    assert not res.diverged
    assert res.info["d"] == (20 + 1) * 8 + (8 + 1) * 4
    acc = res.columns["test_accuracy"]
    assert acc[-1] > acc[0] and acc[-1] > 0.6


def test_covtype_loads_into_the_mlp():
    """COVTYPE (54 standardized features, 7 classes) with paper B's non-i.i.d. layout:
    21 clients, 3 per class, and a few SAGA rounds of the 54-50-50-7 MLP."""
    from byzsim.config import make_config
    from byzsim.simulate import build_problem, make_method

    cfg = make_config(
        method="rs-byrd-saga", dataset="covtype", partition="by_class", model="mlp",
        n_clients=21, n_byzantine=3, byzantine_indices=[0, 1, 2], attack="sample_duplicating",
        lr=0.1, batch_size=32, rounds=5,
    )
    P = build_problem(cfg, np.random.default_rng(0))
    assert P.X.shape == (21, 540, 54) and P.model.dim == 5657
    assert (P.y[:3] == 0).all() and (P.y[18:] == 6).all()
    m = make_method(cfg, P)
    assert m.estimator.kind == "factored"
    rng = np.random.default_rng(1)
    s = m.init(P.model.init(rng))
    acc0 = P.model.accuracy(s.x, P.X_test, P.y_test)
    for _ in range(30):
        m.step(s, rng)
    assert np.isfinite(s.x).all()
    assert P.model.accuracy(s.x, P.X_test, P.y_test) > max(acc0, 0.3)


def test_paper_b_fig10_fig11_specs_parse():
    from pathlib import Path

    from byzsim.experiment import load_spec

    root = Path(__file__).resolve().parents[1] / "experiments" / "paper_b"
    for name, n, byz, ds in [("fig10", 30, (0, 1, 2), "mnist"), ("fig11", 21, (0, 1, 2), "covtype")]:
        spec = load_spec(root / f"{name}.toml")
        labels = sorted({r.label for r in spec.runs})
        assert labels == sorted(["Byrd-SGD", "RS-Byrd-SGD", "Byrd-SAGA", "RS-Byrd-SAGA"])
        for r in spec.runs:
            c = r.config
            assert (c.dataset, c.model, c.partition, c.n_clients) == (ds, "mlp", "by_class", n)
            assert c.byzantine_indices == byz and c.attack == "sample_duplicating"
            assert (c.lr, c.batch_size) == (0.1, 32)
            assert c.resample == (2 if r.label.startswith("RS-") else 1)


def test_fig10_saga_memory_factored_vs_dense_arithmetic():
    """Fig. 10 workload: 30 clients × J = 1807 MNIST samples (by_class: the smallest class,
    5421 fives, over 3 clients), 784-50-50-10.  Factored state ≤ 1% of dense."""
    m = make_model("mlp", 784, 10)
    n, J = 30, 1807
    factored = 8 * (n * J * sum(m.factor_sizes()) + n * m.dim)
    dense = 8 * (n * J * m.dim + n * m.dim)
    assert factored / dense < 0.01


def test_mlp_float32_stays_float32_and_matches_float64():
    rng = np.random.default_rng(2)
    m = MLP(n_features=6, n_classes=4, hidden=(5, 3))
    X, y = _data(rng, 9, lead=(3,), p=6, C=4)
    W = rng.normal(size=(3, m.dim))
    X32, W32 = m.prepare(X.astype(np.float32)), W.astype(np.float32)
    assert X32.dtype == np.float32 and m.prepare(X).dtype == np.float64
    f32 = m.sample_factors(W32, X32, y)
    assert f32[0].dtype == np.float32
    for a, b in [
        (m.grad(W32, X32, y), m.grad(W, X, y)),
        (m.grad_from_factors(X32, f32), m.grad_from_factors(X, m.sample_factors(W, X, y))),
        (m.per_sample_grads(W32, X32, y), m.per_sample_grads(W, X, y)),
        (m.loss(W32, X32, y), m.loss(W, X, y)),
    ]:
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert m.grad_diff_from_factors(X32, f32, f32).dtype == np.float32


def test_mlp_runs_in_float32():
    from byzsim.config import make_config
    from byzsim.simulate import run

    kw = dict(method="byrd-saga", dataset="synthetic", model="mlp", model_params={"hidden": [8]},
              n_clients=4, lr=0.2, batch_size=4, rounds=40, eval_every=40, seed=3)
    r32, r64 = run(make_config(dtype="float32", **kw)), run(make_config(**kw))
    assert not r32.diverged
    assert r32.info["saga_bytes"] < 0.6 * r64.info["saga_bytes"]
    np.testing.assert_allclose(r32.columns["train_loss"], r64.columns["train_loss"], rtol=1e-3)
