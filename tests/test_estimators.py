"""The minibatch SGD estimator (:class:`byzsim.algorithms.SGDEstimator`) at batch sizes
b ≥ 2: hand values, exact unbiasedness, exact variance.

* **Hand values**: two classes, one feature, no bias, at a model whose two logits are
  equal for every sample: the softmax is (1/2, 1/2), so a sample ``(x, y)`` has the
  data-term gradient ``(−x/2, x/2)`` if ``y = 0`` and ``(x/2, −x/2)`` if ``y = 1``, and
  the minibatch gradient is the mean of these over the batch plus ``l2·w``.
* **Unbiasedness by exact enumeration**: ``sample_batch`` draws every client's batch
  uniformly over the ``C(J, b)`` subsets of its J samples (checked here on the
  permutation path too); the probability-weighted mean of the estimator over every
  subset equals the full local gradient ``∇f_w(w) = (1/J) Σ_j ∇f_{w,j}(w) + l2·w`` to
  round-off, for b = 1, 2, 3 and b = J.
* **Variance**: over the subsets the estimator's variance is the without-replacement
  formula ``(J − b)/(b (J − 1)) · (1/J) Σ_j ‖∇f_{w,j} − ∇̄f_w‖²`` (0 at b = J).

Every check is shown to reject :class:`broken_variants.SgdSumsBatch` (the sum over the
batch without the division by b) for b ≥ 2.  At b = 1 that variant equals the library,
which is why a test at b = 1 cannot tell them apart.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import broken_variants as bv
from byzsim.algorithms import Problem, SGDEstimator, sample_batch
from byzsim.models import SoftmaxRegression

J = 5


# --------------------------------------------------------------------------------------
# hand values
# --------------------------------------------------------------------------------------
def hand_problem(l2=0.5):
    """Two clients of J = 5 one-feature samples, two classes, no bias."""
    model = SoftmaxRegression(n_features=1, n_classes=2, bias=False, l2=l2)
    X = np.array([[1.0, 2.0, 4.0, 8.0, 16.0], [3.0, 1.0, 2.0, 5.0, 7.0]])[..., None]
    y = np.array([[0, 0, 1, 1, 0], [1, 1, 0, 0, 1]])
    return Problem(model, X, y, np.zeros(2, bool), X[0], y[0])


# w = (1, 1): W = [[1], [1]], equal logits x and x, softmax (1/2, 1/2); l2·w = (0.5, 0.5)
W_EQUAL = np.array([1.0, 1.0])
HAND_CASES = [
    # client 0, batch {1, 3}: (x=2, y=0) -> (−1, 1), (x=8, y=1) -> (4, −4); mean (1.5, −1.5)
    # client 1, batch {0, 4}: (x=3, y=1) -> (1.5, −1.5), (x=7, y=1) -> (3.5, −3.5);
    #           mean (2.5, −2.5)
    ([[1, 3], [0, 4]], [[2.0, -1.0], [3.0, -2.0]], [[3.5, -2.5], [5.5, -4.5]]),
    # b = J: client 0: −(1 + 2 + 16)/2 + (4 + 8)/2 = −3.5 over 5 -> (−0.7, 0.7)
    #        client 1: (3 + 1 + 7)/2 − (2 + 5)/2 = 2 over 5 -> (0.4, −0.4)
    ([[0, 1, 2, 3, 4]] * 2, [[-0.2, 1.2], [0.9, 0.1]], [[-3.0, 4.0], [2.5, -1.5]]),
    # b = 1: client 0 sample 4 (x=16, y=0) -> (−8, 8); client 1 sample 2 (x=2, y=0) -> (−1, 1)
    ([[4], [2]], [[-7.5, 8.5], [-0.5, 1.5]], [[-7.5, 8.5], [-0.5, 1.5]]),
]


@pytest.mark.parametrize("idx, expected, summed", HAND_CASES, ids=["b2", "bJ", "b1"])
def test_sgd_hand_values(idx, expected, summed):
    """The minibatch gradient is the mean of the per-sample gradients (+ l2·w): checked
    for a shared model, per-client models, and one client selected by ``rows``; the
    sum-instead-of-mean variant gives the hand-computed sum instead (equal at b = 1)."""
    P = hand_problem()
    idx = np.array(idx)
    est = SGDEstimator(P)
    np.testing.assert_allclose(est(None, W_EQUAL, idx), expected, rtol=1e-15)
    np.testing.assert_allclose(est(None, np.tile(W_EQUAL, (2, 1)), idx), expected, rtol=1e-15)
    one = est(None, W_EQUAL, idx, rows=np.array([1]))
    np.testing.assert_allclose(one, [expected[1]], rtol=1e-15)
    np.testing.assert_allclose(bv.SgdSumsBatch(P)(None, W_EQUAL, idx), summed, rtol=1e-15)


def test_sgd_hand_value_at_b_equal_J_is_the_full_gradient():
    P = hand_problem()
    full = P.model.grad(W_EQUAL, P.X, P.y)
    np.testing.assert_allclose(full, HAND_CASES[1][1], rtol=1e-15)


# --------------------------------------------------------------------------------------
# the batch distribution
# --------------------------------------------------------------------------------------
def subset_chi_square(idx, b):
    """Chi-square statistic of the draws ``idx (m, b)`` against the uniform distribution
    over the C(J, b) sorted b-subsets of range(J) (a row that is not one: KeyError), and
    the number of subsets never drawn."""
    subsets = {s: k for k, s in enumerate(itertools.combinations(range(J), b))}
    counts = np.bincount([subsets[tuple(r)] for r in idx.tolist()], minlength=len(subsets))
    expected = len(idx) / len(subsets)
    return ((counts - expected) ** 2 / expected).sum(), int((counts == 0).sum())


@pytest.mark.parametrize("b", [2, 3, 4, 5])
def test_sample_batch_is_uniform_over_the_b_subsets(b):
    """Every b-subset of range(J) is drawn with probability 1/C(J, b): b = 2 takes the
    rejection path (b² ≤ J), b ≥ 3 the permutation path.  The chi-square statistic has
    C(J, b) − 1 degrees of freedom; the bound 3·C(J, b) is far beyond its 99.9 %
    quantile (b = J: one subset, every draw must be it)."""
    chi2, missing = subset_chi_square(sample_batch(np.random.default_rng(7), 20000, J, b), b)
    assert missing == 0
    assert chi2 < 3 * math.comb(J, b)


def test_uniformity_check_catches_a_biased_sampler():
    """The same check on a sampler that favours low indices (the first b of a sort by
    ``index + uniform·J/2``) fails."""
    b, rng = 3, np.random.default_rng(7)
    idx = np.sort(np.argsort(np.arange(J) + rng.random((20000, J)) * J / 2, axis=1)[:, :b], axis=1)
    chi2, _ = subset_chi_square(idx, b)
    assert chi2 > 3 * math.comb(J, b)


# --------------------------------------------------------------------------------------
# exact enumeration
# --------------------------------------------------------------------------------------
def random_problem(n=3, p=3, C=3, seed=0, l2=0.1):
    rng = np.random.default_rng(seed)
    model = SoftmaxRegression(n_features=p, n_classes=C, bias=True, l2=l2)
    X = model.prepare(rng.normal(size=(n, J, p)))
    y = rng.integers(C, size=(n, J))
    return Problem(model, X, y, np.zeros(n, bool), X[0], y[0])


def subset_outputs(est, w, b):
    """``(outputs (m, n, d), prob (m,))`` over the ``m = C(J, b)`` index matrices in which
    client i takes subset ``(k + i) mod m`` (every client goes through every subset
    once, and the clients' subsets differ), each with probability ``1/C(J, b)`` under
    :func:`sample_batch`."""
    n = est.problem.n
    subsets = np.array(list(itertools.combinations(range(J), b)))
    m = len(subsets)
    outs = np.array([est(None, w, subsets[(k + np.arange(n)) % m]) for k in range(m)])
    return outs, np.full(m, 1.0 / math.comb(J, b))


def sgd_moments(est, b, seed=1, shared=False):
    """``(mean, var, full, exact_var)`` of the estimator over all b-subsets, at random
    per-client models (or one shared model): the probability-weighted mean ``(n, d)``,
    the variance ``(n,)`` (sum over coordinates), the full local gradient and the
    without-replacement variance formula."""
    P = est.problem
    rng = np.random.default_rng(seed)
    w = rng.normal(size=P.model.dim if shared else (P.n, P.model.dim))
    outs, prob = subset_outputs(est, w, b)
    mean = np.einsum("k,kid->id", prob, outs)
    var = np.einsum("k,ki->i", prob, ((outs - mean) ** 2).sum(-1))
    full = P.model.grad(w, P.X, P.y)
    G = P.model.per_sample_grads(w, P.X, P.y)  # (n, J, d)
    spread = ((G - G.mean(1, keepdims=True)) ** 2).sum(-1).mean(1)
    return mean, var, full, (J - b) / (b * (J - 1)) * spread


@pytest.mark.parametrize("shared", [False, True], ids=["per-client-models", "shared-model"])
@pytest.mark.parametrize("b", [1, 2, 3, J])
def test_sgd_unbiased_over_all_b_subsets(b, shared):
    """E over all C(J, b) batches of the minibatch gradient = ∇f_w(w) (data term + l2)."""
    est = SGDEstimator(random_problem())
    mean, _, full, _ = sgd_moments(est, b, shared=shared)
    np.testing.assert_allclose(mean, full, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("b", [1, 2, 3, J])
def test_sgd_variance_is_the_without_replacement_formula(b):
    est = SGDEstimator(random_problem())
    _, var, _, exact = sgd_moments(est, b)
    np.testing.assert_allclose(var, exact, rtol=1e-10, atol=1e-15)
    if b == J:
        assert var.max() < 1e-28


@pytest.mark.parametrize("b", [2, 3, J])
def test_unbiasedness_and_variance_catch_a_sum_instead_of_the_mean(b):
    est = bv.SgdSumsBatch(random_problem())
    mean, var, full, exact = sgd_moments(est, b)
    assert not np.allclose(mean, full, rtol=1e-12, atol=1e-14)
    if b < J:
        assert not np.allclose(var, exact, rtol=1e-10, atol=1e-15)


def test_sum_instead_of_the_mean_is_invisible_at_batch_size_one():
    """Why the checks above need b ≥ 2: at b = 1 the broken variant is the library."""
    P = random_problem()
    for est in (SGDEstimator(P), bv.SgdSumsBatch(P)):
        mean, _, full, _ = sgd_moments(est, 1)
        np.testing.assert_allclose(mean, full, rtol=1e-12, atol=1e-14)
