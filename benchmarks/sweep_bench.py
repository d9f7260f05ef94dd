"""Sweep benchmark: speed-up of local workers, and the per-run overhead of the result
store and of the scheduler relative to a typical run.

Run with ``byzsim bench --sweep`` or ``python benchmarks/sweep_bench.py [--runs 16]
[--rounds 5000] [--jobs 2]``.  Prints the numbers and writes
``benchmarks/sweep_results.json``.  Targets: a 16-run sweep with 2 workers
at least 1.7x faster than with 1; store + scheduler overhead per run under 5 % of a
typical run.

The workload: scikit-learn digits, 20 clients of which 4 Byzantine (Gaussian attack),
AsynRSA-VR and Gm (geometric median), ``runs/2`` seeds each, ``--rounds`` rounds (a few
seconds per run on a 2-core machine).  Each timed sweep is ``python -m byzsim sweep
… --jobs N`` in a fresh process with an empty store, as a user runs it: start-up,
imports, data loading and worker start-up are included.  The speed-up is only
meaningful on an otherwise idle machine: the script prints the load average and how
much slower a run gets next to another one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from byzsim.store import Store  # noqa: E402
from byzsim.sweep import execute  # noqa: E402


WORKLOAD = ["dataset=digits", "n_clients=20", "n_byzantine=4", "attack=gaussian", "attack_params.std=100",
            "lr=0.01", "eval_every=250", "method=asynrsa-vr,byrd-sgd"]


def workload(runs: int, rounds: int, seed0: int = 0) -> list:
    """The entries of :func:`sweep_args` (AsynRSA-VR and Gm, runs/2 seeds each)."""
    from byzsim.sweep import load_entries

    entries, _ = load_entries([], sweep_args(runs, rounds, seed0))
    return entries


def sweep_args(runs: int, rounds: int, seed0: int = 0) -> list[str]:
    return [*WORKLOAD, f"rounds={rounds}", f"seed=range({seed0},{seed0 + (runs + 1) // 2})"]


def timed_sweep(runs: int, rounds: int, jobs: int) -> dict:
    """Wall time of ``python -m byzsim sweep … --jobs N`` in a fresh process and an empty
    store, as a user runs it (start-up, imports and worker start-up included)."""
    with tempfile.TemporaryDirectory(prefix="byzsim-bench-") as d:
        cmd = [sys.executable, "-m", "byzsim", "sweep", *sweep_args(runs, rounds), "--store", f"{d}/store",
               "--jobs", str(jobs), "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        wall = time.perf_counter() - t0
        store = Store(Path(d) / "store")
        entries = workload(runs, rounds)
        run_walls = [store.get(e.key).meta["wall_seconds"] for e in entries]
        t = time.perf_counter()
        rep2 = execute(entries, store, jobs=jobs)  # everything stored: skipped
        skip = time.perf_counter() - t
        assert rep2.skipped == len(entries)
    return {"wall": wall, "run_walls": run_walls, "skip_all": skip}


def store_cost(reps: int = 50, rows: int = 13) -> dict:
    """ms per Store.put of a typical metrics table, and per Store.has."""
    entries = workload(reps, 1000, seed0=1000)
    cols = {"round": np.arange(rows) * 250, "test_accuracy": np.random.rand(rows),
            "train_loss": np.random.rand(rows), "distance": np.random.rand(rows)}
    with tempfile.TemporaryDirectory(prefix="byzsim-bench-") as d:
        store = Store(Path(d) / "store")
        t = time.perf_counter()
        for e in entries:
            store.put(e.config, cols, seconds=1.0, extra={"wall_seconds": 1.0})
        put = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for e in entries:
            store.has(e.key)
        has = (time.perf_counter() - t) / reps
    return {"put_ms": put * 1e3, "has_ms": has * 1e3}


def _echo(i, payload):
    return i, payload


def scheduler_cost(jobs: int, tasks: int = 200, rows: int = 13) -> float:
    """ms per task of joblib/loky dispatch + result return (warm workers), with a payload
    the size of a run's metrics."""
    from joblib import Parallel, delayed

    payload = {"ok": True, "columns": {k: np.random.rand(rows) for k in ("round", "a", "b", "c")}}
    par = Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=1)
    list(par(delayed(_echo)(i, payload) for i in range(2 * jobs)))  # warm up
    t = time.perf_counter()
    list(par(delayed(_echo)(i, payload) for i in range(tasks)))
    return (time.perf_counter() - t) / tasks * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "sweep_results.json"))
    a = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    load = os.getloadavg()[0]
    print(f"{a.runs} runs of {a.rounds} rounds (digits, 20 clients, AsynRSA-VR / Gm); "
          f"load average before: {load:.2f} on {os.cpu_count()} CPUs"
          + ("  (busy machine: expect a lower speed-up)" if load > 0.5 else ""), flush=True)
    serial = timed_sweep(a.runs, a.rounds, 1)
    mean_run = statistics.mean(serial["run_walls"])
    print(f"  byzsim sweep --jobs 1: {serial['wall']:7.2f} s  (mean run {mean_run:.2f} s)", flush=True)
    par = timed_sweep(a.runs, a.rounds, a.jobs)
    print(f"  byzsim sweep --jobs {a.jobs}: {par['wall']:7.2f} s", flush=True)
    speedup = serial["wall"] / par["wall"]

    # end to end, serial: everything in the sweep command that is not a run (start-up and
    # imports included), per run
    serial_overhead = (serial["wall"] - sum(serial["run_walls"])) / a.runs
    sc = store_cost()
    sched = scheduler_cost(a.jobs)
    per_run = sc["put_ms"] + sc["has_ms"] + sched
    res = {
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg_before": load,
                    "loadavg_after": os.getloadavg()},
        "runs": a.runs, "rounds": a.rounds, "jobs": a.jobs,
        "serial_wall_s": serial["wall"], "parallel_wall_s": par["wall"], "speedup": speedup,
        "mean_run_s": mean_run,
        "serial_overhead_per_run_ms": serial_overhead * 1e3,
        "store_put_ms": sc["put_ms"], "store_has_ms": sc["has_ms"],
        "scheduler_per_task_ms": sched,
        "overhead_per_run_ms": per_run,
        "overhead_fraction": per_run / 1e3 / mean_run,
        "serial_overhead_fraction": serial_overhead / mean_run,
        "skip_all_stored_s": serial["skip_all"],
    }
    slow = statistics.mean(par["run_walls"]) / mean_run
    res["parallel_run_slowdown"] = slow
    print(f"  a run takes {slow:.2f}x as long next to another one as alone"
          + ("  <- the cores are shared with other work: the speed-up below is not representative"
             if slow > 1.15 else ""))
    util = sum(par["run_walls"]) / (a.jobs * par["wall"])
    res["worker_utilisation"] = util
    print(f"  speed-up with {a.jobs} workers: {speedup:.2f}x  (target >= 1.7x)")
    print(f"  worker utilisation (sum of run times / ({a.jobs} x wall)): {100 * util:.0f} %  "
          f"-> {a.jobs * util:.2f}x if a run were as fast next to another one as alone")
    print(f"  store: put {sc['put_ms']:.2f} ms/run (3 files fsync'ed, atomic rename), has {sc['has_ms']:.3f} ms/run")
    print(f"  scheduler (joblib/loky, warm): {sched:.2f} ms/task")
    print(f"  store + scheduler per run: {per_run:.1f} ms = {100 * res['overhead_fraction']:.2f} % "
          f"of a typical {mean_run:.2f} s run  (target < 5 %)")
    print(f"  end to end, serial sweep: wall - sum of run times = {serial_overhead * 1e3:.1f} ms/run "
          f"= {100 * serial_overhead / mean_run:.2f} %")
    print(f"  rerun with all {a.runs} runs stored: {serial['skip_all'] * 1e3:.0f} ms")
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
