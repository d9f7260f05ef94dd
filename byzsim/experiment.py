"""Figure specs (data, in ``experiments/``) -> runs -> long-format CSV -> figure.

A spec is a TOML file::

    figure = "fig2"                      # output names: results/fig2.csv, figures/fig2.{png,pdf}
    title  = "..."
    metric = "test_accuracy"             # what the figure plots against round
    seeds  = [0]
    [base]                               # Config fields shared by every run
    dataset = "mnist"
    ...
    [[panels]]                           # one subplot each: name, title + Config fields
    name = "a"
    attack = "same_value"
    [[lines]]                            # one curve per panel each: label + Config fields
    label = "AsynRSA-VR"
    method = "asynrsa-vr"

Every run's config is ``base | panel | line | {seed}``; all are validated before any
simulation starts.  Runs execute as whole processes in parallel (joblib), one BLAS
thread each; results are written as they finish, so an interrupted figure keeps what
was done (``results/<figure>.partial.csv``).

Command line: ``python -m byzsim.experiment SPEC [--jobs N] [--results DIR] [--figures DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_toml, make_config

CSV_COLUMNS = (
    "figure", "panel", "method", "attack", "seed", "round",
    "test_accuracy", "train_loss", "distance", "diverged",
)
SPEC_KEYS = {"figure", "title", "metric", "seeds", "base", "panels", "lines", "notes"}


@dataclass(frozen=True)
class RunSpec:
    panel: str
    label: str
    seed: int
    config: Config


@dataclass(frozen=True)
class Spec:
    figure: str
    title: str
    metric: str
    panels: tuple[dict, ...]
    lines: tuple[dict, ...]
    runs: tuple[RunSpec, ...]


def parse_spec(raw: dict[str, Any], source: str = "<spec>") -> Spec:
    """Validate a spec dict and expand it into runs (every config validated)."""
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown spec key(s) {sorted(unknown)}; valid keys: {sorted(SPEC_KEYS)}")
    if "figure" not in raw:
        raise ValueError(f"{source}: missing 'figure' (the output name)")
    base = dict(raw.get("base", {}))
    panels = tuple(raw.get("panels") or [{"name": ""}])
    lines = tuple(raw.get("lines") or [{"label": base.get("method", "run")}])
    seeds = raw.get("seeds", [0])
    runs = []
    for panel in panels:
        pfields = {k: v for k, v in panel.items() if k not in ("name", "title")}
        for line in lines:
            lfields = {k: v for k, v in line.items() if k != "label"}
            for seed in seeds:
                try:
                    cfg = make_config(**{**base, **pfields, **lfields, "seed": seed})
                except ValueError as e:
                    raise ValueError(
                        f"{source}: panel {panel.get('name', '')!r}, line {line.get('label')!r}: {e}"
                    ) from None
                runs.append(RunSpec(str(panel.get("name", "")), str(line["label"]), int(seed), cfg))
    return Spec(
        figure=str(raw["figure"]),
        title=str(raw.get("title", raw["figure"])),
        metric=str(raw.get("metric", "test_accuracy")),
        panels=panels,
        lines=lines,
        runs=tuple(runs),
    )


def load_spec(path: str | Path) -> Spec:
    return parse_spec(load_toml(path), str(path))


def _run_one(run: RunSpec, figure: str) -> tuple[list[dict], dict]:
    """Worker: one simulation -> CSV rows (runs in a child process)."""
    from .simulate import run as simulate

    res = simulate(run.config)
    rows = [
        {
            "figure": figure, "panel": run.panel, "method": run.label,
            "attack": run.config.attack, "seed": run.seed, **row,
            "diverged": int(res.diverged),
        }
        for row in res.rows()
    ]
    if res.diverged:  # mark the round where the run was stopped
        rows.append({
            "figure": figure, "panel": run.panel, "method": run.label, "attack": run.config.attack,
            "seed": run.seed, "round": res.diverged_round, "test_accuracy": float("nan"),
            "train_loss": float("nan"), "distance": float("nan"), "diverged": 1,
        })
    return rows, {"seconds": res.seconds, "rounds": run.config.rounds, "diverged": res.diverged}


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_spec(spec: Spec, *, jobs: int = 1, results_dir: str | Path = "results", quiet: bool = False) -> list[dict]:
    """Run every run of the spec (parallel over whole runs) and write ``<figure>.csv``."""
    from joblib import Parallel, delayed

    results_dir = Path(results_dir)
    partial = results_dir / f"{spec.figure}.partial.csv"
    rows: list[dict] = []
    t0 = time.perf_counter()
    gen = Parallel(n_jobs=jobs, return_as="generator_unordered")(
        delayed(_run_one)(r, spec.figure) for r in spec.runs
    ) if jobs != 1 else (_run_one(r, spec.figure) for r in spec.runs)
    for k, (r_rows, meta) in enumerate(gen, 1):
        rows.extend(r_rows)
        _write_csv(partial, rows)
        if not quiet:
            last = r_rows[-1] if r_rows else {}
            print(
                f"[{spec.figure}] {k}/{len(spec.runs)} runs done  "
                f"({last.get('panel')}, {last.get('method')}: final acc "
                f"{float(last.get('test_accuracy', float('nan'))):.4f}"
                f"{', DIVERGED' if meta['diverged'] else ''}; {meta['seconds']:.1f}s)  "
                f"elapsed {time.perf_counter() - t0:.1f}s",
                file=sys.stderr, flush=True,
            )
    rows.sort(key=lambda r: (r["panel"], r["method"], r["seed"], r["round"]))
    _write_csv(results_dir / f"{spec.figure}.csv", rows)
    partial.unlink(missing_ok=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m byzsim.experiment",
        description="Run a figure spec and draw the figure.",
        epilog="example: python -m byzsim.experiment experiments/paper_a/fig2.toml --jobs 2",
    )
    ap.add_argument("spec", help="TOML figure spec (see experiments/)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    ap.add_argument("--results", default="results", help="directory of the CSV (default results/)")
    ap.add_argument("--figures", default="figures", help="directory of the figure (default figures/)")
    ap.add_argument("--rounds", type=int, default=None, help="override the number of rounds (quick looks)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    raw = load_toml(a.spec)
    if a.rounds is not None:
        raw.setdefault("base", {})["rounds"] = a.rounds
    spec = parse_spec(raw, a.spec)
    t0 = time.perf_counter()
    rows = run_spec(spec, jobs=a.jobs, results_dir=a.results, quiet=a.quiet)
    t_sim = time.perf_counter() - t0
    from .plots import plot_spec

    paths = plot_spec(spec, rows, Path(a.figures))
    if not a.quiet:
        print(f"[{spec.figure}] simulations {t_sim:.1f}s; wrote {Path(a.results) / (spec.figure + '.csv')}, "
              + ", ".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
