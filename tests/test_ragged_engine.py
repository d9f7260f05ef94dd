"""Ragged clients in the engine: client w holds J_w samples, the first rows of its padded
block ``X[w] (J_max, p')`` (``Problem.counts``).

* **Sampling** is uniform over the b-subsets of each client's own ``range(J_w)`` (a
  chi-square test per client on both paths of :func:`sample_batch_ragged`), never
  reaches the padding, and is refused for ``b > min_w J_w``; a sampler of consecutive
  blocks fails the same test.
* **SAGA is unbiased with unequal J**, exactly: for every client, the mean of the
  corrected gradient over all b-subsets of its J_w samples is its full local gradient
  ``(1/J_w) Σ_{j<J_w} ∇f_{w,j} + l2·w``, for dense and factored tables, and the table
  mean stays ``(1/J_w) Σ_{j<J_w} φ_{w,j}``; SAGA with 1/J_max for 1/J_w fails.
* **Edge clients**: a client with J_w = 1 (its SAGA gradient is exact) next to one
  holding 90 % of the data, in both families.
* **Padding never affects a result**: the padding rows filled with NaN give metrics
  equal, bit for bit, to the zero-padded run (both families, SGD and SAGA, dense and
  factored tables, softmax and MLP, label flipping); the same problem whose counts
  claim the padding as data breaks.
* **The mean weighted by J_w** (FedAvg) of the initial SAGA means is the gradient over
  all samples.
* **Bad input** is refused before any work, naming the field.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from byzsim.aggregators import mean
from byzsim.algorithms import Problem, SagaEstimator, SagaTable, sample_batch, sample_batch_ragged
from byzsim.config import make_config
from byzsim.models import SoftmaxRegression
from byzsim.partition import PAD_LABEL
from byzsim.simulate import problem_for, run


def ragged_problem(counts, p=3, C=3, seed=0, l2=0.1, pad=0.0) -> Problem:
    """Softmax regression on Gaussian features with labels from a random linear rule,
    client w holding ``counts[w]`` samples (padding rows hold ``pad`` and label -1)."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(counts, dtype=np.int64)
    model = SoftmaxRegression(n_features=p, n_classes=C, bias=True, l2=l2)
    n, J = len(counts), int(counts.max())
    X = model.prepare(rng.normal(size=(n, J, p)))
    y = (X @ rng.normal(size=(p + 1, C))).argmax(axis=-1)  # learnable labels
    pad_rows = np.arange(J) >= counts[:, None]
    X[pad_rows], y[pad_rows] = pad, PAD_LABEL
    X_test = model.prepare(rng.normal(size=(30, p)))
    return Problem(model, X, y, np.zeros(n, bool), X_test, rng.integers(C, size=30), counts=counts)


# --------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------
def chi_square_per_client(idx, counts, b):
    """``[(chi2, C(J_w, b))]`` per distinct J_w of the draws ``idx (m, b)`` of clients with
    ``counts (m,)`` against the uniform distribution over the b-subsets of range(J_w)."""
    out = []
    for Jw in np.unique(counts):
        rows = idx[counts == Jw]
        subsets = {s: k for k, s in enumerate(itertools.combinations(range(Jw), b))}
        freq = np.bincount([subsets[tuple(r)] for r in rows.tolist()], minlength=len(subsets))
        expected = len(rows) / len(subsets)
        out.append((((freq - expected) ** 2 / expected).sum(), len(subsets)))
    return out


# b = 1: one integer per client; b = 2, 3: clients with b² <= J_w by rejection, the
# others by keys (both paths in one call)
SAMPLING_CASES = [(1, [1, 2, 3, 5, 9, 30]), (2, [2, 3, 4, 5, 9]), (3, [3, 5, 9, 10])]


@pytest.mark.parametrize("b,counts", SAMPLING_CASES, ids=["b1", "b2", "b3"])
def test_sampling_is_uniform_within_each_clients_own_samples(b, counts):
    """4000 draws per client (clients repeated): every b-subset of range(J_w) with
    probability 1/C(J_w, b).  The chi-square statistic has C − 1 degrees of freedom; the
    bound max(3C, 20) is far beyond its 99.99 % quantile (C = 1: every draw is the one
    subset, statistic 0)."""
    c = np.tile(np.asarray(counts), 4000)
    idx = sample_batch_ragged(np.random.default_rng(11), c, b)
    assert idx.shape == (c.size, b) and (idx < c[:, None]).all() and (idx >= 0).all()
    assert (np.diff(idx, axis=1) > 0).all()  # distinct, sorted
    for chi2, C in chi_square_per_client(idx, c, b):
        assert chi2 < max(3 * C, 20)


def test_uniformity_check_catches_a_sampler_of_consecutive_blocks():
    """Broken variant: b consecutive indices from a uniform start (every index still
    uniform-ish, but most b-subsets are never drawn)."""
    b, c = 2, np.tile(np.array([5, 9]), 4000)
    rng = np.random.default_rng(11)
    idx = rng.integers(c - b + 1)[:, None] + np.arange(b)
    assert any(chi2 > 3 * C for chi2, C in chi_square_per_client(idx, c, b))


def test_equal_counts_draw_exactly_as_without_them():
    for b in (1, 2, 4):  # b = 4: the permutation path at J = 9
        a = sample_batch(np.random.default_rng(3), 5, 9, b)
        c = sample_batch(np.random.default_rng(3), 5, 9, b, np.full(5, 9))
        np.testing.assert_array_equal(a, c)


def test_a_batch_larger_than_the_smallest_client_is_refused():
    with pytest.raises(ValueError, match=r"min_w J_w\] = \[1, 2\].*client 1"):
        sample_batch_ragged(np.random.default_rng(0), np.array([5, 2, 7]), 3)


# --------------------------------------------------------------------------------------
# SAGA, exactly
# --------------------------------------------------------------------------------------
def copy_table(t: SagaTable) -> SagaTable:
    return SagaTable(tuple(e.copy() for e in t.entries), t.mean.copy())


def local_gradient(P: Problem, w, i):
    """``(1/J_i) Σ_{j<J_i} ∇f_{i,j}(w_i) + l2·w_i`` over client i's real samples."""
    c = P.counts[i]
    return P.model.grad(w[i], P.X[i, :c], P.y[i, :c])


def saga_subset_means(P: Problem, kind: str, b: int, seed=1):
    """For every client: the mean of SAGA's corrected gradient over all b-subsets of its
    J_w samples, from a table that lags the model (filled at other models); and the full
    local gradients."""
    rng = np.random.default_rng(seed)
    est = SagaEstimator(P, kind)
    n, d = P.n, P.model.dim
    table = est.init(0.3 * rng.normal(size=(n, d)))
    for _ in range(3):
        est(table, 0.3 * rng.normal(size=(n, d)), sample_batch(rng, n, P.J, b, P.counts))
    w = rng.normal(size=(n, d))
    base = np.array([np.arange(b)] * n)  # the other clients' batch (any valid one)
    means = np.zeros((n, d))
    for i in range(n):
        subsets = list(itertools.combinations(range(P.counts[i]), b))
        for s in subsets:
            idx = base.copy()
            idx[i] = s
            means[i] += est(copy_table(table), w, idx)[i]
        means[i] /= len(subsets)
    return means, np.array([local_gradient(P, w, i) for i in range(n)]), table


@pytest.mark.parametrize("kind", ["dense", "factored"])
@pytest.mark.parametrize("b", [1, 2])
def test_saga_is_unbiased_with_unequal_J_by_enumeration(kind, b):
    P = ragged_problem([2, 4, 5, 3])
    means, full, table = saga_subset_means(P, kind, b)
    np.testing.assert_allclose(means, full, rtol=1e-11, atol=1e-13)
    # the table mean is (1/J_w) Σ_{j<J_w} φ_{w,j} after the updates
    form = SagaEstimator(P, kind).form
    for i in range(P.n):
        c = P.counts[i]
        exact = form.grad_sum(P.X[i, :c], tuple(e[i, :c] for e in table.entries)) / c
        np.testing.assert_allclose(table.mean[i], exact, rtol=1e-11, atol=1e-13)


def test_unbiasedness_catches_a_table_mean_kept_over_J_max(monkeypatch):
    """Broken variant: SAGA with 1/J_max for 1/J_w (the padding counted in the mean)."""
    P = ragged_problem([2, 4, 5, 3])
    monkeypatch.setattr(Problem, "counts_at", lambda self, ia, ib: np.full(np.broadcast(ia, ib).shape, self.J))
    means, full, _ = saga_subset_means(P, "factored", 2)
    assert not np.allclose(means[[0, 1, 3]], full[[0, 1, 3]], rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------
# edge clients: J_w = 1 next to a client with 90 % of the data
# --------------------------------------------------------------------------------------
EDGE = [1, 3, 4, 72]  # 72 / 80 = 90 %


def test_a_one_sample_clients_saga_gradient_is_exact_and_the_weighted_mean_is_the_global_gradient():
    P = ragged_problem(EDGE, l2=0.0)
    rng = np.random.default_rng(2)
    est = SagaEstimator(P)
    table = est.init(np.zeros(P.model.dim))
    # FedAvg's weighting of the initial table means: the gradient over all 80 samples
    real = P.mask
    allX, ally = P.X[real], P.y[real]
    np.testing.assert_allclose(mean(table.mean, weighted=True, weights=P.counts),
                               P.model.grad(np.zeros(P.model.dim), allX, ally), rtol=1e-12, atol=1e-14)
    assert not np.allclose(mean(table.mean), P.model.grad(np.zeros(P.model.dim), allX, ally), atol=1e-6)
    for _ in range(5):
        w = rng.normal(size=(P.n, P.model.dim))
        g = est(table, w, sample_batch(rng, P.n, P.J, 1, P.counts))
        np.testing.assert_allclose(g[0], local_gradient(P, w, 0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method,extra", [
    ("sgd", {}), ("sgd", {"aggregator_params": {"weighted": True}}), ("saga", {}),
    ("byrd-saga", {}), ("rsa", {}), ("asynrsa-vr", {}),
], ids=["sgd", "sgd-weighted", "saga", "byrd-saga", "rsa", "asynrsa-vr"])
def test_both_families_train_with_edge_clients(method, extra):
    P = ragged_problem(EDGE, l2=0.0, seed=4)
    cfg = make_config(method=method, n_clients=4, n_byzantine=0, batch_size=1, lr=0.1, rounds=60,
                      eval_every=30, **({"penalty": 0.05} if method in ("rsa", "asynrsa-vr") else {}), **extra)
    r = run(cfg, problem=P)
    loss = r.columns["train_loss"]
    assert not r.diverged and np.isfinite(loss).all()
    assert loss[-1] < loss[0] - 0.05
    assert P.X_eval.shape[0] == 80  # the training loss is over every real sample


# --------------------------------------------------------------------------------------
# padding never affects a result
# --------------------------------------------------------------------------------------
def nan_padded(P: Problem) -> Problem:
    X = P.X.copy()
    X[~P.mask] = np.nan
    X.flags.writeable = False
    return dataclasses.replace(P, X=X)


DIRICHLET = dict(dataset="digits", partition="dirichlet", partition_params={"beta": 0.5, "min_size": 5},
                 n_clients=8, n_byzantine=2, rounds=12, eval_every=6, batch_size=3, train_eval_samples=400)


@pytest.mark.parametrize("kw", [
    dict(method="sgd", aggregator_params={"weighted": True}),
    dict(method="byrd-saga", attack="sign_flipping"),
    dict(method="saga", saga_table="dense", attack="gaussian", attack_params={"std": 5.0}, participation=0.7),
    dict(method="byrd-saga", model="mlp", model_params={"hidden": [5]}, attack="label_flipping"),
    dict(method="asynrsa-vr", attack="same_value", participation=0.6, penalty=0.05),
    dict(method="rsa", attack="sign_flipping", penalty=0.05, partition="quantity_skew"),
    dict(method="byrd-sgd", local_steps=3, momentum=0.5, attack="sign_flipping"),
], ids=["sgd-weighted", "byrd-saga", "saga-dense-gamma0.7", "mlp-label-flipping", "asynrsa-vr-gamma0.6",
        "rsa-quantity-skew", "local-steps-momentum"])
def test_nan_padding_gives_the_same_metrics_bit_for_bit(kw):
    cfg = make_config(**{**DIRICHLET, "lr": 0.05, **kw})
    P = problem_for(cfg)
    assert P.ragged and (P.y[~P.mask] == PAD_LABEL).all()  # label flipping kept the padding
    a, b = run(cfg, problem=P), run(cfg, problem=nan_padded(P))
    assert not a.diverged
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])


def test_the_nan_check_catches_padding_counted_as_data():
    """Broken variant: the same NaN-padded problem whose counts claim every row (the
    padding sampled and stored as data) breaks the run."""
    cfg = make_config(**{**DIRICHLET, "method": "byrd-saga", "lr": 0.05})
    bad = dataclasses.replace(nan_padded(problem_for(cfg)), counts=None)
    r = run(cfg, problem=bad)
    assert r.diverged or not np.isfinite(r.columns["train_loss"]).all()


# --------------------------------------------------------------------------------------
# bad input: before any work, naming the field
# --------------------------------------------------------------------------------------
def _refused(cfg, match):
    calls = []
    with pytest.raises(ValueError, match=match):
        run(cfg, callback=calls.append)
    assert not calls  # no round, no evaluation


@pytest.mark.parametrize("beta", [0.0, -0.5])
def test_a_nonpositive_beta_is_refused_naming_the_field(beta):
    # refused with the config, before any data is loaded
    with pytest.raises(ValueError, match=r"partition_params\.beta' = .*: expected a finite number > 0"):
        make_config(**{**DIRICHLET, "method": "sgd", "partition_params": {"beta": beta}})


def test_a_partition_leaving_a_client_without_samples_is_refused():
    # by_class without truncation: 200 clients per class, but no digit class has 200 samples
    _refused(make_config(method="sgd", dataset="digits", partition="by_class",
                         partition_params={"truncate": False}, n_clients=2000, n_byzantine=0),
             r"partition_params.*no sample")
    with pytest.raises(ValueError, match=r"partition_params\.min_size' = 0: expected an integer >= 1"):
        make_config(**{**DIRICHLET, "method": "sgd", "partition_params": {"beta": 0.5, "min_size": 0}})


def test_a_batch_larger_than_a_clients_samples_is_refused():
    cfg = make_config(**{**DIRICHLET, "method": "byrd-saga"})
    lo = int(problem_for(cfg).counts.min())
    _refused(cfg.replace(batch_size=lo + 1), rf"'batch_size' = {lo + 1}: at most the {lo} samples of the smallest client")
    run(cfg.replace(batch_size=lo, rounds=1))  # the smallest client's every sample: allowed


@pytest.mark.parametrize("counts,match", [
    ([2, 3], r"counts must be integers of shape \(3,\)"),
    ([2, 0, 3], r"counts must lie in \[1, J_max\] = \[1, 4\]"),
    ([2, 5, 3], r"counts must lie in \[1, J_max\] = \[1, 4\]"),
    ([2.0, 3.0, 4.0], r"counts must be integers"),
])
def test_counts_that_do_not_match_the_data_are_refused(counts, match):
    P = ragged_problem([2, 4, 3])
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(P, counts=np.array(counts))


def test_weighted_mean_refuses_preaggregators_and_missing_weights():
    with pytest.raises(ValueError, match="aggregator_params.weighted"):
        run(make_config(**{**DIRICHLET, "method": "sgd", "n_byzantine": 0, "aggregator_params": {"weighted": True},
                           "preaggregators": [{"name": "bucketing", "s": 2}]}))
    with pytest.raises(ValueError, match="no weights were passed"):
        mean(np.ones((3, 2)), weighted=True)
    with pytest.raises(ValueError, match="finite and >= 0"):
        mean(np.ones((3, 2)), weighted=True, weights=[1, -1, 1])
