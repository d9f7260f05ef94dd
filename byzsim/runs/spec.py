"""Figure specs (data, in ``experiments/``) -> runs in the result store -> long CSV -> figure.

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

Every run's config is ``base | panel | line | {seed} | overrides``; all are validated
before any simulation starts.  Runs go through :func:`byzsim.sweep.execute`: each
finished run is stored in the result store (``results/store`` by default) keyed by its
resolved config, runs already stored are not simulated again, and
``results/<figure>.csv`` is assembled from the store.  So running a figure twice runs
the simulations once, and an interrupted figure resumes where it stopped.

Command line: ``python -m byzsim.experiment SPEC [key=value ...] [--jobs N] [--store DIR]
[--results DIR] [--figures DIR] [--rounds N] [--force] [--scheduler ADDR]`` (or
``byzsim sweep SPEC`` + ``byzsim figure SPEC``).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import Config, load_toml
from .store import Store, StoredRun, atomic_write_text, canonical_config

__all__ = [
    "CSV_COLUMNS",
    "SPEC_KEYS",
    "RunSpec",
    "Spec",
    "parse_spec",
    "load_spec",
    "spec_entries",
    "flatten_config",
    "derive_labels",
    "run_rows",
    "rows_from_store",
    "csv_text",
    "write_csv",
    "read_csv",
    "run_spec",
    "report_failures",
    "main",
]

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


def _fmt(v: Any) -> str:
    """A short label for a config value (``[nnm, bucketing(s=2)]`` for a list of specs)."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, Mapping):
        rest = {k: x for k, x in v.items() if k != "name" and x is not None}
        inner = ", ".join(f"{k}={_fmt(x)}" for k, x in rest.items())
        if "name" in v:
            return f"{v['name']}({inner})" if inner else str(v["name"])
        return "{" + inner + "}"
    return str(v)


def parse_spec(raw: dict[str, Any], source: str = "<spec>", overrides: Sequence = ()) -> Spec:
    """Validate a spec dict and expand it into runs (every config validated).

    ``overrides`` (``key=value`` strings or :class:`byzsim.sweep.Override`) apply to every
    run, after the spec's own fields; a grid override multiplies the runs, and its value
    is appended to the line label (``seed`` excepted: seeds are the band of a line)."""
    from .execute import _make, expand_grid, parse_overrides

    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown spec key(s) {sorted(unknown)}; valid keys: {sorted(SPEC_KEYS)}")
    if "figure" not in raw:
        raise ValueError(f"{source}: missing 'figure' (the output name)")
    ovs = parse_overrides(overrides)
    labelled = [o for o in ovs if o.is_grid and o.path != ("seed",)]
    base = dict(raw.get("base", {}))
    panels = tuple(raw.get("panels") or [{"name": ""}])
    lines = tuple(raw.get("lines") or [{"label": base.get("method", "run")}])
    seeds = raw.get("seeds", [0])
    if any(o.path == ("seed",) for o in ovs):
        seeds = [None]  # the override sets the seeds
    runs = []
    for panel in panels:
        pfields = {k: v for k, v in panel.items() if k not in ("name", "title")}
        for line in lines:
            if "label" not in line:
                raise ValueError(f"{source}: every [[lines]] entry needs a 'label'")
            lfields = {k: v for k, v in line.items() if k != "label"}
            for seed in seeds:
                merged = {**base, **pfields, **lfields}
                if seed is not None:
                    merged["seed"] = seed
                where = f"{source}: panel {panel.get('name', '')!r}, line {line.get('label')!r}: "
                for d in expand_grid(merged, ovs):
                    cfg = _make(d, where)
                    label = str(line["label"])
                    if labelled:
                        cd = canonical_config(cfg)
                        label += ", " + ", ".join(f"{o.key}={_fmt(_get_path(cd, o.path))}" for o in labelled)
                    runs.append(RunSpec(str(panel.get("name", "")), label, int(cfg.seed), cfg))
    return Spec(
        figure=str(raw["figure"]),
        title=str(raw.get("title", raw["figure"])),
        metric=str(raw.get("metric", "test_accuracy")),
        panels=panels,
        lines=lines,
        runs=tuple(runs),
    )


def _get_path(d: Mapping, path: Sequence[str]) -> Any:
    for k in path:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


def load_spec(path: str | Path, overrides: Sequence = ()) -> Spec:
    return parse_spec(load_toml(path), str(path), overrides)


def spec_entries(spec: Spec) -> list:
    """The spec's runs as :class:`byzsim.sweep.RunEntry` (with panel and line labels)."""
    from .execute import RunEntry

    return [RunEntry.of(r.config, r.panel, r.label) for r in spec.runs]


# --------------------------------------------------------------------------- labels


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"attack_params": {"std": 1}}`` -> ``{"attack_params.std": 1}`` (lists kept)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def _determined(f: str, by: Sequence[str], flat: Sequence[dict]) -> bool:
    seen: dict = {}
    for d in flat:
        k = tuple(repr(d.get(b)) for b in by)
        if seen.setdefault(k, repr(d.get(f))) != repr(d.get(f)):
            return False
    return True


def derive_labels(
    configs: Sequence[Mapping[str, Any]],
    *,
    panel_fields: Sequence[str] = ("attack",),
    line_fields: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """(panel, line) labels for canonical config dicts of a sweep.

    Panels: the values of ``panel_fields``.  Lines: ``method`` and every other field
    that varies across the runs (dotted for nested parameters), except the seed (the
    band), the panel fields, and fields that follow from the method or the panel (the
    method presets' family/estimator/aggregator, an attack's parameters).
    """
    flat = [flatten_config(c) for c in configs]
    keys = list(dict.fromkeys(k for d in flat for k in d))
    varying = [k for k in keys if len({repr(d.get(k)) for d in flat}) > 1 and k != "seed"]
    if line_fields is None:
        line_fields = ["method"] + [
            k for k in varying
            if k != "method" and k not in panel_fields
            and not (panel_fields and _determined(k, panel_fields, flat))
            and not _determined(k, ["method"], flat)
        ]
    out = []
    for d in flat:
        panel = ", ".join(
            _fmt(d.get(f)) if len(panel_fields) == 1 else f"{f}={_fmt(d.get(f))}" for f in panel_fields
        )
        parts = []
        for f in line_fields:
            parts.append(_fmt(d.get(f)) if f == "method" else f"{f}={_fmt(d.get(f))}")
        out.append((panel, ", ".join(parts) or "run"))
    return out


# --------------------------------------------------------------------------- rows


def run_rows(run: StoredRun, *, figure: str, panel: str, method: str) -> list[dict]:
    """Long-format CSV rows of one stored run (a diverged run ends with a NaN row at the
    round where it was stopped)."""
    cols = run.columns()
    cfg = run.config_dict
    div = int(run.diverged)
    keys = ("round", "test_accuracy", "train_loss", "distance")
    rows = [
        {"figure": figure, "panel": panel, "method": method, "attack": cfg["attack"], "seed": cfg["seed"],
         **{k: (int(v) if k == "round" else float(v)) for k, v in zip(keys, vals)}, "diverged": div}
        for vals in zip(*(cols[k].tolist() for k in keys))
    ]
    if run.diverged and run.diverged_round is not None:
        nan = float("nan")
        rows.append({"figure": figure, "panel": panel, "method": method, "attack": cfg["attack"],
                     "seed": cfg["seed"], "round": int(run.diverged_round), "test_accuracy": nan,
                     "train_loss": nan, "distance": nan, "diverged": 1})
    return rows


def rows_from_store(entries: Sequence, store: Store, figure: str, *,
                    panel_fields: Sequence[str] = ("attack",),
                    line_fields: Sequence[str] | None = None) -> tuple[list[dict], list]:
    """CSV rows of the entries found in the store, sorted (panel, method, seed, round),
    and the entries that are not stored (not run yet, or failed).  Entries without
    labels get :func:`derive_labels`."""
    runs = [(e, store.get(e.key)) for e in entries]
    found = [(e, r) for e, r in runs if r is not None]
    missing = [e for e, r in runs if r is None]
    derived = derive_labels([r.config_dict for _, r in found], panel_fields=panel_fields,
                            line_fields=line_fields) if found else []
    rows: list[dict] = []
    for (e, r), (dp, dl) in zip(found, derived):
        panel = e.panel if e.panel is not None and line_fields is None else dp
        line = e.line if e.line is not None and line_fields is None else dl
        rows.extend(run_rows(r, figure=figure, panel=panel, method=line))
    rows.sort(key=lambda r: (str(r["panel"]), str(r["method"]), int(r["seed"]), int(r["round"])))
    return rows, missing


def csv_text(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    path = Path(path)
    atomic_write_text(path, csv_text(rows))
    return path


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- running


def run_spec(
    spec: Spec,
    *,
    jobs: int = 1,
    results_dir: str | Path = "results",
    store: Store | str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
    progress: bool | None = None,
    scheduler: str | None = None,
):
    """Run the spec's runs that are not stored yet, then write ``<figure>.csv`` from the
    store.  Returns ``(rows, report)``; failed runs are in ``report.failures`` (the CSV
    holds the others)."""
    from .execute import Progress, execute

    store = store if isinstance(store, Store) else Store(store)
    store.clean_stale()
    entries = list({e.key: e for e in spec_entries(spec)}.values())
    show = (not quiet) if progress is None else progress
    prog = Progress(label=spec.figure, enabled=show and (progress or sys.stderr.isatty()))
    store.write_sweep(spec.figure, {
        "figure": spec.figure, "title": spec.title, "metric": spec.metric,
        "panels": [[str(p.get("name", "")), str(p.get("title", p.get("name", "")))] for p in spec.panels],
        "runs": [{"key": e.key, "panel": e.panel, "line": e.line} for e in entries],
    })
    report = execute(entries, store, jobs=jobs, scheduler=scheduler, force=force, progress=prog,
                     on_outcome=None if quiet else _print_outcome(spec.figure))
    rows, _ = rows_from_store(entries, store, spec.figure)
    write_csv(Path(results_dir) / f"{spec.figure}.csv", rows)
    return rows, report


def _print_outcome(name: str):
    def show(o) -> None:
        if o.status == "failed":
            print(f"[{name}] FAILED {o.entry.panel or ''} {o.entry.line or o.entry.config.method} "
                  f"(seed {o.entry.config.seed}): {o.error}", file=sys.stderr, flush=True)
        elif o.diverged:
            print(f"[{name}] diverged: {o.entry.panel or ''} {o.entry.line or o.entry.config.method} "
                  f"(seed {o.entry.config.seed})", file=sys.stderr, flush=True)
    return show


def report_failures(report, name: str, stream=None) -> None:
    stream = stream or sys.stderr
    for o in report.failures:
        e = o.entry
        print(f"  failed: {e.key[:12]} {e.panel + ' / ' if e.panel else ''}{e.line or e.config.method} "
              f"seed {e.config.seed}: {o.error}", file=stream)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m byzsim.experiment",
        description="Run a figure spec (runs not in the result store yet) and draw the figure.",
        epilog="example: python -m byzsim.experiment experiments/paper_a/fig2.toml --jobs 2 rounds=500",
    )
    ap.add_argument("spec", help="TOML figure spec (see experiments/)")
    ap.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides applied to every run (key=v1,v2 adds a grid axis)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    ap.add_argument("--results", default="results", help="directory of the CSV (default results/)")
    ap.add_argument("--figures", default="figures", help="directory of the figure (default figures/)")
    ap.add_argument("--store", default=None, help="result store (default $BYZSIM_STORE or results/store)")
    ap.add_argument("--rounds", type=int, default=None, help="override the number of rounds (quick looks)")
    ap.add_argument("--force", action="store_true", help="rerun runs that are already stored")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:port)")
    ap.add_argument("--progress", action="store_true", default=None, help="progress line even when stderr is not a terminal")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from .store import StoreError
    from .execute import SweepError, SweepInterrupted

    overrides = list(a.overrides) + ([f"rounds={a.rounds}"] if a.rounds is not None else [])
    try:
        spec = load_spec(a.spec, overrides)
        t0 = time.perf_counter()
        rows, report = run_spec(spec, jobs=a.jobs, results_dir=a.results, store=a.store, force=a.force,
                                quiet=a.quiet, progress=False if a.quiet else a.progress, scheduler=a.scheduler)
    except SweepInterrupted as e:
        print(f"\ninterrupted: {e.report.ran} runs finished and stored; run the same command again "
              "to run the rest", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, StoreError, SweepError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, SweepError) else 2
    t_sim = time.perf_counter() - t0
    from .plots import plot_spec

    paths = plot_spec(spec, rows, Path(a.figures), csv_path=Path(a.results) / f"{spec.figure}.csv")
    if not a.quiet:
        print(report.summary(spec.figure), file=sys.stderr)
        print(f"[{spec.figure}] {t_sim:.1f}s; wrote {Path(a.results) / (spec.figure + '.csv')}, "
              + ", ".join(map(str, paths)), file=sys.stderr)
    if report.failures:
        report_failures(report, spec.figure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
