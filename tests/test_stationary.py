"""The evaluation hook of ``run_batch`` (``observe``) and the measurement of paper A's
stationarity study (experiments/paper_a/stationary.py): suboptimality of problem (3)
against its certified optimum."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from byzsim.config import make_config
from byzsim.diagnose import penalised_objective, penalised_optimum
from byzsim.simulate import METRICS, problem_for, run, run_batch

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("stationary", ROOT / "experiments/paper_a/stationary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cfg(**kw):
    base = dict(method="rsa", dataset="synthetic",
                dataset_params=dict(n_samples=120, n_features=3, n_classes=2, n_test=50, seed=1),
                partition="iid", model="softmax", model_params=dict(bias=True, l2=1.0),
                n_clients=6, n_byzantine=0, server_l2=1.0, penalty=1.0, lr=0.01,
                rounds=60, eval_every=20, dtype="float64")
    base.update(kw)
    return make_config(**base)


def _accuracy_observer(problems, slot, state):
    """Test accuracy of each replica's server model, computed replica by replica."""
    x, _, _ = state.as_replicas()
    return {"acc_direct": np.array([problems[slot[s]].model.accuracy(x[s], problems[slot[s]].X_test,
                                                                     problems[slot[s]].y_test)
                                    for s in range(len(slot))]),
            "x_norm2": np.sum(x * x, axis=1)}


def _reversed_observer(problems, slot, state):
    """A broken observer: the replicas' values in reverse order."""
    return {k: v[::-1] for k, v in _accuracy_observer(problems, slot, state).items()}


def _agrees(cfgs, observe) -> bool:
    """The observed columns of every replica equal a direct evaluation of its state: the
    accuracy column equals the engine's ``test_accuracy``, and ``x_norm2`` equals that of
    the same run made alone."""
    batch = run_batch(cfgs, observe=observe)
    ok = True
    for c, r in zip(cfgs, batch):
        alone = run_batch([c], observe=_accuracy_observer)[0]
        ok &= np.array_equal(r.columns["acc_direct"], r.columns["test_accuracy"])
        ok &= np.allclose(r.columns["x_norm2"], alone.columns["x_norm2"], rtol=1e-12, atol=1e-12)
    return bool(ok)


def test_observed_values_are_each_replicas_own_and_the_broken_order_is_caught():
    cfgs = [_cfg(lr=lr, seed=s, method="asynrsa-vr", participation=g)
            for lr, s, g in ((0.3, 0, 1.0), (0.01, 1, 0.5), (0.1, 2, 1.0))]
    res = run_batch(cfgs, observe=_accuracy_observer)
    # replicas differ, so a mixed-up order cannot pass unnoticed
    sums = [r.columns["x_norm2"][-1] for r in res]
    assert len(set(np.round(sums, 9))) == 3
    for r in res:
        assert set(r.columns) == set(METRICS) | {"acc_direct", "x_norm2"}
        assert all(len(v) == len(r.columns["round"]) for v in r.columns.values())
    assert _agrees(cfgs, _accuracy_observer)
    assert not _agrees(cfgs, _reversed_observer)


def test_run_keeps_the_standard_metrics_only():
    assert set(run(_cfg()).columns) == set(METRICS)


@pytest.mark.parametrize("observe, match", [
    (lambda P, slot, st: {"v": np.zeros(len(slot) + 1)}, "shape"),
    (lambda P, slot, st: {"train_loss": np.zeros(len(slot))}, "standard metrics"),
    ("not callable", "callable"),
])
def test_bad_observers_are_refused(observe, match):
    with pytest.raises(ValueError, match=match):
        run_batch([_cfg(), _cfg(seed=1)], observe=observe)


# --------------------------------------------------------------------------------------
# the study's measurement
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """A tiny problem (3) with λ above Lemma 1's threshold: x* is the consensus point."""
    cfg = _cfg(penalty=2.0)
    opt = penalised_optimum(cfg)
    assert opt.method == "lemma1" and opt.ratio < 1
    o = dict(x0=opt.x0, X=opt.X, objective=opt.objective)
    return cfg, problem_for(cfg), o


def test_suboptimality_is_zero_at_the_optimum_and_not_negative_near_it(tiny):
    cfg, P, o = tiny
    F = lambda x0, X: penalised_objective(P, x0, X, cfg.penalty, cfg.p, cfg.server_l2) - o["objective"]
    assert abs(F(o["x0"], o["X"])) <= 1e-12
    rng = np.random.default_rng(0)
    # the optimum is certified to ‖∇‖ ≤ 1e-6 relative: nothing nearby is lower by more
    for scale in (1e-4, 1e-2, 1.0):
        x0 = o["x0"] + scale * rng.standard_normal(o["x0"].shape)
        X = o["X"] + scale * rng.standard_normal(o["X"].shape)
        assert F(x0, X) >= -1e-9
    # replicas at once: the same values
    x0s = np.stack([o["x0"], o["x0"] + 0.1])
    Xs = np.stack([o["X"], o["X"] - 0.1])
    np.testing.assert_allclose(penalised_objective(P, x0s, Xs, cfg.penalty, cfg.p, cfg.server_l2),
                               [F(o["x0"], o["X"]) + o["objective"], F(x0s[1], Xs[1]) + o["objective"]])


def test_a_noise_free_run_goes_to_the_optimum_as_the_step_shrinks(tiny):
    """RSA with full local gradients (batch = J), no Byzantine client: its stationary
    suboptimality is ≥ 0 and shrinks with α (the subgradient floor is O(α))."""
    cfg, P, o = tiny
    st = _study()
    floors = {}
    for lr in (0.02, 0.002):
        c = cfg.replace(lr=lr, batch_size=P.J, rounds=int(40 / lr), eval_every=int(0.4 / lr))
        res = run_batch([c, c.replace(seed=1)], problem=P, observe=st.observer(cfg, o))
        rows = [dict(instance="t", method="full", q=0, gamma=1.0, alpha=lr, seed=r.config.seed,
                     round=int(k), **{q: float(r.columns[q][i]) for q in st.QUANTITIES})
                for r in res for i, k in enumerate(r.columns["round"])]
        (s,) = st.summarise(rows)
        assert s["flat"]
        assert s["floor"] >= -1e-9 and s["dist2_stacked"] >= 0
        floors[lr] = s
    # the floor of the l1 penalty's subgradient chatter is O(α): 10x smaller step, ~10x lower
    assert 0.03 < floors[0.002]["floor"] / floors[0.02]["floor"] < 0.3
    assert floors[0.002]["dist2_stacked"] < 0.1 * floors[0.02]["dist2_stacked"]


def test_the_tail_and_the_slope_on_known_series():
    st = _study()
    r = np.arange(0, 101)
    last, prev = st.tail_means(r, np.where(r > 75, 1.0, np.where(r > 50, 3.0, 9.0)))
    assert (last, prev) == (1.0, 3.0)
    a = np.array([0.001, 0.003, 0.01, 0.03])
    sl, hw, _ = st.slope_fit(a, 5 * a)
    assert sl == pytest.approx(1.0) and hw == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(st.slope_fit(a, a - 0.002)[0])  # a floor ≤ 0 has no log


def test_the_decay_fit_and_the_rounds_to_flatness_on_a_known_exponential():
    st = _study()
    k = np.arange(0, 2001, 50)
    f_inf, A, tau = st.decay_fit(k, 17.0 + 25.0 * np.exp(-k / 1500.0))
    assert (f_inf, A, tau) == pytest.approx((17.0, 25.0, 1500.0), rel=1e-4)
    T = st.rounds_to_flat(f_inf, A, tau)

    def rel_change(T):  # the quarters' means of the fitted curve, integrated numerically
        t = np.linspace(0.5 * T, T, 20001)
        v = f_inf + A * np.exp(-t / tau)
        prev, last = v[:10000].mean(), v[10001:].mean()
        return abs(last - prev) / last

    # flat (5 %) from T on, not just below it: a short run that barely moves is not enough
    assert 1500 < T < 20000
    assert all(rel_change(x) <= 0.05 for x in (T, 1.5 * T, 4 * T))
    assert rel_change(T / 1.1) > 0.05
    assert np.isnan(st.rounds_to_flat(float("nan"), A, tau))
