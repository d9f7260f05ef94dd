"""MLP benchmark: ms per round of paper B's Fig. 10 workload, and the SAGA state size.

Workload: non-i.i.d. MNIST (``by_class``, 3 clients per class), W = 30 clients of which
B = 3 Byzantine (sample-duplicating), MLP 784-50-50-10 (d = 42,310), minibatch 32,
SAGA with the factored table, s = 2 resampling, geometric median: RS-Byrd-SAGA as in
``experiments/paper_b/fig10.toml``.  One BLAS thread (as ``simulate.run`` uses).

Prints the median ms per round over blocks of rounds (and the inter-quartile range; also
the process CPU time per round, which other processes sharing the cores disturb less), a
breakdown of one round into its parts, the cost of one evaluation, and the SAGA state
bytes: the factored table actually allocated vs the dense ``(n, J, d)`` table it
replaces (computed, never allocated: ~18 GB in float64).

Usage: ``python benchmarks/mlp_bench.py [--rounds 100] [--blocks 7] [--dtype float32] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from byzsim.algorithms import sample_batch  # noqa: E402
from byzsim.attacks import apply_attack  # noqa: E402
from byzsim.config import make_config  # noqa: E402
from byzsim.simulate import build_problem, evaluate, make_method  # noqa: E402

FIG10 = dict(
    method="rs-byrd-saga", dataset="mnist", partition="by_class", model="mlp",
    model_params={"hidden": [50, 50]}, n_clients=30, n_byzantine=3, byzantine_indices=[0, 1, 2],
    attack="sample_duplicating", lr=0.1, batch_size=32,
)


def _median_ms(f, reps: int, blocks: int = 5) -> float:
    f()
    ts = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        ts.append((time.perf_counter() - t) / reps * 1e3)
    return float(np.median(ts))


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _gb(b: float) -> str:
    return f"{b / 1e9:.3f} GB" if b >= 1e8 else f"{b / 1e6:.2f} MB"


def bench(rounds: int = 100, blocks: int = 7, dtype: str = "float64") -> dict:
    cfg = make_config(rounds=rounds, dtype=dtype, **FIG10)
    t = time.perf_counter()
    problem = build_problem(cfg, np.random.default_rng(0))
    t_build = time.perf_counter() - t
    model, n, J, d = problem.model, problem.n, problem.J, problem.model.dim
    method = make_method(cfg, problem)
    est = method.estimator
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    state = method.init(model.init(rng).astype(problem.X.dtype))
    t_init = time.perf_counter() - t
    for _ in range(30):  # warm-up (and move away from the initial point)
        method.step(state, rng)
    per_round, cpu_per_round = [], []
    for _ in range(blocks):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            method.step(state, rng)
        per_round.append((time.perf_counter() - t) / rounds * 1e3)
        cpu_per_round.append((time.process_time() - c) / rounds * 1e3)
    q1, med, q3 = np.percentile(per_round, [25, 50, 75])

    # -- breakdown of one round (the same calls the round makes, timed one by one) ---
    idx = sample_batch(rng, n, J, cfg.batch_size)
    ar = np.arange(n)[:, None]
    Xb, yb = problem.X[ar, idx], problem.y[ar, idx]
    new = model.sample_factors(state.x, Xb, yb)
    old = tuple(e[ar, idx] for e in state.table.entries)
    out = np.empty((n, d), dtype=problem.X.dtype)
    v = est(state.table, state.x, idx, None)
    apply_attack(method.attack, v, problem.byzantine, rng)
    parts = {
        "gather batch X[i, idx]": _median_ms(lambda: problem.X[ar, idx], 20),
        "sample_factors (forward + backward)": _median_ms(lambda: model.sample_factors(state.x, Xb, yb), 20),
        "two passes: grad_from_factors(new) - grad_from_factors(old)": _median_ms(
            lambda: np.subtract(model.grad_from_factors(Xb, new, out=out), model.grad_from_factors(Xb, old), out=out), 20),
        "one pass: grad_diff_from_factors(new, old)": _median_ms(
            lambda: model.grad_diff_from_factors(Xb, new, old, out=out), 20),
        "SAGA estimator, whole call": _median_ms(lambda: est(state.table, state.x, idx, None), 20),
        "aggregate: resample (s=2) + geometric median": _median_ms(lambda: method.aggregate(v, None, rng), 20),
    }
    t = time.perf_counter()
    for _ in range(3):
        evaluate(problem, state)
    eval_ms = (time.perf_counter() - t) / 3 * 1e3

    k = sum(model.factor_sizes())
    dense_entries = n * J * d
    saga = {
        "factored_bytes": int(state.table.nbytes),
        "factored_entries_bytes": int(sum(e.nbytes for e in state.table.entries)),
        "mean_bytes": int(state.table.mean.nbytes),
        "dense_float64_bytes": 8 * dense_entries + int(state.table.mean.nbytes),
        "dense_float32_bytes": 4 * dense_entries + 4 * n * d,
        "floats_per_sample": {"factored": k, "dense": d},
    }
    saga["ratio_vs_dense_float64"] = saga["factored_bytes"] / saga["dense_float64_bytes"]
    return {
        "workload": "paper B Fig. 10 RS-Byrd-SAGA: MNIST by_class, W=30, B=3, MLP 784-50-50-10, batch 32, SAGA factored, s=2, geomed",
        "n": n, "J": J, "d": d, "saga_table": est.kind, "dtype": dtype,
        "saga_difference": "one pass" if getattr(est.form, "grad_diff", None) is not None else "two passes",
        "ms_per_round": float(med), "iqr": [float(q1), float(q3)], "blocks": per_round,
        "cpu_ms_per_round": float(np.median(cpu_per_round)), "load_average": _loadavg(),
        "parts_ms": parts, "eval_ms": eval_ms, "build_s": t_build, "saga_init_s": t_init,
        "saga": saga,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100, help="rounds per timed block (default 100)")
    ap.add_argument("--blocks", type=int, default=7, help="timed blocks (default 7)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                    help="arithmetic of data, model and tables (config field dtype; default float64)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        r = bench(a.rounds, a.blocks, a.dtype)
    s = r["saga"]
    print(r["workload"])
    print(f"  n = {r['n']} clients, J = {r['J']} samples each, d = {r['d']}, {r['dtype']}, SAGA table: {r['saga_table']} "
          f"(table difference computed in {r['saga_difference']})")
    print(f"  ms per round: {r['ms_per_round']:.2f}  (IQR {r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}, "
          f"{a.blocks} blocks of {a.rounds} rounds, 1 BLAS thread)")
    print(f"  CPU ms per round: {r['cpu_ms_per_round']:.2f}  (process time: less sensitive to other "
          f"processes on the machine; load average {r['load_average']})")
    print("  breakdown (ms, timed separately):")
    for k, v in r["parts_ms"].items():
        print(f"    {k:62s} {v:7.2f}")
    print(f"  one evaluation (10k test + 10k train-loss samples): {r['eval_ms']:.1f} ms")
    print(f"  problem build {r['build_s']:.1f} s, SAGA table init {r['saga_init_s']:.1f} s")
    print(f"  SAGA state ({r['dtype']} run):")
    print(f"    factored (allocated):  {_gb(s['factored_bytes'])}  = entries {_gb(s['factored_entries_bytes'])} "
          f"({s['floats_per_sample']['factored']} floats/sample) + running mean {_gb(s['mean_bytes'])}")
    print(f"    dense float64 (computed): {_gb(s['dense_float64_bytes'])}  ({s['floats_per_sample']['dense']} floats/sample)")
    print(f"    dense float32 (computed): {_gb(s['dense_float32_bytes'])}")
    print(f"    factored / dense float64 = {100 * s['ratio_vs_dense_float64']:.3f} %")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
