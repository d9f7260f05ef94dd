import numpy as np
import pytest
from hypothesis import given, strategies as st
from numerics import fd_grad

from byzsim.models import SoftmaxRegression, make_model




@given(seed=st.integers(0, 2**31 - 1), bias=st.booleans(), l2=st.sampled_from([0.0, 0.3]))
def test_softmax_grad_matches_finite_differences(seed, bias, l2):
    rng = np.random.default_rng(seed)
    m = SoftmaxRegression(n_features=3, n_classes=4, bias=bias, l2=l2)
    X = m.prepare(rng.normal(size=(5, 3)))
    y = rng.integers(4, size=5)
    w = rng.normal(size=m.dim)
    g = m.grad(w, X, y)
    np.testing.assert_allclose(g, fd_grad(lambda v: m.loss(v, X, y), w), rtol=1e-5, atol=1e-7)


def test_softmax_vectorized_over_clients_equals_loop():
    rng = np.random.default_rng(0)
    m = SoftmaxRegression(n_features=4, n_classes=3)
    X = m.prepare(rng.normal(size=(6, 7, 4)))
    y = rng.integers(3, size=(6, 7))
    W = rng.normal(size=(6, m.dim))
    G = m.grad(W, X, y)
    L = m.loss(W, X, y)
    for i in range(6):
        np.testing.assert_allclose(G[i], m.grad(W[i], X[i], y[i]))
        np.testing.assert_allclose(L[i], m.loss(W[i], X[i], y[i]))
    # one shared model broadcasts over the client axis
    np.testing.assert_allclose(m.grad(W[0], X, y)[3], m.grad(W[0], X[3], y[3]))


def test_per_sample_grads_average_to_grad_and_factors_are_exact():
    rng = np.random.default_rng(1)
    m = SoftmaxRegression(n_features=5, n_classes=3, bias=True)
    X = m.prepare(rng.normal(size=(2, 9, 5)))
    y = rng.integers(3, size=(2, 9))
    W = rng.normal(size=(2, m.dim))
    dense = m.per_sample_grads(W, X, y)  # (2, 9, d)
    np.testing.assert_allclose(dense.mean(1), m.grad(W, X, y))
    f = m.sample_factors(W, X, y)
    np.testing.assert_allclose(m.grad_from_factors(X, f), dense.sum(1))
    # residual rows sum to zero (softmax minus one-hot)
    np.testing.assert_allclose(f[0].sum(-1), 0, atol=1e-12)


def test_zero_model_loss_is_log_C_and_accuracy_hand_value():
    m = SoftmaxRegression(n_features=2, n_classes=4, bias=False)
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 3])
    np.testing.assert_allclose(m.loss(np.zeros(m.dim), X, y), np.log(4))
    W = np.zeros((2, 4))
    W[0, 0] = 1.0  # x=e0 -> class 0 ; x=e1 -> all-zero logits -> argmax 0 != 3
    assert m.accuracy(W.ravel(), X, y) == 0.5


def test_make_model_rejects_bad_parameters():
    with pytest.raises(ValueError, match="valid parameters"):
        make_model("softmax", 3, 2, bogus=1)
    with pytest.raises(ValueError, match="valid choices"):
        make_model("nope", 3, 2)
    with pytest.raises(ValueError, match="n_features"):
        make_model("softmax", 0, 2)
