"""Specs of every format -> validated run entries (a config and its store key).

Command-line overrides follow the Hydra multirun convention::

    lr=0.1                      one value, parsed as a TOML literal (0.1 is a float)
    method=rsa                  a bare word is a string
    lr=0.01,0.1  seed=0,1,2     comma-separated values: a grid (cartesian product)
    attack_params.std=100       dotted keys set nested parameters
    byzantine_indices=[1,2]     brackets/braces/quotes protect commas: one list value
    seed=range(4)               range(stop) / range(start, stop[, step]): a grid of ints
    byzantine_indices=null      null: unset (back to the default)

Config files (:func:`load_entries`) are flat TOML tables of Config fields with an
optional ``[grid]`` table of ``key = [values]``, merged left to right, or exactly one
figure spec (data, in ``experiments/``)::

    figure = "fig2"                      # output names: results/fig2.csv, figures/fig2.{png,pdf}
    title  = "..."
    metric = "test_accuracy"             # what the figure plots against round
    seeds  = [0]
    keep_models = true                   # optional: store each run's final server model
    [base]                               # Config fields shared by every run
    dataset = "mnist"
    ...
    [[panels]]                           # one subplot each: name, title + Config fields
    name = "a"
    attack = "same_value"
    [[lines]]                            # one curve per panel each: label + Config fields
    label = "AsynRSA-VR"
    method = "asynrsa-vr"
    [reference]                          # optional: a dashed horizontal line in every panel
    label  = "x* of the regular workers"  # its legend entry (the value and row count are appended)
    csv    = "../results/b_theory_on_data.csv"   # relative to the spec file's directory
    column = "test_accuracy"             # the CSV column averaged
    where  = { spec = "fig7", line = "SGD" }     # optional: the rows used (cells compared as text)
    panel_column = "panel"               # optional: each panel uses the rows whose cell is its name
    metric = "test_accuracy"             # optional (default: the spec's metric): drawn only on it

Every run's config is ``base | panel | line | {seed} | overrides``; all are validated
(:func:`byzsim.config.make_config`, and :func:`byzsim.config.check_memory` against this
machine's memory) before any simulation starts.

``[reference]`` (a figure spec; :func:`parse_reference`): the line of a panel is the
arithmetic mean of ``column`` over the CSV rows matching ``where`` (and, with
``panel_column``, the panel's name), read when the spec is loaded, before any run; a
missing file, column or matching row, or a matching cell that is not a finite number, is
an error naming the field.  It only draws: no run's config or store key depends on it.
A relative ``csv`` is relative to the spec file's directory, never to a results
directory: a run with ``--results DIR`` elsewhere still draws the value of the CSV the
spec names (the committed one).  ``load_spec(path, reference=False)`` loads a spec
without reading its reference (for running, or when a later step makes that CSV), and
:func:`load_reference` reads it afterwards, for drawing.

``keep_models`` (top level of a figure spec, a matrix spec or a flat config file; a
boolean, default false) asks the store to keep each run's final server model
(``model.npy``).  It is an output option, not part of any run's config or store key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import os
import re
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..config import Config, check_component_params, check_memory, component_parameters, load_toml, make_config
from ..plugins import Plugin, used_plugins
from ..simulate import METRICS
from .store import canonical_config, config_key
from .tables import flatten_config, format_value

__all__ = [
    "Override", "OverrideError", "RunEntry", "RunSpec", "Spec", "SPEC_KEYS", "Reference", "REFERENCE_KEYS",
    "parse_reference",
    "parse_value", "parse_override", "parse_overrides", "expand_grid", "set_path",
    "component_parameters", "check_component_params", "entries_from_dicts",
    "load_entries", "is_figure_spec", "default_sweep_name",
    "parse_spec", "load_spec", "load_reference", "spec_entries", "keep_models_field",
    "MatrixSpec", "MATRIX_KEYS", "TINY", "is_matrix_spec", "parse_matrix", "load_matrix",
]


class OverrideError(ValueError):
    """A malformed ``key=value`` override."""



# --------------------------------------------------------------------------- overrides

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")
_BARE_RE = re.compile(r"^[A-Za-z0-9_.+\-:/@~]+$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_RANGE_RE = re.compile(r"^range\((.*)\)$")
_OPEN, _CLOSE = "[{(", "]})"


@dataclass(frozen=True)
class Override:
    """``path = values``: one value, or several (a grid axis)."""

    path: tuple[str, ...]
    values: tuple[Any, ...]
    text: str = ""

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def is_grid(self) -> bool:
        return len(self.values) > 1


def _split_top_level(text: str, source: str) -> list[str]:
    """Split on commas outside brackets, braces, parentheses and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                raise OverrideError(f"malformed override {source!r}: unbalanced {ch!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if quote or depth:
        raise OverrideError(f"malformed override {source!r}: unclosed {'quote' if quote else 'bracket'}")
    parts.append("".join(cur))
    return parts


def parse_value(text: str, source: str | None = None) -> Any:
    """One override value: a TOML literal (``0.1``, ``true``, ``[1, 2]``, ``{c = 1.0}``,
    ``"a b"``, ``inf``), ``null`` (None), a Python number (``.5``), or else a bare word
    (a string)."""
    src = source or text
    t = text.strip()
    if not t:
        raise OverrideError(f"malformed override {src!r}: empty value (write key=value)")
    if t in ("null", "None", "none"):
        return None
    try:
        return tomllib.loads(f"v = {t}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if _NUM_RE.match(t):
        return float(t) if any(c in t for c in ".eE") else int(t)
    if _BARE_RE.match(t):
        return t
    raise OverrideError(
        f"malformed override {src!r}: cannot read the value {t!r} (use a TOML literal such as "
        "0.1, true, [1, 2], {std = 100.0}, \"text\", or a bare word)"
    )


def _range_values(arg: str, source: str) -> list[int]:
    try:
        nums = [int(x) for x in arg.split(",")] if arg.strip() else []
    except ValueError:
        nums = []
    if not 1 <= len(nums) <= 3:
        raise OverrideError(f"malformed override {source!r}: use range(stop), range(start, stop) or range(start, stop, step) with integers")
    vals = list(range(*nums))
    if not vals:
        raise OverrideError(f"malformed override {source!r}: the range is empty")
    return vals


def parse_override(text: str) -> Override:
    """Parse ``key=value`` / ``key=v1,v2`` / ``a.b=v`` / ``key=range(…)``."""
    if "=" not in text:
        raise OverrideError(f"malformed override {text!r}: expected key=value (e.g. lr=0.1 or seed=0,1,2)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if key.startswith(("+", "~")) or key.endswith("+"):
        raise OverrideError(f"malformed override {text!r}: only key=value is supported (no +key, ~key, key+=)")
    if not _KEY_RE.match(key):
        raise OverrideError(f"malformed override {text!r}: bad key {key!r} (expected name or name.param)")
    values: list[Any] = []
    for item in _split_top_level(raw, text):
        m = _RANGE_RE.match(item.strip())
        if m:
            values.extend(_range_values(m.group(1), text))
        else:
            values.append(parse_value(item, text))
    return Override(tuple(key.split(".")), tuple(values), text)


def parse_overrides(texts: Iterable[str | Override]) -> list[Override]:
    """Parse overrides.  A key given twice (``lr=0.1 lr=0.2``) and a value listed twice
    in one grid axis (``seed=0,0``) are errors: either would silently drop runs."""
    out: dict[tuple[str, ...], Override] = {}
    for t in texts:
        o = t if isinstance(t, Override) else parse_override(t)
        if o.path in out and out[o.path] is not o:
            raise OverrideError(f"override {o.key!r} given twice ({out[o.path].text or o.key} and "
                                f"{o.text or o.key}); give it once (key=v1,v2 for several values)")
        dup = [v for i, v in enumerate(o.values) if any(_same(v, w) for w in o.values[:i])]
        if dup:
            raise OverrideError(f"override {o.text or o.key!r}: value {dup[0]!r} listed twice in the grid "
                                f"of {o.key!r} (each value is one run)")
        out[o.path] = o
    return list(out.values())


def _same(a: Any, b: Any) -> bool:
    """Equal override values (``1`` and ``1.0`` are the same run; ``True`` is not ``1``)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def set_path(d: dict, path: Sequence[str], value: Any) -> None:
    """``d[a][b] = value`` for ``path = (a, b)``; intermediate tables are created."""
    cur = d
    for i, k in enumerate(path[:-1]):
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        elif not isinstance(nxt, Mapping):
            where = ".".join(path[: i + 1])
            raise OverrideError(
                f"cannot set {'.'.join(path)!r}: {where!r} is {nxt!r}, not a table of parameters"
            )
        else:
            nxt = cur[k] = dict(nxt)
        cur = nxt
    if value is None:
        cur.pop(path[-1], None)
    else:
        cur[path[-1]] = value


def expand_grid(base: Mapping[str, Any], overrides: Sequence[Override]) -> list[dict]:
    """All combinations of the overrides' values applied to ``base`` (first override
    varies slowest)."""
    out = []
    for combo in itertools.product(*(o.values for o in overrides)):
        d = copy.deepcopy(dict(base))
        for o, v in zip(overrides, combo):
            set_path(d, o.path, v)
        out.append(d)
    return out


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class RunEntry:
    """One run of a sweep: a validated config, its store key, optional plot labels."""

    config: Config
    key: str
    panel: str | None = None
    line: str | None = None
    plugins: tuple[Plugin, ...] = ()  # the loaded plugins whose components the config names

    @classmethod
    def of(cls, cfg: Config, panel: str | None = None, line: str | None = None) -> "RunEntry":
        plugins = used_plugins(canonical_config(cfg))
        return cls(cfg, config_key(cfg, [p.ref() for p in plugins]), panel, line, plugins)


def _make(d: Mapping[str, Any], where: str = "") -> Config:
    try:
        cfg = make_config(**d)  # validates every field and component parameter
        check_memory(cfg)  # a run that cannot fit in this machine's memory is bad input too
    except ValueError as e:
        raise ValueError(f"{where}{e}") from None
    return cfg


def entries_from_dicts(dicts: Iterable[Mapping[str, Any]]) -> list[RunEntry]:
    """Validate raw config dicts (all of them, before anything runs) and drop duplicates."""
    out, seen = [], set()
    for d in dicts:
        e = RunEntry.of(_make(d))
        if e.key not in seen:
            seen.add(e.key)
            out.append(e)
    return out


def is_figure_spec(raw: Mapping[str, Any]) -> bool:
    return any(k in raw for k in ("figure", "panels", "lines", "base"))


def load_entries(files: Sequence[str | os.PathLike], overrides: Sequence[str | Override]) -> tuple[list[RunEntry], dict]:
    """Config files + overrides -> validated run entries and a description.

    ``files``: flat config tables (Config fields; an optional ``[grid]`` table maps keys to
    lists of values) merged left to right, or exactly one figure spec or matrix spec (see
    :func:`parse_spec`, :func:`parse_matrix`).  ``overrides`` apply last (a grid key on the command line
    replaces the file's).  Returns ``(entries, info)`` with ``info`` holding ``title``,
    ``metric``, ``figure`` (for a figure spec), ``panels`` (ordered ``(name, title)``) and
    ``lines`` (ordered labels) when known, ``reference`` (a figure spec's
    :class:`Reference` or None), and ``keep_models`` (:func:`keep_models_field` of any
    file).
    """
    ovs = parse_overrides(overrides)
    raws = [(str(f), load_toml(f)) for f in files]
    keep = any(keep_models_field(r, f) for f, r in raws)
    raws = [(f, {k: v for k, v in r.items() if k != "keep_models"}) for f, r in raws]
    matrices = [(f, r) for f, r in raws if is_matrix_spec(r)]
    if matrices:
        if len(raws) != 1:
            raise ValueError(f"a matrix spec ({matrices[0][0]}) must be the only config file")
        m = parse_matrix(matrices[0][1], matrices[0][0], ovs)
        entries = list({e.key: e for e in m.entries}.values())
        return entries, {"title": m.title, "lines": list(m.columns), "keep_models": keep}
    specs = [(f, r) for f, r in raws if is_figure_spec(r)]
    if specs:
        if len(raws) != 1:
            raise ValueError(f"a figure spec ({specs[0][0]}) must be the only config file")
        spec = parse_spec(specs[0][1], specs[0][0], overrides=ovs, base_dir=Path(specs[0][0]).parent)
        entries = [RunEntry.of(r.config, r.panel, r.label) for r in spec.runs]
        entries = list({e.key: e for e in entries}.values())
        info = {"figure": spec.figure, "title": spec.title, "metric": spec.metric,
                "panels": [(str(p.get("name", "")), str(p.get("title", p.get("name", "")))) for p in spec.panels],
                "lines": list(dict.fromkeys(e.line for e in entries)), "keep_models": keep,
                "reference": spec.reference}
        return entries, info
    base: dict[str, Any] = {}
    grid: dict[tuple[str, ...], Override] = {}
    for f, raw in raws:
        raw = dict(raw)
        g = raw.pop("grid", {})
        if not isinstance(g, Mapping):
            raise ValueError(f"{f}: [grid] must be a table of key = [values]")
        base.update(raw)
        for k, v in flatten_config(g).items():
            vals = tuple(v) if isinstance(v, tuple) else (v,)
            if not vals:
                raise ValueError(f"{f}: [grid] {k} is an empty list")
            grid[tuple(k.split("."))] = Override(tuple(k.split(".")), vals, f"{k} (grid in {f})")
    for o in ovs:
        grid.pop(o.path, None)
        grid[o.path] = o
    entries = entries_from_dicts(expand_grid(base, list(grid.values())))
    return entries, {"keep_models": keep}


def default_sweep_name(files: Sequence[str | os.PathLike], entries: Sequence[RunEntry]) -> str:
    """``<stem of the first config file>-<8 hex of the run keys>`` (same runs, same name)."""
    stem = Path(files[0]).stem if files else "sweep"
    h = hashlib.sha256("".join(sorted(e.key for e in entries)).encode()).hexdigest()[:8]
    return f"{stem}-{h}"


# --------------------------------------------------------------------------- figure specs


SPEC_KEYS = {"figure", "title", "metric", "seeds", "base", "panels", "lines", "notes", "keep_models", "reference"}
#: fields of a figure spec's ``[reference]`` table (``label``, ``csv`` and ``column`` required)
REFERENCE_KEYS = ("label", "csv", "column", "where", "panel_column", "metric")


def keep_models_field(raw: Mapping[str, Any], source: str = "<spec>") -> bool:
    """The optional top-level ``keep_models`` of a spec or config file (default false):
    keep each run's final server model in the store.  An output option, never part of
    a config or its store key."""
    v = raw.get("keep_models", False)
    if not isinstance(v, bool):
        raise ValueError(f"{source}: invalid spec field 'keep_models' = {v!r}: expected true or false")
    return v


@dataclass(frozen=True)
class Reference:
    """A spec's ``[reference]``: one dashed horizontal line per panel, the mean of a
    results-CSV column over the rows that match (plot only, never part of a run).

    ``values`` and ``rows``: per panel name, the mean and the number of rows averaged;
    ``source``: where the numbers come from, for the figure's note."""

    label: str
    metric: str
    values: Mapping[str, float]
    rows: Mapping[str, int]
    source: str


def _reference_error(source: str, field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{source}: invalid spec field 'reference.{field}' = {value!r}: {why}")


def parse_reference(raw: Any, panels: Sequence[str], metric: str, source: str = "<spec>",
                    base_dir: str | Path | None = None) -> Reference:
    """Read a ``[reference]`` table against its CSV (see the module docstring).

    ``panels``: the spec's panel names; ``metric``: the spec's (the default of the
    table's ``metric``); ``base_dir``: what a relative ``csv`` path is relative to (the
    spec file's directory; default the working directory).  The value of a panel is the
    arithmetic mean of ``column`` over the CSV rows whose cells equal every ``where``
    value (compared as text) and, with ``panel_column``, whose cell in that column is
    the panel's name.  A missing file, column or match, or a matching cell that is not
    a finite number, is a ``ValueError`` naming the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: invalid spec field 'reference' = {raw!r}: expected a table "
                         f"with {', '.join(REFERENCE_KEYS)}")
    unknown = sorted(set(raw) - set(REFERENCE_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown [reference] key(s) {unknown}; valid keys: {list(REFERENCE_KEYS)}")
    for k in ("label", "csv", "column"):
        if not (isinstance(raw.get(k), str) and raw[k].strip()):
            raise _reference_error(source, k, raw.get(k), "required, a non-empty string")
    for k in ("panel_column", "metric"):
        if k in raw and not (isinstance(raw[k], str) and raw[k].strip()):
            raise _reference_error(source, k, raw[k], "expected a non-empty string")
    ref_metric = raw.get("metric", metric)
    if ref_metric not in METRICS[1:]:
        raise _reference_error(source, "metric", ref_metric, f"valid choices: {', '.join(METRICS[1:])}")
    where = raw.get("where", {})
    if not isinstance(where, Mapping) or not all(isinstance(v, (str, int, float)) for v in where.values()):
        raise _reference_error(source, "where", where, "expected a table of column = value (strings or numbers)")
    path = Path(raw["csv"])
    if not path.is_absolute():
        path = Path(base_dir if base_dir is not None else ".") / path
    if not path.is_file():
        raise _reference_error(source, "csv", raw["csv"], f"no such file {str(path)!r} (a relative path is "
                               "relative to the spec file's directory)")
    import csv

    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        table = list(reader)
    column, pcol = raw["column"], raw.get("panel_column")
    for field, name in [("column", column), ("panel_column", pcol), *((f"where.{k}", k) for k in where)]:
        if name is not None and name not in header:
            raise _reference_error(source, field, name, f"not a column of {path}; columns: {header}")
    # (line number in the file, row): the header is line 1
    picked = [(i + 2, r) for i, r in enumerate(table) if all(r[k] == str(v) for k, v in where.items())]
    values, counts = {}, {}
    for p in panels:
        mine = [(n, r) for n, r in picked if pcol is None or r[pcol] == p]
        if not mine:
            in_panel = f" and {pcol} = {p!r} (the panel's name)" if pcol else ""
            raise _reference_error(source, "where", dict(where), f"no row of {path} matches it{in_panel}")
        vals = []
        for n, r in mine:
            try:
                v = float(r[column])
            except (TypeError, ValueError):  # a short row's missing cell is None
                v = math.nan
            if not math.isfinite(v):
                raise _reference_error(source, "column", column, f"line {n} of {path} (a matching row) holds "
                                       f"{r[column]!r}, not a finite number; narrow 'where'")
            vals.append(v)
        values[p], counts[p] = math.fsum(vals) / len(vals), len(vals)
    cond = ", ".join(f"{k} = {v}" for k, v in where.items())
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    text = (f"reference (dashed): mean of {column} over the rows of {shown}"
            + (f" with {cond}" if cond else "") + (f", each panel's by its {pcol!r} column" if pcol else ""))
    return Reference(str(raw["label"]), ref_metric, values, counts, text)


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
    keep_models: bool = False  # store each run's final server model (not part of the key)
    reference: Reference | None = None  # a dashed line per panel (plot only, not part of any key)


def parse_spec(raw: dict[str, Any], source: str = "<spec>", overrides: Sequence = (),
               base_dir: str | Path | None = None) -> Spec:
    """Validate a spec dict and expand it into runs (every config validated).

    ``overrides`` (``key=value`` strings or :class:`byzsim.sweep.Override`) apply to every
    run, after the spec's own fields; a grid override multiplies the runs, and its value
    is appended to the line label (``seed`` excepted: seeds are the band of a line).
    ``base_dir``: the directory a ``[reference]`` csv path is relative to (the spec
    file's; default the working directory); the reference is read before any run."""
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown spec key(s) {sorted(unknown)}; valid keys: {sorted(SPEC_KEYS)}")
    if "figure" not in raw:
        raise ValueError(f"{source}: missing 'figure' (the output name)")
    metric = str(raw.get("metric", "test_accuracy"))
    if metric not in METRICS[1:]:
        raise ValueError(f"{source}: unknown metric {metric!r}; valid choices: {', '.join(METRICS[1:])}")
    ovs = parse_overrides(overrides)
    labelled = [o for o in ovs if o.is_grid and o.path != ("seed",)]
    base = dict(raw.get("base", {}))
    panels = tuple(raw.get("panels") or [{"name": ""}])
    lines = tuple(raw.get("lines") or [{"label": base.get("method", "run")}])
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)):
        raise ValueError(f"{source}: invalid spec field 'seeds' = {seeds!r}: expected a non-empty list of "
                         "integers >= 0")
    if len(set(seeds)) != len(seeds):
        dup = sorted({x for x in seeds if seeds.count(x) > 1})
        raise ValueError(f"{source}: invalid spec field 'seeds' = {seeds!r}: seed(s) {dup} listed twice "
                         "(each seed is one run of every line)")
    if any(o.path == ("seed",) for o in ovs):
        seeds = [None]  # the override sets the seeds
    reference = None
    if "reference" in raw:
        reference = parse_reference(raw["reference"], [str(p.get("name", "")) for p in panels], metric,
                                    source, base_dir)
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
                        label += ", " + ", ".join(f"{o.key}={format_value(_get_path(cd, o.path))}" for o in labelled)
                    runs.append(RunSpec(str(panel.get("name", "")), label, int(cfg.seed), cfg))
    return Spec(
        figure=str(raw["figure"]),
        title=str(raw.get("title", raw["figure"])),
        metric=metric,
        panels=panels,
        lines=lines,
        runs=tuple(runs),
        keep_models=keep_models_field(raw, source),
        reference=reference,
    )


def _get_path(d: Mapping, path: Sequence[str]) -> Any:
    for k in path:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


def load_spec(path: str | Path, overrides: Sequence = (), *, reference: bool = True) -> Spec:
    """:func:`parse_spec` of a TOML file (a ``[reference]`` csv relative to its directory).

    ``reference=False``: the ``[reference]`` table is not read (``spec.reference`` is
    None): the runs do not depend on it, and its CSV may not exist yet;
    :func:`load_reference` reads it when the spec is drawn."""
    raw = load_toml(path)
    if not reference:
        raw = {k: v for k, v in raw.items() if k != "reference"}
    return parse_spec(raw, str(path), overrides, base_dir=Path(path).parent)


def load_reference(spec: Spec, path: str | Path) -> Spec:
    """``spec`` (loaded from ``path``) with the ``[reference]`` of that file read now,
    against the spec's panels and metric (:func:`parse_reference`, a relative csv path
    relative to the file's directory); ``spec`` itself when the file has none."""
    raw = load_toml(path)
    if "reference" not in raw:
        return spec
    ref = parse_reference(raw["reference"], [str(p.get("name", "")) for p in spec.panels], spec.metric,
                          str(path), Path(path).parent)
    return dataclasses.replace(spec, reference=ref)


def spec_entries(spec: Spec) -> list[RunEntry]:
    """The spec's runs as :class:`byzsim.sweep.RunEntry` (with panel and line labels)."""
    return [RunEntry.of(r.config, r.panel, r.label) for r in spec.runs]


# --------------------------------------------------------------------------- matrix specs

MATRIX_KEYS = {"name", "title", "seeds", "base", "rows", "columns", "notes", "keep_models"}
#: ``--tiny``: scikit-learn's digits, 10 clients (2 Byzantine), 10 rounds; a smoke test.
TINY = dict(
    dataset="digits", dataset_params={}, n_clients=10, n_byzantine=2, byzantine_indices=[0, 5],
    batch_size=8, rounds=10, eval_every=10, train_eval_samples=0,
)


@dataclass(frozen=True)
class MatrixSpec:
    """A robustness matrix: one run per (row, column, seed); ``entries`` carry the row
    label as ``panel`` and the column label as ``line``."""

    name: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    entries: tuple[RunEntry, ...]
    keep_models: bool = False  # store each run's final server model (not part of the key)


def is_matrix_spec(raw: Mapping[str, Any]) -> bool:
    return "rows" in raw and "columns" in raw


def _select(tables: Sequence[dict], want: Sequence[str] | None, what: str) -> list[dict]:
    if want is None:
        return list(tables)
    labels = [t["label"] for t in tables]
    missing = sorted(set(want) - set(labels))
    if missing:
        raise ValueError(f"unknown {what} label(s) {missing}; valid: {labels}")
    return [t for t in tables if t["label"] in want]


def parse_matrix(raw: Mapping[str, Any], source: str = "<matrix>", overrides: Sequence = (), *,
                 rows: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                 tiny: bool = False, rounds: int | None = None) -> MatrixSpec:
    """Validate a matrix spec and expand it into runs: ``base | row | column | {seed} |
    overrides`` for every (row, column, seed), all validated before anything runs.

    The spec has ``name``, ``title``, ``seeds``, a ``[base]`` table of Config fields, and
    ``[[rows]]`` and ``[[columns]]`` lists (a ``label`` plus Config fields each).
    ``rows``/``columns`` select labels; ``tiny`` swaps in :data:`TINY`; ``rounds`` sets
    the rounds (and caps ``eval_every``).  An override takes one value (``seed`` may be
    a grid: the seeds of every cell)."""
    unknown = set(raw) - MATRIX_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown matrix spec key(s) {sorted(unknown)}; valid keys: {sorted(MATRIX_KEYS)}")
    for key in ("rows", "columns"):
        if not raw.get(key):
            raise ValueError(f"{source}: the spec needs a non-empty [[{key}]] list")
        for t in raw[key]:
            if "label" not in t:
                raise ValueError(f"{source}: every [[{key}]] entry needs a 'label'; got {t!r}")
    ovs = parse_overrides(overrides)
    grid = [o.key for o in ovs if o.is_grid and o.path != ("seed",)]
    if grid:
        raise ValueError(f"a matrix override takes one value (seed excepted), got a grid for {', '.join(grid)}")
    base = dict(raw.get("base", {}))
    if tiny:
        base.update(TINY)
    if rounds is not None:
        base["rounds"] = rounds
        base["eval_every"] = min(base.get("eval_every", rounds), rounds)
    seeds = [None] if any(o.path == ("seed",) for o in ovs) else raw.get("seeds", [0])
    sel_rows = _select(raw["rows"], rows, "row")
    sel_cols = _select(raw["columns"], columns, "column")
    entries = []
    for r in sel_rows:
        for c in sel_cols:
            for seed in seeds:
                merged = {**base, **{k: v for k, v in r.items() if k != "label"},
                          **{k: v for k, v in c.items() if k != "label"}}
                if seed is not None:
                    merged["seed"] = seed
                where = f"{source}: row {r['label']!r}, column {c['label']!r}: "
                for d in expand_grid(merged, ovs):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        entries.append(RunEntry.of(_make(d, where), str(r["label"]), str(c["label"])))
    name = str(raw.get("name", "matrix")) + ("_tiny" if tiny else "")
    title = str(raw.get("title", name)) + (" [--tiny: digits, 10 clients]" if tiny else "")
    if rounds is not None:
        title += f" [rounds={rounds}]"
    return MatrixSpec(name, title, tuple(str(r["label"]) for r in sel_rows),
                      tuple(str(c["label"]) for c in sel_cols), tuple(entries),
                      keep_models=keep_models_field(raw, source))


def load_matrix(path: str | Path, overrides: Sequence = (), **kw) -> MatrixSpec:
    """:func:`parse_matrix` of a TOML file (keywords as there)."""
    return parse_matrix(load_toml(path), str(path), overrides, **kw)
