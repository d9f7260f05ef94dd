"""Metrics tables -> matplotlib figures.  Never runs a simulation.

Input rows are the long-format CSV rows of :mod:`byzsim.experiment` (dicts with at
least panel, method, seed, round and the metric).  One subplot per panel, one line per
method, the mean over seeds (at each round, over the seeds that reached it) with a
band when there are several seeds (``band``: the 95 % confidence interval of the mean
over seeds, ``t_{0.975, k−1} s / √k`` with k the seeds at that round (the default);
min–max; ± one standard deviation; or none).  A run recorded as diverged ends with an ``×`` at the round where it was stopped.
A spec's ``[reference]`` is a dashed horizontal line per panel (:func:`reference_lines`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "LABELS",
    "BANDS",
    "plot_panels",
    "save_figure",
    "plot_spec",
    "plot_heatmap",
    "reference_lines",
]

LABELS = {
    "test_accuracy": "test accuracy",
    "train_loss": "training loss (regular clients)",
    "distance": "mean ‖x_i − x_0‖₂",
}


BANDS = ("ci95", "minmax", "std", "none")


def _is_marker(r: dict) -> bool:
    """The extra row that marks where a diverged run was stopped (all metrics NaN)."""
    if not int(float(r.get("diverged", 0) or 0)):
        return False
    return math.isnan(float(r.get("test_accuracy", "nan")))


def _series(rows: Iterable[dict], metric: str):
    """{(panel, method): {seed: (rounds, values, diverged_round)}}"""
    out: dict = defaultdict(lambda: defaultdict(lambda: ([], [], None)))
    for r in rows:
        key = (str(r["panel"]), str(r["method"]))
        rounds, vals, div = out[key][str(r["seed"])]
        if _is_marker(r):
            out[key][str(r["seed"])] = (rounds, vals, int(float(r["round"])))
            continue
        rounds.append(int(float(r["round"])))
        vals.append(float(r[metric]))
    return out


def _mean_band(runs, band: str):
    """Mean over the seeds at each round (those that reached it) and the band."""
    by_round: dict = defaultdict(list)
    for rr, vv, _ in runs:
        for x, v in zip(rr, vv):
            by_round[x].append(v)
    xs = np.array(sorted(by_round), dtype=float)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            vals = [np.asarray(by_round[x], dtype=float) for x in sorted(by_round)]
            mean = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
            if band in ("std", "ci95"):
                sd = np.array([np.nanstd(v, ddof=int(band == "ci95")) if np.isfinite(v).sum() > 1 else np.nan
                               for v in vals])
                if band == "ci95":
                    from scipy import stats

                    k = np.array([np.isfinite(v).sum() for v in vals])
                    with np.errstate(invalid="ignore", divide="ignore"):
                        sd = stats.t.ppf(0.975, np.maximum(k - 1, 1)) * sd / np.sqrt(k)
                lo, hi = mean - sd, mean + sd
            else:
                lo = np.array([np.nanmin(v) if np.isfinite(v).any() else np.nan for v in vals])
                hi = np.array([np.nanmax(v) if np.isfinite(v).any() else np.nan for v in vals])
    return xs, mean, lo, hi


def plot_panels(
    rows: Sequence[dict],
    *,
    metric: str = "test_accuracy",
    panels: Sequence[tuple[str, str]] | None = None,
    methods: Sequence[str] | None = None,
    title: str = "",
    note: str = "",
    band: str = "ci95",
    reference: Mapping[str, tuple[str, float]] | None = None,
):
    """Draw the figure and return it (``matplotlib.figure.Figure``).

    ``panels``: ``[(name, title), …]`` in order (default: as found in ``rows``);
    ``methods``: line order (default: as found); ``band``: ``"ci95"`` (default: the
    95 % t-interval of the mean over seeds), ``"minmax"``, ``"std"`` (mean ± one standard
    deviation) or ``"none"``, drawn with several seeds; ``reference``: panel name ->
    ``(legend label, value)``, a dashed horizontal line in that panel
    (:func:`reference_lines`).
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid choices: {', '.join(BANDS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _series(rows, metric)
    if panels is None:
        panels = [(p, p) for p in dict.fromkeys(k[0] for k in data)]
    if methods is None:
        methods = list(dict.fromkeys(k[1] for k in data))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (pname, ptitle) in zip(axes[0], panels):
        for i, m in enumerate(methods):
            seeds = data.get((pname, m))
            if not seeds:
                continue
            c = colors[i % len(colors)]
            runs = list(seeds.values())
            x, mean, lo, hi = _mean_band(runs, band)
            n_div = sum(div is not None for _, _, div in runs)
            label = m + (f" (diverged{'' if len(runs) == 1 else f': {n_div}/{len(runs)} seeds'})" if n_div else "")
            ax.plot(x, mean, color=c, label=label, lw=1.6, marker="." if len(x) < 3 else None)
            if len(runs) > 1 and band != "none":
                ax.fill_between(x, lo, hi, color=c, alpha=0.2, lw=0)
            marked = set()
            for rr, vv, div in runs:
                if div is not None:
                    finite = [b for b in vv if math.isfinite(b)]
                    px, py = div, (finite[-1] if finite else 0.0)
                    if rr and finite:  # dotted: from the last evaluation to where it was stopped
                        ax.plot([rr[-1], px], [finite[-1], py], ":", color=c, lw=1)
                    ax.plot([px], [py], "x", color=c, ms=9, mew=2)
                    if (px, py) in marked:
                        continue
                    marked.add((px, py))
                    ax.annotate(f"diverged (round {div})", (px, py),
                                color=c, fontsize=7, xytext=(3, 3), textcoords="offset points")
        if reference and pname in reference:
            rlabel, rvalue = reference[pname]
            ax.axhline(rvalue, ls="--", color="0.2", lw=1.2, label=rlabel, zorder=1.5)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("iteration (round)")
        ax.set_ylabel(LABELS.get(metric, metric))
        if metric == "test_accuracy":
            ax.set_ylim(0, 1)
        elif metric == "train_loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        import textwrap

        width = 58 * len(panels)  # characters that fit the figure (5.2 in per panel)
        fig.suptitle("\n".join(textwrap.wrap(title, width)), fontsize=11)
    if note:
        import textwrap

        note = "\n".join(l for line in note.splitlines() for l in textwrap.wrap(line, 95 * len(panels)))
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35", ha="left", va="bottom")
    fig.tight_layout(rect=(0, (0.03 + 0.025 * note.count("\n")) if note else 0, 1, 1))
    return fig


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 130) -> list[Path]:
    """Save ``fig`` as ``<stem>.<format>`` for each format (written atomically) and close it."""
    import os

    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        p = stem.parent / f"{stem.name}.{ext}"
        tmp = stem.parent / f".tmp-{stem.name}-{os.getpid()}.{ext}"
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, p)
        paths.append(p)
    plt.close(fig)
    return paths


def _dataset_note(cfg) -> str:
    """The dataset's own description (e.g. which COVTYPE test set was used), or ''."""
    from ..data import load_dataset

    try:
        return load_dataset(cfg.dataset, **cfg.dataset_params).note
    except Exception:  # a figure must not fail because the data moved since the runs
        return ""


def reference_lines(reference, metric: str) -> dict[str, tuple[str, float]] | None:
    """A spec's :class:`byzsim.runs.spec.Reference` as :func:`plot_panels`'s
    ``reference`` (panel name -> ``(legend label, value)``; the label states the value
    and how many CSV rows it is the mean of), or None when there is none or it belongs
    to another metric than the one drawn."""
    if reference is None or reference.metric != metric:
        return None
    return {p: (f"{reference.label}: {v:.4g}, mean of {reference.rows[p]} row{'s' * (reference.rows[p] > 1)}", v)
            for p, v in reference.values.items()}


def plot_spec(spec, rows: Sequence[dict], figures_dir: Path, *, csv_path: Path | str | None = None,
              metric: str | None = None, band: str = "ci95") -> list[Path]:
    """Draw a figure spec's rows and save ``<figure>.png`` and ``.pdf``; returns the paths.
    The spec's ``reference`` (if any, and of the metric drawn) is a dashed line per panel."""
    panels = [(str(p.get("name", "")), str(p.get("title", p.get("name", "")))) for p in spec.panels]
    found = list(dict.fromkeys(str(r["method"]) for r in rows))
    methods = [str(l["label"]) for l in spec.lines]
    methods += [m for m in found if m not in methods]  # grid overrides extend the labels
    methods = [m for m in methods if m in found] or methods
    seeds = sorted({r.seed for r in spec.runs})
    cfg = spec.runs[0].config
    byz = sorted({r.config.n_byzantine for r in spec.runs})
    byz_text = f"{byz[0]} Byzantine" if len(byz) == 1 else "Byzantine per panel"
    note = (f"byzsim: {cfg.dataset}, {cfg.n_clients} clients ({byz_text}), "
            f"seeds {seeds}; data: {csv_path or f'results/{spec.figure}.csv'}")
    metric = metric or spec.metric
    reference = reference_lines(getattr(spec, "reference", None), metric)
    if reference:
        note += f"\n{spec.reference.source}"
    test_set = _dataset_note(cfg)
    if test_set:
        note += f"\n{test_set}"
    fig = plot_panels(rows, metric=metric, panels=panels, methods=methods,
                      title=spec.title, note=note, band=band, reference=reference)
    return save_figure(fig, Path(figures_dir) / spec.figure)


def plot_heatmap(rows: Sequence[dict], row_labels: Sequence[str], col_labels: Sequence[str], title: str = ""):
    """The robustness matrix: mean final test accuracy per (row, column) cell over the
    seeds (rows of :func:`byzsim.runs.tables.matrix_rows`); ``div`` when a seed
    diverged, ``n/a`` (grey) when no seed finished.  Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R, C = len(row_labels), len(col_labels)
    acc = np.full((R, C), np.nan)
    text = [["n/a"] * C for _ in range(R)]
    for i, r in enumerate(row_labels):
        for j, c in enumerate(col_labels):
            ok = [x for x in rows if x["row"] == r and x["column"] == c and x["status"] == "ok"]
            if not ok:
                continue
            if any(int(x["diverged"]) for x in ok):
                acc[i, j] = 0.0
                text[i][j] = "div"
            else:
                acc[i, j] = float(np.mean([float(x["final_test_accuracy"]) for x in ok]))
                text[i][j] = f"{acc[i, j]:.2f}"
    fig, ax = plt.subplots(figsize=(1.6 + 0.78 * C, 1.2 + 0.36 * R))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(acc), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(C), col_labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(R), row_labels, fontsize=8)
    for i in range(R):
        for j in range(C):
            v = acc[i, j]
            dark = np.isfinite(v) and (v < 0.25 or v > 0.85)
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,
                    color="white" if dark and text[i][j] == "div" else "black")
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    cb.set_label("final test accuracy", fontsize=8)
    fig.tight_layout()
    return fig
