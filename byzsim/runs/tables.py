"""Stored runs -> long-format tables: labels, CSV rows, reading and writing CSVs.

One row per (run, evaluated round): ``figure, panel, method, attack, seed, round,
test_accuracy, train_loss, distance, diverged``; a diverged run ends with a row of
NaN metrics at the round where it was stopped.  ``method`` is the line label.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..simulate import METRICS
from .store import Store, StoredRun, atomic_write_text

__all__ = [
    "CSV_COLUMNS", "format_value", "flatten_config", "derive_labels", "run_rows",
    "rows_from_store", "csv_text", "write_csv", "read_csv", "MATRIX_COLUMNS", "matrix_row", "matrix_rows",
]

CSV_COLUMNS = ("figure", "panel", "method", "attack", "seed", *METRICS, "diverged")


def format_value(v: Any) -> str:
    """A short label for a config value (``[nnm, bucketing(s=2)]`` for a list of specs)."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        rest = {k: x for k, x in v.items() if k != "name" and x is not None}
        inner = ", ".join(f"{k}={format_value(x)}" for k, x in rest.items())
        if "name" in v:
            return f"{v['name']}({inner})" if inner else str(v["name"])
        return "{" + inner + "}"
    return str(v)



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
            format_value(d.get(f)) if len(panel_fields) == 1 else f"{f}={format_value(d.get(f))}" for f in panel_fields
        )
        parts = []
        for f in line_fields:
            parts.append(format_value(d.get(f)) if f == "method" else f"{f}={format_value(d.get(f))}")
        out.append((panel, ", ".join(parts) or "run"))
    return out


# --------------------------------------------------------------------------- rows


def run_rows(run: StoredRun, *, figure: str, panel: str, method: str) -> list[dict]:
    """Long-format CSV rows of one stored run (a diverged run ends with a NaN row at the
    round where it was stopped)."""
    cols = run.columns()
    cfg = run.config_dict
    div = int(run.diverged)
    rows = [
        {"figure": figure, "panel": panel, "method": method, "attack": cfg["attack"], "seed": cfg["seed"],
         **{k: (int(v) if k == "round" else float(v)) for k, v in zip(METRICS, vals)}, "diverged": div}
        for vals in zip(*(cols[k].tolist() for k in METRICS))
    ]
    if run.diverged and run.diverged_round is not None:
        nan = float("nan")
        rows.append({"figure": figure, "panel": panel, "method": method, "attack": cfg["attack"],
                     "seed": cfg["seed"], "round": int(run.diverged_round), **{k: nan for k in METRICS[1:]},
                     "diverged": 1})
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


def csv_text(rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS, *,
              floats: str | None = None) -> Path:
    """Write ``rows`` (the ``columns`` of each) atomically; ``floats``: a format spec for
    the float cells (``".6g"``: 6 significant digits), default ``str``."""
    path = Path(path)
    if floats is not None:
        rows = [{k: (format(v, floats) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    atomic_write_text(path, csv_text(rows, columns))
    return path


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- matrix

MATRIX_COLUMNS = (
    "row", "column", "seed", "aggregator", "preaggregators", "resample", "attack",
    "final_test_accuracy", "final_train_loss", "diverged", "diverged_round", "rounds",
    "seconds", "status",
)


def matrix_row(entry, store: Store) -> dict:
    """One line of the matrix CSV: a cell's (row, column, seed) and its final metrics
    read from the store; ``status`` is ``ok``, ``error: …`` (the recorded failure) or
    ``not run``."""
    cfg = entry.config
    out = {
        "row": entry.panel, "column": entry.line, "seed": cfg.seed, "aggregator": cfg.aggregator,
        "preaggregators": "+".join(p["name"] for p in cfg.preaggregators),
        "resample": cfg.resample or 1, "attack": cfg.attack, "rounds": cfg.rounds,
        "final_test_accuracy": math.nan, "final_train_loss": math.nan, "diverged": 0,
        "diverged_round": "", "seconds": 0.0, "status": "ok",
    }
    run = store.get(entry.key)
    if run is None:
        failure = store.failure(entry.key)
        out["status"] = f"error: {failure['error']}" if failure else "not run"
        return out
    out["seconds"] = run.meta.get("seconds") or 0.0
    if run.diverged:
        out["diverged"], out["diverged_round"] = 1, run.diverged_round
    else:
        cols = run.columns()
        out["final_test_accuracy"] = float(cols["test_accuracy"][-1])
        out["final_train_loss"] = float(cols["train_loss"][-1])
    return out


def matrix_rows(spec, store: Store) -> list[dict]:
    """The matrix CSV rows of a :class:`~byzsim.runs.spec.MatrixSpec`, in the spec's
    row, column, seed order."""
    return [matrix_row(e, store) for e in spec.entries]
