"""Execution: run entries that are not stored yet, in parallel, with resume.

:func:`execute` runs a list of :class:`~byzsim.runs.spec.RunEntry` (a validated config
and its store key) and writes each finished run to a :class:`~byzsim.runs.store.Store`;
runs already stored are skipped (``force=True`` reruns them).  Whole runs execute in
parallel:

* ``jobs=1``: in this process, one after the other;
* ``jobs=N``: joblib worker processes (loky), one BLAS thread each
  (:func:`byzsim.simulate.run` limits BLAS to one thread);
* ``scheduler="tcp://host:8786"``: the same tasks on a Dask cluster through joblib's
  Dask backend (optional extra ``byzsim[dask]``).

Only the calling process writes to the store (workers return the metrics), so the
cluster's workers need no access to it.  Sweeps sharing a store share the work: a run
is claimed (:meth:`~byzsim.runs.store.Store.claim`) before it is simulated, and a run
another live sweep has claimed is waited for, not simulated again.  Local worker
processes exit as soon as the sweep's process is gone (:func:`_exit_with_parent`).  The metrics
of a run do not depend on where or next to what it ran: one ``np.random.Generator``
per run, derived from its seed, and one BLAS thread.

A run that raises is recorded as failed (``Store.record_failure``) and the sweep goes
on; a run that diverges is a finished run with ``diverged = true``.

``keep_models=True`` stores each run's final server model (``model.npy``) next to its
metrics; a stored run without one then counts as not stored and is run again (its
directory replaced atomically).  It is an output option: the store key is unchanged.

:func:`run_spec` does this for a figure spec and writes ``results/<figure>.csv`` from the
store: running a figure twice runs the simulations once, and an interrupted figure
resumes where it stopped.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..config import Config
from .progress import Progress
from .spec import MatrixSpec, RunEntry, Spec, spec_entries
from .store import Store, timestamp
from .tables import MATRIX_COLUMNS, matrix_rows, rows_from_store, write_csv

__all__ = [
    "SweepError", "SweepInterrupted", "WorkerDied", "RunOutcome", "SweepReport",
    "execute", "run_spec", "run_matrix", "report_failures", "plugins_manifest",
]


# --------------------------------------------------------------------------- errors


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


_WATCHED_PARENT: int | None = None
#: seconds between two checks of a worker that its sweep still runs
PARENT_POLL = 0.5


def _exit_with_parent(parent: int) -> None:
    """In a local worker process: exit at once when ``parent`` (the process running the
    sweep) is gone, even in the middle of a run.  A daemon thread compares
    ``os.getppid()`` with ``parent`` every :data:`PARENT_POLL` seconds (an orphan is
    adopted by init or a subreaper, so its parent pid changes).  The initializer of the
    loky workers, so an idle worker watches too, and a worker whose sweep died while it
    was starting exits at once."""
    global _WATCHED_PARENT
    if _WATCHED_PARENT == parent:
        return
    if os.getppid() != parent:
        os._exit(1)
    _WATCHED_PARENT = parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="byzsim-parent-watch", daemon=True).start()


def _simulate(index: int, cfg: Config, callback: Callable | None = None,
              plugins: Sequence[tuple] = ()) -> tuple[int, dict]:
    """Worker task: load the run's plugins (``Plugin.task()`` tuples; once per process),
    run one config; never raises for a failing run (returns the error, naming the plugin
    when the failure is in a plugin's code)."""
    from ..plugins import ensure_loaded, plugin_in_traceback
    from ..simulate import run

    t = time.perf_counter()
    try:
        ensure_loaded(plugins)
        res = run(cfg, callback=callback)
    except Exception as e:  # noqa: BLE001 - a failing run is data, not a crash
        where = plugin_in_traceback(e.__traceback__)
        msg = str(e) if type(e).__name__ == "PluginError" else f"{type(e).__name__}: {e}"
        return index, {"ok": False, "error": (f"in plugin {where!r}: " if where else "") + msg,
                       "traceback": traceback.format_exc(), "wall": time.perf_counter() - t}
    return index, _payload(res, time.perf_counter() - t)


def _payload(res, wall: float) -> dict:
    """What a worker returns for a finished run (:class:`byzsim.simulate.RunResult`)."""
    return {"ok": True, "columns": res.columns, "diverged": res.diverged, "diverged_round": res.diverged_round,
            "seconds": res.seconds, "wall": wall, "info": res.info, "model": res.model}


def _simulate_batch(indices: Sequence[int], cfgs: Sequence[Config], callback: Callable | None = None,
                    plugins: Sequence[tuple] = ()) -> list[tuple[int, dict]]:
    """Worker task: run ``cfgs`` as one replica batch (:func:`byzsim.simulate.run_batch`)
    and return one ``(index, payload)`` per run, as :func:`_simulate` does.  If the batch
    raises, its runs are made one by one, so that a failing run is recorded as failed
    alone and the others are stored (failure isolation per replica)."""
    from ..plugins import ensure_loaded
    from ..simulate import run_batch

    if len(cfgs) == 1:
        return [_simulate(indices[0], cfgs[0], callback=callback, plugins=plugins)]
    t = time.perf_counter()
    try:
        ensure_loaded(plugins)
        results = run_batch(list(cfgs), callback=callback)
    except Exception:  # noqa: BLE001 - isolate the failing run(s)
        return [_simulate(i, c, plugins=plugins) for i, c in zip(indices, cfgs)]
    wall = (time.perf_counter() - t) / len(cfgs)
    return [(i, _payload(r, wall)) for i, r in zip(indices, results)]


#: Runs per replica batch when ``replicas`` is not given: small problems gain most from
#: stacking (per-call overhead), MNIST-sized rounds hardly (see BENCHMARKS.md).
AUTO_REPLICAS_SMALL, AUTO_REPLICAS_LARGE = 16, 4
#: A replica (data + state) below this many bytes counts as small.
SMALL_REPLICA_BYTES = 64 << 20
#: Share of the available memory that the batches in flight may use (split over jobs).
MEMORY_SHARE = 0.5


def plan(todo: Sequence[RunEntry], *, jobs: int = 1, replicas: int | None = None,
         memory_bytes: int | None = None) -> list[list[int]]:
    """Indices of ``todo`` cut into replica batches (:func:`byzsim.simulate.plan_batches`).

    ``replicas``: runs per batch (``None``: :data:`AUTO_REPLICAS_SMALL` for replicas
    below :data:`SMALL_REPLICA_BYTES`, else :data:`AUTO_REPLICAS_LARGE`; ``1``: every run
    alone).  ``memory_bytes``: the memory one batch may use (``None``:
    :data:`MEMORY_SHARE` of the available memory over ``jobs``).  Batches are then split
    until there are at least as many as worker processes (so no worker idles while a
    batch could be shared)."""
    from ..config import available_bytes
    from ..simulate import group_replicas, plan_batches, replica_bytes

    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1):
        raise ValueError(f"invalid replicas = {replicas!r}: expected an integer >= 1 (runs per batch)")
    if memory_bytes is not None and not memory_bytes > 0:
        raise ValueError(f"invalid memory budget = {memory_bytes!r}: expected a positive number of bytes")
    cfgs = [e.config for e in todo]
    if not cfgs:
        return []
    if memory_bytes is None:
        avail = available_bytes()
        memory_bytes = None if avail is None else max(1, int(avail * MEMORY_SHARE / max(jobs, 1)))
    batches = []
    for group in group_replicas(cfgs):
        sub = [cfgs[i] for i in group]
        try:
            one = replica_bytes(sub[0])  # builds (and caches) the group's first data set
        except Exception:  # noqa: BLE001 - the run itself will fail and be recorded alone
            batches += [[i] for i in group]
            continue
        if memory_bytes is not None and one > memory_bytes:
            raise ValueError(
                f"memory budget of {memory_bytes} bytes is smaller than one replica of {sub[0].method!r} "
                f"on {sub[0].dataset!r} ({one} bytes): raise --memory-budget or use a smaller problem")
        S = replicas if replicas is not None else (
            AUTO_REPLICAS_SMALL if one <= SMALL_REPLICA_BYTES else AUTO_REPLICAS_LARGE)
        if memory_bytes is not None:  # each replica counted with its own data (an upper bound)
            S = max(1, min(S, memory_bytes // one))
        batches += [[group[i] for i in b] for b in plan_batches(sub, replicas=S)]
    workers = max(jobs, 1) if jobs != -1 else (os.cpu_count() or 1)
    while len(batches) < workers and max(map(len, batches)) > 1:
        big = max(range(len(batches)), key=lambda k: len(batches[k]))
        b = batches.pop(big)
        batches[big:big] = [b[: len(b) // 2], b[len(b) // 2:]]
    return batches


def _tasks(e: RunEntry) -> tuple:
    return tuple(p.task() for p in e.plugins)


def plugins_manifest(entries: Sequence[RunEntry]) -> list[dict]:
    """The plugins a sweep's runs use, for its manifest (``byzsim figure`` loads them)."""
    ps = {p.name: p for e in entries for p in e.plugins}
    return [{"name": p.name, "root": p.root} for p in ps.values()]


def _with_plugins(entries: Sequence[RunEntry]) -> dict:
    pm = plugins_manifest(entries)
    return {"plugins": pm} if pm else {}


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
    replicas: int | None = None,
    memory_bytes: int | None = None,
    keep_models: bool = False,
) -> SweepReport:
    """Run the entries that are not stored yet (all of them with ``force``) and store
    each as it finishes.  ``keep_models``: store each run's final server model too; a
    stored run without it counts as not stored (it is run again and replaced).

    Raises :class:`SweepInterrupted` on Ctrl-C, :class:`WorkerDied` when a worker
    process dies, :class:`SweepError` when the executor or the scheduler fails; their
    ``report`` says what was finished (and is in the store).  A run that raises does
    not stop the sweep: it is in ``report.failures``.

    Each run is claimed in the store before it is simulated; a run claimed by another
    live sweep is waited for (its outcome is that sweep's: stored or failed) and taken
    over if that sweep dies first.  Claims are released as runs finish.

    Runs of equal structure go as replica batches (:func:`plan`; ``replicas`` runs per
    batch, ``memory_bytes`` per batch); the store stays one directory per run and every
    run's metrics are those of the run made alone.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not (jobs >= 1 or jobs == -1):
        raise ValueError(f"jobs must be an integer >= 1, or -1 for all cores, got {jobs!r}")
    t0 = time.perf_counter()
    since = timestamp()  # failures recorded after this are this pass's (compared as strings)
    report = SweepReport(total=len(entries))
    todo: list[RunEntry] = []
    from .. import __version__

    def done(key: str) -> bool:
        return store.complete(key, model=keep_models)

    for e in entries:
        if not force and done(e.key):
            report.outcomes.append(RunOutcome(e, "stored"))
            stored = store.get(e.key)
            if stored is not None and stored.meta.get("byzsim_version") != __version__:
                report.other_version += 1
        else:
            todo.append(e)
    prog = progress or Progress(enabled=False)
    prog.start(len(entries), len(entries) - len(todo), sum(e.config.rounds for e in todo))

    claimed: set[str] = set()
    mine: list[RunEntry] = []  # the runs this sweep may simulate in this pass
    others: list[RunEntry] = []  # ... of which another live sweep holds the claim

    def handle(i: int, payload: dict) -> None:
        e = mine[i]
        if payload["ok"]:
            store.put(e.config, payload["columns"], diverged=payload["diverged"],
                      diverged_round=payload["diverged_round"], seconds=payload["seconds"],
                      extra={"wall_seconds": payload["wall"], "info": payload.get("info", {})},
                      force=force, plugins=[p.ref() for p in e.plugins],
                      model=payload.get("model") if keep_models else None)
            out = RunOutcome(e, "ran", diverged=bool(payload["diverged"]), seconds=payload["seconds"])
        else:
            store.record_failure(e.config, payload["error"], payload.get("traceback", ""),
                                 plugins=[p.ref() for p in e.plugins])
            out = RunOutcome(e, "failed", error=payload["error"], seconds=payload.get("wall", 0.0))
        store.release(e.key)
        claimed.discard(e.key)
        report.outcomes.append(out)
        prog.finished(e.config.rounds if out.status == "ran" else 0, failed=out.status == "failed",
                      diverged=out.diverged)
        if on_outcome is not None:
            on_outcome(out)

    def settled_elsewhere(e: RunEntry, status: str, error: str | None = None) -> None:
        report.outcomes.append(RunOutcome(e, status, error=error))
        prog.finished(0, failed=status == "failed")
        if on_outcome is not None and status == "failed":
            on_outcome(report.outcomes[-1])

    def take(batch: Sequence[int]) -> list[int]:
        """Claim the runs of a batch just before it starts (so concurrent sweeps split
        the work batch by batch); the runs of the batch this sweep may simulate."""
        got = []
        for i in batch:
            e = mine[i]
            if not store.claim(e.key):
                others.append(e)  # another live sweep is simulating it
                continue
            claimed.add(e.key)
            if not force and done(e.key):  # stored by another sweep since we looked
                store.release(e.key)
                claimed.discard(e.key)
                settled_elsewhere(e, "stored")
                continue
            got.append(i)
        return got

    try:
        pending = list(todo)
        while pending:
            mine[:], others[:] = pending, []
            batches = plan(mine, jobs=jobs if scheduler is None else 1, replicas=replicas,
                           memory_bytes=memory_bytes)
            if jobs == 1 and scheduler is None:
                for b in batches:
                    b = take(b)
                    if b:
                        for i, payload in _simulate_batch(
                                b, [mine[i].config for i in b], plugins=_batch_tasks(mine, b),
                                callback=prog.rounds if prog.enabled and len(b) == 1 else None):
                            handle(i, payload)
            else:
                _run_parallel(mine, batches, handle, take=take, jobs=jobs, scheduler=scheduler,
                              timeout=scheduler_timeout, report=report)
            pending = _wait_for_others(list(others), store, since, settled_elsewhere, done)
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
        for key in claimed:
            store.release(key)
        prog.close()
    report.wall = time.perf_counter() - t0
    return report


#: seconds between two looks at the runs another sweep is simulating
WAIT_POLL = 0.5


def _wait_for_others(others: Sequence[RunEntry], store: Store, since: str,
                     settle: Callable[[RunEntry, str, str | None], None],
                     done: Callable[[str], bool] | None = None) -> list[RunEntry]:
    """Wait for the runs that other live sweeps have claimed.  A run they store is
    ``settle``d as ``"stored"``; a run they record as failed (after ``since``) as
    ``"failed"``.  Returns, as soon as there are any, the runs whose claim was released
    without either (the other sweep died or was interrupted, or stored it without
    what ``done(key)`` asks, e.g. its model): this sweep claims them."""
    done = done or store.has
    left = list(others)
    while left:
        still, free = [], []
        for e in left:
            if done(e.key):
                settle(e, "stored")
            elif store.claim_owner(e.key) is not None:
                still.append(e)
            elif (f := store.failure(e.key)) is not None and str(f.get("failed_at", "")) >= since:
                settle(e, "failed", f"(in another sweep) {f.get('error')}")
            else:
                free.append(e)
        if free:
            return free + still
        left = still
        if left:
            time.sleep(WAIT_POLL)
    return []


def _account_stored(report: SweepReport, todo: Sequence[RunEntry], store: Store) -> None:
    """After an interruption: count runs that reached the store before their outcome
    was recorded (the interrupt arrived just after the atomic rename)."""
    seen = {o.entry.key for o in report.outcomes}
    for e in todo:
        if e.key not in seen and store.has(e.key):
            report.outcomes.append(RunOutcome(e, "ran", diverged=bool(store.get(e.key).diverged)))


def _batch_tasks(todo: Sequence[RunEntry], batch: Sequence[int]) -> tuple:
    """The plugin tasks of a batch's runs (each plugin once)."""
    return tuple(dict.fromkeys(t for i in batch for t in _tasks(todo[i])))


def _run_parallel(todo, batches, handle, *, take=list, jobs, scheduler, timeout, report) -> None:
    """Run the ``batches`` (indices into ``todo``) on workers; ``take(batch)`` is called
    as each is dispatched and gives the part of it to run (the runs this sweep claims)."""
    from joblib import Parallel, delayed, parallel_config

    tasks = (delayed(_simulate_batch)(b, [todo[i].config for i in b], plugins=_batch_tasks(todo, b))
             for b in map(take, batches) if b)
    client = None
    if scheduler is not None:
        client = _connect(scheduler, timeout)
        cfg = parallel_config(backend="dask", client=client, wait_for_workers_timeout=timeout,
                              n_jobs=jobs if jobs != 1 else -1)
    else:
        # every worker exits as soon as this process is gone (SIGKILL, out of memory)
        cfg = parallel_config(backend="loky", n_jobs=jobs, initializer=_exit_with_parent,
                              initargs=(os.getpid(),))
    try:
        with cfg, warnings.catch_warnings():
            # on Ctrl-C joblib warns that the tasks in flight were cancelled: we say so ourselves
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed.*")
            # max_nbytes=None: no memory-mapped arguments (the tasks are configs), so no
            # shared-memory folder that a killed sweep could leave behind
            par = Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs",
                           max_nbytes=None)
            for results in par(tasks):
                for i, payload in results:
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


# --------------------------------------------------------------------------- running


def _run_named(name: str, entries: Sequence[RunEntry], manifest: dict, store: Store | str | Path | None = None,
               *, jobs: int = 1, force: bool = False, quiet: bool = False, progress: bool | None = None,
               scheduler: str | None = None, replicas: int | None = None,
               memory_bytes: int | None = None, keep_models: bool = False,
               ) -> tuple[Store, list[RunEntry], SweepReport]:
    """Record the manifest ``name`` in the store and run its entries not stored yet
    (``jobs``, ``force``, ``scheduler``, ``keep_models`` as for :func:`execute`;
    ``quiet``: no lines for failed or diverged runs; ``progress``: the progress line,
    default on a terminal)."""
    store = store if isinstance(store, Store) else Store(store)
    store.clean_stale()
    entries = list({e.key: e for e in entries}.values())
    show = (not quiet) if progress is None else progress
    prog = Progress(label=name, enabled=show and (progress or sys.stderr.isatty()))
    runs = [{"key": e.key, "panel": e.panel, "line": e.line} for e in entries]
    store.write_sweep(name, {**manifest, **_with_plugins(entries), "runs": runs})
    report = execute(entries, store, jobs=jobs, scheduler=scheduler, force=force, progress=prog,
                     replicas=replicas, memory_bytes=memory_bytes, keep_models=keep_models,
                     on_outcome=None if quiet else _print_outcome(name))
    return store, entries, report


def run_spec(spec: Spec, *, results_dir: str | Path = "results", store: Store | str | Path | None = None,
             **options):
    """Run the spec's runs that are not stored yet, then write ``<figure>.csv`` from the
    store.  Returns ``(rows, report)``; failed runs are in ``report.failures`` (the CSV
    holds the others).  ``options``: ``jobs``, ``force``, ``quiet``, ``progress``,
    ``scheduler``, ``keep_models`` (:func:`_run_named`); the spec's own ``keep_models``
    keeps the models whatever the option says."""
    manifest = {
        "figure": spec.figure, "title": spec.title, "metric": spec.metric,
        "panels": [[str(p.get("name", "")), str(p.get("title", p.get("name", "")))] for p in spec.panels],
    }
    options["keep_models"] = bool(options.get("keep_models")) or spec.keep_models
    store, entries, report = _run_named(spec.figure, spec_entries(spec), manifest, store, **options)
    rows, _ = rows_from_store(entries, store, spec.figure)
    write_csv(Path(results_dir) / f"{spec.figure}.csv", rows)
    return rows, report


def run_matrix(spec: MatrixSpec, *, results_dir: str | Path = "results", store: Store | str | Path | None = None,
               **options):
    """Run the matrix's cells that are not stored yet, then write ``<name>.csv`` (one
    line per cell and seed, :data:`~byzsim.runs.tables.MATRIX_COLUMNS`) from the store.
    Returns ``(rows, report)``; a failed cell is a line with ``status = error: …``.
    ``options`` as for :func:`run_spec`."""
    manifest = {"title": spec.title, "metric": "test_accuracy", "rows": list(spec.rows),
                "columns": list(spec.columns)}
    options["keep_models"] = bool(options.get("keep_models")) or spec.keep_models
    store, _, report = _run_named(spec.name, spec.entries, manifest, store, **options)
    rows = matrix_rows(spec, store)
    write_csv(Path(results_dir) / f"{spec.name}.csv", rows, MATRIX_COLUMNS)
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
