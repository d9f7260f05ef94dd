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
from byzsim.models import MODELS  # noqa: E402
from byzsim.simulate import build_problem, evaluate, make_method, problem_for  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from naive import make_naive  # noqa: E402

FIG7 = dict(
    method="rs-byrd-saga", dataset="mnist", partition="by_class", n_clients=30, n_byzantine=6,
    byzantine_indices=[0, 1, 2, 3, 4, 5], attack="sample_duplicating", lr=0.5, batch_size=32,
)
FIG10_MLP = dict(
    method="rs-byrd-saga", dataset="mnist", partition="by_class", model="mlp",
    model_params={"hidden": [50, 50]}, n_clients=30, n_byzantine=3, byzantine_indices=[0, 1, 2],
    attack="sample_duplicating", lr=0.1, batch_size=32,
)

#: workload A: paper A Fig. 2's problem (25 clients of which 5
#: Byzantine, unbalanced MNIST, 1-sample SAGA, l1 penalty, same-value attack), gamma = 0.4
A = dict(
    method="asynrsa-vr", dataset="mnist", partition="unbalanced", n_clients=25, n_byzantine=5,
    byzantine_indices=[20, 21, 22, 23, 24], lr=0.001, batch_size=1, penalty=0.05,
    server_l2=0.01, participation=0.4, attack="same_value", attack_params={"c": 10000.0},
)
A_FULL = dict(A, participation=1.0)  # Fig. 2 itself: full participation
_F2 = {k: v for k, v in A_FULL.items() if k not in ("method", "penalty", "participation")}  # Gm, Krum
F32 = {"dtype": "float32"}

WORKLOADS = {
    "A: AsynRSA-VR, 25 clients, 1-sample SAGA, l1, gamma=0.4, same-value": A,
    "A, float32": dict(A, **F32),
    "A-full: same, gamma=1 (paper A Fig. 2)": A_FULL,
    "A-full, float32 (what `make fig2` runs)": dict(A_FULL, **F32),
    "A-full, Gaussian attack (std 100)": dict(A_FULL, attack="gaussian", attack_params={"std": 100.0}),
    "Gm (Fig. 2 baseline: 25 clients, 1-sample SGD, geometric median)": dict(_F2, method="byrd-sgd"),
    "Krum (Fig. 2 baseline)": dict(_F2, method="krum"),
    "B: paper B Fig. 7, RS-Byrd-SAGA (30 clients by class, 6 sample-duplicating, batch 32, s=2, Gm)": FIG7,
    "B, float32": dict(FIG7, **F32),
}

#: workload C (timed in blocks of 20 rounds)
WORKLOADS_C = {
    "C: paper B Fig. 10, MLP 784-50-50-10, RS-Byrd-SAGA (30 clients, batch 32, s=2, Gm)": FIG10_MLP,
    "C, float32": dict(FIG10_MLP, **F32),
}

FIG4_6 = dict(
    method="byrd-sgd", dataset="mnist", partition="iid", n_clients=30, n_byzantine=6,
    byzantine_indices=[0, 1, 2, 3, 4, 5], attack="sign_flipping", attack_params={"c": -5.0},
    lr=0.5, batch_size=32,
)
_DIGITS = dict(dataset="digits", n_clients=10, n_byzantine=2, byzantine_indices=[8, 9], batch_size=2)

#: replica-axis workloads: name -> (config, target) with target ("speedup", S, factor)
#: (per-run throughput at S vs the per-run path) or ("ms", S, limit) (ms per run-round)
REPLICA_WORKLOADS = {
    "Fig. 2 AsynRSA-VR (A-full), float32": (dict(A_FULL, **F32), ("speedup", 8, 2.0)),
    "Fig. 2 AsynRSA-VR (A-full), float64": (A_FULL, ("speedup", 8, 2.0)),
    "A (gamma = 0.4), float64": (A, None),
    "Fig. 2 Gm row (1-sample SGD, geometric median), float32": (dict(_F2, method="byrd-sgd", **F32), ("speedup", 8, 2.0)),
    "digits AsynRSA-VR (d = 650, 10 clients, gamma = 0.6, Gaussian)": (
        dict(_DIGITS, method="asynrsa-vr", lr=0.01, participation=0.6, attack="gaussian",
             attack_params={"std": 100.0}), ("speedup", 16, 8.0)),
    "digits Byrd-SAGA (d = 650, 10 clients, sign-flipping)": (
        dict(_DIGITS, method="byrd-saga", lr=0.05, attack="sign_flipping"), ("speedup", 16, 8.0)),
    "B: Fig. 7 RS-Byrd-SAGA, float32": (dict(FIG7, **F32), ("ms", 8, 1.5)),
    "B: Fig. 7 RS-Byrd-SAGA, float64": (FIG7, ("ms", 8, 1.5)),
    "Figs. 4-6 i.i.d. Byrd-SGD (30 clients, batch 32, Gm), float32": (dict(FIG4_6, **F32), ("ms", 8, 1.1)),
    "C: Fig. 10 MLP RS-Byrd-SAGA, float32": (dict(FIG10_MLP, **F32), ("ms", 8, 6.0)),
}
REPLICA_S = (1, 4, 8, 16)

#: sweeps over a component's per-replica parameter (declared ``replica_params``) on a
#: digits workload: name -> (config, path of the swept parameter, values)
SCALE_SWEEPS = {
    "digits Byrd-SAGA, sign-flipping c (8 values)": (
        dict(_DIGITS, method="byrd-saga", lr=0.05, attack="sign_flipping", attack_params={"c": -5.0}),
        ("attack_params", "c"), (-8.0, -5.0, -3.0, -2.0, -1.0, -0.5, 2.0, 4.0)),
    "digits Byrd-SGD, Gaussian std (8 values; drawn replica by replica)": (
        dict(_DIGITS, method="byrd-sgd", lr=0.05, attack="gaussian", attack_params={"std": 1.0}),
        ("attack_params", "std"), (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)),
    "digits SGD + centered clipping, tau (8 values), same-value c = 100": (
        dict(_DIGITS, method="sgd", aggregator="centered_clipping", aggregator_params={"tau": 1.0}, lr=0.05,
             attack="same_value", attack_params={"c": 100.0}),
        ("aggregator_params", "tau"), (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),
}

#: workloads timed against the naive per-client loop (benchmarks/naive.py; float64)
NAIVE_PAIRS = {"A": A, "A-full": A_FULL, "B": FIG7}

#: round-time targets: workload -> ms per round
TARGETS_MS = {"A": 0.5, "B": 1.5, "C": 6.0}


def _stats(ts) -> dict:
    q1, med, q3 = np.percentile(ts, [25, 50, 75])
    return {"ms_per_round": float(med), "iqr": [float(q1), float(q3)]}


def time_naive_pair(cfg_kw: dict, rounds_vec: int = 50, rounds_naive: int = 10, blocks: int = 5) -> dict:
    """Vectorized step vs the naive per-client loop on the same problem, timed in
    alternating blocks (so load from other processes hits both alike).  The naive
    geometric median uses byzsim's default tolerance (1e-5 relative, 80 iterations)."""
    cfg = make_config(rounds=rounds_vec, **cfg_kw)
    problem = build_problem(cfg, np.random.default_rng(0))
    method = make_method(cfg, problem)
    x0 = problem.model.init(np.random.default_rng(1))
    state = method.init(x0)
    naive = make_naive(cfg, problem, **({} if cfg.family == "penalty" else {"gm_tol": 1e-5, "gm_max_iter": 80}))
    naive.init(x0)
    rv, rn = np.random.default_rng(2), np.random.default_rng(2)
    for _ in range(5):
        method.step(state, rv)
        naive.step(rn)
    tv, tn = [], []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(rounds_vec):
            method.step(state, rv)
        tv.append((time.perf_counter() - t) / rounds_vec * 1e3)
        t = time.perf_counter()
        for _ in range(rounds_naive):
            naive.step(rn)
        tn.append((time.perf_counter() - t) / rounds_naive * 1e3)
    v, n = _stats(tv), _stats(tn)
    return {"vectorized": v, "naive": n, "speedup": n["ms_per_round"] / v["ms_per_round"],
            "J": problem.J, "d": problem.model.dim}


def time_scaling(kw_fn, values, rounds: int = 5, blocks: int = 3) -> dict:
    out = {}
    for val in values:
        kw = kw_fn(val)
        r = time_rounds(kw, rounds=rounds, blocks=blocks, warmup=2, evals=1)
        out[str(val)] = r
        print(f"  {val:>6}: {r['ms_per_round']:9.3f} ms/round (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; d={r['d']}, J={r['J']})")
    return out


def _synthetic(n: int, n_features: int, J: int) -> dict:
    return dict(
        method="byrd-saga", dataset="synthetic",
        dataset_params={"n_samples": n * J, "n_features": n_features, "n_classes": 10, "n_test": 200},
        n_clients=n, n_byzantine=max(1, n // 10), attack="sign_flipping", lr=0.1, batch_size=8,
    )


def time_big_aggregators(shape=(100, 100000), reps: int = 5, limit_s: float = 1.0) -> dict:
    """Aggregators on a big message array; a rule is probed on a 10x thinner array first
    and skipped when the extrapolated call would exceed ``limit_s``."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=shape)
    z[: shape[0] // 5] += 100.0
    small = z[:, : shape[1] // 10].copy()
    out, seen = {}, set()
    for name in AGGREGATORS.names():
        fn = AGGREGATORS[name]
        if id(fn) in seen:
            continue  # an alias
        seen.add(id(fn))
        try:
            params = {"f": shape[0] // 5} if name in ("krum", "multi_krum", "trimmed_mean") else {}
            agg = get_aggregator(name, **params)
            t = time.perf_counter()
            agg(small)
            if (time.perf_counter() - t) * 10 > limit_s:
                out[name] = {"skipped": f"> {limit_s} s per call (extrapolated)"}
                continue
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                agg(z)
                ts.append((time.perf_counter() - t) * 1e3)
            q1, med, q3 = np.percentile(ts, [25, 50, 75])
            out[name] = {"ms": float(med), "iqr": [float(q1), float(q3)]}
        except Exception as e:  # noqa: BLE001 - a rule needing parameters we do not know
            out[name] = {"skipped": f"{type(e).__name__}: {e}"[:120]}
    return out


def time_rounds(cfg_kw: dict, rounds: int = 200, blocks: int = 7, warmup: int = 50, evals: int = 5) -> dict:
    cfg = make_config(rounds=rounds, **cfg_kw)
    problem = build_problem(cfg, np.random.default_rng(0))
    method = make_method(cfg, problem)
    rng = np.random.default_rng(1)
    state = method.init(problem.model.init(rng))
    for _ in range(warmup):
        method.step(state, rng)
    per_round = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(rounds):
            method.step(state, rng)
        per_round.append((time.perf_counter() - t) / rounds * 1e3)
    t = time.perf_counter()
    for _ in range(evals):
        evaluate(problem, state)
    ev = (time.perf_counter() - t) / evals * 1e3
    q1, med, q3 = np.percentile(per_round, [25, 50, 75])
    out = {"ms_per_round": med, "iqr": [q1, q3], "eval_ms": ev, "J": problem.J, "d": problem.model.dim,
           "J_min": int(problem.counts.min()), "N": int(problem.counts.sum())}
    if state.table is not None:
        out["saga_bytes"] = state.table.nbytes
    return out


def _replica_setup(cfg_kw: dict, S: int):
    """Method, state and generators of S replicas of one workload (one shared data set,
    S distinct random streams, as replicas with equal data)."""
    cfg = make_config(rounds=1000, **cfg_kw)
    problem = problem_for(cfg)
    method = make_method(cfg, problem)
    gens = [np.random.default_rng(100 + s) for s in range(S)]
    x0 = np.stack([problem.model.init(g) for g in gens]).astype(problem.X.dtype)
    state = method.init(x0[0] if S == 1 else x0)
    return method, state, (gens[0] if S == 1 else gens)


def time_replicas(cfg_kw: dict, S_values=REPLICA_S, rounds: int = 20, blocks: int = 5, warmup: int = 3) -> dict:
    """ms per run-round of S replicas advanced together (one ``step`` of the batch / S),
    S = 1 being the per-run path (``x (d,)``); blocks of the S values interleaved so that
    load from other processes hits all alike."""
    setups = {S: _replica_setup(cfg_kw, S) for S in S_values}
    for S, (method, state, rng) in setups.items():
        for _ in range(warmup):
            method.step(state, rng)
    ts = {S: [] for S in S_values}
    for _ in range(blocks):
        for S, (method, state, rng) in setups.items():
            r = max(2, rounds // S)
            t = time.perf_counter()
            for _ in range(r):
                method.step(state, rng)
            ts[S].append((time.perf_counter() - t) / r / S * 1e3)
    base = float(np.median(ts[S_values[0]]))
    out = {}
    for S in S_values:
        st = _stats(ts[S])
        st["speedup"] = base / st["ms_per_round"]
        st["run_rounds_per_s"] = 1e3 / st["ms_per_round"]
        out[str(S)] = st
    return out


def time_scale_sweep(cfg_kw: dict, path: tuple, values, rounds: int = 40, blocks: int = 5, warmup: int = 3) -> dict:
    """A sweep over one per-replica parameter: ms per run-round of the S = len(values)
    runs stacked in one batch (one ``step`` / S) against the same runs stepped one by
    one, in interleaved blocks in one process (so that load from other processes hits
    both alike); also ``run_batch`` vs ``run`` end to end (setup and 6 evaluations
    included, ``5 · rounds`` rounds each)."""
    from byzsim.simulate import _with_params, group_replicas, prepare_batch, run, run_batch

    base = make_config(rounds=rounds, **cfg_kw)
    cfgs = []
    for v in values:
        a, g, p = _with_params(base, {path: v})
        cfgs.append(base.replace(attack_params=a, aggregator_params=g, preaggregators=p))
    assert len(group_replicas(cfgs)) == 1, "the swept parameter must be declared replica_params"
    stacked = prepare_batch(cfgs)
    alone = [prepare_batch([c]) for c in cfgs]
    for b in [stacked, *alone]:
        for _ in range(warmup):
            b.method.step(b.state, b.rng)
    S = len(cfgs)
    ts = {"stacked": [], "run_by_run": []}
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(rounds):
            stacked.method.step(stacked.state, stacked.rng)
        ts["stacked"].append((time.perf_counter() - t) / rounds / S * 1e3)
        t = time.perf_counter()
        for b in alone:
            for _ in range(rounds):
                b.method.step(b.state, b.rng)
        ts["run_by_run"].append((time.perf_counter() - t) / rounds / S * 1e3)
    out = {k: _stats(v) for k, v in ts.items()}
    out["speedup"] = out["run_by_run"]["ms_per_round"] / out["stacked"]["ms_per_round"]
    end = {"run_batch": [], "run": []}
    long = [c.replace(rounds=5 * rounds, eval_every=rounds) for c in cfgs]
    for _ in range(max(1, blocks // 2)):
        t = time.perf_counter()
        run_batch(long)
        end["run_batch"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for c in long:
            run(c)
        end["run"].append(time.perf_counter() - t)
    out["end_to_end_s"] = {k: float(np.median(v)) for k, v in end.items()}
    out["end_to_end_speedup"] = out["end_to_end_s"]["run"] / out["end_to_end_s"]["run_batch"]
    out["S"], out["rounds"], out["end_to_end_rounds"] = S, rounds, 5 * rounds
    return out


def run_scale_sweeps(quick: bool) -> dict:
    """The per-replica parameter sweeps; ``"_load"`` as :func:`run_replicas`."""
    out = {"_load": [os.getloadavg()[0]]}
    for name, (kw, path, values) in SCALE_SWEEPS.items():
        r = time_scale_sweep(kw, path, values, rounds=10 if quick else 40, blocks=2 if quick else 5)
        out[name] = r
        print(f"{name}: stacked {r['stacked']['ms_per_round']:.3f} ms/run-round, run by run "
              f"{r['run_by_run']['ms_per_round']:.3f} ({r['speedup']:.1f}x); end to end "
              f"{r['end_to_end_s']['run_batch']:.2f} s vs {r['end_to_end_s']['run']:.2f} s ({r['end_to_end_speedup']:.1f}x)")
    out["_load"].append(os.getloadavg()[0])
    return out


def replica_memory(cfg_kw: dict, S: int = 8, rounds: int = 2) -> dict:
    """Peak traced memory (tracemalloc) of building S replicas and running a few rounds,
    the data set excluded (shared): per replica, from S and 1 replicas; plus
    :func:`byzsim.simulate.replica_bytes` (own data included) and the data set's size."""
    import tracemalloc

    from byzsim.simulate import replica_bytes

    cfg = make_config(rounds=1000, **cfg_kw)
    problem = problem_for(cfg)  # built outside the trace
    peaks = {}
    for k in (1, S):
        tracemalloc.start()
        method, state, rng = _replica_setup(cfg_kw, k)
        for _ in range(rounds):
            method.step(state, rng)
        peaks[k] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del method, state
    data = problem.X.nbytes + problem.y.nbytes + problem.X_eval.nbytes + problem.y_eval.nbytes
    return {"per_replica_state_MB": (peaks[S] - peaks[1]) / (S - 1) / 1e6, "one_replica_state_MB": peaks[1] / 1e6,
            "data_MB": data / 1e6, "replica_bytes_estimate_MB": replica_bytes(cfg, problem) / 1e6}


def time_aggregators(shape=(30, 7850), reps=50) -> dict:
    rng = np.random.default_rng(0)
    z = rng.normal(size=shape)
    z[: shape[0] // 5] += 100.0  # a few outliers so robust rules have work to do
    out = {}
    for name in AGGREGATORS.names():
        params = {"f": shape[0] // 5} if name in ("krum", "multi_krum", "trimmed_mean") else {}
        agg = get_aggregator(name, **params)
        try:
            agg(z)
        except Exception as e:  # noqa: BLE001 - e.g. smea's subset limit with the default f
            print(f"aggregator {name} on {shape}: skipped ({type(e).__name__}: {str(e)[:80]})")
            out[name] = float("nan")
            continue
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            agg(z)
            ts.append(time.perf_counter() - t)
        out[name] = float(np.median(ts) * 1e3)
    return out


def time_geomed_target(reps: int = 100) -> dict:
    """The aggregator target: the geometric median of (30, 7850) messages, converged
    to ``tol = 1e-6``; messages like a Fig. 7 round's (24 regular gradients around a
    common mean, 6 Byzantine rows ~100 away).  Median of ``reps`` calls, and the number
    of Weiszfeld updates the call needs (counted from its objective on a copy)."""
    rng = np.random.default_rng(0)
    out = {}
    for dt in ("float64", "float32"):
        z = (rng.normal(size=7850) + 0.1 * rng.normal(size=(30, 7850))).astype(dt)
        z[:6] += 100.0
        gm = get_aggregator("geometric_median", tol=1e-6)
        gm(z)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            gm(z)
            ts.append((time.perf_counter() - t) * 1e3)
        iters = _count_weiszfeld_updates(z, 1e-6)
        q1, med, q3 = np.percentile(ts, [25, 50, 75])
        out[dt] = {"ms": float(med), "iqr": [float(q1), float(q3)], "iterations": iters}
    return out


def _count_weiszfeld_updates(z, tol) -> int:
    """Smallest ``max_iter`` whose output equals the converged call's (the call stops at
    the first update that meets ``tol``)."""
    full = get_aggregator("geometric_median", tol=tol)(z)
    for k in range(1, 81):
        if np.array_equal(get_aggregator("geometric_median", tol=tol, max_iter=k)(z), full):
            return k
    return 80


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


def run_replicas(quick: bool) -> dict:
    """The replica section; ``"_load"``: the machine's 1-minute load average before and
    after (other processes share the cores: absolute ms scale with it, ratios less)."""
    out = {"_load": [os.getloadavg()[0]]}
    for name, (kw, target) in REPLICA_WORKLOADS.items():
        r = time_replicas(kw, rounds=8 if quick else 32, blocks=2 if quick else 5)
        mem = replica_memory(kw, S=4 if quick else 8)
        out[name] = {"S": r, "memory": mem, "target": target}
        print(f"{name}: " + ", ".join(f"S={S} {v['ms_per_round']:.3f} ms ({v['speedup']:.1f}x)" for S, v in r.items())
              + f"; state {mem['per_replica_state_MB']:.1f} MB/replica, data {mem['data_MB']:.0f} MB")
    out["_load"].append(os.getloadavg()[0])
    return out


#: ragged clients: the equal-size workloads next to Dirichlet(0.5) label skew (and paper
#: B's untruncated split) of the same problem
DIRICHLET = {"partition": "dirichlet", "partition_params": {"beta": 0.5}}
RAGGED_WORKLOADS = {
    "A-full (paper A Fig. 2), unbalanced (equal sizes)": A_FULL,
    "A-full, Dirichlet(0.5) (ragged)": dict(A_FULL, **DIRICHLET),
    "B (paper B Fig. 7), by_class truncated (equal sizes)": FIG7,
    "B, by_class untruncated (ragged)": dict(FIG7, partition_params={"truncate": False}),
    "B, Dirichlet(0.5) (ragged)": dict(FIG7, **DIRICHLET),
}


def run_ragged(quick: bool) -> dict:
    """ms per round of :data:`RAGGED_WORKLOADS`, with the clients' sizes."""
    out = {}
    rounds, blocks = (20, 3) if quick else (50, 5)
    for name, kw in RAGGED_WORKLOADS.items():
        r = time_rounds(kw, rounds=rounds, blocks=blocks, warmup=10, evals=1)
        out[name] = r
        print(f"{name:55s} {r['ms_per_round']:7.3f} ms/round (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}); "
              f"J_w in [{r['J_min']}, {r['J']}], {r['N']} samples")
    return out


def main() -> int:
    quick = "--quick" in sys.argv  # fewer repetitions (smoke test)
    if "--ragged" in sys.argv:  # only the ragged-clients section, printed (not stored)
        run_ragged(quick)
        return 0
    for flag, key, section in (("--replicas", "replicas", run_replicas),
                               ("--scale-sweeps", "scale_sweeps", run_scale_sweeps)):
        if flag in sys.argv:  # only this section, merged into the last results
            path = ROOT / "benchmarks" / "results.json"
            res = json.loads(path.read_text())
            res[key] = section(quick)
            path.write_text(json.dumps(res, indent=2, default=float))
            write_markdown(res)
            return 0
    rounds, blocks = (20, 3) if quick else (100, 5)
    res = {"machine": machine(), "workloads": {}, "naive": {}, "aggregators": {}, "scaling": {}}
    res["settings"] = {"rounds_per_block": rounds, "blocks": blocks}
    for name, kw in WORKLOADS.items():
        r = time_rounds(kw, rounds=rounds, blocks=blocks, warmup=10 if quick else 50, evals=2 if quick else 5)
        res["workloads"][name] = r
        print(f"{name:80s} {r['ms_per_round']:7.3f} ms/round  (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; eval {r['eval_ms']:.1f} ms)")
    for name, kw in WORKLOADS_C.items():
        r = time_rounds(kw, rounds=10 if quick else 20, blocks=blocks, warmup=3, evals=1)
        res["workloads"][name] = r
        print(f"{name:80s} {r['ms_per_round']:7.3f} ms/round  (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; eval {r['eval_ms']:.1f} ms)")
    res["geomed_target"] = time_geomed_target(reps=20 if quick else 100)
    for k, v in res["geomed_target"].items():
        print(f"geometric median (30, 7850), tol 1e-6, {k}: {v['ms']:.3f} ms, {v['iterations']} iterations")
    for key, kw in NAIVE_PAIRS.items():
        r = time_naive_pair(kw, rounds_vec=20 if quick else 50, rounds_naive=3 if quick else 10, blocks=blocks)
        res["naive"][key] = r
        print(f"naive vs vectorized {key}: naive {r['naive']['ms_per_round']:.2f} ms, vectorized "
              f"{r['vectorized']['ms_per_round']:.2f} ms, speed-up {r['speedup']:.1f}x")
    res["aggregators"]["(30, 7850)"] = time_aggregators(reps=20 if quick else 50)
    for k, v in res["aggregators"]["(30, 7850)"].items():
        print(f"aggregator {k:20s} on (30, 7850): {v:7.3f} ms")
    res["aggregators_big"] = {"(100, 100000)": time_big_aggregators(reps=3 if quick else 5)}
    for k, v in res["aggregators_big"]["(100, 100000)"].items():
        print(f"aggregator {k:20s} on (100, 100000): {v.get('ms', v.get('skipped'))}")
    print("scaling in n (byrd-saga, synthetic, n_features=100, C=10, J=50):")
    res["scaling"]["n"] = time_scaling(lambda n: _synthetic(n, 100, 50), [10, 30, 100, 300, 1000])
    print("scaling in d (byrd-saga, synthetic, n=30, C=10, J=20):")
    res["scaling"]["n_features"] = time_scaling(lambda p: _synthetic(30, p, 20), [10, 100, 1000, 10000])
    res["replicas"] = run_replicas(quick)
    res["scale_sweeps"] = run_scale_sweeps(quick)
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(res, indent=2, default=float))
    write_markdown(res)
    return 0


#: other processes' 1-minute load (the load average less this benchmark's own process)
#: from which a section says the machine was shared
SHARED_LOAD = 0.5


def load_note(load, cpus: int) -> str:
    """One sentence on the machine's load during a section, from its 1-minute load
    averages ``load`` (``[before, after]``, :func:`os.getloadavg`): the numbers, and
    whether other processes shared the machine.  The benchmark itself runs one thread
    (load about 1), so the machine counts as shared when ``max(load) − 1 ≥``
    :data:`SHARED_LOAD`; a quiet section does not claim contention.  ``""`` without
    measurements.

    >>> print(load_note([0.9, 1.1], 2))
    Load average of the 2-core machine before/after: 0.9 / 1.1, about this benchmark's own process: no other load measured.
    """
    if not load:
        return ""
    nums = f"Load average of the {cpus}-core machine before/after: {load[0]:.1f} / {load[-1]:.1f}"
    if max(load) - 1.0 < SHARED_LOAD:
        return nums + ", about this benchmark's own process: no other load measured."
    return (nums + ", above this benchmark's own process: the machine was shared with other processes, "
            "which inflates the absolute times.")


def replica_table(res: dict) -> list[str]:
    """The replica axis: per-run cost at S = 1, 4, 8, 16 and the targets (generated)."""
    rep = dict(res.get("replicas") or {})
    load = rep.pop("_load", None)
    if not rep:
        return []
    Ss = list(next(iter(rep.values()))["S"])
    lines = [
        "## The replica axis: S runs advanced as one batch", "",
        "ms per run-round (one batched step / S; S = 1 is the per-run path, `x (d,)`) and, in "
        "brackets, the per-run throughput against S = 1 in the same process. Replicas share one "
        "data set (as runs with equal data do) and draw from S distinct streams; medians of "
        "interleaved blocks, one BLAS thread. Memory: traced peak per extra replica (state, "
        "tables, round buffers; the data set excluded), the data set, and "
        "`simulate.replica_bytes` (one replica with its own data). "
        + load_note(load, res["machine"]["cpus"]), "",
        "| workload | " + " | ".join(f"S = {S}" for S in Ss) + " | target | status | MB / replica (state) | data MB | replica_bytes MB |",
        "|---|" + "---|" * (len(Ss) + 5),
    ]
    for name, r in rep.items():
        cells = [f"{r['S'][S]['ms_per_round']:.3f} ({r['S'][S]['speedup']:.1f}×)" for S in Ss]
        tgt, status = "", ""
        if r.get("target"):
            kind, S, lim = r["target"]
            v = r["S"].get(str(S))
            if v is not None and kind == "speedup":
                tgt, status = f"S = {S}: ≥ {lim:g}× per-run", "met" if v["speedup"] >= lim else "missed"
            elif v is not None:
                tgt, status = f"S = {S}: ≤ {lim:g} ms", "met" if v["ms_per_round"] <= lim else "missed"
        m = r["memory"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {tgt} | {status} | "
                     f"{m['per_replica_state_MB']:.2f} | {m['data_MB']:.0f} | {m['replica_bytes_estimate_MB']:.0f} |")
    return lines


def scale_sweep_table(res: dict) -> list[str]:
    """Sweeps over a per-replica parameter, stacked vs run by run (generated)."""
    rep = dict(res.get("scale_sweeps") or {})
    load = rep.pop("_load", None)
    if not rep:
        return []
    lines = [
        "## Sweeps over an attack scale or a clipping radius: stacked vs run by run", "",
        "The runs of a sweep differ only in a parameter the component declares "
        "`replica_params`, so they form one replica batch (`simulate.replica_key`); before "
        "that declaration each value had its own key and the sweep ran run by run. ms per "
        "run-round of the S runs stepped as one batch (one step / S) and stepped one by one, "
        "in interleaved blocks of the same process (medians, IQR), and the whole sweep end to "
        "end (`run_batch` vs `run` per config: setup, 200 rounds, 6 evaluations). "
        + load_note(load, res["machine"]["cpus"]), "",
        "| sweep | S | stacked ms / run-round (IQR) | run by run ms / run-round (IQR) | ratio | "
        "end to end: run_batch s | runs s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rep.items():
        a, b, e = r["stacked"], r["run_by_run"], r["end_to_end_s"]
        lines.append(
            f"| {name} | {r['S']} | {a['ms_per_round']:.3f} ({a['iqr'][0]:.3f}–{a['iqr'][1]:.3f}) | "
            f"{b['ms_per_round']:.3f} ({b['iqr'][0]:.3f}–{b['iqr'][1]:.3f}) | {r['speedup']:.1f}× | "
            f"{e['run_batch']:.2f} | {e['run']:.2f} | {r['end_to_end_speedup']:.1f}× |")
    return lines


def target_table(res: dict) -> list[str]:
    """The round-time targets against this run's medians (generated, so it cannot go stale)."""
    w = res["workloads"]

    def ms(prefix):
        return next((r["ms_per_round"] for k, r in w.items() if k.startswith(prefix)), float("nan"))

    def mark(ok):
        return "met" if ok else "missed"

    lines = ["## Round-time targets against this run", "",
             "| target | float64 | float32 | status |", "|---|---|---|---|"]
    for key, lim in TARGETS_MS.items():
        m64, m32 = ms(f"{key}:"), ms(f"{key}, float32")
        status = "met" if m64 <= lim else ("met in float32 only" if m32 <= lim else "missed")
        lines.append(f"| {key} ≤ {lim} ms per round | {m64:.3f} | {m32:.3f} | {status} |")
    for key, r in res["naive"].items():
        lines.append(f"| {key}: ≥ 8× the naive loop | {r['speedup']:.1f}× | | {mark(r['speedup'] >= 8)} |")
    g = res.get("geomed_target", {})
    if g:
        m64, m32 = g["float64"]["ms"], g["float32"]["ms"]
        status = "met" if m64 < 1 else ("met in float32 only" if m32 < 1 else "missed")
        lines.append(
            f"| geometric median (30, 7850) to tol 1e-6 < 1 ms | {m64:.3f} ({g['float64']['iterations']} updates) "
            f"| {m32:.3f} ({g['float32']['iterations']} updates) | {status} |"
        )
    return lines


def write_markdown(res: dict) -> None:
    m = res["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`benchmarks/run.py`); raw numbers in `benchmarks/results.json`.",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, NumPy {m['numpy']}, "
        f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}.",
        "",
        f"## One federated round (median over {res['settings']['blocks']} blocks of "
        f"{res['settings']['rounds_per_block']} rounds; IQR; workload C: blocks of 20 rounds)",
        "",
        "| workload | ms / round | IQR | evaluation (ms) |",
        "|---|---|---|---|",
    ]
    for name, r in res["workloads"].items():
        lines.append(f"| {name} | {r['ms_per_round']:.3f} | {r['iqr'][0]:.3f}–{r['iqr'][1]:.3f} | {r['eval_ms']:.1f} |")
    lines += ["", *target_table(res)]
    lines += ["", *replica_table(res)]
    sweeps = scale_sweep_table(res)
    if sweeps:
        lines += ["", *sweeps]
    lines += [
        "", "## Vectorized round vs a naive per-client Python loop (`benchmarks/naive.py`)", "",
        "Same problem, same random draws (the naive loop follows the same trajectory; "
        "`tests/test_naive_yardstick.py`), timed in alternating blocks. The naive geometric "
        "median is a plain Weiszfeld loop with byzsim's default tolerance.", "",
        "| workload | naive ms / round (IQR) | vectorized ms / round (IQR) | speed-up |", "|---|---|---|---|",
    ]
    for k, r in res["naive"].items():
        nv, vv = r["naive"], r["vectorized"]
        lines.append(
            f"| {k} (J={r['J']}, d={r['d']}) | {nv['ms_per_round']:.2f} ({nv['iqr'][0]:.2f}–{nv['iqr'][1]:.2f}) | "
            f"{vv['ms_per_round']:.3f} ({vv['iqr'][0]:.3f}–{vv['iqr'][1]:.3f}) | {r['speedup']:.1f}× |"
        )
    for key, title in (("n", "clients n (n_features = 100, C = 10, d = 1010, J = 50)"),
                       ("n_features", "features (n = 30, C = 10, J = 20)")):
        lines += ["", f"## Scaling of the gradient family (Byrd-SAGA, synthetic) in the number of {title}", "",
                  "| value | d | ms / round | IQR | evaluation (ms) |", "|---|---|---|---|---|"]
        for k, r in res["scaling"][key].items():
            lines.append(f"| {k} | {r['d']} | {r['ms_per_round']:.3f} | {r['iqr'][0]:.3f}–{r['iqr'][1]:.3f} | {r['eval_ms']:.1f} |")
    lines += ["", "## Aggregators alone on (30, 7850) (median of 50 calls)", "", "| aggregator | ms |", "|---|---|"]
    for k, v in res["aggregators"]["(30, 7850)"].items():
        lines.append(f"| {k} | {v:.3f} |")
    lines += ["", "## Aggregators alone on (100, 100000) (median of 5 calls; IQR)", "",
              "| aggregator | ms | IQR |", "|---|---|---|"]
    for k, v in res["aggregators_big"]["(100, 100000)"].items():
        if "ms" in v:
            lines.append(f"| {k} | {v['ms']:.1f} | {v['iqr'][0]:.1f}–{v['iqr'][1]:.1f} |")
        else:
            lines.append(f"| {k} | skipped: {v['skipped']} | |")
    extra = ROOT / "benchmarks" / "NOTES.md"
    if extra.exists():
        lines += ["", extra.read_text().strip()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
