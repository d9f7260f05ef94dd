"""The naive per-client loop of ``benchmarks/naive.py`` (the benchmark's yardstick) and
byzsim's vectorized ``method.step`` follow the same trajectory from the same seed.

Small digits problems shaped like the benchmark workloads: A (AsynRSA-VR, 1-sample
SAGA, l1 penalty, same-value attack) and B (RS-Byrd-SAGA: minibatch SAGA, s = 2
resampling, geometric median, sample-duplicating attack, by-class split), and both
families at batch sizes b = 3 and b = J (every local sample): RSA and AsynRSA-VR with
and without partial participation, SGD and SAGA with the mean and the geometric median.

Ragged clients (Dirichlet label skew, quantity skew): both families, SGD and SAGA, the
plain and the J_w-weighted mean, the geometric median; a SAGA mean kept over J_max
instead of each client's J_w leaves the trajectory.

At b ≥ 2 the naive loop averages each client's b per-sample gradients one by one; a
vectorized SGD estimator that sums them instead (``broken_variants.SgdSumsBatch``)
leaves the trajectory, which b = 1 cannot show (there the sum is the mean).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from naive import make_naive  # noqa: E402

import broken_variants as bv  # noqa: E402

from byzsim.config import make_config  # noqa: E402
from byzsim.simulate import make_method, problem_for  # noqa: E402

A = dict(
    method="asynrsa-vr", dataset="digits", partition="unbalanced", n_clients=10, n_byzantine=2,
    byzantine_indices=[8, 9], lr=0.001, batch_size=1, penalty=0.05, server_l2=0.01,
    attack="same_value", attack_params={"c": 10000.0},
)
B = dict(
    method="rs-byrd-saga", dataset="digits", partition="by_class", n_clients=10, n_byzantine=2,
    byzantine_indices=[0, 1], attack="sample_duplicating", lr=0.5, batch_size=8,
)


FULL = "J"  # batch_size placeholder: every local sample, b = J
# The mathematical geometric median: a tight tolerance, started at the mean like the
# naive loop's Weiszfeld.  (With the sample-duplicating attack and no resampling, three
# rows are exact copies.  From its default start byzsim's median then stopped 1.7e-3
# from them where the true median is 4.7e-3 away, objective 2.8e-7 (relative) above the
# minimum, in round 14 of the SAGA b = 3 run below, despite tol 1e-12, max_iter 5000.)
TIGHT_GM = {"tol": 1e-12, "max_iter": 5000, "init": "mean"}


def _config(kw):
    """``make_config(**kw)`` with ``batch_size = FULL`` resolved to the clients' J."""
    if kw.get("batch_size") == FULL:
        kw = dict(kw, batch_size=problem_for(make_config(**dict(kw, batch_size=1))).J)
    return make_config(**kw)


def _trajectories(kw, rounds=None, seed=3, estimator=None):
    """Per round: byzsim's and the naive loop's server models, and (penalty family) the
    regular clients' models.  ``rounds``: default 20, and 8 at b = J (the naive loop
    then computes every sample's gradient one by one).  ``estimator``: a class replacing
    byzsim's estimator (a broken variant)."""
    if rounds is None:
        rounds = 8 if kw.get("batch_size") == FULL else 20
    cfg = _config(kw)
    problem = problem_for(cfg)
    method = make_method(cfg, problem)
    if estimator is not None:
        method.estimator = estimator(problem)
    x0 = problem.model.init(np.random.default_rng(0))
    state = method.init(x0)
    naive = make_naive(cfg, problem).init(x0)
    rv, rn = np.random.default_rng(seed), np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        method.step(state, rv)
        naive.step(rn)
        models = None
        if state.models is not None:
            reg = np.flatnonzero(problem.regular)
            models = (state.models[reg].copy(), np.array([naive.models[i] for i in reg]))
        out.append((state.x.copy(), naive.x.copy(), models))
    # both consumed the same random numbers
    assert rv.integers(1 << 62) == rn.integers(1 << 62)
    return out


GAUSSIAN = dict(attack="gaussian", attack_params={"std": 100.0})
RSA = dict(A, method="rsa", byzantine_indices=[0, 6])
# minibatch RSA on dense Gaussian features (no exact ties, see below)
RSA_DENSE = dict(RSA, dataset="synthetic", dataset_params={"n_samples": 600})


@pytest.mark.parametrize(
    "kw",
    [
        A,
        dict(A, **GAUSSIAN, participation=0.5),
        # Byzantine rows between regular ones: the round gathers and writes back rows
        dict(A, byzantine_indices=[3, 6]),
        dict(RSA, participation=0.7),
        # minibatches: b = 3 and every local sample
        dict(A, batch_size=3),
        dict(A, **GAUSSIAN, participation=0.5, batch_size=3),
        dict(A, **GAUSSIAN, participation=0.5, batch_size=FULL),
        dict(A, byzantine_indices=[3, 6], batch_size=FULL),
        dict(RSA_DENSE, batch_size=3),
        dict(RSA_DENSE, participation=0.7, batch_size=3),
        dict(RSA_DENSE, participation=0.7, batch_size=FULL),
    ],
    ids=["A", "A-gaussian-gamma0.5", "A-byzantine-inside", "RSA-gamma0.7",
         "A-b3", "A-gaussian-gamma0.5-b3", "A-gaussian-gamma0.5-bJ", "A-byzantine-inside-bJ",
         "RSA-b3", "RSA-gamma0.7-b3", "RSA-gamma0.7-bJ"],
)
def test_penalty_family_same_trajectory(kw):
    # (The l1 sign is discontinuous: where a client and the server model are equal up to
    # round-off, a 1-ulp difference flips sign(x_i − x0) and moves the models by lr·λ.
    # On digits, a pixel that is 0 in every sample of a batch gives an exactly zero SGD
    # gradient coordinate, and such coordinates of x_i and x0 meet: RSA on digits at
    # b = 2, 3, 4, 8 hits a tie in round 2 (x_i − x0 = −1.4e-20 in byzsim, 0 or +1.4e-20
    # in the naive loop), hence minibatch RSA runs on dense synthetic features.  SAGA's
    # table mean covers every local sample, and b = 1 RSA on digits misses the ties
    # within these 20 rounds.)
    for xv, xn, (mv, mn) in _trajectories(kw):
        np.testing.assert_allclose(xv, xn, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(mv, mn, rtol=1e-9, atol=1e-14)
    assert np.abs(xv).max() > 0  # the run moved


@pytest.mark.parametrize("batch_size", [3, FULL], ids=["b3", "bJ"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(B, method="sgd"),
        dict(B, method="byrd-sgd", aggregator_params=TIGHT_GM),
        dict(B, method="saga"),
        dict(B, method="byrd-saga", aggregator_params=TIGHT_GM),
        dict(B, method="byrd-saga", aggregator_params=TIGHT_GM, participation=0.7),
    ],
    ids=["sgd-mean", "sgd-geomed", "saga-mean", "saga-geomed", "saga-geomed-gamma0.7"],
)
def test_gradient_family_minibatch_same_trajectory(kw, batch_size):
    """SGD and SAGA with the mean and the (tight) geometric median, no resampling, at
    b = 3 and b = J: agreement up to round-off."""
    for xv, xn, _ in _trajectories(dict(kw, batch_size=batch_size)):
        np.testing.assert_allclose(xv, xn, rtol=1e-9, atol=1e-12)
    assert np.abs(xv).max() > 0.1


@pytest.mark.parametrize("batch_size", [3, FULL], ids=["b3", "bJ"])
@pytest.mark.parametrize(
    "kw", [dict(RSA_DENSE, participation=0.7), dict(B, method="sgd")], ids=["RSA", "SGD"]
)
def test_minibatch_trajectory_catches_a_sum_instead_of_the_mean(kw, batch_size):
    """The comparison above, with byzsim's SGD estimator replaced by one that sums the
    batch's gradients: the server models part by more than a tenth of their size."""
    xv, xn, _ = _trajectories(dict(kw, batch_size=batch_size), estimator=bv.SgdSumsBatch)[-1]
    assert np.abs(xv - xn).max() > 0.1 * np.abs(xn).max()


def test_gradient_family_same_trajectory_tight_median():
    """With byzsim's Weiszfeld run to a tight tolerance both compute the same median:
    agreement up to round-off."""
    kw = dict(B, aggregator_params={"tol": 1e-12, "max_iter": 5000})
    for xv, xn, _ in _trajectories(kw):
        np.testing.assert_allclose(xv, xn, rtol=1e-9, atol=1e-12)
    assert np.abs(xv).max() > 0.1


def test_gradient_family_default_tolerance():
    """With the default ``tol = 1e-5`` byzsim's median stops earlier than the naive
    loop's (1e-12): the trajectories agree to about that relative tolerance."""
    for xv, xn, _ in _trajectories(B):
        scale = np.abs(xv).max()
        assert np.abs(xv - xn).max() <= 1e-4 * scale


# ragged clients: Dirichlet(0.5) label skew and quantity skew on digits (J_w from a few
# to a few hundred); the naive loop draws each client's batch from its own J_w, keeps a
# J_w-row SAGA table and weights the mean by J_w when asked
DIRICHLET = dict(partition="dirichlet", partition_params={"beta": 0.5, "min_size": 4})
QSKEW = dict(partition="quantity_skew", partition_params={"beta": 0.5, "min_size": 4})


@pytest.mark.parametrize(
    "kw",
    [
        dict(A, **DIRICHLET),
        dict(A, **QSKEW, **GAUSSIAN, participation=0.5, batch_size=3),
        dict(RSA, **QSKEW),
        dict(B, **DIRICHLET, method="sgd", batch_size=3),
        dict(B, **QSKEW, method="sgd", batch_size=3, aggregator_params={"weighted": True}),
        dict(B, **DIRICHLET, method="saga", batch_size=4, aggregator_params={"weighted": True}),
        dict(B, **QSKEW, method="byrd-saga", aggregator_params=TIGHT_GM, participation=0.7, batch_size=3),
    ],
    ids=["A-dirichlet", "A-qskew-gamma0.5-b3", "RSA-qskew", "sgd-mean-dirichlet", "sgd-weighted-qskew",
         "saga-weighted-dirichlet", "saga-geomed-qskew-gamma0.7"],
)
def test_ragged_clients_same_trajectory(kw):
    problem = problem_for(make_config(**kw))
    assert problem.ragged
    for xv, xn, models in _trajectories(kw):
        np.testing.assert_allclose(xv, xn, rtol=1e-9, atol=1e-12)
        if models is not None:
            np.testing.assert_allclose(*models, rtol=1e-9, atol=1e-14)
    assert np.abs(xv).max() > 0


def test_ragged_trajectory_catches_a_saga_mean_over_J_max(monkeypatch):
    """Broken variant: byzsim's SAGA with 1/J_max for 1/J_w (the padding counted in the mean)."""
    from byzsim.algorithms import Problem

    monkeypatch.setattr(Problem, "counts_at", lambda self, ia, ib: np.full(np.broadcast(ia, ib).shape, self.J))
    xv, xn, _ = _trajectories(dict(B, **DIRICHLET, method="saga", batch_size=4))[-1]
    assert np.abs(xv - xn).max() > 1e-3 * np.abs(xn).max()
