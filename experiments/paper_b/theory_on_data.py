"""Paper B's theory on the data: σ², δ², x* and every method's Table I bound, per setting.

For every setting of the paper-B figure specs (``fig4_6.toml`` … ``fig11.toml``) this
measures, with :func:`byzsim.diagnose.diagnose` (no simulation), the optimum ``x*`` of
the regular workers' problem, its test accuracy, the inner variation ``σ²`` (per sample,
and ``σ_b²`` of the runs' minibatch) and the outer variation ``δ²`` at ``x*``, and
evaluates the learning error ``Δ2`` of every line's method (paper B, Theorem 1 for
Byrd-SAGA / RS-Byrd-SAGA, Theorem 3 for Byrd-SGD / RS-Byrd-SGD; SGD, Krum and RSA have no
bound in paper B).  The MLP settings (Figs. 10-11) have no computable optimum (the
model is non-convex): they are listed and skipped.

The paper-B configs have no l2 term, so their softmax minimiser need not exist (the
non-i.i.d. settings drop whole classes, whose logits then run to −∞).  ``--ridge``
(default 0.001) adds ``ridge/2 ‖x‖²`` for the diagnostic: ``x*`` and ``μ = ridge`` are
those of the ridge problem, and the bounds are reported as the formula's value with the
conditions of its theorem (the runs' step 0.5 is far above every step condition, so none
is a guarantee; the CSV's ``holds`` column says so).

Drawing the bounds against a run's ``‖x − x*‖²`` needs the run's final server model:
:func:`byzsim.diagnose.bound_at_end` takes it and the diagnosis.

``x*`` (the L-BFGS solve, the expensive part) is computed once per distinct regular data
set (:func:`byzsim.diagnose.optimum_key`) and shared by every seed, panel and spec with
the same regular rows; the rest of the diagnosis is per data spec.  The CSV's
``setting`` numbers the distinct regular data sets.  On the paper-B specs every seed is
its own data set (the by-class split deals each class's rows to its three workers anew
per seed, truncated or not), so x* is shared between specs and panels with the same data
(Fig. 7 = Fig. 8 B = 6 = Fig. 9), not between seeds.

Writes ``<results>/<out>.csv`` and ``<figures>/<out>.png``; ``--out`` defaults to
``b_theory_on_data`` (the specs above), and ``--specs fig7_full fig8_full fig9_full --out
b_theory_on_data_full`` gives the untruncated split's ceilings.
Usage: ``python experiments/paper_b/theory_on_data.py [--specs NAME…] [--out NAME]
[--ridge R] [--results DIR] [--figures DIR]``.
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from byzsim.config import TheoryWarning
from byzsim.diagnose import CONVEX_MODELS, Diagnoses, config_bound
from byzsim.runs.spec import load_spec, spec_entries
from byzsim.runs.tables import write_csv

HERE = Path(__file__).parent
SPECS = ("fig4_6", "fig7", "fig8", "fig9", "fig10", "fig11")
OUT = "b_theory_on_data"
FIELDS = ("spec", "panel", "line", "method", "s", "B", "W", "ridge", "setting", "test_accuracy",
          "train_loss", "grad_norm", "tol", "sigma2", "sigma2_batch", "delta2", "mu", "L_bound", "L_local",
          "bound_name", "bound", "bound_formula", "holds", "outside", "note")


def rows_for_spec(name: str, ridge: float, cache: Diagnoses) -> list[dict]:
    path = HERE / f"{name}.toml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)  # fig9's s = 3, 4: reported per row
        spec = load_spec(path, reference=False)  # the reference line may read this script's CSV
        entries = list({e.key: e for e in spec_entries(spec)}.values())
    rows = []
    for e in entries:
        c = e.config
        base = dict(spec=name, panel=e.panel or "", line=e.line or "", method=c.method, s=c.resample,
                    B=c.n_byzantine, W=c.n_clients, ridge=ridge)
        if c.model not in CONVEX_MODELS:
            rows.append({**base, "note": f"model {c.model!r} is non-convex: no optimum, skipped"})
            continue
        if c.family != "gradient":
            rows.append({**base, "note": "penalty family (RSA): no bound in paper B"})
            continue
        setting, d = cache(c, f"{name} {e.panel} seed {c.seed}")
        b = config_bound(c, d)
        m = dict(setting=setting, test_accuracy=d.test_accuracy, train_loss=d.train_loss, grad_norm=d.optimum.grad_norm,
                 tol=d.optimum.tol, sigma2=d.sigma2, sigma2_batch=d.sigma2_batch, delta2=d.delta2,
                 mu=d.mu, L_bound=d.L_bound, L_local=d.L_local)
        if b is None:
            rows.append({**base, **m, "note": "no bound in paper B for this aggregation"})
        else:
            rows.append({**base, **m, "bound_name": b.name, "bound": b.value, "bound_formula": b.formula,
                         "holds": b.holds, "outside": "; ".join(b.failed()), "note": b.source})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Left: σ_b² and δ² per distinct data setting; right: every method's Δ2 formula value
    per setting (log scale; "none" where the formula is undefined, s·α ≥ 1/2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("setting") is not None]
    settings = sorted({r["setting"] for r in ok})
    label = {k: " = ".join(dict.fromkeys(f"{r['spec']}{' ' + r['panel'] if r['panel'] else ''}"
                                         for r in ok if r["setting"] == k)) for k in settings}
    first = {k: next(r for r in ok if r["setting"] == k) for k in settings}
    names = list(dict.fromkeys(r["bound_name"] for r in ok if r.get("bound_name")))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 6))
    xs = np.arange(len(settings))
    a1.bar(xs - 0.2, [first[k]["sigma2_batch"] for k in settings], 0.4, label="σ_b² (batch 32)")
    a1.bar(xs + 0.2, [first[k]["delta2"] for k in settings], 0.4, label="δ²")
    for x, k in zip(xs, settings):
        a1.text(x, first[k]["delta2"] * 1.3, f"acc {first[k]['test_accuracy']:.3f}", ha="center", fontsize=7)
    a1.set_xticks(xs, [label[k] for k in settings], rotation=30, ha="right", fontsize=7)
    a1.set_yscale("log")
    a1.set_ylim(top=10 * max(first[k]["delta2"] for k in settings))
    a1.set_title(f"variations at x* (ridge {first[settings[0]]['ridge']:g}); x*'s test accuracy",
                 fontsize=10)
    a1.legend(fontsize=8)
    width = 0.85 / max(1, len(names))
    for j, n in enumerate(names):
        vals = []
        for k in settings:
            r = next((r for r in ok if r["setting"] == k and r.get("bound_name") == n), None)
            v = np.nan if r is None or r.get("bound_formula") is None else r["bound_formula"]
            vals.append(v)
            if r is not None and r.get("bound_formula") is None:
                a2.text(xs[settings.index(k)] + (j - (len(names) - 1) / 2) * width, 0.02, "none",
                        rotation=90, ha="center", va="bottom", fontsize=6,
                        transform=a2.get_xaxis_transform())
        a2.bar(xs + (j - (len(names) - 1) / 2) * width, vals, width, label=n)
    a2.set_xticks(xs, [label[k] for k in settings], rotation=30, ha="right", fontsize=7)
    a2.set_yscale("log")
    a2.set_title("Δ2 formula values, paper B Thms 1 and 3 (the runs' step 0.5 meets no step condition)",
                 fontsize=9)
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.subplots_adjust(left=0.05, right=0.86, bottom=0.22, top=0.92, wspace=0.18)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--specs", nargs="*", default=list(SPECS),
                    help=f"spec names in experiments/paper_b/ (default: {' '.join(SPECS)})")
    ap.add_argument("--out", default=OUT, help=f"output name: <results>/OUT.csv, <figures>/OUT.png (default {OUT})")
    ap.add_argument("--results", default="results")
    ap.add_argument("--figures", default="figures")
    a = ap.parse_args(argv)
    rows, cache = [], Diagnoses(a.ridge)
    for name in a.specs:
        rows += rows_for_spec(name, a.ridge, cache)
    out = write_csv(Path(a.results) / f"{a.out}.csv", rows, FIELDS, floats=".6g")  # atomic
    fig = Path(a.figures) / f"{a.out}.png"
    plot(rows, fig)
    print(f"wrote {out} and {fig} ({len(cache.optima)} distinct regular data sets)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
