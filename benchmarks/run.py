"""byzsim benchmarks: ms per round of the papers' workloads, and aggregator costs.

Run with ``make bench``.  Prints a table and writes ``BENCHMARKS.md`` and
``benchmarks/results.json``.  Numbers are medians over repeated blocks of rounds
(the spread is the inter-quartile range), measured with one BLAS thread.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from byzsim.aggregators import AGGREGATORS, get_aggregator  # noqa: E402
from byzsim.config import make_config  # noqa: E402
from byzsim.simulate import build_problem, evaluate, make_method  # noqa: E402

WORKLOADS = {
    "A: paper A Fig. 2, AsynRSA-VR (25 clients, 1-sample SAGA, l1, gamma=1, same-value)": dict(
        method="asynrsa-vr", dataset="mnist", partition="unbalanced", n_clients=25, n_byzantine=5,
        byzantine_indices=[20, 21, 22, 23, 24], lr=0.001, batch_size=1, penalty=0.05,
        server_l2=0.01, attack="same_value", attack_params={"c": 10000.0},
    ),
    "A': same, Gaussian attack (std 100)": dict(
        method="asynrsa-vr", dataset="mnist", partition="unbalanced", n_clients=25, n_byzantine=5,
        byzantine_indices=[20, 21, 22, 23, 24], lr=0.001, batch_size=1, penalty=0.05,
        server_l2=0.01, attack="gaussian", attack_params={"std": 100.0},
    ),
    "A'': same, gamma=0.4": dict(
        method="asynrsa-vr", dataset="mnist", partition="unbalanced", n_clients=25, n_byzantine=5,
        byzantine_indices=[20, 21, 22, 23, 24], lr=0.001, batch_size=1, penalty=0.05,
        server_l2=0.01, participation=0.4, attack="same_value", attack_params={"c": 10000.0},
    ),
    "Gm (Fig. 2 baseline: 25 clients, 1-sample SGD, geometric median)": dict(
        method="byrd-sgd", dataset="mnist", partition="unbalanced", n_clients=25, n_byzantine=5,
        byzantine_indices=[20, 21, 22, 23, 24], lr=0.001, batch_size=1, server_l2=0.01,
        attack="same_value", attack_params={"c": 10000.0},
    ),
    "Krum (Fig. 2 baseline)": dict(
        method="krum", dataset="mnist", partition="unbalanced", n_clients=25, n_byzantine=5,
        byzantine_indices=[20, 21, 22, 23, 24], lr=0.001, batch_size=1, server_l2=0.01,
        attack="same_value", attack_params={"c": 10000.0},
    ),
}


def time_rounds(cfg_kw: dict, rounds: int = 200, blocks: int = 7) -> dict:
    cfg = make_config(rounds=rounds, **cfg_kw)
    problem = build_problem(cfg, np.random.default_rng(0))
    method = make_method(cfg, problem)
    rng = np.random.default_rng(1)
    state = method.init(problem.model.init(rng))
    for _ in range(50):  # warm-up
        method.step(state, rng)
    per_round = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(rounds):
            method.step(state, rng)
        per_round.append((time.perf_counter() - t) / rounds * 1e3)
    t = time.perf_counter()
    for _ in range(5):
        evaluate(problem, state)
    ev = (time.perf_counter() - t) / 5 * 1e3
    q1, med, q3 = np.percentile(per_round, [25, 50, 75])
    out = {"ms_per_round": med, "iqr": [q1, q3], "eval_ms": ev, "J": problem.J, "d": problem.model.dim}
    if state.table is not None:
        out["saga_bytes"] = state.table.nbytes
    return out


def time_aggregators(shape=(30, 7850), reps=50) -> dict:
    rng = np.random.default_rng(0)
    z = rng.normal(size=shape)
    z[: shape[0] // 5] += 100.0  # a few outliers so robust rules have work to do
    out = {}
    for name in AGGREGATORS.names():
        params = {"f": shape[0] // 5} if name in ("krum", "multi_krum", "trimmed_mean") else {}
        agg = get_aggregator(name, **params)
        agg(z)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            agg(z)
            ts.append(time.perf_counter() - t)
        out[name] = float(np.median(ts) * 1e3)
    return out


def machine() -> dict:
    try:
        from threadpoolctl import threadpool_info

        pools = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")} for p in threadpool_info()]
    except ImportError:
        pools = []
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "blas": pools,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def main() -> int:
    res = {"machine": machine(), "workloads": {}, "aggregators": {}}
    for name, kw in WORKLOADS.items():
        r = time_rounds(kw)
        res["workloads"][name] = r
        print(f"{name:80s} {r['ms_per_round']:7.3f} ms/round  (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; eval {r['eval_ms']:.1f} ms)")
    res["aggregators"]["(30, 7850)"] = time_aggregators()
    for k, v in res["aggregators"]["(30, 7850)"].items():
        print(f"aggregator {k:20s} on (30, 7850): {v:7.3f} ms")
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(res, indent=2, default=float))
    write_markdown(res)
    return 0


def write_markdown(res: dict) -> None:
    m = res["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`benchmarks/run.py`); raw numbers in `benchmarks/results.json`.",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, NumPy {m['numpy']}, "
        f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}.",
        "",
        "## One federated round (median over 7 blocks of 200 rounds; IQR)",
        "",
        "| workload | ms / round | IQR | evaluation (ms) |",
        "|---|---|---|---|",
    ]
    for name, r in res["workloads"].items():
        lines.append(f"| {name} | {r['ms_per_round']:.3f} | {r['iqr'][0]:.3f}–{r['iqr'][1]:.3f} | {r['eval_ms']:.1f} |")
    lines += ["", "## Aggregators alone on (30, 7850) (median of 50 calls)", "", "| aggregator | ms |", "|---|---|"]
    for k, v in res["aggregators"]["(30, 7850)"].items():
        lines.append(f"| {k} | {v:.3f} |")
    extra = ROOT / "benchmarks" / "NOTES.md"
    if extra.exists():
        lines += ["", extra.read_text().strip()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
