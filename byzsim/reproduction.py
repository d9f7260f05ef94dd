"""REPRODUCTION.md's numbers, generated: result tables and the claims table from the CSVs.

The figures' long CSVs (one row per run and evaluation: ``figure, panel, method, seed,
round, <metrics>, diverged``) are committed under ``experiments/results/``.  A manifest,
``experiments/reproduction.toml``, names

- ``[[tables]]``: rows = line labels (methods), columns = selectors of one figure, panel,
  round (default: each run's last evaluation) and metric;
- ``[[claims]]``: one claim a paper makes about a figure, with a check that decides it;
- ``[[scripts]]``: diagnostics that write a CSV of their own (``path``, ``output``, and
  ``args``, default ``["{output}"]``, with the placeholders of :data:`SCRIPT_PLACEHOLDERS`
  filled in by :func:`script_args`), run when that CSV is missing.

:func:`render` turns the manifest and the CSVs into Markdown blocks, and
:func:`update_document` writes each block between its markers in REPRODUCTION.md::

    <!-- generated: table a_fig2 -->
    ...
    <!-- end generated -->

so the prose around the tables stays hand-written and the numbers cannot drift from the
results: ``tests/test_reproduction.py`` fails when the committed document differs from
what the committed CSVs give.

Statistics.  A cell is the mean over seeds ± the half-width of its 95 % confidence
interval, ``t_{0.975, k−1} · s / √k`` (Student's t, k seeds, s the sample standard
deviation).  Two methods are called different only when Welch's two-sided t-test gives
p < 0.05 (:data:`ALPHA`); otherwise they are "not separated".  A run that diverged
contributes its last finite value and is counted in the cell (``2 div.``).

>>> summary([0.80, 0.82, 0.81])  # doctest: +ELLIPSIS
Summary(mean=0.81, half_width=0.0248..., n=3, diverged=0)
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from .registry import Registry

__all__ = [
    "ALPHA", "Summary", "Results", "summary", "welch_p", "load_results", "render",
    "render_table", "render_claims", "update_document", "CHECKS", "ManifestError",
    "load_manifest", "regenerate", "main", "SCRIPT_PLACEHOLDERS", "script_args",
]

#: significance level of every "different" in the generated text
ALPHA = 0.05

_BEGIN = re.compile(r"<!-- generated: (table|claims) ([\w.-]+) -->")
_END = "<!-- end generated -->"


class ManifestError(ValueError):
    """A manifest entry that names something the results do not hold (or is malformed)."""


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Summary:
    """Mean over seeds, 95 % CI half-width (NaN for one seed), seeds, diverged runs."""

    mean: float
    half_width: float
    n: int
    diverged: int = 0

    def format(self, digits: int = 4) -> str:
        if self.n == 0:
            return "–"
        fmt = "g" if abs(self.mean) >= 1e4 else "f"  # large values: significant digits
        s = f"{self.mean:.{digits}{fmt}}"
        s += f" ± {self.half_width:.{digits}{fmt}}" if self.n > 1 else " (1 seed)"
        if self.diverged:
            s += f" ({self.diverged} div.)"
        return s


def summary(values: Sequence[float], diverged: int = 0) -> Summary:
    """Mean and 95 % t-interval half-width of ``values`` (one per seed)."""
    v = np.asarray(values, dtype=float)
    n = int(v.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, diverged)
    m = float(v.mean())
    if n == 1:
        return Summary(m, math.nan, 1, diverged)
    hw = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Summary(round(m, 12), hw, n, diverged)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (1.0 when both samples are constant and equal,
    0.0 when constant and different)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return math.nan
    tiny = 1e-12 * max(1.0, float(np.abs(np.concatenate([a, b])).max()))
    if a.std() <= tiny and b.std() <= tiny:  # constant samples (up to round-off)
        return 1.0 if abs(a.mean() - b.mean()) <= tiny else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    """The CSV rows of some figures: ``values(figure, panel, method, metric, round)``
    gives one value per seed."""

    rows: dict[str, list[dict]]
    source: str = "experiments/results"

    def _select(self, figure: str, panel: str, method: str, where: str) -> dict[str, list[dict]]:
        if figure not in self.rows:
            raise ManifestError(f"{where}: figure {figure!r} is not in the results "
                                f"({self.source}); available: {', '.join(sorted(self.rows)) or '(none)'}")
        rows = self.rows[figure]
        panels = sorted({r["panel"] for r in rows})
        if panel not in panels:
            raise ManifestError(f"{where}: figure {figure!r} has no panel {panel!r}; panels: {panels}")
        methods = sorted({r["method"] for r in rows if r["panel"] == panel})
        if method not in methods:
            raise ManifestError(f"{where}: figure {figure!r}, panel {panel!r} has no method {method!r}; "
                                f"methods: {methods}")
        by_seed: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["panel"] == panel and r["method"] == method:
                by_seed[r["seed"]].append(r)
        return by_seed

    def values(self, figure: str, panel: str, method: str, metric: str = "test_accuracy",
               round: int | None = None, where: str = "") -> tuple[list[float], int]:
        """``(values, diverged)``: per seed, the metric at ``round`` (``None``: the run's
        last finite evaluation); ``diverged`` counts runs that diverged before it."""
        out, div = [], 0
        for seed, rs in sorted(self._select(figure, panel, method, where).items()):
            rs = sorted(rs, key=lambda r: int(r["round"]))
            if metric not in rs[0]:
                raise ManifestError(f"{where}: metric {metric!r} is not a column of {figure}")
            finite = [r for r in rs if _finite(r[metric])]
            diverged = any(str(r.get("diverged")) == "1" for r in rs)
            at = finite if round is None else [r for r in finite if int(r["round"]) == round]
            if not at and not (diverged and finite):
                raise ManifestError(f"{where}: {figure} {method!r} seed {seed} has no finite "
                                    f"{metric} at round {round if round is not None else 'end'}")
            if not at:  # stopped (diverged) before that round: its last finite value
                at = finite
            div += diverged and (round is None or not any(int(r["round"]) == round for r in finite))
            out.append(float(at[-1][metric]))
        return out, div


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def load_results(directory: str | Path) -> Results:
    """Every ``<figure>.csv`` of ``directory``."""
    from .runs.tables import read_csv

    directory = Path(directory)
    return Results({p.stem: read_csv(p) for p in sorted(directory.glob("*.csv"))}, str(directory))


# --------------------------------------------------------------------------- tables


def _column(col: Mapping[str, Any], where: str) -> tuple[str, str, str, int | None, str]:
    try:
        figure = col["figure"]
    except KeyError:
        raise ManifestError(f"{where}: a column needs 'figure'") from None
    return (figure, str(col.get("panel", "")), str(col.get("metric", "test_accuracy")),
            col.get("round"), str(col.get("label", figure)))


def render_table(table: Mapping[str, Any], results: Results) -> str:
    """A Markdown table: one row per method, one column per selector; each cell
    :meth:`Summary.format`."""
    name = table.get("name", "?")
    where = f"reproduction.toml, table {name!r}"
    cols = [_column(c, f"{where}, column {i}") for i, c in enumerate(table.get("columns", []))]
    if not cols:
        raise ManifestError(f"{where}: needs at least one [[tables.columns]]")
    digits = int(table.get("digits", 4))
    head = "| " + str(table.get("corner", "method")) + " | " + " | ".join(c[4] for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for method in table.get("rows", []):
        cells = []
        for figure, panel, metric, rnd, _ in cols:
            vals, div = results.values(figure, panel, method, metric, rnd, where)
            cells.append(summary(vals, div).format(digits))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _group_cell(values: Sequence[str], column: str, key: tuple, where: str, digits: int) -> str:
    """Mean ± 95 % t-interval of one group's ``values``; "—" when the column is empty (or
    NaN) in every row of the group (a quantity that does not exist for it, e.g. a bound a
    method does not have); an error when it is empty in some rows only."""
    empty = [v in ("", None) for v in values]
    if all(e or str(v).strip().lower() == "nan" for e, v in zip(empty, values)):
        return "—"
    if any(empty):
        raise ManifestError(f"{where}: column {column!r} is empty in {sum(empty)} of the {len(values)} rows "
                            f"of group {key}")
    return summary([float(v) for v in values]).format(digits)


def render_rows_table(table: Mapping[str, Any], results: Results) -> str:
    """A Markdown table of rows of a committed CSV that is not a figure's long CSV (a
    script's summary): ``source`` (the CSV's stem), ``where`` (column = value filters),
    ``columns`` (shown in order), ``ci`` (column -> its half-width column, shown as
    ``value ± half-width``), ``digits``; ``group`` (columns): one line per group, the other
    columns as mean ± 95 % t-interval over the group's rows (one per seed)."""
    name = table.get("name", "?")
    where = f"reproduction.toml, table {name!r}"
    src = table["source"]
    if src not in results.rows:
        raise ManifestError(f"{where}: source {src!r} is not in the results ({results.source})")
    rows = [r for r in results.rows[src]
            if all(str(r.get(k)) == str(v) for k, v in table.get("where", {}).items())]
    if not rows:
        raise ManifestError(f"{where}: no row of {src!r} matches {table.get('where')}")
    cols, ci, digits = list(table["columns"]), dict(table.get("ci", {})), int(table.get("digits", 3))
    group = list(table.get("group", []))
    missing = [c for c in cols + list(ci.values()) + group if c not in rows[0]]
    if missing:
        raise ManifestError(f"{where}: {src!r} has no column(s) {missing}; columns: {list(rows[0])}")
    if group:
        groups: dict = {}
        for r in rows:
            groups.setdefault(tuple(r[g] for g in group), []).append(r)
        lines = ["| " + " | ".join(table.get("labels", cols)) + " |", "|" + "---|" * len(cols)]
        for key, rs in groups.items():
            cells = [dict(zip(group, key))[c] if c in group else _group_cell([r[c] for r in rs], c, key, where, digits)
                     for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def cell(r, c):
        v = r[c]
        try:
            x = float(v)
        except ValueError:
            return v
        if x.is_integer() and c not in ci and "." not in v:
            return v
        out = f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.{digits}f}"
        if c in ci:
            out += f" ± {float(r[ci[c]]):.{digits}g}"
        return out

    lines = ["| " + " | ".join(table.get("labels", cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- claims

#: claim checks: ``check(claim, results, where) -> (verdict, evidence)``
CHECKS: Registry = Registry("claim check")


def _panels(claim: Mapping[str, Any]) -> list[str]:
    p = claim.get("panels", claim.get("panel", [""]))
    return [str(x) for x in (p if isinstance(p, list) else [p])]


def _fmt_s(method: str, s: Summary) -> str:
    return f"{method} {s.format(3)}"


def _tags(tags: Sequence[str]) -> str:
    """``["Gm@a", "Med@a", "Gm@b"]`` -> ``"Gm (a, b), Med (a)"``."""
    panels: dict[str, list[str]] = {}
    for t in tags:
        m, _, p = t.partition("@")
        panels.setdefault(m, []).append(p)
    return ", ".join(m + (f" ({', '.join(ps)})" if any(ps) else "") for m, ps in panels.items())


@CHECKS.register("better")
def _better(claim, results: Results, where: str) -> tuple[str, str]:
    """``method`` is better (``higher = true``, default; ``false``: lower) than each of
    ``others`` in every panel: holds when every pair differs in that direction (Welch
    p < ALPHA); "reversed against X" names the others that differ the other way."""
    method, others = claim["method"], list(claim["others"])
    metric = claim.get("metric", "test_accuracy")
    sign = 1 if claim.get("higher", True) else -1
    wins, losses, ties, ev = [], [], [], []
    for panel in _panels(claim):
        a, da = results.values(claim["figure"], panel, method, metric, claim.get("round"), where)
        sa = summary(a, da)
        parts = [_fmt_s(method, sa)]
        for o in others:
            b, db = results.values(claim["figure"], panel, o, metric, claim.get("round"), where)
            p = welch_p(a, b)
            d = sign * (np.mean(a) - np.mean(b))
            tag = f"{o}@{panel}" if panel else o
            (wins if p < ALPHA and d > 0 else losses if p < ALPHA else ties).append(tag)
            parts.append(f"{_fmt_s(o, summary(b, db))} (p = {p:.2g})")
        ev.append((f"({panel}) " if panel else "") + "; ".join(parts))
    if not losses and not ties:
        verdict = "holds"
    elif not wins:
        verdict = "does not hold" + (f": reversed against {_tags(losses)}" if losses else ": not separated")
    else:
        verdict = f"holds only against {_tags(wins)}"
        if ties:
            verdict += f"; not separated from {_tags(ties)}"
        if losses:
            verdict += f"; reversed against {_tags(losses)}"
    return verdict, " — ".join(ev)


def _threshold(claim, results: Results, where: str, below: bool) -> tuple[str, str]:
    methods = claim.get("methods", [claim.get("method")])
    metric = claim.get("metric", "test_accuracy")
    thr = float(claim["value"])
    ok, bad, ev = [], [], []
    for panel in _panels(claim):
        for m in methods:
            v, dv = results.values(claim["figure"], panel, m, metric, claim.get("round"), where)
            s = summary(v, dv)
            # the whole 95 % interval on the claimed side (one seed: the value itself)
            edge = s.mean + (s.half_width if s.n > 1 else 0.0) * (1 if below else -1)
            good = edge <= thr if below else edge >= thr
            (ok if good else bad).append(f"{m}@{panel}" if panel else m)
            ev.append((f"({panel}) " if panel else "") + _fmt_s(m, s))
    rel = "≤" if below else "≥"
    verdict = "holds" if not bad else ("does not hold" if not ok else f"holds except for {_tags(bad)}")
    return verdict, f"{metric} {rel} {thr:g}: " + "; ".join(ev)


@CHECKS.register("at_most")
def _at_most(claim, results, where):
    """Each of ``methods`` (or ``method``) stays at or below ``value`` (e.g. "fails"):
    the upper end of its 95 % interval is ≤ value."""
    return _threshold(claim, results, where, below=True)


@CHECKS.register("at_least")
def _at_least(claim, results, where):
    """Each of ``methods`` reaches ``value`` (e.g. "performs well"): the lower end of its
    95 % interval is ≥ value."""
    return _threshold(claim, results, where, below=False)


@CHECKS.register("decreasing")
def _decreasing(claim, results, where):
    """Each of ``methods`` (or ``method``) falls from panel to panel in the order of
    ``panels``: holds for a method when every step is a decrease with Welch p < ALPHA."""
    metric = claim.get("metric", "test_accuracy")
    ok, bad, ev = [], [], []
    for m in claim.get("methods", [claim.get("method")]):
        series = [results.values(claim["figure"], p, m, metric, claim.get("round"), where)[0]
                  for p in _panels(claim)]
        steps = [np.mean(a) > np.mean(b) and welch_p(a, b) < ALPHA for a, b in zip(series, series[1:])]
        (ok if all(steps) else bad).append(m)
        ev.append(f"{m}: " + " → ".join(summary(s).format(3) for s in series))
    verdict = "holds" if not bad else ("does not hold" if not ok else f"holds except for {', '.join(bad)}")
    return verdict, "; ".join(ev)


@CHECKS.register("least_drop")
def _least_drop(claim, results, where):
    """``method`` loses less than each of ``others`` between the first and the last of
    ``panels`` (per-seed drops, the same seeds in both panels; Welch p < ALPHA)."""
    metric = claim.get("metric", "test_accuracy")
    first, last = _panels(claim)[0], _panels(claim)[-1]

    def drops(m):
        a = results.values(claim["figure"], first, m, metric, claim.get("round"), where)[0]
        b = results.values(claim["figure"], last, m, metric, claim.get("round"), where)[0]
        return np.asarray(a) - np.asarray(b)

    mine = drops(claim["method"])
    smaller, not_sep, larger, ev = [], [], [], [f"{claim['method']} drop {summary(mine).format(3)}"]
    for o in claim["others"]:
        d = drops(o)
        p = welch_p(mine, d)
        (smaller if p < ALPHA and mine.mean() < d.mean() else larger if p < ALPHA else not_sep).append(o)
        ev.append(f"{o} {summary(d).format(3)} (p = {p:.2g})")
    if not not_sep and not larger:
        verdict = "holds"
    elif not smaller:
        verdict = "does not hold"
    else:
        verdict = f"holds only against {', '.join(smaller)}"
    return verdict, f"{metric} drop {first} → {last}: " + "; ".join(ev)


@CHECKS.register("close_to")
def _close_to(claim, results, where):
    """``method`` ends within ``tol`` of the paper's ``value``."""
    m = claim["method"]
    v, dv = results.values(claim["figure"], _panels(claim)[0], m, claim.get("metric", "test_accuracy"),
                           claim.get("round"), where)
    s = summary(v, dv)
    ok = abs(s.mean - float(claim["value"])) <= float(claim["tol"])
    return ("holds" if ok else "does not hold"), f"{_fmt_s(m, s)} against {claim['value']} ± {claim['tol']}"


def render_claims(claims: Sequence[Mapping[str, Any]], results: Results,
                  pending: frozenset = frozenset()) -> str:
    """The claims table: claim, verdict (computed), evidence (numbers), note (hand-written).
    A claim about a figure in ``pending`` (a manifest spec whose CSV is not there yet)
    gets the verdict "not run yet"; any other figure or method missing from the results
    is an error."""
    lines = ["| paper | figure | claim | verdict | evidence | note |", "|---|---|---|---|---|---|"]
    for i, c in enumerate(claims):
        where = f"reproduction.toml, claim {i} ({c.get('claim', '?')!r})"
        for key in ("paper", "figure", "claim", "check"):
            if key not in c:
                raise ManifestError(f"{where}: missing {key!r}")
        check: Callable = CHECKS[c["check"]]
        if c["figure"] in pending and c["figure"] not in results.rows:
            lines.append(f"| {c['paper']} | {c['figure']} | {c['claim']} | **not run yet** | "
                         f"`make reproduction` runs its spec | {c.get('note', '')} |")
            continue
        try:
            verdict, evidence = check(c, results, where)
        except KeyError as e:
            raise ManifestError(f"{where}: check {c['check']!r} needs field {e}") from None
        lines.append(f"| {c['paper']} | {c['figure']} | {c['claim']} | **{verdict}** | {evidence} | "
                     f"{c.get('note', '')} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- document


def render(manifest: Mapping[str, Any], results: Results) -> dict[tuple[str, str], str]:
    """Every generated block: ``{("table", name): markdown, ("claims", "all"): markdown}``."""
    pending = frozenset(f for f in spec_figures(manifest) if f not in results.rows)
    blocks = {}
    for t in manifest.get("tables", []):
        if "name" not in t:
            raise ManifestError("reproduction.toml: every [[tables]] entry needs a 'name'")
        figures = ({t["source"]} if "source" in t else
                   {c.get("figure") for c in t.get("columns", []) if isinstance(c, Mapping)})
        waiting = sorted(f for f in figures if f in pending)
        if waiting:
            blocks[("table", t["name"])] = (f"*Not run yet: {', '.join(waiting)} (`make reproduction` runs "
                                           "its spec and fills this table).*")
            continue
        blocks[("table", t["name"])] = (render_rows_table if "source" in t else render_table)(t, results)
    if manifest.get("claims"):
        blocks[("claims", "all")] = render_claims(manifest["claims"], results, pending)
    return blocks


def spec_figures(manifest: Mapping[str, Any], root: str | Path = ".") -> list[str]:
    """The figure names of the manifest's specs (each spec's ``figure``) and its scripts'
    outputs: what ``make reproduction`` produces."""
    from .config import load_toml

    out = []
    for p in manifest.get("specs", []):
        path = Path(p) if Path(p).is_absolute() else Path(root) / p
        if not path.exists():
            path = Path(__file__).resolve().parents[1] / p
        out.append(str(load_toml(path)["figure"]))
    out += [Path(sc["output"]).stem for sc in manifest.get("scripts", [])]
    return out


def update_document(text: str, blocks: Mapping[tuple[str, str], str]) -> str:
    """``text`` with the content between each ``<!-- generated: KIND NAME -->`` marker and
    the next ``<!-- end generated -->`` replaced by its block.  A marker without a block,
    or a block without a marker, is an error."""
    out, pos, seen = [], 0, set()
    for m in _BEGIN.finditer(text):
        if m.start() < pos:
            continue
        key = (m.group(1), m.group(2))
        end = text.find(_END, m.end())
        if end < 0:
            raise ManifestError(f"REPRODUCTION.md: marker {m.group(0)} has no {_END}")
        if key not in blocks:
            raise ManifestError(f"REPRODUCTION.md: marker {m.group(0)} has no entry in reproduction.toml")
        out += [text[pos:m.end()], "\n", blocks[key], "\n"]
        pos = end
        seen.add(key)
    out.append(text[pos:])
    unused = sorted(set(blocks) - seen)
    if unused:
        names = ", ".join(f"<!-- generated: {k} {n} -->" for k, n in unused)
        raise ManifestError(f"REPRODUCTION.md lacks the marker(s) {names}")
    return "".join(out)


# --------------------------------------------------------------------------- command


def load_manifest(path: str | Path) -> dict[str, Any]:
    from .config import load_toml

    raw = load_toml(path)
    unknown = set(raw) - {"specs", "scripts", "tables", "claims"}
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) {sorted(unknown)}; valid keys: claims, scripts, specs, tables")
    for i, sc in enumerate(raw.get("scripts", [])):
        if not isinstance(sc, Mapping) or not {"path", "output"} <= set(sc) <= {"path", "output", "args"}:
            raise ManifestError(f"{path}: scripts[{i}] needs 'path' and 'output' (and optional 'args'), "
                                f"got {sc!r}")
    return raw


#: what a ``[[scripts]]`` entry's ``args`` may name, and what each becomes
SCRIPT_PLACEHOLDERS = {
    "output": "the script's CSV: <results>/<output>",
    "results": "the results directory (--results)",
    "figures": "the figures directory (--figures)",
    "store": "the result store the reproduction runs the specs into (--store, else $BYZSIM_STORE "
             "or results/store)",
}


def script_args(script: Mapping[str, Any], *, results: str | Path, figures: str | Path,
                store: str | Path) -> list[str]:
    """The command-line arguments of a ``[[scripts]]`` entry: its ``args`` (default
    ``["{output}"]``) with every ``{name}`` of :data:`SCRIPT_PLACEHOLDERS` filled in.
    An unknown placeholder is a :class:`ManifestError` naming it and the valid ones."""
    values = {"output": Path(results) / script["output"], "results": results, "figures": figures,
              "store": store}
    out = []
    for x in script.get("args", ["{output}"]):
        try:
            out.append(str(x).format(**values))
        except (KeyError, IndexError) as e:
            raise ManifestError(f"reproduction.toml, script {script['path']!r}: unknown placeholder {e} in "
                                f"{x!r}; valid placeholders: {', '.join('{' + k + '}' for k in values)}") from None
    return out


def regenerate(document: str | Path, manifest: Mapping[str, Any], results_dir: str | Path) -> tuple[str, str]:
    """``(old, new)`` text of ``document`` with its generated blocks rebuilt from the CSVs."""
    old = Path(document).read_text()
    return old, update_document(old, render(manifest, load_results(results_dir)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m byzsim.reproduction``: run the manifest's specs (what the store holds is
    not run again) and write their CSVs to the results directory, run the scripts whose
    CSV is missing, draw the specs' figures (their ``[reference]`` lines read only now, as
    a script may make their CSV), and rebuild REPRODUCTION.md's tables and claims.  ``--check``: only compare, exit 1 when the document is stale."""
    import argparse
    import subprocess
    import sys

    ap = argparse.ArgumentParser(prog="python -m byzsim.reproduction", description=main.__doc__)
    ap.add_argument("--manifest", default="experiments/reproduction.toml")
    ap.add_argument("--document", default="REPRODUCTION.md")
    ap.add_argument("--results", default="experiments/results", help="the committed CSVs")
    ap.add_argument("--figures", default="figures", help="where the figures are drawn")
    ap.add_argument("--store", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-run", action="store_true", help="only rebuild the document from the CSVs")
    ap.add_argument("--rerun-scripts", action="store_true",
                    help="run the diagnostic scripts even when their CSV exists")
    ap.add_argument("--check", action="store_true", help="exit 1 if the document differs from the CSVs")
    a = ap.parse_args(argv)
    try:
        manifest = load_manifest(a.manifest)
        if not (a.no_run or a.check):
            from .runs import load_spec, plot_spec, run_spec
            from .runs.spec import load_reference
            from .runs.store import default_store_dir

            store = a.store if a.store is not None else default_store_dir()
            # all validated first; a [reference] is read only for drawing, after the
            # scripts, one of which may make its CSV
            paths = list(manifest.get("specs", []))
            specs = [load_spec(p, reference=False) for p in paths]
            ran = []
            for spec in specs:
                rows, report = run_spec(spec, jobs=a.jobs, results_dir=a.results, store=store, quiet=True)
                if report.failures:
                    print(f"error: {spec.figure}: {len(report.failures)} run(s) failed", file=sys.stderr)
                    return 1
                ran.append(rows)
            for sc in manifest.get("scripts", []):  # diagnostics with their own CSV
                out = Path(a.results) / sc["output"]
                if a.rerun_scripts or not out.exists():
                    args = script_args(sc, results=a.results, figures=a.figures, store=store)
                    subprocess.run([sys.executable, sc["path"], *args], check=True)
            for path, spec, rows in zip(paths, specs, ran):
                plot_spec(load_reference(spec, path), rows, Path(a.figures),
                          csv_path=Path(a.results) / f"{spec.figure}.csv")
        old, new = regenerate(a.document, manifest, a.results)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"error: {' '.join(map(str, e.cmd))} exited with {e.returncode}", file=sys.stderr)
        return 1
    if a.check:
        if old != new:
            print(f"{a.document} differs from what {a.results} gives: run `make reproduction`", file=sys.stderr)
            return 1
        return 0
    if old != new:
        Path(a.document).write_text(new)
    print(f"{a.document}: {'updated' if old != new else 'up to date'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
