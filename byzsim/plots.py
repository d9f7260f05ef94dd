"""Metrics tables -> matplotlib figures.  Never runs a simulation.

Input rows are the long-format CSV rows of :mod:`byzsim.experiment` (dicts with at
least panel, method, seed, round and the metric).  One subplot per panel, one line per
method, the mean over seeds with a min–max band when there are several seeds.  A run
recorded as diverged ends with an ``×`` at the round where it was stopped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

LABELS = {
    "test_accuracy": "test accuracy",
    "train_loss": "training loss (regular clients)",
    "distance": "mean ‖x_i − x_0‖₂",
}


def _series(rows: Iterable[dict], metric: str):
    """{(panel, method): {seed: (rounds, values, diverged_round)}}"""
    out: dict = defaultdict(lambda: defaultdict(lambda: ([], [], None)))
    for r in rows:
        key = (str(r["panel"]), str(r["method"]))
        rounds, vals, div = out[key][str(r["seed"])]
        v = float(r[metric])
        if int(float(r.get("diverged", 0) or 0)) and math.isnan(v):
            out[key][str(r["seed"])] = (rounds, vals, int(float(r["round"])))
            continue
        rounds.append(int(float(r["round"])))
        vals.append(v)
    return out


def plot_panels(
    rows: Sequence[dict],
    *,
    metric: str = "test_accuracy",
    panels: Sequence[tuple[str, str]] | None = None,
    methods: Sequence[str] | None = None,
    title: str = "",
    note: str = "",
):
    """Draw the figure and return it (``matplotlib.figure.Figure``).

    ``panels``: ``[(name, title), …]`` in order (default: as found in ``rows``);
    ``methods``: line order (default: as found).
    """
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
            n = min(len(r[0]) for r in runs)
            x = np.asarray(runs[0][0][:n])
            Y = np.array([r[1][:n] for r in runs])
            ax.plot(x, Y.mean(0), color=c, label=m, lw=1.6)
            if len(runs) > 1:
                ax.fill_between(x, Y.min(0), Y.max(0), color=c, alpha=0.2, lw=0)
            for rr, vv, div in runs:
                if div is not None:
                    ax.plot([rr[-1] if rr else 0], [vv[-1] if vv else 0], "x", color=c, ms=9, mew=2)
                    ax.annotate("diverged", (rr[-1] if rr else 0, vv[-1] if vv else 0),
                                color=c, fontsize=7, xytext=(3, 3), textcoords="offset points")
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
        fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


def plot_spec(spec, rows: Sequence[dict], figures_dir: Path) -> list[Path]:
    """Draw a figure spec's rows and save ``<figure>.png`` and ``.pdf``; returns the paths."""
    import matplotlib.pyplot as plt

    panels = [(str(p.get("name", "")), str(p.get("title", p.get("name", "")))) for p in spec.panels]
    methods = [str(l["label"]) for l in spec.lines]
    seeds = sorted({r.seed for r in spec.runs})
    cfg = spec.runs[0].config
    note = (f"byzsim: {cfg.dataset}, {cfg.n_clients} clients ({cfg.n_byzantine} Byzantine), "
            f"seeds {seeds}; data: results/{spec.figure}.csv")
    fig = plot_panels(rows, metric=spec.metric, panels=panels, methods=methods, title=spec.title, note=note)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = [figures_dir / f"{spec.figure}.png", figures_dir / f"{spec.figure}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths
