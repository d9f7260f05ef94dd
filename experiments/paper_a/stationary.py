"""Paper A's central claim at stationarity: RSA's floor grows with α, AsynRSA-VR's not.

Theorem 1 of paper A: AsynRSA-VR converges linearly, at rate ``1 − γμLα/(μ+L)``, to a
ball ``Δ1`` around the optimum of problem (3) that has no gradient-variance term; RSA's
ball has an ``α·σ²`` term.  This script measures, for RSA, AsynRSA-VR and RSA with full
local gradients (``batch_size = J``: the noise-free reference), the suboptimality of
(3) ``F(x0, x_R) − F*`` and ``‖x0 − x*‖²`` against ``x*`` computed deterministically
(:func:`byzsim.diagnose.penalised_optimum`, certified, cached under ``results/``), run
to stationarity, and fits the stationary floor (time average over the last quarter of
the rounds) against α on log axes.

Instances (each replica of a setting runs on the same data; seeds change the rounds'
random streams):

- ``small``: synthetic softmax (10 features, 3 classes, 25 clients of which the last 5
  Byzantine, 40 samples each), ``model_params.l2 = μ`` in every ``f_i`` and
  ``server_l2 = μ`` (Assumption 1 holds), λ above Lemma 1's threshold;
- ``mnist``: Fig. 2's setting (softmax, unbalanced partition, λ = 0.05, server_l2 =
  0.01, no l2 in the ``f_i``: μ = 0) on a fixed random subset of ``J_MNIST`` samples
  per client (the full-gradient reference and the 40-replica batches of the full data
  do not fit the time budget).

Rounds: from Theorem 1's rate where it has a value (small instance: enough rounds for
the bound's contraction to reach ``e^-6`` at the smallest α and γ), else a fixed budget;
either way the tail is tested for flatness (last quarter's mean against the quarter
before, with 95 % t-intervals over the seeds).

``python experiments/paper_a/stationary.py`` (``make a-stationary``) writes
``results/a_stationary.csv`` (long format), ``results/a_stationary_summary.csv`` (floors,
flatness, Theorem 1's numbers), ``results/a_stationary_fits.csv`` (slopes),
``results/a_stationary_excess.csv`` (RSA's and AsynRSA-VR's ``‖x − x*‖²`` floor above the
noise-free reference's), ``results/a_stationary_log.txt`` (x*'s certificate, μ, L, the
rounds and why, times) and ``figures/a_stationary.png``.  ``--quick`` runs a tiny grid
(seconds); ``--from-csv`` redoes the analysis from the long CSV without running.
``--mnist-flatness 2000,12000,24000 --flatness-csv experiments/results/a_stationary_mnist_flatness.csv``
runs only the MNIST subset at α = 0.001, 0.003 (q = 0, 5; γ = 1) at those budgets and
fits each curve's decay (:func:`mnist_flatness`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from byzsim import theory
from byzsim.config import TheoryWarning, make_config
from byzsim.diagnose import diagnose, penalised_objective, penalised_optimum
from byzsim.simulate import problem_for, run_batch

ALPHAS = (0.001, 0.003, 0.01, 0.03)
GAMMAS = (1.0, 0.4)
QS = (0, 5)
SEEDS = (0, 1, 2, 3, 4)
GAMMA_SWEEP = (0.2, 0.4, 0.6, 0.8, 1.0)
SWEEP_ALPHAS = (0.003, 0.03)
INSTANCES = ("small", "mnist")
SWEEP = "AsynRSA-VR sweep"  # the γ sweep of Remark 3
MU_SMALL = 1.0
J_SMALL = 40
J_MNIST = 100
CONTRACTION = 6.0  # rounds k with (1 − rate)·k ≥ 6: the bound's initial term shrunk by e^-6
MAX_ROUNDS = 40000
MNIST_ROUNDS = 2000
MNIST_TEST = 2000  # test samples of the MNIST instance (a fixed random subset)
N_EVALS = 100
N_EVALS_MNIST = 24
OPT_TOL = {"small": 1e-9, "mnist": None}  # None: penalised_optimum's default (1e-5 relative)

FIELDS = ("instance", "method", "q", "gamma", "alpha", "seed", "round",
          "suboptimality", "dist2", "dist2_stacked", "test_accuracy")
#: measured quantities: F − F* of (3); ‖x0 − x0*‖²; ‖x − x*‖² of the stacked
#: ``x = [x0; x_i, i ∈ R]``, what Theorem 1's ``T^k`` (and so ``Δ1``) bounds
QUANTITIES = ("suboptimality", "dist2", "dist2_stacked")


# --------------------------------------------------------------------------------------
# instances
# --------------------------------------------------------------------------------------
def _base_small(lam: float):
    return make_config(
        method="asynrsa-vr", dataset="synthetic",
        dataset_params=dict(n_samples=25 * J_SMALL, n_features=10, n_classes=3, n_test=500,
                            separation=2.0, seed=0),
        partition="iid", model="softmax", model_params=dict(bias=True, l2=MU_SMALL),
        n_clients=25, n_byzantine=5, byzantine_indices=[20, 21, 22, 23, 24],
        penalty=lam, p=1.0, server_l2=MU_SMALL, lr=0.001, batch_size=1,
        attack="same_value", attack_params=dict(c=10000.0), dtype="float64",
        rounds=100, eval_every=10,
    )


def _base_mnist():
    return make_config(
        method="asynrsa-vr", dataset="mnist", partition="unbalanced",
        partition_params=dict(concentration=1.0), model="softmax", model_params=dict(bias=True),
        n_clients=25, n_byzantine=5, byzantine_indices=[20, 21, 22, 23, 24],
        penalty=0.05, p=1.0, server_l2=0.01, lr=0.001, batch_size=1,
        attack="same_value", attack_params=dict(c=10000.0), dtype="float32",
        rounds=100, eval_every=10,
    )


def _subset(problem, J: int, n_test: int, seed: int = 0):
    """``problem`` with a fixed random subset of ``J`` samples per client (all clients
    the same columns of their own rows; the evaluation set is the regular clients' kept
    samples) and of ``n_test`` test samples."""
    if problem.ragged:
        raise ValueError("_subset: the clients hold different numbers of samples (ragged); "
                         "a common column subset would read padding")
    rng = np.random.default_rng(seed)
    cols = np.sort(rng.choice(problem.X.shape[1], size=J, replace=False))
    test = np.sort(rng.choice(problem.X_test.shape[0], size=n_test, replace=False))
    X, y = np.ascontiguousarray(problem.X[:, cols]), np.ascontiguousarray(problem.y[:, cols])
    reg = problem.regular
    return dataclasses.replace(problem, X=X, y=y, counts=None, X_eval=X[reg].reshape(-1, X.shape[-1]),
                               y_eval=y[reg].ravel(), X_test=problem.X_test[test],
                               y_test=problem.y_test[test])


def _without_byzantine(problem):
    """The same regular clients and data with the Byzantine clients removed (q = 0)."""
    reg = problem.regular
    return dataclasses.replace(problem, X=problem.X[reg], y=problem.y[reg], counts=problem.counts[reg],
                               byzantine=np.zeros(int(reg.sum()), bool))


def _q0(cfg):
    return cfg.replace(n_clients=cfg.n_clients - cfg.n_byzantine, n_byzantine=0,
                       byzantine_indices=None, attack="none", attack_params={})


def instance(name: str, quick: bool = False):
    """``(base config (q = 5), problem (q = 5), problem (q = 0))`` of an instance."""
    if name == "small":
        lam = 1.0  # replaced below by a value above Lemma 1's threshold
        cfg = _base_small(lam)
        P = problem_for(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TheoryWarning)
            thr = diagnose(cfg).lemma1_threshold
        lam = float(np.ceil(1.25 * thr * 100) / 100)
        cfg = cfg.replace(penalty=lam)
    elif name == "mnist":
        cfg = _base_mnist()
        P = _subset(problem_for(cfg), 20 if quick else J_MNIST, 200 if quick else MNIST_TEST)
    else:
        raise ValueError(f"instance must be 'small' or 'mnist', got {name!r}")
    return cfg, P, _without_byzantine(P)


# --------------------------------------------------------------------------------------
# x* of problem (3), cached
# --------------------------------------------------------------------------------------
def optimum(name: str, cfg, problem, results: Path):
    """``penalised_optimum`` of the instance, cached in ``results/a_stationary_opt_<name>.npz``
    (keyed by λ, server_l2, the model's l2 and the data's shape)."""
    key = json.dumps(dict(lam=cfg.penalty, l2s=cfg.server_l2, l2=float(problem.model.l2),
                          shape=list(problem.X.shape), xsum=float(np.asarray(problem.X, np.float64).sum()),
                          tol=OPT_TOL.get(name)))
    path = results / f"a_stationary_opt_{name}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if str(z["key"]) == key:
            return {k: z[k].item() if z[k].ndim == 0 else z[k] for k in z.files}
    t0 = time.perf_counter()
    opt = penalised_optimum(cfg, problem=problem, tol=OPT_TOL.get(name))
    out = dict(x0=opt.x0, X=opt.X, objective=opt.objective, ratio=opt.ratio, residual=opt.residual,
               tol=opt.tol, method=opt.method, seconds=time.perf_counter() - t0, key=key)
    results.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def observer(cfg, opt, shift: bool = False):
    """``observe`` for :func:`run_batch`: the suboptimality of (3), ``‖x0 − x0*‖²`` and
    the stacked ``‖x − x*‖² = ‖x0 − x0*‖² + Σ_{i∈R} ‖x_i − x_i*‖²``; with ``shift``
    also ``1ᵀx0/d``, the server model's mean coordinate (softmax's loss is flat along 1)."""
    x_star, X_star, F_star = np.asarray(opt["x0"]), np.asarray(opt["X"]), float(opt["objective"])

    def observe(problems, slot, state):
        (P,) = problems  # one data set for all replicas
        x, W, _ = state.as_replicas()
        Xr = W[:, P.regular].astype(np.float64)
        F = penalised_objective(P, x, Xr, cfg.penalty, cfg.p, cfg.server_l2)
        d0 = np.sum((x.astype(np.float64) - x_star) ** 2, axis=1)
        out = {"suboptimality": F - F_star, "dist2": d0,
               "dist2_stacked": d0 + np.sum((Xr - X_star) ** 2, axis=(1, 2))}
        if shift:
            out["shift"] = x.astype(np.float64).mean(axis=1)
        return out

    return observe


# --------------------------------------------------------------------------------------
# theory
# --------------------------------------------------------------------------------------
def theorem1(diag, alpha: float, gamma: float, q: int):
    """Theorem 1's ``(rate, Δ1)`` values (``None`` outside its range) with the data's μ, L."""
    if not diag.mu_a or diag.mu_a <= 0:
        return None, None, False
    rate = theory.asynrsa_rate(diag.mu_a, diag.L_a, alpha, gamma)
    d1 = theory.asynrsa_delta1(diag.mu_a, diag.L_a, alpha, gamma, diag.config.penalty, diag.R, q, diag.d)
    in_range = alpha <= theory.asynrsa_step_bound(diag.mu_a, diag.L_a, diag.J)
    return rate, d1, in_range


def rounds_for(diag, quick: bool) -> tuple[int, str]:
    """Rounds of an instance: Theorem 1's rate at the smallest α and γ, or a budget."""
    if quick:
        return 400, "quick"
    if diag.mu_a and diag.mu_a > 0:
        rate = theory.asynrsa_rate(diag.mu_a, diag.L_a, min(ALPHAS), min(GAMMAS))
        k = int(math.ceil(CONTRACTION / (1 - rate)))
        if k <= MAX_ROUNDS:
            return k, f"Theorem 1's rate {rate:.6g}: (1 − rate)·k = {CONTRACTION:g}"
        return MAX_ROUNDS, f"Theorem 1's rate {rate:.6g} needs {k} rounds; capped at {MAX_ROUNDS}"
    return MNIST_ROUNDS, f"μ = 0 (Theorem 1 has no rate): a fixed budget of {MNIST_ROUNDS} rounds"


# --------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------
METHODS = {"RSA": dict(method="rsa"), "AsynRSA-VR": dict(method="asynrsa-vr"),
           "RSA full gradient": dict(method="rsa", batch_size=None)}


def run_setting(inst, method, q, cfg, problem, opt, alphas, gammas, seeds, rounds, n_evals=None,
                shift=False):
    """One replica batch: every (α, γ, seed) of ``method`` at ``q``; long-format rows
    (with ``shift``: also the server model's mean coordinate, see :func:`observer`)."""
    m = dict(METHODS[method])
    if m.get("batch_size", 1) is None:
        m["batch_size"] = problem.J
    n_evals = n_evals or (N_EVALS if inst == "small" else N_EVALS_MNIST)
    base = (cfg if q else _q0(cfg)).replace(rounds=rounds, eval_every=max(1, rounds // n_evals), **m)
    cfgs = [base.replace(lr=a, participation=g, seed=s) for a in alphas for g in gammas for s in seeds]
    res = run_batch(cfgs, problem=problem, observe=observer(cfg, opt, shift))
    rows = [dict(r, method=method, q=q) for r in _rows(res, cfgs, inst, QUANTITIES + (("shift",) if shift else ()))]
    return rows, sum(r.seconds for r in res)


# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------
def t_interval(v: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (0 for one value)."""
    v = np.asarray(v, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def _quarters(rounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the last quarter of the rounds and of the quarter before it."""
    T = rounds.max()
    last = rounds > 0.75 * T
    return last, (rounds > 0.5 * T) & ~last


def tail_means(rounds: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Time averages of ``values`` over the last quarter of the rounds and over the
    quarter before it."""
    last, prev = _quarters(rounds)
    return float(values[last].mean()), float(values[prev].mean())


def summarise(rows: list[dict], quantities: tuple[str, ...] = QUANTITIES) -> list[dict]:
    """Per setting and quantity (``quantities``, the first one the suboptimality): the floor (time average over the
    last quarter of the rounds, mean over seeds) with its 95 % t half-width over the
    seeds, the same over the quarter before, and the flatness verdict on the
    suboptimality: the change between the two quarters is within their combined
    half-widths (over seeds, or over the evaluations of all seeds in each quarter, which
    also covers deterministic runs that oscillate), or below 5 % of the floor."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["instance"], r["method"], r["q"], r["gamma"], r["alpha"]), {}) \
            .setdefault(r["seed"], []).append([r["round"]] + [r[k] for k in quantities])
    out = []
    for (inst, meth, q, g, a), by_seed in groups.items():
        row = dict(instance=inst, method=meth, q=q, gamma=g, alpha=a, seeds=len(by_seed))
        for j, k in enumerate(quantities, 1):
            tails = np.array([tail_means(np.array(p)[:, 0], np.array(p)[:, j]) for p in by_seed.values()])
            ml, hl = t_interval(tails[:, 0])
            mp, hp = t_interval(tails[:, 1])
            pre = "floor" if k == "suboptimality" else k
            row.update({pre: ml, f"{pre}_ci": hl, f"{pre}_prev_quarter": mp, f"{pre}_prev_quarter_ci": hp})
            if k == "suboptimality":
                change = ml - mp
                pts = [np.array(p) for p in by_seed.values()]
                q_last = np.concatenate([p[_quarters(p[:, 0])[0], j] for p in pts])
                q_prev = np.concatenate([p[_quarters(p[:, 0])[1], j] for p in pts])
                tol = max(hl + hp, t_interval(q_last)[1] + t_interval(q_prev)[1], 0.05 * abs(ml))
                row["rel_change"] = change / abs(ml) if ml else float("nan")
                row["flat"] = bool(abs(change) <= tol)
        out.append(row)
    return out


def decay_fit(rounds: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of ``F(k) = F∞ + A·e^{−k/τ}`` to a curve from its first quarter
    on (the start is not exponential); ``(F∞, A, τ)``, NaN when the fit fails."""
    from scipy.optimize import curve_fit

    k, v = np.asarray(rounds, np.float64), np.asarray(values, np.float64)
    keep = k >= 0.25 * k.max()
    k, v = k[keep], v[keep]
    try:
        p, _ = curve_fit(lambda k, f, a, t: f + a * np.exp(-k / t), k, v,
                         p0=(v[-1], v[0] - v[-1], k.max() / 4), bounds=([-np.inf, -np.inf, 1.0], np.inf),
                         maxfev=20000)
    except (RuntimeError, ValueError):
        return float("nan"), float("nan"), float("nan")
    return float(p[0]), float(p[1]), float(p[2])


def rounds_to_flat(f_inf: float, A: float, tau: float, tol: float = 0.05) -> float:
    """The smallest total ``T`` (on a grid 1.05× apart from 100 to 10⁸) from which on
    the fitted curve's last quarter mean differs from the quarter before by less than
    ``tol`` of it (the relative part of :func:`summarise`'s flatness test; a slow decay
    also passes it at T ≪ τ, where a short run barely moves, hence "from which on");
    NaN when it fails at 10⁸ rounds or without a fit."""
    if not np.isfinite([f_inf, A, tau]).all():
        return float("nan")
    T = np.geomspace(100, 1e8, 284)

    def mean(a, b):  # time average of the fitted curve over [a, b]
        return f_inf + A * tau * (np.exp(-a / tau) - np.exp(-b / tau)) / (b - a)

    last, prev = mean(0.75 * T, T), mean(0.5 * T, 0.75 * T)
    bad = np.flatnonzero(np.abs(last - prev) > tol * np.abs(last))
    if bad.size == 0:
        return float(T[0])
    return float(T[bad[-1] + 1]) if bad[-1] + 1 < T.size else float("nan")


def slope_fit(alphas, floors) -> tuple[float, float, float]:
    """Least-squares slope of ``log floor`` on ``log α`` with its 95 % t half-width and
    the intercept (NaN when a floor is not positive)."""
    a, f = np.log(np.asarray(alphas)), np.asarray(floors, dtype=np.float64)
    if (f <= 0).any() or len(a) < 3:
        return float("nan"), float("nan"), float("nan")
    res = stats.linregress(a, np.log(f))
    return float(res.slope), float(stats.t.ppf(0.975, len(a) - 2) * res.stderr), float(res.intercept)


def fits(summary: list[dict]) -> list[dict]:
    groups: dict = {}
    for s in summary:
        groups.setdefault((s["instance"], s["method"], s["q"], s["gamma"]), []).append(s)
    out = []
    for (inst, meth, q, g), ss in groups.items():
        ss = sorted(ss, key=lambda s: s["alpha"])
        if len(ss) < 3:
            continue
        for k in ("floor", "dist2_stacked"):
            sl, hw, _ = slope_fit([s["alpha"] for s in ss], [s[k] for s in ss])
            out.append(dict(instance=inst, method=meth, q=q, gamma=g, quantity=k, slope=sl,
                            slope_ci=hw, n_alpha=len(ss), all_flat=all(s["flat"] for s in ss)))
    return out


def excess(summary: list[dict]) -> list[dict]:
    """The stationary ``‖x − x*‖²`` of RSA and AsynRSA-VR minus that of full-gradient RSA
    (the gradient noise's own share of the floor, which Theorem 1 says AsynRSA-VR removes),
    per α with a 95 % half-width (the two half-widths combined in quadrature), and the
    log-log slope against α where every excess is positive."""
    ref = {(s["instance"], s["q"], s["gamma"], s["alpha"]): s for s in summary
           if s["method"] == "RSA full gradient"}
    out = []
    groups: dict = {}
    for s in summary:
        k = (s["instance"], s["q"], s["gamma"], s["alpha"])
        if s["method"] in ("RSA", "AsynRSA-VR") and k in ref:
            r = ref[k]
            groups.setdefault(k[:3] + (s["method"],), []).append(dict(
                instance=k[0], method=s["method"], q=k[1], gamma=k[2], alpha=k[3],
                excess=s["dist2_stacked"] - r["dist2_stacked"],
                excess_ci=float(np.hypot(s["dist2_stacked_ci"], r["dist2_stacked_ci"]))))
    for g in groups.values():
        g.sort(key=lambda e: e["alpha"])
        sl, hw, _ = slope_fit([e["alpha"] for e in g], [e["excess"] for e in g])
        for e in g:
            e.update(slope=sl, slope_ci=hw)
        out += g
    return out


# --------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------
COLOURS = {"RSA": "tab:blue", "AsynRSA-VR": "tab:red", "RSA full gradient": "tab:gray"}


def _band(ax, x, m, h, colour, label, style="o-"):
    m, h = np.asarray(m), np.asarray(h)
    ax.plot(x, m, style, color=colour, label=label)
    ax.fill_between(x, np.maximum(m - h, m * 1e-3), m + h, color=colour, alpha=0.2)


def save_figure(fig, path: Path) -> None:
    """Lay out, write (creating the directory) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(summary, theory_rows, sweep, path: Path, instances):
    """Top row: the stationary F − F* of (3) against α (× marks a setting whose tail is
    not flat); bottom row: the stacked ``‖x − x*‖²`` with Theorem 1's Δ1; last column:
    the γ sweep (Remark 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(i, q, g) for i in instances for q in QS for g in GAMMAS
              if any(s["instance"] == i and s["q"] == q and s["gamma"] == g for s in summary)]
    ncols = len(panels) + (1 if sweep else 0)
    fig, axes = plt.subplots(2, ncols, figsize=(3.6 * ncols, 6.4), squeeze=False)
    for c, (i, q, g) in enumerate(panels):
        top, bot = axes[0, c], axes[1, c]
        for meth, col in COLOURS.items():
            ss = sorted((s for s in summary if (s["instance"], s["q"], s["gamma"], s["method"]) == (i, q, g, meth)),
                        key=lambda s: s["alpha"])
            if not ss:
                continue
            a = [s["alpha"] for s in ss]
            _band(top, a, [s["floor"] for s in ss], [s["floor_ci"] for s in ss], col, meth)
            _band(bot, a, [s["dist2_stacked"] for s in ss], [s["dist2_stacked_ci"] for s in ss], col, meth)
            for s in ss:
                if not s["flat"]:
                    top.plot(s["alpha"], s["floor"], "x", color="k", ms=9)
        tr = sorted((t for t in theory_rows if (t["instance"], t["q"], t["gamma"]) == (i, q, g)
                     and t["delta1"] is not None), key=lambda t: t["alpha"])
        if tr:
            bot.plot([t["alpha"] for t in tr], [t["delta1"] for t in tr], "k--", lw=1,
                     label="Δ1, eq. (12) (α outside eq. (44))")
        top.set_title(f"{i}, q = {q}, γ = {g:g}", fontsize=9)
        for ax in (top, bot):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("step α")
            ax.grid(True, which="both", alpha=0.3)
        top.set_ylabel("stationary F − F* of (3)")
        bot.set_ylabel("stationary ‖x − x*‖² (x0 and the x_i)")
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=6)
    if sweep:
        top, bot = axes[0, -1], axes[1, -1]
        for a in sorted({s["alpha"] for s in sweep}):
            ss = sorted((s for s in sweep if s["alpha"] == a), key=lambda s: s["gamma"])
            gs = [s["gamma"] for s in ss]
            col = "tab:red" if a == max(s["alpha"] for s in sweep) else "tab:orange"
            _band(top, gs, [s["floor"] for s in ss], [s["floor_ci"] for s in ss], col, f"α = {a:g}")
            _band(bot, gs, [s["dist2_stacked"] for s in ss], [s["dist2_stacked_ci"] for s in ss], col,
                  f"measured, α = {a:g}")
            d1 = [s["delta1"] for s in ss]
            if all(v is not None for v in d1):
                bot.plot(gs, d1, "--", color=col, lw=1, label=f"Δ1(γ), α = {a:g}")
        top.set_title("Remark 3: AsynRSA-VR, small, q = 5", fontsize=9)
        for ax in (top, bot):
            ax.set_yscale("log")
            ax.set_xlabel("participation γ")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle("Paper A at stationarity: tail means over the last quarter of the rounds, 95 % t-bands "
                 "over seeds (× = tail not flat)", fontsize=10)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict], fields=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = fields or list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _rows(res, cfgs, inst: str, quantities: tuple[str, ...] = QUANTITIES) -> list[dict]:
    """Long-format rows of a batch's results (the observed ``quantities``)."""
    rows = []
    for c, r in zip(cfgs, res):
        cols = r.columns
        for k in range(len(cols["round"])):
            rows.append(dict(instance=inst, method=None, q=None, gamma=c.participation, alpha=c.lr,
                             seed=c.seed, round=int(cols["round"][k]),
                             **{q: float(cols[q][k]) for q in quantities},
                             test_accuracy=float(cols["test_accuracy"][k])))
    return rows


def study(inst: str, quick: bool, results: Path, mnist_grid: str) -> dict:
    """Every run of one instance: ``{"rows": long-format rows, "log": lines}``."""
    t_start = time.perf_counter()
    alphas = ALPHAS[::3] if quick else ALPHAS
    seeds = SEEDS[:2] if quick else SEEDS
    rows, log = [], []
    cfg, P5, P0 = instance(inst, quick)
    diag = diagnosis(inst, quick)
    opt = optimum(inst, cfg, P5, results)
    log.append(f"{inst}: λ = {cfg.penalty:g}, x* by {opt['method']} (tol {opt['tol']:.3g}, "
               f"residual {opt['residual']:.3g}, Lemma 1 threshold/λ {opt['ratio']:.4g}, "
               f"F* = {opt['objective']:.10g}, {opt['seconds']:.1f} s)")
    if diag is not None:
        log.append(f"{inst}: μ = {diag.mu_a:g}, L = {diag.L_a:.4g} (per-sample bound ½‖x‖²+l2), "
                   f"J = {diag.J}, d = {diag.d}, r = {diag.R}, σ² = {diag.sigma2:.4g}, "
                   f"Theorem 1 step bound eq. (44) = {theory.asynrsa_step_bound(diag.mu_a, diag.L_a, diag.J):.3g}")
    rounds, why = rounds_for(diag if diag is not None else _NoTheory, quick)
    log.append(f"{inst}: {rounds} rounds ({why})")
    full_grid = inst == "small" or mnist_grid == "full"
    qs, gammas = (QS, GAMMAS) if full_grid else ((5,), (1.0,))
    for q in qs:
        for meth in METHODS:
            # full local gradients with γ = 1: no randomness at all (zero start), one seed
            sds = seeds[:1] if (meth == "RSA full gradient" and gammas == (1.0,)) else seeds
            t0 = time.perf_counter()
            r, _ = run_setting(inst, meth, q, cfg, P5 if q else P0, opt, alphas, gammas, sds, rounds)
            rows += r
            log.append(f"{inst} {meth} q={q}: {time.perf_counter() - t0:.1f} s")
            print(log[-1], flush=True)
    if inst == "small":
        t0 = time.perf_counter()
        m = cfg.replace(rounds=rounds, eval_every=max(1, rounds // N_EVALS), method="asynrsa-vr")
        cfgs = [m.replace(lr=a, participation=g, seed=s)
                for a in SWEEP_ALPHAS for g in GAMMA_SWEEP for s in seeds]
        res = run_batch(cfgs, problem=P5, observe=observer(cfg, opt))
        rows += [dict(r, method=SWEEP, q=5) for r in _rows(res, cfgs, inst)]
        log.append(f"{inst} γ sweep: {time.perf_counter() - t0:.1f} s")
        print(log[-1], flush=True)
    log.append(f"{inst}: {time.perf_counter() - t_start:.1f} s")
    return dict(rows=rows, log=log)


def diagnosis(inst: str, quick: bool = False):
    """:func:`byzsim.diagnose.diagnose` of the instance's config (μ, L, J, d, r for
    Theorem 1); ``None`` for MNIST (μ = 0: Theorem 1 has no value)."""
    if inst != "small":
        return None
    cfg, _, _ = instance(inst, quick)
    with warnings.catch_warnings():  # Theorem 1's step condition fails: reported in the log
        warnings.simplefilter("ignore", TheoryWarning)
        return diagnose(cfg)


def analyse(rows: list[dict], quick: bool, results: Path, figures: Path, log: list[str]) -> list[dict]:
    """Summary (floors, flatness, Theorem 1's rate and Δ1 per setting), fits and the
    figure, from the long-format rows; returns the fits."""
    diags = {i: diagnosis(i, quick) for i in dict.fromkeys(r["instance"] for r in rows)}
    summary = summarise([r for r in rows if r["method"] != SWEEP])
    sweep = summarise([r for r in rows if r["method"] == SWEEP])
    for s in summary + sweep:
        d = diags[s["instance"]]
        rate, d1, ok = theorem1(d, s["alpha"], s["gamma"], s["q"]) if d is not None else (None, None, False)
        s.update(rate=rate, delta1=d1, theorem1_in_range=ok)
    sfx = "_quick" if quick else ""
    write_csv(results / f"a_stationary_summary{sfx}.csv", summary + sweep)
    fr = fits(summary + sweep)
    if fr:
        write_csv(results / f"a_stationary_fits{sfx}.csv", fr)
    ex = excess(summary)
    if ex:
        write_csv(results / f"a_stationary_excess{sfx}.csv", ex)
    figure(summary, summary, sweep, figures / f"a_stationary{sfx}.png", list(diags))
    for e in ex:
        if e["alpha"] == max(x["alpha"] for x in ex):
            log.append(f"excess ‖x − x*‖² over full-gradient RSA, {e['instance']} {e['method']} q={e['q']} "
                       f"γ={e['gamma']:g}: {e['excess']:.4g} ± {e['excess_ci']:.2g} at α = {e['alpha']:g}; "
                       f"slope on α {e['slope']:.3f} ± {e['slope_ci']:.3f}")
    for f in fr:
        log.append(f"slope of log {f['quantity']} on log α, {f['instance']} {f['method']} q={f['q']} "
                   f"γ={f['gamma']:g}: {f['slope']:.3f} ± {f['slope_ci']:.3f} (all tails flat: {f['all_flat']})")
    return fr


def read_rows(path: Path, quantities: tuple[str, ...] = QUANTITIES) -> list[dict]:
    """The long-format CSV back as rows (numbers parsed)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("q", "seed", "round"):
            r[k] = int(r[k])
        for k in ("gamma", "alpha", "test_accuracy") + quantities:
            r[k] = float(r[k])
    return rows


FLATNESS_ALPHAS = (0.001, 0.003)
N_EVALS_FLATNESS = 40


def mnist_flatness(budgets, results: Path, out: Path, quick: bool = False) -> list[dict]:
    """Are the MNIST-subset runs at the small steps flat with more rounds?  For each
    budget (total rounds), q ∈ {0, 5}, γ = 1, α ∈ :data:`FLATNESS_ALPHAS`, the three
    methods (5 seeds; full-gradient RSA one, as it has no randomness at γ = 1) as replica
    batches: :func:`summarise`'s floors and flatness, and per setting the fit of the
    seed-mean F − F* curve (:func:`decay_fit`) with the rounds it needs to be flat by 5 %
    (:func:`rounds_to_flat`), and the drift of the server model's mean coordinate per
    round over the second half against ``αλq/(R + 1)``: at consensus the penalty terms
    cancel in the sum of the R + 1 models' updates, the same-value attack adds ``αλq``
    per coordinate, and along 1 the MNIST ``f_i`` (no l2) are flat, so only
    ``server_l2 · x0`` (small while the shift is) holds the models back.  Writes the long
    rows to ``results/`` and the summary to ``out``."""
    cfg, P5, P0 = instance("mnist", quick)
    opt = optimum("mnist", cfg, P5, results)
    seeds = SEEDS[:2] if quick else SEEDS
    summary = []
    for T in budgets:
        rows, t0 = [], time.perf_counter()
        for q in QS:
            for meth in METHODS:
                sds = seeds[:1] if meth == "RSA full gradient" else seeds
                rows += run_setting("mnist", meth, q, cfg, P5 if q else P0, opt, FLATNESS_ALPHAS, (1.0,),
                                    sds, T, N_EVALS_FLATNESS, shift=True)[0]
        secs = time.perf_counter() - t0
        write_csv(results / f"a_stationary_mnist_flatness_{T}.csv", rows, FIELDS + ("shift",))
        for s in summarise(rows):
            pts = [r for r in rows if (r["method"], r["q"], r["alpha"]) == (s["method"], s["q"], s["alpha"])]
            k = np.array(sorted({r["round"] for r in pts}))
            mean = np.array([np.mean([r["suboptimality"] for r in pts if r["round"] == kk]) for kk in k])
            shift = np.array([np.mean([r["shift"] for r in pts if r["round"] == kk]) for kk in k])
            f_inf, A, tau = decay_fit(k, mean)
            half = k >= k.max() / 2
            summary.append(dict(rounds=T, **{c: s[c] for c in ("method", "q", "gamma", "alpha", "seeds", "floor",
                                                               "floor_ci", "rel_change", "flat")},
                                f_inf=f_inf, tau=tau, rounds_to_flat=rounds_to_flat(f_inf, A, tau),
                                shift=shift[-1], drift=float(np.polyfit(k[half], shift[half], 1)[0]),
                                pred_drift=s["alpha"] * cfg.penalty * s["q"] / (int(P5.regular.sum()) + 1),
                                seconds=secs))
        print(f"mnist flatness, {T} rounds: {secs:.1f} s", flush=True)
    write_csv(out, summary)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", default="small,mnist")
    ap.add_argument("--quick", action="store_true", help="a tiny grid (seconds)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--figures", default="figures")
    ap.add_argument("--jobs", type=int, default=2, help="instances run in parallel processes")
    ap.add_argument("--from-csv", action="store_true",
                    help="no runs: summary, fits and figure from the existing results/a_stationary.csv")
    ap.add_argument("--mnist-grid", default="reduced", choices=("reduced", "full"),
                    help="reduced: q = 5, γ = 1 only on MNIST")
    ap.add_argument("--mnist-flatness", default=None, metavar="ROUNDS,...",
                    help="only the MNIST flatness check at these total rounds (q = 0, 5; γ = 1; "
                         "α = 0.001, 0.003), summary to --flatness-csv")
    ap.add_argument("--flatness-csv", default="results/a_stationary_mnist_flatness.csv")
    args = ap.parse_args(argv)
    results, figures = Path(args.results), Path(args.figures)
    if args.mnist_flatness:
        budgets = [int(x) for x in args.mnist_flatness.split(",") if x]
        if not budgets or min(budgets) < 8:
            raise ValueError(f"--mnist-flatness: rounds must be integers ≥ 8, got {args.mnist_flatness!r}")
        mnist_flatness(budgets, results, Path(args.flatness_csv), args.quick)
        return 0
    instances = [s for s in args.instances.split(",") if s]
    for i in instances:
        if i not in INSTANCES:
            raise ValueError(f"--instances: unknown instance {i!r}; choose from {', '.join(INSTANCES)}")
    t_start = time.perf_counter()
    sfx = "_quick" if args.quick else ""
    if args.from_csv:
        rows, log = read_rows(results / f"a_stationary{sfx}.csv"), []
    else:
        jobs = [(i, args.quick, results, args.mnist_grid) for i in instances]
        if args.jobs > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(args.jobs, len(jobs))) as ex:
                outs = list(ex.map(study, *zip(*jobs)))
        else:
            outs = [study(*j) for j in jobs]
        rows = [r for o in outs for r in o["rows"]]
        log = [x for o in outs for x in o["log"]]
        write_csv(results / f"a_stationary{sfx}.csv", rows, FIELDS)
        log.append(f"runs: wall time {time.perf_counter() - t_start:.1f} s ({args.jobs} processes)")
    analyse(rows, args.quick, results, figures, log)
    if not args.from_csv:
        (results / f"a_stationary_log{sfx}.txt").write_text("\n".join(log) + "\n")
    print("\n".join(log))
    return 0


class _NoTheory:
    mu_a = None


if __name__ == "__main__":
    sys.exit(main())
