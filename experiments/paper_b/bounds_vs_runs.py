"""Paper B's Table I bounds against the measured ‖x − x*‖² at the end of each run.

For every softmax paper-B spec (``fig4_6.toml``, ``fig7_full.toml``, ``fig8_full.toml``,
``fig9_full.toml``) this reads the spec's runs from the result store with their final
server models (the runs must have been made with ``--keep-models``), computes ``x*`` of
the regular workers' problem of each (setting, seed) with
:func:`byzsim.diagnose.diagnose`, measures ``‖x_final − x*‖²`` per run and evaluates the
run's own method's learning error ``Δ2`` (paper B, Theorem 1 for Byrd-SAGA /
RS-Byrd-SAGA, Theorem 3 for Byrd-SGD / RS-Byrd-SGD; :func:`byzsim.diagnose.config_bound`,
the same functions as :func:`byzsim.theory.paper_b_bounds`) with that (setting, seed)'s
measured ``σ_b²`` (minibatch of the run), ``δ²``, ``μ`` and ``L``.

* ``x*`` is computed once per regular data set (:func:`byzsim.diagnose.optimum_key`: the
  sha256 of the regular workers' real rows, padding excluded, the l2 terms and the
  ridge), so seeds or panels that give the same regular data share it.
* The paper-B configs have no l2 term, so their softmax minimiser need not exist.
  ``--ridge`` (default 0.001, as ``theory_on_data.py``) adds ``ridge/2 ‖x‖²`` for the
  diagnostic only: ``x*``, ``μ = ridge`` and the bounds are those of the ridge problem,
  while the runs minimise the problem without it.
* Every run is measured against the optimum of paper B's problem
  ``(1/R) Σ_{i∈R} f_i + ridge/2 ‖x‖²`` of its data, RSA included (whose own problem, the
  penalised one, has another optimum); SGD, Krum and RSA have no bound in paper B.
* A bound outside its theorem's range (``s·α ≥ 1/2``, or a step above the theorem's
  step condition) is reported as NaN with the failed conditions, a ``TheoryWarning`` is
  issued once per (figure, panel, method), and nothing is drawn for it; the formula's
  value is still in the CSV (``bound_formula``).
* MLP specs (Figs. 10-11) have no computable optimum (non-convex): they are not read.

Writes ``<results>/b_bounds_vs_runs.csv`` (one row per run) and
``<figures>/b_bounds_vs_runs.png`` (one panel per setting: the measured ``‖x − x*‖²``
per method, mean over seeds with the 95 % t-interval, against the bounds in range, log
scale).

Runs missing from the store or stored without a model: the script writes nothing and
says which (so that ``make reproduction`` does not freeze a CSV made before the runs),
exiting 0; ``--strict`` (what ``experiments/reproduction.toml`` passes) makes that, or a
missing store, exit 1 with every such run named; ``--partial`` writes the CSV anyway,
those rows holding a ``note`` and no measurement.

Usage: ``python experiments/paper_b/bounds_vs_runs.py [--store DIR] [--specs NAME…]
[--ridge R] [--results DIR] [--figures DIR] [--partial | --strict]`` (store:
``$BYZSIM_STORE`` or ``results/store`` by default).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from byzsim.config import TheoryWarning
from byzsim.diagnose import CONVEX_MODELS, Diagnoses, config_bound, distance_to_optimum
from byzsim.runs.spec import load_spec, spec_entries
from byzsim.runs.store import Store, StoreError

HERE = Path(__file__).parent
SPECS = ("fig4_6", "fig7_full", "fig8_full", "fig9_full")
#: paper-B specs not read, and why
SKIPPED = {
    "fig10_full": "MLP: non-convex, no optimum x* to measure against",
    "fig11_full": "MLP: non-convex, no optimum x* to measure against",
}
RIDGE = 1e-3
OUT = "b_bounds_vs_runs"
FIELDS = ("figure", "spec", "panel", "method", "line", "seed", "key", "measured", "bound_name", "bound",
          "reason", "bound_formula", "setting", "sigma2_batch", "delta2", "mu", "L_bound", "ridge",
          "xstar_grad_norm", "diverged", "note")


# --------------------------------------------------------------------------------------
# x* per regular data set
# --------------------------------------------------------------------------------------
def gradient_config(cfg):
    """The config whose diagnosis is paper B's problem on ``cfg``'s data: ``cfg`` itself
    in the gradient family, else the same data under plain SGD (RSA's rows)."""
    if cfg.family == "gradient":
        return cfg
    from byzsim.config import make_config

    # the method's own fields dropped (RSA's penalty and p; family, estimator and
    # aggregator follow from the method): the data fields stay
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in ("method", "family", "estimator", "aggregator", "aggregator_params", "penalty", "p")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_config(**{**d, "method": "sgd"})


# --------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------
def rows_for_spec(spec_path: str | Path, store: Store, diagnoses: Diagnoses) -> list[dict]:
    """One row per run of the spec (see the module docstring and :data:`FIELDS`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)  # fig9's s = 3, 4: reported per row
        spec = load_spec(spec_path, reference=False)  # drawn by the spec's own figure only
    name = Path(spec_path).stem
    rows, warned = [], set()
    for e in spec_entries(spec):
        c = e.config
        base = dict(figure=spec.figure, spec=name, panel=e.panel or "", method=c.method, line=e.line or "",
                    seed=c.seed, key=e.key, ridge=diagnoses.ridge)
        if c.model not in CONVEX_MODELS:
            rows.append({**base, "note": f"model {c.model!r} has no computable optimum: skipped"})
            continue
        run = store.get(e.key)
        model = None if run is None else run.model()
        if model is None:
            rows.append({**base, "note": "not in the store" if run is None else
                         "stored without its final model: rerun the spec with --keep-models"})
            continue
        setting, d = diagnoses(gradient_config(c), f"{spec.figure} {e.panel or ''} seed {c.seed}")
        measured = distance_to_optimum(model, d.optimum.x) if np.isfinite(model).all() else math.nan
        b = config_bound(c, d) if c.family == "gradient" else None
        row = {**base, "measured": measured, "setting": setting, "sigma2_batch": d.sigma2_batch,
               "delta2": d.delta2, "mu": d.mu, "L_bound": d.L_bound, "xstar_grad_norm": d.optimum.grad_norm,
               "diverged": run.diverged,
               "note": ("diverged" + ("" if np.isfinite(measured) else ": its model is not finite")
                        if run.diverged else "")}
        if b is None:
            row.update(bound=math.nan, reason="no bound in paper B for this method")
        else:
            row.update(bound_name=b.name, bound=b.value if b.holds else math.nan,
                       bound_formula=math.nan if b.formula is None else b.formula,
                       reason="" if b.holds else "outside the theorem's range: " + "; ".join(b.failed()))
            if not b.holds and (spec.figure, e.panel, c.method, b.name) not in warned:
                warned.add((spec.figure, e.panel, c.method, b.name))
                warnings.warn(f"{spec.figure} {e.panel or ''} {e.line}: {b.name} outside {b.source}'s range, "
                              f"which needs {'; '.join(b.failed())}: not drawn", TheoryWarning, stacklevel=2)
        rows.append(row)
    return rows


def summarise(rows: Iterable[dict]) -> list[dict]:
    """Per (figure, panel, line): the measured ``‖x − x*‖²`` over seeds (mean, 95 %
    t-interval half-width, seeds), and the bound over seeds (mean of the values in
    range; NaN when there is none) with its reason."""
    from byzsim.reproduction import summary

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if isinstance(r.get("measured"), float):
            groups.setdefault((r["figure"], r["panel"], r["line"]), []).append(r)
    out = []
    for (fig, panel, line), rs in groups.items():
        vals = [r["measured"] for r in rs if np.isfinite(r["measured"])]
        s = summary(vals, diverged=len(rs) - len(vals))
        bounds = [r["bound"] for r in rs if np.isfinite(r.get("bound", math.nan))]
        out.append(dict(figure=fig, panel=panel, line=line, mean=s.mean, half_width=s.half_width, n=s.n,
                        bound=float(np.mean(bounds)) if bounds else math.nan,
                        bound_name=rs[0].get("bound_name", ""), reason=rs[0].get("reason", "")))
    return out


# --------------------------------------------------------------------------------------
# figure and CSV
# --------------------------------------------------------------------------------------
def plot(rows: Sequence[dict], path: Path) -> Path | None:
    """One panel per setting (figure, panel): the measured ``‖x − x*‖²`` per line, mean
    with its 95 % t-interval over seeds, and the bound (a bar marker) where it is in its
    theorem's range; a line whose bound is outside the range says so and draws nothing."""
    summ = summarise(rows)
    if not summ:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys((s["figure"], s["panel"]) for s in summ))
    ncol = min(3, len(settings))
    nrow = math.ceil(len(settings) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(7.0, 5.2 * ncol), 4.2 * nrow + 0.8), squeeze=False)
    for ax, (figname, panel) in zip(axes.ravel(), settings):
        ss = [s for s in summ if (s["figure"], s["panel"]) == (figname, panel)]
        xs = np.arange(len(ss))
        mean = np.array([s["mean"] for s in ss])
        hw = np.array([s["half_width"] if np.isfinite(s["half_width"]) else 0.0 for s in ss])
        lo = np.clip(mean - hw, mean * 1e-3, None)  # a log axis: the band's lower end stays positive
        ax.errorbar(xs, mean, yerr=[mean - lo, hw], fmt="o", color="C0", capsize=4,
                    label="measured ‖x − x*‖² (mean, 95 % CI)")
        bx = [x for x, s in zip(xs, ss) if np.isfinite(s["bound"])]
        if bx:
            ax.scatter(bx, [ss[x]["bound"] for x in bx], marker="_", s=400, color="C3", label="bound Δ2")
        for x, s in zip(xs, ss):
            if not np.isfinite(s["bound"]):
                text = "outside range" if s["reason"].startswith("outside") else "no bound"
                ax.text(x + 0.08, 0.98, text, rotation=90, ha="left", va="top", fontsize=7, color="0.4",
                        transform=ax.get_xaxis_transform())
        ax.set_xticks(xs, [s["line"] for s in ss], rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{figname}{' ' + panel if panel else ''}", fontsize=10)
        ax.margins(x=0.15)
    for ax in axes.ravel()[len(settings):]:
        ax.set_visible(False)
    handles = {h.get_label(): h for ax in axes.ravel() for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("paper B: measured ‖x_final − x*‖² (over seeds) against Table I's Δ2\n"
                 "(a bound outside its theorem's range is not drawn)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    """The rows as :data:`FIELDS`, floats to 6 significant digits (written atomically)."""
    from byzsim.runs.tables import write_csv as write

    return write(path, rows, FIELDS, floats=".6g")


def without_model(specs: Sequence[str | Path], store: Store) -> list[str]:
    """The softmax runs of ``specs`` that the store lacks or holds without a final model
    (cheap: no diagnosis), as ``"<figure> <panel> <line> seed <s>"``."""
    out = []
    for path in specs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TheoryWarning)
            spec = load_spec(path, reference=False)
        for e in spec_entries(spec):
            if e.config.model in CONVEX_MODELS and not store.has_model(e.key):
                out.append(f"{spec.figure} {e.panel or ''} {e.line} seed {e.config.seed}")
    return out


def run(specs: Sequence[str | Path], store: Store, *, ridge: float = RIDGE, results: Path = Path("results"),
        figures: Path = Path("figures"), log=None, partial: bool = True,
        ) -> tuple[list[dict], Path | None, Path | None]:
    """The script's work: rows of every spec, the CSV and the figure.  ``partial=False``:
    when some run has no stored model, write nothing (return ``([], None, None)``), so
    that a CSV is never made from part of the runs by accident."""
    if not partial and without_model(specs, store):
        return [], None, None
    diagnoses = Diagnoses(ridge, log)
    rows = []
    for spec in specs:
        rows += rows_for_spec(spec, store, diagnoses)
    out = write_csv(rows, Path(results) / f"{OUT}.csv")
    fig = plot(rows, Path(figures) / f"{OUT}.png")
    return rows, out, fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="result store (default $BYZSIM_STORE or results/store)")
    ap.add_argument("--specs", nargs="*", default=list(SPECS),
                    help="spec names in experiments/paper_b/ or paths (default: the softmax specs)")
    ap.add_argument("--ridge", type=float, default=RIDGE, help="diagnostic ridge/2 ‖x‖² (default 0.001)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--figures", default="figures")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--partial", action="store_true",
                      help="write the CSV even when some runs have no stored model (their rows say so)")
    mode.add_argument("--strict", action="store_true",
                      help="exit 1, naming them, when some runs have no stored model (or there is no store)")
    a = ap.parse_args(argv)
    paths = []
    for s in a.specs:
        if s in SKIPPED:
            print(f"  {s}: skipped ({SKIPPED[s]})", file=sys.stderr)
            continue
        p = Path(s)
        paths.append(p if p.suffix == ".toml" else HERE / f"{s}.toml")
    for s, why in SKIPPED.items():
        if s not in a.specs:
            print(f"  {s}: not read ({why})", file=sys.stderr)
    try:
        store = Store(a.store, create=False)
    except StoreError as e:
        print(f"{e}: nothing to measure, nothing written", file=sys.stderr)
        return 2 if a.store is not None or a.strict else 0
    missing = without_model(paths, store)
    if missing and not a.partial:
        print(f"{len(missing)} runs have no stored final model in {store.root}, e.g. {missing[0]}: run "
              "their specs with `byzsim experiment SPEC --keep-models` (or pass --partial); nothing "
              "written", file=sys.stderr)
        if a.strict:
            print("error: no stored final model for:\n" + "\n".join(f"  {m}" for m in missing), file=sys.stderr)
            return 1
        return 0
    rows, out, fig = run(paths, store, ridge=a.ridge, results=Path(a.results), figures=Path(a.figures))
    if missing:
        print(f"  {len(missing)} of {len(rows)} runs have no stored final model (see the CSV's note)",
              file=sys.stderr)
    print(f"wrote {out}" + (f" and {fig}" if fig else " (no run with a model: no figure)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
