"""Sweeps: command-line overrides, grid expansion, parallel execution, resume.

Overrides follow the Hydra multirun convention::

    lr=0.1                      one value, parsed as a TOML literal (0.1 is a float)
    method=rsa                  a bare word is a string
    lr=0.01,0.1  seed=0,1,2     comma-separated values: a grid (cartesian product)
    attack_params.std=100       dotted keys set nested parameters
    byzantine_indices=[1,2]     brackets/braces/quotes protect commas: one list value
    seed=range(4)               range(stop) / range(start, stop[, step]): a grid of ints
    byzantine_indices=null      null: unset (back to the default)

:func:`execute` runs a list of :class:`RunEntry` (a validated config and its store
key) and writes each finished run to a :class:`~byzsim.store.Store`; runs already
stored are skipped (``force=True`` reruns them).  Whole runs execute in parallel:

* ``jobs=1``: in this process, one after the other;
* ``jobs=N``: joblib worker processes (loky), one BLAS thread each
  (:func:`byzsim.simulate.run` limits BLAS to one thread);
* ``scheduler="tcp://host:8786"``: the same tasks on a Dask cluster through joblib's
  Dask backend (optional extra ``byzsim[dask]``).

Only the calling process writes to the store (workers return the metrics), so the
store needs no locking and the cluster's workers need no access to it.  The metrics
of a run do not depend on where or next to what it ran: one ``np.random.Generator``
per run, derived from its seed, and one BLAS thread.

A run that raises is recorded as failed (``Store.record_failure``) and the sweep goes
on; a run that diverges is a finished run with ``diverged = true``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import inspect
import itertools
import math
import os
import re
import sys
import threading
import time
import tomllib
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from ..config import Config, check_component_params, component_parameters, load_toml, make_config
from .store import Store, config_key

__all__ = [
    "Override", "OverrideError", "SweepError", "SweepInterrupted", "WorkerDied",
    "RunEntry", "RunOutcome", "SweepReport", "Progress",
    "parse_value", "parse_override", "parse_overrides", "expand_grid", "set_path",
    "component_parameters", "check_component_params", "entries_from_dicts",
    "load_entries", "is_figure_spec", "execute", "default_sweep_name",
]


# --------------------------------------------------------------------------- errors


class OverrideError(ValueError):
    """A malformed ``key=value`` override."""


class SweepError(RuntimeError):
    """The sweep could not go on (executor failure, unreachable scheduler, …).
    ``report`` holds what was done before (finished runs are in the store)."""

    def __init__(self, message: str, report: "SweepReport | None" = None):
        super().__init__(message)
        self.report = report


class WorkerDied(SweepError):
    """A worker process died (killed, out of memory, …) while running a task."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; ``report`` holds what was finished and stored."""

    def __init__(self, report: "SweepReport"):
        super().__init__("sweep interrupted")
        self.report = report


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
    """Parse overrides; a key given twice keeps the last one (like Hydra's command line)."""
    out: dict[tuple[str, ...], Override] = {}
    for t in texts:
        o = t if isinstance(t, Override) else parse_override(t)
        out.pop(o.path, None)
        out[o.path] = o
    return list(out.values())


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


# --------------------------------------------------------------------------- parameters


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class RunEntry:
    """One run of a sweep: a validated config, its store key, optional plot labels."""

    config: Config
    key: str
    panel: str | None = None
    line: str | None = None

    @classmethod
    def of(cls, cfg: Config, panel: str | None = None, line: str | None = None) -> "RunEntry":
        return cls(cfg, config_key(cfg), panel, line)


def _make(d: Mapping[str, Any], where: str = "") -> Config:
    try:
        cfg = make_config(**d)
        check_component_params(cfg)
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
    lists of values) merged left to right, or exactly one figure spec (see
    :mod:`byzsim.experiment`).  ``overrides`` apply last (a grid key on the command line
    replaces the file's).  Returns ``(entries, info)`` with ``info`` holding ``title``,
    ``metric``, ``figure`` (for a figure spec), ``panels`` (ordered ``(name, title)``) and
    ``lines`` (ordered labels) when known.
    """
    ovs = parse_overrides(overrides)
    raws = [(str(f), load_toml(f)) for f in files]
    specs = [(f, r) for f, r in raws if is_figure_spec(r)]
    if specs:
        if len(raws) != 1:
            raise ValueError(f"a figure spec ({specs[0][0]}) must be the only config file")
        from .spec import parse_spec

        spec = parse_spec(specs[0][1], specs[0][0], overrides=ovs)
        entries = [RunEntry.of(r.config, r.panel, r.label) for r in spec.runs]
        entries = list({e.key: e for e in entries}.values())
        info = {"figure": spec.figure, "title": spec.title, "metric": spec.metric,
                "panels": [(str(p.get("name", "")), str(p.get("title", p.get("name", "")))) for p in spec.panels],
                "lines": list(dict.fromkeys(e.line for e in entries))}
        return entries, info
    base: dict[str, Any] = {}
    grid: dict[tuple[str, ...], Override] = {}
    for f, raw in raws:
        raw = dict(raw)
        g = raw.pop("grid", {})
        if not isinstance(g, Mapping):
            raise ValueError(f"{f}: [grid] must be a table of key = [values]")
        base.update(raw)
        for k, v in _flatten(g).items():
            vals = tuple(v) if isinstance(v, list) else (v,)
            if not vals:
                raise ValueError(f"{f}: [grid] {k} is an empty list")
            grid[tuple(k.split("."))] = Override(tuple(k.split(".")), vals, f"{k} (grid in {f})")
    for o in ovs:
        grid.pop(o.path, None)
        grid[o.path] = o
    entries = entries_from_dicts(expand_grid(base, list(grid.values())))
    return entries, {}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def default_sweep_name(files: Sequence[str | os.PathLike], entries: Sequence[RunEntry]) -> str:
    """``<stem of the first config file>-<8 hex of the run keys>`` (same runs, same name)."""
    stem = Path(files[0]).stem if files else "sweep"
    h = hashlib.sha256("".join(sorted(e.key for e in entries)).encode()).hexdigest()[:8]
    return f"{stem}-{h}"


# --------------------------------------------------------------------------- progress


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """A rate-limited progress line on ``stream`` (stderr): runs done, rounds/s, ETA.

    On a terminal the line is redrawn in place (at most every ``interval`` s, and a
    background ticker keeps the clock moving); elsewhere a new line is printed at most
    every ``interval_pipe`` s.  ``enabled=False`` prints nothing.
    """

    def __init__(self, *, label: str = "sweep", enabled: bool = True, stream: TextIO | None = None,
                 interval: float = 0.25, interval_pipe: float = 5.0):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else interval_pipe
        self._lock = threading.Lock()
        self._last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.total = self.to_run = self.done = self.cached = self.failed = self.diverged = 0
        self.rounds_total = self.rounds_done = 0
        self._partial = 0  # rounds of the run in progress (serial execution)
        self.t0 = time.perf_counter()

    # -- events -----------------------------------------------------------------
    def start(self, total: int, cached: int, rounds_to_run: int) -> None:
        self.total, self.cached, self.to_run = total, cached, total - cached
        self.rounds_total = rounds_to_run
        self.t0 = time.perf_counter()
        if self.enabled and self.tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        self._render(force=True)

    def rounds(self, current_run_rounds: int) -> None:
        """Serial execution: rounds done so far in the current run."""
        self._partial = current_run_rounds
        self._render()

    def finished(self, rounds: int, *, failed: bool = False, diverged: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.rounds_done += rounds
            self._partial = 0
            self.failed += failed
            self.diverged += diverged
        self._render(force=self.done == self.to_run)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.enabled and self.tty:
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()

    # -- drawing ----------------------------------------------------------------
    def line(self) -> str:
        el = time.perf_counter() - self.t0
        rd = self.rounds_done + self._partial
        rate = rd / el if el > 0 else 0.0
        eta = (self.rounds_total - rd) / rate if rate > 0 else float("nan")
        parts = [f"[{self.label}] {self.done + self.cached}/{self.total} runs"]
        extra = []
        if self.cached:
            extra.append(f"{self.cached} stored before")
        if self.diverged:
            extra.append(f"{self.diverged} diverged")
        if self.failed:
            extra.append(f"{self.failed} failed")
        if extra:
            parts[0] += f" ({', '.join(extra)})"
        parts.append(f"{rate:,.0f} rounds/s")
        parts.append(f"elapsed {_fmt_time(el)}")
        if self.done < self.to_run:
            parts.append(f"ETA {_fmt_time(eta)}")
        return " | ".join(parts)

    def _render(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        with self._lock:
            if not force and now - self._last < self.interval:
                return
            self._last = now
            text = self.line()
            if self.tty:
                self.stream.write("\r" + text + "\x1b[K")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._render()


# --------------------------------------------------------------------------- execution


@dataclass
class RunOutcome:
    """What happened to one entry: ``status`` is ``"ran"`` (simulated and stored now),
    ``"stored"`` (already in the store, skipped) or ``"failed"`` (raised; not stored)."""

    entry: RunEntry
    status: str
    diverged: bool = False
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepReport:
    outcomes: list[RunOutcome] = field(default_factory=list)
    total: int = 0
    wall: float = 0.0
    other_version: int = 0  # skipped runs stored by another byzsim version

    def _count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ran(self) -> int:
        return self._count("ran")

    @property
    def skipped(self) -> int:
        return self._count("stored")

    @property
    def failures(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def diverged(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.diverged]

    @property
    def missing(self) -> int:
        """Entries with no outcome (the sweep stopped before them)."""
        return self.total - len(self.outcomes)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.missing

    def summary(self, name: str = "sweep") -> str:
        s = (f"[{name}] {self.total} runs: {self.ran} ran, {self.skipped} already stored, "
             f"{len(self.failures)} failed, {len(self.diverged)} diverged")
        if self.missing:
            s += f", {self.missing} not run"
        s += f"; {self.wall:.1f} s"
        if self.other_version:
            s += (f" ({self.other_version} of the stored runs were made by another byzsim version; "
                  "--force reruns them)")
        return s


def _simulate(index: int, cfg: Config, callback: Callable | None = None) -> tuple[int, dict]:
    """Worker task: run one config; never raises for a failing run (returns the error)."""
    from ..simulate import run

    t = time.perf_counter()
    try:
        res = run(cfg, callback=callback)
    except Exception as e:  # noqa: BLE001 - a failing run is data, not a crash
        return index, {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                       "wall": time.perf_counter() - t}
    return index, {
        "ok": True, "columns": res.columns, "diverged": res.diverged, "diverged_round": res.diverged_round,
        "seconds": res.seconds, "wall": time.perf_counter() - t, "info": res.info,
    }


def _connect(address: str, timeout: float):
    try:
        from distributed import Client
    except ImportError:
        raise SweepError(
            "--scheduler needs Dask's distributed scheduler, an optional extra: "
            "pip install 'byzsim[dask]' (or pip install 'dask[distributed]')"
        ) from None
    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise SweepError(
            f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s ({type(e).__name__}: {e}); "
            "is `dask scheduler` running there and the address (tcp://host:port) right?"
        ) from None


def _executor_error(e: BaseException) -> bool:
    """True for an infrastructure failure of joblib/loky (a worker died)."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"TerminatedWorkerError", "BrokenProcessPool", "KilledWorker"})


def execute(
    entries: Sequence[RunEntry],
    store: Store,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    scheduler_timeout: float = 10.0,
    force: bool = False,
    progress: Progress | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> SweepReport:
    """Run the entries that are not stored yet (all of them with ``force``) and store
    each as it finishes.

    Raises :class:`SweepInterrupted` on Ctrl-C, :class:`WorkerDied` when a worker
    process dies, :class:`SweepError` when the executor or the scheduler fails; their
    ``report`` says what was finished (and is in the store).  A run that raises does
    not stop the sweep: it is in ``report.failures``.
    """
    if jobs == 0 or not isinstance(jobs, int):
        raise ValueError(f"jobs must be a non-zero integer (-1 = all cores), got {jobs!r}")
    t0 = time.perf_counter()
    report = SweepReport(total=len(entries))
    todo: list[RunEntry] = []
    from .. import __version__

    for e in entries:
        if not force and store.has(e.key):
            report.outcomes.append(RunOutcome(e, "stored"))
            stored = store.get(e.key)
            if stored is not None and stored.meta.get("byzsim_version") != __version__:
                report.other_version += 1
        else:
            todo.append(e)
    prog = progress or Progress(enabled=False)
    prog.start(len(entries), len(entries) - len(todo), sum(e.config.rounds for e in todo))

    def handle(i: int, payload: dict) -> None:
        e = todo[i]
        if payload["ok"]:
            store.put(e.config, payload["columns"], diverged=payload["diverged"],
                      diverged_round=payload["diverged_round"], seconds=payload["seconds"],
                      extra={"wall_seconds": payload["wall"], "info": payload.get("info", {})},
                      force=force)
            out = RunOutcome(e, "ran", diverged=bool(payload["diverged"]), seconds=payload["seconds"])
        else:
            store.record_failure(e.config, payload["error"], payload.get("traceback", ""))
            out = RunOutcome(e, "failed", error=payload["error"], seconds=payload.get("wall", 0.0))
        report.outcomes.append(out)
        prog.finished(e.config.rounds if out.status == "ran" else 0, failed=out.status == "failed",
                      diverged=out.diverged)
        if on_outcome is not None:
            on_outcome(out)

    try:
        if todo and jobs == 1 and scheduler is None:
            for i, e in enumerate(todo):
                _, payload = _simulate(i, e.config, callback=prog.rounds if prog.enabled else None)
                handle(i, payload)
        elif todo:
            _run_parallel(todo, handle, jobs=jobs, scheduler=scheduler, timeout=scheduler_timeout,
                          report=report)
    except KeyboardInterrupt:
        _account_stored(report, todo, store)
        report.wall = time.perf_counter() - t0
        raise SweepInterrupted(report) from None
    except SweepError as err:
        _account_stored(report, todo, store)
        report.wall = time.perf_counter() - t0
        err.report = report
        raise
    finally:
        prog.close()
    report.wall = time.perf_counter() - t0
    return report


def _account_stored(report: SweepReport, todo: Sequence[RunEntry], store: Store) -> None:
    """After an interruption: count runs that reached the store before their outcome
    was recorded (the interrupt arrived just after the atomic rename)."""
    seen = {o.entry.key for o in report.outcomes}
    for e in todo:
        if e.key not in seen and store.has(e.key):
            report.outcomes.append(RunOutcome(e, "ran", diverged=bool(store.get(e.key).diverged)))


def _run_parallel(todo, handle, *, jobs, scheduler, timeout, report) -> None:
    from joblib import Parallel, delayed, parallel_config

    tasks = (delayed(_simulate)(i, e.config) for i, e in enumerate(todo))
    client = None
    if scheduler is not None:
        client = _connect(scheduler, timeout)
        cfg = parallel_config(backend="dask", client=client, wait_for_workers_timeout=timeout,
                              n_jobs=jobs if jobs != 1 else -1)
    else:
        cfg = parallel_config(backend="loky", n_jobs=jobs)
    try:
        with cfg, warnings.catch_warnings():
            # on Ctrl-C joblib warns that the tasks in flight were cancelled: we say so ourselves
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed.*")
            par = Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
            for i, payload in par(tasks):
                handle(i, payload)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if _executor_error(e):
            raise WorkerDied(
                f"a worker process died while running a task ({type(e).__name__}: {e}). "
                "Finished runs are stored; run the same command again to run the rest.",
                report,
            ) from None
        if isinstance(e, (OSError, TimeoutError)) and scheduler is not None:
            raise SweepError(f"lost the Dask scheduler {scheduler!r}: {type(e).__name__}: {e}", report) from None
        raise
    finally:
        if client is not None:
            client.close()
