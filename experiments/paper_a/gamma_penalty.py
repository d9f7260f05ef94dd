"""Why AsynRSA-VR's stationary error rises with the participation γ (Remark 3 fails).

With participation γ the server update of AsynRSA-VR is
``x0 ← x0 − α(∇f0(x0) + λ Σ_{i∈R, active} ∂‖x0 − x_i‖₁ + λ Σ_{v∈B, active} ∂‖x0 − z_v‖₁)``:
``f0`` acts every round, each penalty term (honest and Byzantine) only in a fraction γ of
them; a client moves only when it takes part, with its full ``λ``.  The expected drift of
a round is therefore that of the *unmasked* method (γ = 1) run on problem (3) with
``f0/γ`` in place of ``f0`` (``server_l2/γ``) at the same ``λ``, with step ``γα``
(the "mean-field twin"): server ``γα(∇f0/γ + λΣ…) = α(∇f0 + γλΣ…)``, clients
``γα(∇f_i + λ∂…)``.  It is *not* the problem with penalty ``γλ`` (that scales the
clients' penalty too).

For softmax regression (the bias included) the cross-entropy is unchanged when the same
vector is added to every class's weights, so it is flat along ``1`` (all-ones): along
that direction only the l2 terms (``server_l2`` in ``f0``, the model's ``l2`` in every
``f_i``) resist, and the same-value attack ``z_v = c·1`` (``c`` large) pushes the server
by ``λ q`` per coordinate.  Summing the stationarity conditions of the effective problem
(the penalty subgradients cancel in pairs) and projecting on ``1`` gives, at consensus,
the shift of every model along ``1``

    m(γ) = λ q / (server_l2/γ + R · l2),

and the effective optimum ``x_eff = x*(server_l2/γ) + m(γ)·1`` (the first term from
:func:`byzsim.diagnose.penalised_optimum`, orthogonal to ``1``).  A smaller γ makes
``f0`` relatively stronger, which holds x0 (and, through the penalty, the clients) back
against the attack: the floor falls with γ.

This script runs, on the small strongly convex instance of ``stationary.py`` and for
γ ∈ :data:`GAMMAS`, q ∈ {0, 5}, α ∈ :data:`ALPHAS`, 5 seeds, three variants
(:data:`VARIANTS`) as one replica batch per q, and measures the tail means of
``F − F*`` (problem (3) at λ), ``‖x − x*(λ)‖²``, ``‖x − x*(γλ)‖²``,
``‖x − x_eff‖²`` (x0 alone and stacked with the regular clients'), and the measured
shift along ``1`` against ``m(γ)``.

``python experiments/paper_a/gamma_penalty.py`` (``make a-gamma-penalty``) writes
``<results>/a_gamma_penalty.csv`` (summary rows), ``results/a_gamma_penalty_runs.csv``
(long format, for ``--from-csv``) and ``<figures>/a_gamma_penalty.png``; ``--quick``:
a tiny grid (seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stationary as st  # noqa: E402  (the stationarity study's instances, observer and analysis)

from byzsim.config import TheoryWarning  # noqa: E402
from byzsim.diagnose import penalised_optimum  # noqa: E402
from byzsim.simulate import run_batch  # noqa: E402

GAMMAS = (0.2, 0.4, 0.6, 0.8, 1.0)
ALPHAS = (0.003, 0.03)
QS = (0, 5)
OPT_TOL = st.OPT_TOL["small"]  # consensus optima (Lemma 1's case)
GL_TOL = 1e-6  # x*(γλ) below Lemma 1's threshold: L-BFGS-B on the split problem stalls near 5e-8

#: the variants at nominal participation γ: ``(config at γ = 1 with step α) -> config``
VARIANTS = {
    "AsynRSA-VR (γ, λ)": lambda c, g: c.replace(participation=g),
    "γ = 1, penalty γλ": lambda c, g: c.replace(penalty=g * c.penalty),
    "γ = 1, f0/γ, step γα": lambda c, g: c.replace(server_l2=c.server_l2 / g, lr=g * c.lr),
}
#: observed per replica: problem (3)'s suboptimality, distances to x*(λ) (x0 alone, the
#: mean over the regular clients, stacked), to x*(γλ) and to x_eff, and the shift along 1
QUANTITIES = ("suboptimality", "dist2", "dist2_clients", "dist2_stacked", "dist2_gl", "dist2_stacked_gl",
              "dist2_eff", "dist2_stacked_eff", "shift")


# --------------------------------------------------------------------------------------
# the effective problem of the masked dynamics
# --------------------------------------------------------------------------------------
def shift_along_ones(lam: float, q: int, gamma: float, server_l2: float, l2: float, R: int) -> float:
    """``m(γ) = λq / (server_l2/γ + R·l2)``: the shift along ``1`` of the effective
    optimum under the same-value attack (every coordinate of ``z_v`` above the models),
    for a loss flat along ``1`` (softmax), at consensus."""
    return lam * q / (server_l2 / gamma + R * l2)


def effective_point(cfg, problem, gamma: float, q: int) -> dict:
    """The optimum of the masked dynamics' effective problem

        min  f0(x0)/γ − λ q 1ᵀx0 + Σ_{i∈R} f_i(x_i) + λ Σ_{i∈R} ‖x_i − x0‖₁

    (``f0 = server_l2/2 ‖·‖²``; ``−λq1ᵀx0`` is the same-value attack's penalty up to a
    constant) as ``x*(server_l2/γ) + m(γ)·1`` (:func:`shift_along_ones`), with its
    certificate: ``ratio = max_i ‖∇f_i(x)‖_∞ / λ`` (≤ 1: consensus is optimal) and the
    norm of the x0-condition ``(server_l2/γ) x − λq1 + Σ_i ∇f_i(x)`` (0 when the loss is
    flat along 1).  Returns ``dict(x0 (d,), X (R, d), shift, ratio, residual)``."""
    base = penalised_optimum(cfg.replace(server_l2=cfg.server_l2 / gamma), problem=problem, tol=OPT_TOL)
    model, reg = problem.model, problem.regular
    R, d = base.X.shape
    m = shift_along_ones(cfg.penalty, q, gamma, cfg.server_l2, float(model.l2), R)
    x0, X = base.x0 + m, base.X + m
    G = model.grad(X, problem.X[reg].astype(np.float64), problem.y[reg])  # (R, d), the model's l2 included
    res = cfg.server_l2 / gamma * x0 - cfg.penalty * q + G.sum(axis=0)
    return dict(x0=x0, X=X, shift=m, ratio=float(np.abs(G).max() / cfg.penalty),
                residual=float(np.linalg.norm(res)), consensus=base.method == "lemma1")


def observer(cfg, opt, refs: dict):
    """``observe`` for :func:`run_batch`: :func:`stationary.observer`'s quantities, the
    mean over the regular clients of ``‖x_i − x_i*‖²``, the distances to per-replica
    references ``refs = {name: (x0 (S, d), X (S, R, d))}`` (``dist2_<name>``,
    ``dist2_stacked_<name>``) and the shift ``1ᵀx0/d`` of the server model along 1."""
    base = st.observer(cfg, opt, shift=True)
    X_star = np.asarray(opt["X"])

    def observe(problems, slot, state):
        out = base(problems, slot, state)
        (P,) = problems
        x, W, _ = state.as_replicas()
        x, Xr = x.astype(np.float64), W[:, P.regular].astype(np.float64)
        out["dist2_clients"] = np.mean(np.sum((Xr - X_star) ** 2, axis=2), axis=1)
        for name, (r0, rX) in refs.items():
            d0 = np.sum((x - r0) ** 2, axis=1)
            out[f"dist2_{name}"] = d0
            out[f"dist2_stacked_{name}"] = d0 + np.sum((Xr - rX) ** 2, axis=(1, 2))
        return out

    return observe


# --------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------
def references(cfg, problem, gammas, qs) -> tuple[dict, dict]:
    """``x*(γλ)`` per γ (problem (3) at penalty γλ, regular clients) and ``x_eff`` per
    (γ, q) (:func:`effective_point`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        gl = {g: penalised_optimum(cfg.replace(penalty=g * cfg.penalty), problem=problem, tol=GL_TOL)
              for g in gammas}
        eff = {(g, q): effective_point(cfg, problem, g, q) for g in gammas for q in qs}
    return gl, eff


def run_q(q, cfg, problem, opt, gl, eff, alphas, gammas, seeds, rounds) -> list[dict]:
    """One replica batch: every variant, γ, α and seed at ``q``; long-format rows."""
    base = (cfg if q else st._q0(cfg)).replace(method="asynrsa-vr", rounds=rounds,
                                               eval_every=max(1, rounds // st.N_EVALS))
    keys = [(v, g, a, s) for v in VARIANTS for g in gammas for a in alphas for s in seeds]
    cfgs = [VARIANTS[v](base.replace(lr=a, seed=s), g) for v, g, a, s in keys]
    refs = {"gl": (np.stack([gl[g].x0 for _, g, _, _ in keys]), np.stack([gl[g].X for _, g, _, _ in keys])),
            "eff": (np.stack([eff[g, q]["x0"] for _, g, _, _ in keys]),
                    np.stack([eff[g, q]["X"] for _, g, _, _ in keys]))}
    res = run_batch(cfgs, problem=problem, observe=observer(cfg, opt, refs))
    rows = []
    for (v, g, a, _), c, r in zip(keys, cfgs, res):
        rows += [dict(row, method=v, q=q, gamma=g, alpha=a) for row in st._rows([r], [c], "small", QUANTITIES)]
    return rows


def summary(rows: list[dict], cfg, eff: dict) -> list[dict]:
    """:func:`stationary.summarise` (tail means over the last quarter, 95 % t-intervals
    over the seeds, flatness) without the previous quarter's columns, and the effective
    optimum's predictions (its distances to x*(λ), the shift m(γ), its certificate)."""
    out = []
    for s in st.summarise(rows, QUANTITIES):
        s = {k: v for k, v in s.items() if "prev_quarter" not in k}
        e = eff[s["gamma"], s["q"]]
        s.update(lam=cfg.penalty, pred_shift=e["shift"], pred_dist2=e["pred_dist2"],
                 pred_dist2_stacked=e["pred_dist2_stacked"], eff_ratio=e["ratio"], eff_residual=e["residual"])
        out.append(s)
    return out


def _with_distances(eff: dict, opt) -> dict:
    """Each effective point with its distances to ``x*(λ)`` (x0 alone and stacked)."""
    x_star, X_star = np.asarray(opt["x0"]), np.asarray(opt["X"])
    for e in eff.values():
        e["pred_dist2"] = float(np.sum((e["x0"] - x_star) ** 2))
        e["pred_dist2_stacked"] = e["pred_dist2"] + float(np.sum((e["X"] - X_star) ** 2))
    return eff


# --------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------
COLOURS = dict(zip(VARIANTS, ("tab:red", "tab:green", "tab:blue")))


def figure(summ: list[dict], path: Path) -> None:
    """Rows: q; columns: ‖x − x*(λ)‖² (stacked) with x_eff's distance, ‖x − x_eff‖²,
    the shift along 1 with m(γ), F − F*; against the nominal γ, one line per variant and α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = sorted({s["q"] for s in summ})
    alphas = sorted({s["alpha"] for s in summ})
    cols = [("dist2_stacked", "‖x − x*(λ)‖² (x0 and the x_i)"), ("dist2_stacked_eff", "‖x − x_eff‖²"),
            ("shift", "shift of x0 along 1 (1ᵀx0/d)"), ("floor", "F − F* of (3) at λ")]
    fig, axes = plt.subplots(len(qs), len(cols), figsize=(3.6 * len(cols), 3.2 * len(qs)), squeeze=False)
    for r, q in enumerate(qs):
        for c, (k, label) in enumerate(cols):
            ax = axes[r, c]
            for v, colour in COLOURS.items():
                for a, style in zip(alphas, ("o-", "s--")):
                    ss = sorted((s for s in summ if (s["method"], s["q"], s["alpha"]) == (v, q, a)),
                                key=lambda s: s["gamma"])
                    if ss:
                        st._band(ax, [s["gamma"] for s in ss], [s[k] for s in ss],
                                 [s[f"{k}_ci"] for s in ss], colour, f"{v}, α = {a:g}", style)
            ss = sorted((s for s in summ if s["q"] == q and s["alpha"] == alphas[0]
                         and s["method"] == next(iter(VARIANTS))), key=lambda s: s["gamma"])
            pred = {"dist2_stacked": "pred_dist2_stacked", "shift": "pred_shift"}.get(k)
            if pred:
                ax.plot([s["gamma"] for s in ss], [s[pred] for s in ss], "k:", lw=1.5, label="x_eff (prediction)")
            ax.set_title(f"q = {q}: {label}", fontsize=9)
            ax.set_xlabel("participation γ (nominal)")
            if k != "shift":
                ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=5)
    axes[-1, 2].legend(fontsize=5)
    fig.suptitle("AsynRSA-VR at (γ, λ) against γ = 1 at penalty γλ and the mean-field twin (f0/γ, step γα); "
                 "small instance, tail means, 95 % t-bands over seeds", fontsize=9)
    st.save_figure(fig, path)


# --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny grid (seconds)")
    ap.add_argument("--results", default="results", help="where the summary CSV goes")
    ap.add_argument("--figures", default="figures")
    ap.add_argument("--runs", default="results/a_gamma_penalty_runs.csv", help="the long-format CSV")
    ap.add_argument("--cache", default="results", help="where x*(λ) is cached (stationary.optimum)")
    ap.add_argument("--from-csv", action="store_true", help="no runs: the summary and figure from --runs")
    args = ap.parse_args(argv)
    results, figures, runs_csv = Path(args.results), Path(args.figures), Path(args.runs)
    sfx = "_quick" if args.quick else ""
    if args.quick:
        runs_csv = runs_csv.with_name(runs_csv.stem + sfx + runs_csv.suffix)
    gammas, alphas = (GAMMAS[::2], ALPHAS[:1]) if args.quick else (GAMMAS, ALPHAS)
    seeds = st.SEEDS[:2] if args.quick else st.SEEDS
    t0 = time.perf_counter()
    cfg, P5, P0 = st.instance("small", args.quick)
    opt = st.optimum("small", cfg, P5, Path(args.cache))
    gl, eff = references(cfg, P5, gammas, QS)
    eff = _with_distances(eff, opt)
    log = [f"λ = {cfg.penalty:g}, x*(λ) by {opt['method']} (residual {opt['residual']:.3g}); "
           f"references {time.perf_counter() - t0:.1f} s"]
    log += [f"x_eff γ = {g:g}, q = {q}: m = {e['shift']:.5g}, max‖∇f_i‖∞/λ = {e['ratio']:.4f}, "
            f"x0-residual {e['residual']:.2g}, ‖x_eff − x*‖² stacked {e['pred_dist2_stacked']:.4g}"
            for (g, q), e in eff.items()]
    log += [f"x*(γλ) γ = {g:g}: {o.method}, residual {o.residual:.2g}" for g, o in gl.items()]
    if args.from_csv:
        rows = st.read_rows(runs_csv, QUANTITIES)
    else:
        rounds, why = st.rounds_for(st.diagnosis("small", args.quick), args.quick)
        log.append(f"{rounds} rounds ({why})")
        rows = []
        for q in QS:
            t1 = time.perf_counter()
            rows += run_q(q, cfg, P5 if q else P0, opt, gl, eff, alphas, gammas, seeds, rounds)
            log.append(f"q = {q}: {time.perf_counter() - t1:.1f} s")
            print(log[-1], flush=True)
        st.write_csv(runs_csv, rows, list(rows[0]))
    summ = summary(rows, cfg, eff)
    st.write_csv(results / f"a_gamma_penalty{sfx}.csv", summ)
    figure(summ, figures / f"a_gamma_penalty{sfx}.png")
    log.append(f"flat: {sum(s['flat'] for s in summ)}/{len(summ)} settings; total {time.perf_counter() - t0:.1f} s")
    print("\n".join(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
