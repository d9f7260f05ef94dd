"""Paper B, Fig. 3: learning-error factors C_α² (Byrd-SAGA) vs d·C_{sα}² (RS-Byrd-SAGA).

Pure theory (no simulation): the curves come from :func:`byzsim.theory.fig3_curves`.
Writes ``results/b_fig3.csv`` and ``figures/b_fig3.{png,pdf}``.
Usage: ``python experiments/paper_b/fig3_theory.py [--results DIR] [--figures DIR]``.
"""

import argparse
import csv
from pathlib import Path

import numpy as np

from byzsim.theory import fig3_curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--figures", default="figures")
    a = ap.parse_args()
    W = 30
    fine = fig3_curves(W=W, s_values=(2, 3, 4), n_points=2001)
    grid = fig3_curves(W=W, s_values=(2, 3, 4))  # attainable α = B/W
    Path(a.results).mkdir(parents=True, exist_ok=True)
    with open(Path(a.results) / "b_fig3.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["figure", "method", "B", "alpha", "factor"])
        for name, vals in grid.items():
            if name == "alpha":
                continue
            for B, (al, v) in enumerate(zip(grid["alpha"], vals)):
                w.writerow(["b_fig3", name, B, f"{al:.6f}", f"{v:.6g}"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, vals in fine.items():
        if name == "alpha":
            continue
        v = np.where(np.isfinite(vals), vals, np.nan)
        ax.plot(fine["alpha"], v, label=name.replace("RS-Byrd-SAGA s=", "RS-Byrd-SAGA, s = "))
    ax.set_yscale("log")
    ax.set_ylim(1, 1e3)
    ax.set_xlim(0, 0.5)
    ax.set_xlabel("fraction of Byzantine workers α = B/W")
    ax.set_ylabel("learning-error factor")
    ax.set_title(f"Paper B Fig. 3: C_α² vs d·C_sα² (W = {W})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(a.figures).mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(Path(a.figures) / f"b_fig3.{ext}", dpi=130)


if __name__ == "__main__":
    main()
