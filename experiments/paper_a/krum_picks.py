"""Which messages does Krum select in paper A's Fig. 2?  (the diagnostic behind REPRODUCTION.md)

Fig. 2's Krum line (25 clients, 5 Byzantine, one sample per client and round, softmax
regression) is run with a recording copy of Krum that notes, every round, which message
it selected.  With one sample per message the message is that sample's gradient,
``(p − e_y) ⊗ x`` in the class-major layout ``W (C, p')``: its bias column is ``p_c − [c = y]``,
negative only in the row of the label ``y``.  So the label of a selected honest message
is read off the message itself, and its pixel mass is ``Σ_pixels W[y] / W[y, bias]``.

Writes a long CSV (one row per run: figure, panel, method, seed, round, and the columns
below) that ``make reproduction`` reads:

- ``picked_byzantine``: fraction of rounds in which a Byzantine message was selected;
- ``picked_label_<c>``: fraction of rounds in which an honest message of label c was;
- ``mass_picked`` / ``mass_all``: mean pixel mass (sum of the 784 pixel values / 255) of
  the selected honest messages, and of all honest messages;
- ``test_accuracy``: the run's final test accuracy.

Usage: ``python experiments/paper_a/krum_picks.py [OUT.csv] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from byzsim.aggregators import AGGREGATORS, krum
from byzsim.runs import load_spec
from byzsim.runs.tables import write_csv
from byzsim.simulate import run

HERE = Path(__file__).resolve().parent
C = 10


class Recorder:
    """Krum that also records, per call, the selected row's label (−1: Byzantine) and
    pixel mass; ``reset()`` between runs."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.labels: list[int] = []
        self.mass: list[float] = []
        self.mass_all: list[float] = []

    def __call__(self, z, mask=None, *, f):
        out = krum(z, mask, f=f)
        zz = np.asarray(z).reshape(-1, *np.shape(z)[-2:])
        for rows, sel in zip(zz, np.asarray(out).reshape(-1, zz.shape[-1])):
            i = int(np.argmin(np.abs(rows - sel).max(axis=1)))
            self.labels.append(label_of(rows[i]))
            self.mass.append(mass_of(rows[i]))
            honest = [mass_of(r) for r in rows if label_of(r) >= 0]
            self.mass_all.append(float(np.mean(honest)))
        return out


def _classes(row: np.ndarray) -> np.ndarray:
    return row.reshape(C, -1)


def label_of(row: np.ndarray) -> int:
    """The label of a one-sample softmax gradient (its only negative bias entry), or −1
    when the row is not such a gradient (a Byzantine message)."""
    bias = _classes(row)[:, -1]
    neg = np.flatnonzero(bias < 0)
    if neg.size != 1 or np.any(bias[bias >= 0] > 1) or bias[neg[0]] < -1:
        return -1
    return int(neg[0])


def mass_of(row: np.ndarray) -> float:
    y = label_of(row)
    if y < 0:
        return float("nan")
    W = _classes(row)
    return float(W[y, :-1].sum() / W[y, -1])


RECORDER = Recorder()
if "krum_recording" not in AGGREGATORS:
    AGGREGATORS.register("krum_recording", max_f=AGGREGATORS.entry("krum").meta["max_f"])(RECORDER)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="experiments/results/a_krum_picks.csv")
    ap.add_argument("--rounds", type=int, default=None, help="default: Fig. 2's")
    a = ap.parse_args(argv)
    spec = load_spec(HERE / "fig2.toml")
    rows = []
    for rs in spec.runs:
        if rs.label != "Krum":
            continue
        cfg = rs.config.replace(method="custom", family="gradient", estimator="sgd",
                                aggregator="krum_recording",
                                **({"rounds": a.rounds} if a.rounds else {}))
        RECORDER.reset()
        res = run(cfg)
        labels = np.asarray(RECORDER.labels)
        row = {"figure": "a_krum_picks", "panel": rs.panel, "method": "Krum", "attack": cfg.attack,
               "seed": cfg.seed, "round": cfg.rounds, "diverged": int(res.diverged),
               "test_accuracy": res.final_accuracy, "picked_byzantine": float(np.mean(labels < 0)),
               "mass_picked": float(np.nanmean(RECORDER.mass)),
               "mass_all": float(np.mean(RECORDER.mass_all))}
        row.update({f"picked_label_{c}": float(np.mean(labels == c)) for c in range(C)})
        rows.append(row)
        print(f"panel {rs.panel} seed {cfg.seed}: digit 1 picked {row['picked_label_1']:.3f}, "
              f"Byzantine {row['picked_byzantine']:.3f}, accuracy {res.final_accuracy:.4f}", file=sys.stderr)
    columns = ("figure", "panel", "method", "attack", "seed", "round", "test_accuracy", "picked_byzantine",
               *(f"picked_label_{c}" for c in range(C)), "mass_picked", "mass_all", "diverged")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_csv(a.out, rows, columns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
