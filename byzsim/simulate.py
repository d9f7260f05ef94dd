"""``run(config) -> RunResult``: the only round loop.  No plotting, no files.

Randomness: ``np.random.SeedSequence(config.seed)`` is spawned into two independent
streams, one for the data (Byzantine draw, partition) and one for the rounds, so the
same config and seed give bit-identical metrics.

A run whose server model becomes non-finite (checked every round) or whose client
models do (checked at evaluations) is stopped and recorded as diverged
(``RunResult.diverged``, ``diverged_round``); the metrics up to there are kept.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .algorithms import GradientMethod, PenaltyMethod, Problem, State, make_estimator
from .attacks import ATTACKS, apply_data_attack, data_attack_of, get_attack
from .config import Config
from .data import load_dataset
from .models import make_model
from .partition import draw_byzantine, partition

METRICS = ("round", "test_accuracy", "train_loss", "distance")


@dataclass
class RunResult:
    """Metrics of one run: columns of equal length (see :data:`METRICS`).

    ``distance`` is the mean ‖x_i − x0‖₂ over regular clients (penalty family; NaN for
    the gradient family).  ``train_loss`` is the server model's mean loss over the
    regular clients' training data (or the fixed subset ``train_eval_samples``).
    """

    config: Config
    columns: dict[str, np.ndarray]
    diverged: bool = False
    diverged_round: int | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        keys = list(self.columns)
        return [dict(zip(keys, vals)) for vals in zip(*(self.columns[k].tolist() for k in keys))]

    @property
    def final_accuracy(self) -> float:
        return float(self.columns["test_accuracy"][-1])


def _freeze(obj):
    """A hashable view of nested config values (for cache keys)."""
    if isinstance(obj, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(v) for v in obj)
    return obj


def _data_key(cfg: Config) -> tuple:
    """The config fields that determine a run's data (everything :func:`build_problem` reads;
    the attack only when it is a data attack such as label flipping)."""
    return _freeze((
        cfg.dataset, cfg.dataset_params, cfg.partition, cfg.partition_params, cfg.model,
        cfg.model_params, cfg.n_clients, cfg.n_byzantine, cfg.byzantine_indices, cfg.seed,
        cfg.train_eval_samples, cfg.dtype, cfg.attack if data_attack_of(cfg.attack) else None,
    ))


_PROBLEMS: "collections.OrderedDict[tuple, Problem]" = collections.OrderedDict()
_PROBLEMS_LOCK = threading.Lock()


def problem_for(cfg: Config) -> Problem:
    """The run's :class:`Problem`, shared between runs that differ only in the method
    (a process-local cache of the last two; its client arrays are read-only)."""
    key = _data_key(cfg)
    with _PROBLEMS_LOCK:  # Dask workers may run several threads
        if key not in _PROBLEMS:
            data_seq, _ = np.random.SeedSequence(cfg.seed).spawn(2)
            _PROBLEMS[key] = _build_problem(cfg, np.random.default_rng(data_seq))
            while len(_PROBLEMS) > 2:
                _PROBLEMS.popitem(last=False)
        _PROBLEMS.move_to_end(key)
        return _PROBLEMS[key]


def build_problem(cfg: Config, rng: np.random.Generator) -> Problem:
    """Load data, choose the Byzantine clients, partition, prepare features for the model."""
    return _build_problem(cfg, rng)


def _build_problem(cfg: Config, rng: np.random.Generator) -> Problem:
    ds = load_dataset(cfg.dataset, **cfg.dataset_params)
    model = make_model(cfg.model, ds.X_train.shape[1], ds.n_classes, **cfg.model_params)
    byz = draw_byzantine(cfg.n_clients, cfg.n_byzantine, rng, indices=cfg.byzantine_indices)
    # prepare (e.g. append the bias feature) before partitioning: one big copy, not two
    Xc, yc = partition(cfg.partition, model.prepare(ds.X_train), ds.y_train, cfg.n_clients, byz, rng,
                       **cfg.partition_params)
    # data attacks (label flipping) change the Byzantine clients' own labels; no randomness
    yc = apply_data_attack(cfg.attack, yc, byz, ds.n_classes)
    if cfg.batch_size > Xc.shape[1]:
        raise ValueError(
            f"invalid config field 'batch_size' = {cfg.batch_size}: at most the "
            f"{Xc.shape[1]} samples each client holds"
        )
    # evaluation subset of the regular clients' training data (equal share per client)
    reg = np.flatnonzero(~byz)
    J = Xc.shape[1]
    per = J if not cfg.train_eval_samples else max(1, min(J, cfg.train_eval_samples // len(reg)))
    cols = np.sort(rng.permuted(np.tile(np.arange(J), (len(reg), 1)), axis=1)[:, :per], axis=1)
    X_eval = Xc[reg[:, None], cols].reshape(-1, Xc.shape[2])
    y_eval = yc[reg[:, None], cols].ravel()
    dtype = np.dtype(cfg.dtype)
    Xc, X_eval = Xc.astype(dtype, copy=False), X_eval.astype(dtype, copy=False)
    for a in (Xc, yc):
        a.flags.writeable = False
    return Problem(
        model=model, X=Xc, y=yc, byzantine=byz,
        X_test=model.prepare(ds.X_test).astype(dtype, copy=False), y_test=ds.y_test,
        X_eval=X_eval, y_eval=y_eval,
    )


def make_aggregate(cfg: Config, problem: Problem) -> Callable:
    """The gradient family's ``aggregate(v, mask, rng) -> (d,)``: s-replacement resampling
    (``cfg.resample = s > 1``), then ``cfg.preaggregators`` in order, then the aggregator
    (:func:`byzsim.preaggregators.build_aggregate`).

    Rules with a number of Byzantine inputs ``f`` (Krum, trimmed mean, Bulyan, MDA, NNM,
    ARC, …) get it unless the config sets it: ``n_byzantine`` propagated through the chain
    (``s · n_byzantine`` after resampling; at most ``n_byzantine`` of the ``⌈n/s⌉``
    buckets after bucketing), capped to the rule's ``max_f`` (e.g. ``n − 3`` for Krum,
    ``(n − 1) // 2`` for trimmed mean).  Without pre-aggregators this is exactly
    ``resampled(get_aggregator(aggregator, f=...), s)``.
    """
    from .preaggregators import build_aggregate

    return build_aggregate(
        cfg.aggregator, cfg.aggregator_params, cfg.preaggregators,
        n=cfg.n_clients, n_byzantine=cfg.n_byzantine, resample=cfg.resample,
    )


def make_method(cfg: Config, problem: Problem):
    """The configured :class:`GradientMethod` or :class:`PenaltyMethod`."""
    estimator = make_estimator(cfg.estimator, problem, cfg.saga_table)
    aggregate = make_aggregate(cfg, problem) if cfg.family == "gradient" else None
    attack_params = dict(cfg.attack_params)
    # attacks tuned against the server's aggregation (alie_opt, ipm_opt) get the run's own
    if (aggregate is not None and ATTACKS.entry(cfg.attack).meta["needs_aggregate"]
            and attack_params.get("aggregator") is None):
        attack_params["aggregator"] = aggregate
    attack = get_attack(cfg.attack, **attack_params)
    common = dict(
        problem=problem, estimator=estimator, attack=attack, lr=cfg.lr,
        batch_size=cfg.batch_size, participation=cfg.participation, server_l2=cfg.server_l2,
    )
    if cfg.family == "penalty":
        return PenaltyMethod(penalty=cfg.penalty, p=cfg.p, **common)
    return GradientMethod(aggregate=aggregate, **common)


def evaluate(problem: Problem, state: State) -> dict[str, float]:
    """Test accuracy and training loss of the server model, and the mean distance of the
    regular client models to it (penalty family).

    The training loss is the mean over ``problem.X_eval``: all of the regular clients'
    samples, or an equal-per-client random subset of ``train_eval_samples`` of them
    (reading every sample each evaluation is memory-bound: ~0.2 s for MNIST)."""
    model, x = problem.model, state.x
    acc = float(model.accuracy(x, problem.X_test, problem.y_test))
    loss = float(model.loss(x, problem.X_eval, problem.y_eval))
    dist = float("nan")
    if state.models is not None:
        dist = float(np.linalg.norm(state.models[problem.regular] - x, axis=1).mean())
    return {"test_accuracy": acc, "train_loss": loss, "distance": dist}


def _finite(state: State) -> bool:
    ok = bool(np.isfinite(state.x).all())
    if ok and state.models is not None:
        ok = bool(np.isfinite(state.models).all())
    return ok


def run(
    cfg: Config,
    *,
    problem: Problem | None = None,
    callback: Callable | None = None,
    blas_threads: int | None = 1,
) -> RunResult:
    """Simulate ``cfg.rounds`` rounds, evaluating at round 0, every ``eval_every`` rounds
    and at the end.  ``callback(round)`` is called after each evaluation (progress).

    ``blas_threads``: BLAS threads during the run (default 1: a round's arrays are small,
    and threaded level-1 BLAS on them is many times slower; parallelise over runs
    instead).  ``None`` leaves the process setting alone.
    """
    if blas_threads is None:
        return _run(cfg, problem, callback)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _run(cfg, problem, callback)


def _run(cfg: Config, problem: Problem | None, callback: Callable | None) -> RunResult:
    _, run_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    if problem is None:
        problem = problem_for(cfg)
    rng = np.random.default_rng(run_seq)
    method = make_method(cfg, problem)
    t0 = time.perf_counter()
    state = method.init(problem.model.init(rng).astype(problem.X.dtype))
    cols: dict[str, list] = {k: [] for k in METRICS}
    diverged_round = None

    def record(r: int) -> bool:
        nonlocal diverged_round
        if not _finite(state):
            diverged_round = r
            return False
        m = evaluate(problem, state)
        cols["round"].append(r)
        for k, v in m.items():
            cols[k].append(v)
        if callback is not None:
            callback(r)
        return True

    ok = record(0)
    x = state.x
    while ok and state.round < cfg.rounds:
        todo = min(cfg.eval_every - state.round % cfg.eval_every, cfg.rounds - state.round)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(todo):
                method.step(state, rng)
                # the server model is (d,): checking it every round costs microseconds and
                # stops a diverging run at the round it breaks (client models feed x0)
                if not np.isfinite(x).all():
                    break
        ok = record(state.round)
    columns = {
        "round": np.asarray(cols["round"], dtype=np.int64),
        **{k: np.asarray(cols[k], dtype=np.float64) for k in METRICS[1:]},
    }
    info = {"J": problem.J, "d": problem.model.dim}
    if state.table is not None:
        info["saga_bytes"] = state.table.nbytes
    return RunResult(
        config=cfg,
        columns=columns,
        diverged=diverged_round is not None,
        diverged_round=diverged_round,
        seconds=time.perf_counter() - t0,
        info=info,
    )
