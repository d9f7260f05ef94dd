"""The effective problem of AsynRSA-VR's masked server (experiments/paper_a/gamma_penalty.py):
with participation γ the stationary point is the optimum of problem (3) with ``f0/γ`` at
the same λ, shifted along ``1`` by the same-value attack by ``λq / (server_l2/γ + R·l2)``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from byzsim.config import make_config
from byzsim.diagnose import penalised_optimum
from byzsim.simulate import problem_for, run_batch

ROOT = Path(__file__).resolve().parents[1]


def _module():
    sys.path.insert(0, str(ROOT / "experiments/paper_a"))
    spec = importlib.util.spec_from_file_location("gamma_penalty", ROOT / "experiments/paper_a/gamma_penalty.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny():
    """6 clients (the last one Byzantine, same-value), softmax with bias and l2 = 1,
    server_l2 = 1, λ = 2 (above Lemma 1's threshold): d = 8."""
    cfg = make_config(method="asynrsa-vr", dataset="synthetic",
                      dataset_params=dict(n_samples=120, n_features=3, n_classes=2, n_test=50, seed=1),
                      partition="iid", model="softmax", model_params=dict(bias=True, l2=1.0),
                      n_clients=6, n_byzantine=1, byzantine_indices=[5], attack="same_value",
                      attack_params=dict(c=10000.0), server_l2=1.0, penalty=2.0, lr=0.002,
                      batch_size=20, rounds=100, eval_every=10, dtype="float64")
    return cfg, problem_for(cfg), _module()


def _broken_shift(lam, q, gamma, server_l2, l2, R):
    """The penalty-γλ reading: the attack's pull and the whole penalty scaled by γ
    against an unscaled f0 (the shift of problem (3) at penalty γλ)."""
    return gamma * lam * q / (server_l2 + R * l2)


@pytest.mark.parametrize("gamma", [0.3, 0.7, 1.0])
def test_the_effective_point_meets_the_optimality_conditions(tiny, gamma):
    cfg, P, gp = tiny
    e = gp.effective_point(cfg, P, gamma, q=1)
    assert e["ratio"] <= 1.0  # consensus: every client's subgradient fits in λ's box
    assert e["residual"] <= 1e-5
    assert e["shift"] == pytest.approx(2.0 / (1.0 / gamma + 5.0))
    # with q = 0 it is the optimum of (3) with server_l2/γ, orthogonal to 1 (softmax is flat along 1)
    e0 = gp.effective_point(cfg, P, gamma, q=0)
    assert e0["shift"] == 0 and abs(e0["x0"].sum()) <= 1e-8 and e0["residual"] <= 1e-5


def test_the_penalty_gamma_lambda_shift_is_caught(tiny, monkeypatch):
    cfg, P, gp = tiny
    monkeypatch.setattr(gp, "shift_along_ones", _broken_shift)
    assert gp.effective_point(cfg, P, 0.3, q=1)["residual"] > 1e-2


def test_the_masked_dynamics_sit_at_the_effective_point_not_at_penalty_gamma_lambda(tiny):
    """Noise-free AsynRSA-VR (batch = J) at γ = 0.4: the tail mean of x0 is close to
    x_eff, an order closer than to x*(λ), and its shift along 1 is x_eff's; γ = 1 at
    penalty γλ shifts by the other formula (:func:`_broken_shift`), half as much here."""
    cfg, P, gp = tiny
    g = 0.4
    opt = penalised_optimum(cfg, problem=P)
    o = dict(x0=opt.x0, X=opt.X, objective=opt.objective)
    e = gp.effective_point(cfg, P, g, q=1)
    refs = {"eff": (np.stack([e["x0"]] * 2), np.stack([e["X"]] * 2))}
    c = cfg.replace(batch_size=P.J, rounds=12000, eval_every=200)
    masked, penalty_gl = run_batch([c.replace(participation=g), c.replace(penalty=g * cfg.penalty)],
                                   problem=P, observe=gp.observer(cfg, o, refs))
    tail = masked.columns["round"] > 6000
    assert masked.columns["dist2_eff"][tail].mean() < 0.01 * masked.columns["dist2"][tail].mean()
    assert masked.columns["shift"][tail].mean() == pytest.approx(e["shift"], rel=0.05)
    assert penalty_gl.columns["shift"][tail].mean() == pytest.approx(_broken_shift(2.0, 1, g, 1.0, 1.0, 5),
                                                                     rel=0.05)
