"""The ``byzsim`` command (also ``python -m byzsim``), the only command line:
run | sweep | figure | experiment | matrix | list | store | bench.

Configs come from TOML files (flat tables of :class:`~byzsim.config.Config` fields, with
an optional ``[grid]`` table, or one figure spec such as ``experiments/paper_a/fig2.toml``)
and ``key=value`` overrides (``key=v1,v2`` is a grid axis; dotted keys set nested
parameters; values are TOML literals, bare words are strings).  Every finished run is
kept in the result store (``results/store`` or ``$BYZSIM_STORE``); a sweep skips what is
stored.  ``--plugin MODULE`` (and ``$BYZSIM_PLUGINS``, the ``byzsim.plugins`` entry
points) loads a user's components first (:mod:`byzsim.plugins`).

Exit status: 0 done; 1 some runs failed (the others are stored), or ``store verify``
found bad runs; 2 bad input (config,
override, store); 3 the executor failed (a worker died, the Dask scheduler is
unreachable or lost); 4 a file could not be written (full file system, read-only store,
permission; the runs stored before are intact); 130 interrupted (finished runs are stored).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

from .simulate import METRICS
from .runs.plots import BANDS

EXIT_OK, EXIT_FAILED_RUNS, EXIT_USAGE, EXIT_EXECUTOR, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

_CONFIG_HELP = ("TOML config files and key=value overrides, in any order (key=v1,v2 sweeps over the "
                "values; attack_params.std=100 sets a nested parameter)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"byzsim: error: {message} (see `{self.prog} --help`)\n")


def _jobs(text: str) -> int:
    """``--jobs``: an integer >= 1, or -1 (all cores)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1 and v != -1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 1, or -1 for all cores")
    return v


def _positive_float(text: str) -> float:
    """A timeout: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a finite number > 0")
    return v


def _split_inputs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    files, overrides = [], []
    for it in items:
        (overrides if "=" in it else files).append(it)
    return files, overrides


def _progress_enabled(a) -> bool:
    if getattr(a, "quiet", False):
        return False
    if getattr(a, "progress", False):
        return True
    return sys.stderr.isatty()


def _store(a):
    from .runs.store import Store

    store = Store(a.store)
    store.clean_stale()
    return store


def _err(msg: str) -> None:
    print(f"byzsim: error: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- run


def cmd_run(a) -> int:
    from .runs import Progress, load_entries
    from .runs.execute import execute

    files, overrides = _split_inputs(a.inputs)
    entries, _ = load_entries(files, overrides)
    if len(entries) != 1:
        raise ValueError(f"`byzsim run` runs one config, but the input expands to {len(entries)} runs; "
                         "use `byzsim sweep` for grids")
    e = entries[0]
    if a.no_store:
        from .simulate import run

        res = run(e.config)
        cols, diverged, div_round = res.columns, res.diverged, res.diverged_round
        where = "(not stored)"
    else:
        store = _store(a)
        report = execute(entries, store, force=a.force,
                         progress=Progress(label="run", enabled=_progress_enabled(a)))
        if report.failures:
            _err(f"the run failed: {report.failures[0].error}")
            return EXIT_FAILED_RUNS
        stored = store.get(e.key)
        cols, diverged, div_round = stored.columns(), stored.diverged, stored.diverged_round
        where = f"{stored.path}" + (" (stored before; --force reruns)" if report.skipped else "")
    if a.csv:
        from .runs.store import atomic_write_text, format_metrics_csv

        atomic_write_text(Path(a.csv), format_metrics_csv(cols))
    if not a.quiet:
        widths = [max(8, len(k)) for k in METRICS]
        print(" ".join(f"{k:>{w}}" for k, w in zip(METRICS, widths)))
        for vals in zip(*(cols[k] for k in METRICS)):
            print(" ".join([f"{int(vals[0]):>{widths[0]}}"] + [f"{v:>{w}.5g}" for v, w in zip(vals[1:], widths[1:])]))
        status = f"DIVERGED at round {div_round}" if diverged else "ok"
        print(f"# {e.config.method} on {e.config.dataset}: {status}; key {e.key[:12]}; {where}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- sweep


def cmd_sweep(a) -> int:
    from .runs import Progress, default_sweep_name, load_entries, report_failures
    from .runs.execute import execute, plugins_manifest

    files, overrides = _split_inputs(a.inputs)
    entries, info = load_entries(files, overrides)
    if not entries:
        raise ValueError("nothing to run")
    store = _store(a)
    name = a.name or default_sweep_name(files, entries)
    if a.dry_run:
        _print_plan(entries, store)
        return EXIT_OK
    manifest = {
        "title": info.get("title", name), "metric": info.get("metric", "test_accuracy"),
        "command": ["byzsim", "sweep", *a.inputs],
        "panels": info.get("panels"),
        "runs": [{"key": e.key, "panel": e.panel, "line": e.line} for e in entries],
    }
    if any(e.plugins for e in entries):
        manifest["plugins"] = plugins_manifest(entries)
    store.write_sweep(name, manifest)
    prog = Progress(label=name, enabled=_progress_enabled(a))
    report = execute(entries, store, jobs=a.jobs, scheduler=a.scheduler, scheduler_timeout=a.scheduler_timeout,
                     force=a.force, progress=prog, replicas=a.replicas, memory_bytes=a.memory_budget,
                     keep_models=a.keep_models or info.get("keep_models", False))
    if not a.quiet:
        print(report.summary(name), file=sys.stderr)
        for o in report.diverged:
            print(f"  diverged: {o.entry.key[:12]} {_describe(o.entry)}", file=sys.stderr)
        print(f"  plot it: byzsim figure --sweep {name} --store {store.root}", file=sys.stderr)
    if report.failures:
        report_failures(report, name)
        print(f"byzsim: {len(report.failures)} of {report.total} runs failed (details in "
              f"{store.failed_dir}); rerunning the command retries them", file=sys.stderr)
        return EXIT_FAILED_RUNS
    return EXIT_OK


def _describe(e) -> str:
    if e.line is not None:
        return f"{e.panel + ' / ' if e.panel else ''}{e.line} seed {e.config.seed}"
    c = e.config
    return f"{c.method} attack={c.attack} seed={c.seed}"


def _print_plan(entries, store) -> None:
    from .runs.store import canonical_config
    from .runs.tables import derive_labels

    labels = derive_labels([canonical_config(e.config) for e in entries])
    for e, (panel, line) in zip(entries, labels):
        state = "stored" if store.has(e.key) else ("failed-before" if store.failure(e.key) else "to run")
        pl = e.panel if e.panel is not None else panel
        ln = e.line if e.line is not None else line
        print(f"{e.key[:12]}  {state:13s}  {pl} | {ln} | seed {e.config.seed}")
    todo = sum(not store.has(e.key) for e in entries)
    print(f"# {len(entries)} runs, {todo} to run, {len(entries) - todo} stored", file=sys.stderr)


# --------------------------------------------------------------------------- figure


def cmd_figure(a) -> int:
    from .runs import RunEntry, default_sweep_name, load_entries, plot_panels, rows_from_store, save_figure, write_csv
    from .runs.plots import reference_lines

    store = _store(a)
    files, overrides = _split_inputs(a.inputs)
    panels, reference = None, None
    if files or overrides:
        if a.sweep:
            raise ValueError("give either config files/overrides or --sweep, not both")
        entries, info = load_entries(files, overrides)
        name = info.get("figure") or default_sweep_name(files, entries)
        title = info.get("title", name)
        metric = info.get("metric", "test_accuracy")
        panels, reference = info.get("panels"), info.get("reference")
    else:
        sweeps = store.sweeps()
        name = a.sweep or (sweeps[-1] if sweeps else None)
        if name is None:
            raise ValueError(f"no sweep stored in {store.root}; run `byzsim sweep ...` first or give config files")
        m = store.read_sweep(name)
        from .plugins import load_plugin

        for p in m.get("plugins", ()):  # the sweep's runs name components of these
            load_plugin(p["name"], f"sweep {name!r}", root=p.get("root"))
        entries = []
        for r in m["runs"]:
            run = store.get(r["key"])
            cfg = run.config if run is not None else None
            if cfg is None:
                continue
            entries.append(RunEntry(cfg, r["key"], r.get("panel"), r.get("line")))
        missing_in_manifest = len(m["runs"]) - len(entries)
        if missing_in_manifest:
            print(f"byzsim: {missing_in_manifest} of {len(m['runs'])} runs of sweep {name!r} are not stored "
                  "(not run yet or failed); plotting the others", file=sys.stderr)
        title, metric = m.get("title", name), m.get("metric", "test_accuracy")
        panels = [tuple(p) for p in m["panels"]] if m.get("panels") else None
    metric = a.metric or metric
    title = a.title or title
    panel_fields = tuple(a.panel.split(",")) if a.panel else ("attack",)
    line_fields = tuple(a.line.split(",")) if a.line else None
    if a.panel or a.line:
        panels = None
    rows, missing = rows_from_store(entries, store, name, panel_fields=panel_fields, line_fields=line_fields)
    if missing and (files or overrides):
        print(f"byzsim: {len(missing)} of {len(entries)} runs are not in the store {store.root}; "
              f"run `byzsim sweep {' '.join(a.inputs)}` first. Plotting the others.", file=sys.stderr)
    if not rows:
        raise ValueError(f"none of the runs is in the store {store.root}")
    if panels:
        have = {r["panel"] for r in rows}
        panels = [(p, t) for p, t in panels if p in have]
    else:
        field = panel_fields[0] if len(panel_fields) == 1 else None
        panels = [(p, f"{field} = {p}" if field and p else p) for p in dict.fromkeys(r["panel"] for r in rows)]
    csv_path = Path(a.csv) if a.csv else Path("results") / f"{name}.csv"
    write_csv(csv_path, rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    cfg0 = entries[0].config
    note = (f"byzsim: {cfg0.dataset}, {cfg0.n_clients} clients ({cfg0.n_byzantine} Byzantine), "
            f"seeds {seeds}; data: {csv_path}")
    found = list(dict.fromkeys(r["method"] for r in rows))
    methods = None
    if line_fields is None and all(e.line is not None for e in entries):  # a spec's line order
        methods = [m for m in dict.fromkeys(e.line for e in entries) if m in found]
        methods += [m for m in found if m not in methods]
    fig = plot_panels(rows, metric=metric, panels=panels, methods=methods, title=title, note=note, band=a.band,
                      reference=reference_lines(reference, metric))
    paths = save_figure(fig, Path(a.out) if a.out else Path("figures") / name)
    print(f"wrote {csv_path}, " + ", ".join(map(str, paths)), file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- experiment


def cmd_experiment(a) -> int:
    import time

    from .runs import load_spec, plot_spec, report_failures, run_spec

    overrides = list(a.overrides) + ([f"rounds={a.rounds}"] if a.rounds is not None else [])
    spec = load_spec(a.spec, overrides)
    t0 = time.perf_counter()
    rows, report = run_spec(spec, jobs=a.jobs, results_dir=a.results, store=a.store, force=a.force,
                            quiet=a.quiet, progress=_progress_enabled(a), scheduler=a.scheduler,
                            replicas=a.replicas, memory_bytes=a.memory_budget, keep_models=a.keep_models)
    t_sim = time.perf_counter() - t0
    csv_path = Path(a.results) / f"{spec.figure}.csv"
    paths = plot_spec(spec, rows, Path(a.figures), csv_path=csv_path)
    if not a.quiet:
        print(report.summary(spec.figure), file=sys.stderr)
        print(f"[{spec.figure}] {t_sim:.1f}s; wrote {csv_path}, " + ", ".join(map(str, paths)), file=sys.stderr)
    if report.failures:
        report_failures(report, spec.figure)
        return EXIT_FAILED_RUNS
    return EXIT_OK


# --------------------------------------------------------------------------- matrix


def cmd_matrix(a) -> int:
    import time

    from .runs import load_matrix, plot_heatmap, report_failures, run_matrix, save_figure

    def labels(text):
        return None if text is None else [x.strip() for x in text.split(",") if x.strip()]

    spec = load_matrix(a.spec, a.overrides, rows=labels(a.rows), columns=labels(a.columns), tiny=a.tiny,
                       rounds=a.rounds)
    if not a.quiet:
        print(f"[{spec.name}] {len(spec.entries)} runs ({len(spec.rows)} rows x {len(spec.columns)} columns x "
              f"{len(spec.entries) // (len(spec.rows) * len(spec.columns))} seeds), {a.jobs} jobs", file=sys.stderr)
    t0 = time.perf_counter()
    rows, report = run_matrix(spec, jobs=a.jobs, results_dir=a.results, store=a.store, force=a.force,
                              quiet=a.quiet, progress=_progress_enabled(a), scheduler=a.scheduler,
                              replicas=a.replicas, memory_bytes=a.memory_budget, keep_models=a.keep_models)
    csv_path = Path(a.results) / f"{spec.name}.csv"
    fig = plot_heatmap(rows, spec.rows, spec.columns, spec.title)
    paths = save_figure(fig, Path(a.figures) / spec.name, formats=("png",), dpi=150)
    if not a.quiet:
        print(report.summary(spec.name), file=sys.stderr)
        print(f"[{spec.name}] {time.perf_counter() - t0:.1f}s; wrote {csv_path}, "
              + ", ".join(map(str, paths)), file=sys.stderr)
    if report.failures:
        report_failures(report, spec.name)
        return EXIT_FAILED_RUNS
    return EXIT_OK


# --------------------------------------------------------------------------- list


def _groups(reg) -> list[tuple[str, list[str], Any]]:
    """(primary name, aliases, component) of a registry (first registered name first)."""
    items = getattr(reg, "_items", None) or {n: reg[n] for n in reg.names()}
    seen: dict[int, list[str]] = {}
    objs: dict[int, Any] = {}
    for n, obj in items.items():
        seen.setdefault(id(obj), []).append(n)
        objs[id(obj)] = obj
    return sorted(((names[0], names[1:], objs[i]) for i, names in seen.items()), key=lambda t: t[0])


def catalogue() -> dict[str, Any]:
    """Everything a config can name: {kind: {name: {...}}} (``byzsim list --json``)."""
    from .aggregators import AGGREGATORS
    from .attacks import ATTACKS
    from .config import FIELDS, METHODS, Config
    from .data import DATASETS
    from .models import MODELS
    from .partition import PARTITIONS
    from .runs.spec import component_parameters

    def params(obj):
        return {k: (None if d is inspect.Parameter.empty else d) for k, d in component_parameters(obj).items()}

    def required(obj):
        return [k for k, d in component_parameters(obj).items() if d is inspect.Parameter.empty]

    out: dict[str, Any] = {"methods": {}}
    for name, aliases, preset in _groups(METHODS):
        out["methods"][name] = {"aliases": aliases, "preset": dict(preset)}
    for kind, reg, field in [("aggregators", AGGREGATORS, "aggregator_params"), ("attacks", ATTACKS, "attack_params"),
                             ("partitions", PARTITIONS, "partition_params"), ("datasets", DATASETS, "dataset_params"),
                             ("models", MODELS, "model_params")]:
        out[kind] = {name: {"aliases": aliases, "parameters": params(obj), "required": required(obj),
                            "config_field": field, "doc": (inspect.getdoc(obj) or "").split("\n")[0]}
                     for name, aliases, obj in _groups(reg)}
    defaults = Config()
    try:  # pre-aggregators (gradient family), when the module is there
        from .preaggregators import PREAGGREGATORS
    except ImportError:
        PREAGGREGATORS = None
    if PREAGGREGATORS is not None:
        out["preaggregators"] = {
            name: {"aliases": aliases, "parameters": params(obj), "required": required(obj),
                   "config_field": "preaggregators", "doc": (inspect.getdoc(obj) or "").split("\n")[0]}
            for name, aliases, obj in _groups(PREAGGREGATORS)}
    out["fields"] = {k: getattr(defaults, k) for k in FIELDS}
    _mark_plugins(out)
    return out


def _mark_plugins(cat: dict[str, Any]) -> None:
    """Mark the components plugins added (``"plugin": name``) and list the plugins."""
    from .plugins import loaded

    plugins = loaded()
    for p in plugins:
        for kind, names in p.added.items():
            for n in names:
                if n in cat.get(kind, {}):
                    cat[kind][n]["plugin"] = p.name
    if plugins:
        cat["plugins"] = {p.name: {"version": p.version, "sha256": p.sha256, "origin": p.origin,
                                   "added": {k: list(v) for k, v in p.added.items()}} for p in plugins}


def cmd_diagnose(a) -> int:
    from .diagnose import main as diagnose_main

    return diagnose_main(a.args)


def cmd_list(a) -> int:
    cat = catalogue()
    kinds = [a.kind] if a.kind else list(cat)
    if a.kind and a.kind not in cat:
        import difflib

        close = difflib.get_close_matches(a.kind, list(cat), n=1)
        raise ValueError(f"unknown kind {a.kind!r}; valid: {', '.join(cat)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    if a.json:
        print(json.dumps({k: cat[k] for k in kinds}, indent=2, default=repr))
        return EXIT_OK


    for kind in kinds:
        print(f"{kind}:")
        for name, d in cat[kind].items():
            if kind == "fields":
                print(f"  {name:22s} default {d!r}")
                continue
            if kind == "plugins":
                added = "; ".join(f"{k} {', '.join(v)}" for k, v in d["added"].items()) or "(registered nothing)"
                print(f"  {name} {d['version'] or ''} ({d['origin']}, sha256 {d['sha256'][:12]}): {added}")
                continue
            alias = f" (alias {', '.join(d['aliases'])})" if d.get("aliases") else ""
            alias += f" [plugin {d['plugin']}]" if d.get("plugin") else ""
            if kind == "methods":
                preset = ", ".join(f"{k}={v}" for k, v in d["preset"].items()) or "(give family, estimator, aggregator)"
                print(f"  {name + alias:34s} {preset}")
                continue
            ps = ", ".join(f"{k} (required)" if k in d["required"] else f"{k}={v!r}" for k, v in d["parameters"].items())
            where = (f"[{{name = \"{name}\", …}}]" if kind == "preaggregators" else d["config_field"])
            print(f"  {name + alias:34s} {where}: {ps or '(no parameters)'}")
        print()
    print("set a parameter with e.g. `attack_params.std=100`; see `byzsim list --json` for all details")
    return EXIT_OK


# --------------------------------------------------------------------------- store


def cmd_store(a) -> int:
    """``byzsim store verify``: check every finished run (checksums, files parse); one
    line per bad run and exit status 1; ``--quarantine`` also moves them aside."""
    store = _store(a)
    keys = store.keys()
    bad = store.verify()
    for key, problem in bad:
        print(f"bad run {key} in {store.root}: {problem}")
        if a.quarantine:
            store.report = lambda line: None
            store.quarantine(key, problem)
    where = f"; moved to {store.quarantine_dir}" if bad and a.quarantine else \
        ("; the next sweep quarantines and reruns them" if bad else "")
    print(f"# {len(keys)} runs checked in {store.root}: {len(keys) - len(bad)} good, {len(bad)} bad{where}",
          file=sys.stderr)
    return EXIT_FAILED_RUNS if bad else EXIT_OK


# --------------------------------------------------------------------------- bench


def cmd_bench(a) -> int:
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    script = root / ("sweep_bench.py" if a.sweep else "run.py")
    if not script.is_file():
        raise ValueError(f"{script} not found: the benchmarks live in the source checkout (benchmarks/)")
    return subprocess.call([sys.executable, str(script), *a.args])


# --------------------------------------------------------------------------- parser

EXAMPLES = {
    "run": """examples:
  byzsim run method=rsa dataset=digits n_clients=10 n_byzantine=2 attack=gaussian attack_params.std=100 rounds=500
  byzsim run my_config.toml lr=0.05 --csv run.csv
""",
    "sweep": """examples:
  byzsim sweep method=rsa,asynrsa-vr attack=gaussian attack_params.std=100 n_byzantine=2 seed=0,1,2 rounds=500 --jobs 2
  byzsim sweep experiments/paper_a/fig2.toml rounds=500 --jobs 2
  byzsim sweep base.toml lr=0.001,0.01,0.1 seed=range(3) --scheduler tcp://127.0.0.1:8786
  byzsim sweep base.toml lr=0.01,0.1 --dry-run       # list the runs and what is stored

A config file is a flat TOML table of config fields (`byzsim list fields`), optionally
with a [grid] table (lr = [0.01, 0.1]), or one figure spec. Runs already in the store
are skipped (--force reruns them); an interrupted sweep resumes when run again.
""",
    "figure": """examples:
  byzsim figure                                   # the most recent sweep in the store
  byzsim figure --sweep rsa-1a2b3c4d --metric train_loss --band std
  byzsim figure experiments/paper_a/fig2.toml rounds=500    # a figure spec, from the store
  byzsim figure method=rsa,asynrsa-vr seed=0,1,2 rounds=500 --line method,lr --panel attack

Never simulates: the runs come from the store (run `byzsim sweep` with the same
arguments first). One panel per --panel value (default: attack), one line per method
(and per any other field that varies), mean over seeds with a band.
""",
    "experiment": """examples:
  byzsim experiment experiments/paper_a/fig2.toml --jobs 2
  byzsim experiment experiments/paper_a/fig2.toml rounds=500 seed=0,1,2

Runs the spec's runs that are not in the store yet, then writes results/<figure>.csv
(from the store) and figures/<figure>.png and .pdf. Running it again simulates nothing;
an interrupted run resumes. `python -m byzsim.experiment SPEC` is the same command.
""",
    "matrix": """examples:
  byzsim matrix experiments/matrix.toml --jobs 2
  byzsim matrix experiments/matrix.toml --tiny --rows mean,Krum --columns none,ALIE
  byzsim matrix experiments/matrix.toml rounds=200 seed=0,1,2

Runs every (row, column, seed) cell not in the store yet, then writes results/<name>.csv
(final test accuracy and training loss per cell and seed) and figures/<name>.png (a
heatmap of the mean final accuracy). Running it again simulates nothing.
""",
    "list": """examples:
  byzsim list
  byzsim list attacks
  byzsim list --json
""",
    "store": """examples:
  byzsim store verify                      # exit 1 and one line per bad run
  byzsim store verify --store /data/store --quarantine
""",
    "bench": """examples:
  byzsim bench                 # per-round costs (benchmarks/run.py, writes BENCHMARKS.md)
  byzsim bench --sweep         # sweep speed-up and store/scheduler overhead (benchmarks/sweep_bench.py)
""",
}


def _add_plugin(p) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this module first: it registers its own components (repeatable; "
                        "also $BYZSIM_PLUGINS and the 'byzsim.plugins' entry points)")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 1") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"invalid value {v}: expected an integer >= 1")
    return v


def _memory(text: str) -> int:
    """``2G``, ``512M``, ``1000000`` (bytes) -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B")
    try:
        v = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid memory {text!r}: e.g. 2G, 512M or a number of bytes") from None
    if not (v >= 1 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"invalid memory {text!r}: expected a positive size")
    return int(v)


def _add_batching(p) -> None:
    p.add_argument("--replicas", type=_positive_int, default=None, metavar="S",
                   help="runs of equal structure advanced as one replica batch (default: automatic, "
                        "16 for small problems, 4 for MNIST-sized ones; 1 = every run alone)")
    p.add_argument("--memory-budget", type=_memory, default=None, metavar="SIZE",
                   help="memory one replica batch may use, e.g. 2G (default: half the available memory "
                        "over the jobs); a budget below one replica is an error")
    p.add_argument("--keep-models", action="store_true",
                   help="store each run's final server model (model.npy; not part of the store key); "
                        "stored runs without one are run again (also: keep_models = true in the spec)")


def _add_spec_run(p) -> None:
    """Options of the commands that run a spec and write its CSV and figure."""
    p.add_argument("--jobs", "-j", type=_jobs, default=1, help="parallel worker processes (default 1; -1 = all cores)")
    _add_batching(p)
    p.add_argument("--rounds", type=_positive_int, default=None, help="override the number of rounds (quick looks)")
    p.add_argument("--results", default="results", help="directory of the CSV (default results/)")
    p.add_argument("--figures", default="figures", help="directory of the figure (default figures/)")
    p.add_argument("--force", action="store_true", help="rerun runs that are already stored")
    p.add_argument("--scheduler", default=None, metavar="ADDR", help="Dask scheduler address (tcp://host:port)")
    _add_common(p)


def _add_common(p, *, store=True):
    _add_plugin(p)
    if store:
        p.add_argument("--store", default=None, metavar="DIR",
                       help="result store directory (default $BYZSIM_STORE or results/store)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    p.add_argument("--progress", action="store_true",
                   help="show progress even when stderr is not a terminal")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(
        prog="byzsim", formatter_class=_Formatter,
        description="Byzantine-robust federated learning simulator: run, sweep, plot.",
        epilog=textwrap.dedent("""\
            examples:
              byzsim list
              byzsim run method=asynrsa-vr attack=same_value n_byzantine=2 rounds=500
              byzsim sweep method=rsa,asynrsa-vr seed=0,1,2 n_byzantine=2 attack=gaussian attack_params.std=100 --jobs 2
              byzsim figure
            run `byzsim COMMAND --help` for each command's options"""),
    )
    ap.add_argument("--version", action="version", version=f"byzsim {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", help="run one config (stored; cached unless --force)", epilog=EXAMPLES["run"],
                       formatter_class=_Formatter, description="Run one config and print its metrics.")
    p.add_argument("inputs", nargs="*", metavar="CONFIG.toml | key=value", help=_CONFIG_HELP)
    p.add_argument("--force", action="store_true", help="rerun even if the run is stored")
    p.add_argument("--no-store", action="store_true", help="do not read or write the result store")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the metrics to this CSV file")
    _add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run a grid of configs in parallel into the store", epilog=EXAMPLES["sweep"],
                       formatter_class=_Formatter,
                       description="Expand configs and overrides into a grid and run what is not stored yet.")
    p.add_argument("inputs", nargs="*", metavar="CONFIG.toml | key=value", help=_CONFIG_HELP)
    p.add_argument("--jobs", "-j", type=_jobs, default=1,
                   help="local worker processes (default 1; -1 = all cores); with --scheduler: tasks in flight")
    p.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="run on a Dask cluster (tcp://host:port; needs byzsim[dask])")
    p.add_argument("--scheduler-timeout", type=_positive_float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler and its workers (default 10)")
    p.add_argument("--name", default=None, help="sweep name in the store (default: <config stem>-<hash>)")
    p.add_argument("--force", action="store_true", help="rerun runs that are already stored")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is stored; run nothing")
    _add_batching(p)
    _add_common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("figure", help="plot stored runs (a sweep, or configs/spec)", epilog=EXAMPLES["figure"],
                       formatter_class=_Formatter,
                       description="Plot a metric against round from the result store.")
    p.add_argument("inputs", nargs="*", metavar="CONFIG.toml | key=value", help=_CONFIG_HELP)
    p.add_argument("--sweep", default=None, metavar="NAME", help="a stored sweep (default: the most recent)")
    p.add_argument("--metric", choices=METRICS[1:], default=None,
                   help="what to plot (default: the spec's, else test_accuracy)")
    p.add_argument("--panel", default=None, metavar="FIELD[,FIELD]", help="one panel per value (default attack)")
    p.add_argument("--line", default=None, metavar="FIELD[,FIELD]",
                   help="one line per value (default method + the other varying fields)")
    p.add_argument("--band", choices=BANDS, default="ci95", help="band over seeds (ci95: the 95 %% t-interval of the mean)")
    p.add_argument("--title", default=None)
    p.add_argument("--out", default=None, metavar="STEM", help="output stem (default figures/<name>): .png and .pdf")
    p.add_argument("--csv", default=None, metavar="PATH", help="long CSV of the plotted data (default results/<name>.csv)")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="result store directory (default $BYZSIM_STORE or results/store)")
    _add_plugin(p)
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("experiment", help="run a figure spec (what is not stored) and draw it",
                       epilog=EXAMPLES["experiment"], formatter_class=_Formatter,
                       description="Run a figure spec's missing runs, then write its CSV and figure.")
    p.add_argument("spec", help="TOML figure spec (see experiments/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides applied to every run (key=v1,v2 adds a grid axis)")
    _add_spec_run(p)
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("matrix", help="run a robustness matrix (rows x columns) and draw its heatmap",
                       epilog=EXAMPLES["matrix"], formatter_class=_Formatter,
                       description="Run a matrix spec's missing cells, then write its CSV and heatmap.")
    p.add_argument("spec", help="TOML matrix spec (experiments/matrix.toml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides applied to every cell (one value each; seed=0,1,2 sets the seeds)")
    p.add_argument("--rows", default=None, metavar="LABEL,...", help="row labels to run (default all)")
    p.add_argument("--columns", default=None, metavar="LABEL,...", help="column labels to run (default all)")
    p.add_argument("--tiny", action="store_true", help="digits, 10 clients, 10 rounds: a smoke test")
    _add_spec_run(p)
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("list", help="registered methods, aggregators, attacks, partitions, datasets, models",
                       epilog=EXAMPLES["list"], formatter_class=_Formatter,
                       description="List what a config can name, with each component's parameters.")
    p.add_argument("kind", nargs="?", default=None,
                   help="methods | aggregators | preaggregators | attacks | partitions | datasets | models | fields")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_plugin(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("store", help="check the result store (sha256 of every run's files)",
                       epilog=EXAMPLES["store"], formatter_class=_Formatter,
                       description="Check every finished run of the result store.")
    p.add_argument("action", choices=["verify"], help="verify: check every stored run")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="result store directory (default $BYZSIM_STORE or results/store)")
    p.add_argument("--quarantine", action="store_true", help="move the bad runs to quarantine/ now")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("bench", help="run the benchmarks (source checkout)", epilog=EXAMPLES["bench"],
                       formatter_class=_Formatter, description="Run benchmarks/run.py or benchmarks/sweep_bench.py.")
    p.add_argument("--sweep", action="store_true", help="the sweep benchmark (speed-up, overheads)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("diagnose", add_help=False,
                       help="x*, σ², δ², Lemma 1's threshold and the papers' bounds for a config (no simulation)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="see `byzsim diagnose --help`")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("partition-plot", help="a partition as a client × class heatmap of counts",
                       formatter_class=_Formatter)
    from . import partition_plot

    partition_plot.add_arguments(p)
    p.set_defaults(func=partition_plot.cmd)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from .runs import StoreError, SweepError, SweepInterrupted
    from .runs.store import StoreWriteError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diagnose"]:  # its own parser (options after the command included)
        from .diagnose import main as diagnose_main

        return diagnose_main(argv[1:])
    ap = build_parser()
    try:
        a = ap.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (one line, status 2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        if hasattr(a, "plugin"):  # before any config is validated
            from .plugins import load_plugins

            load_plugins(a.plugin)
        return a.func(a)
    except SweepInterrupted as e:
        r = e.report
        print(f"\nbyzsim: interrupted; {r.ran} runs finished and stored in this invocation "
              f"({r.skipped} were stored before); run the same command again to run the remaining "
              f"{r.total - r.ran - r.skipped}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\nbyzsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `byzsim list | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except SweepError as e:
        _err(str(e))
        if e.report is not None:
            print(f"byzsim: {e.report.ran} runs finished and stored before the error", file=sys.stderr)
        return EXIT_EXECUTOR
    except StoreWriteError as e:
        _err(str(e))
        return EXIT_WRITE
    except (ValueError, FileNotFoundError, StoreError) as e:
        _err(str(e))
        return EXIT_USAGE
    except OSError as e:  # an output file (CSV, figure) could not be written
        _err(f"cannot write {e.filename or 'a file'}: {e.strerror or e}")
        return EXIT_WRITE


if __name__ == "__main__":
    sys.exit(main())
