"""``run(config) -> RunResult`` and ``run_batch(configs) -> [RunResult]``: the only
round loop.  No plotting, no files.

Randomness: ``np.random.SeedSequence(config.seed)`` is spawned into two independent
streams, one for the data (Byzantine draw, partition) and one for the rounds, so the
same config and seed give bit-identical metrics.

Replica batches: :func:`run_batch` advances runs that share their structure
(:func:`replica_key`) together, with a leading replica axis on every array
(:mod:`byzsim.algorithms`); each replica keeps its own two streams, so its metrics are
those of the same run made alone.  :func:`run` is the batch of one.  Runs may differ
in the numeric settings :data:`REPLICA_FIELDS` and in the numeric parameters of their
attack, aggregator and pre-aggregators that the components declare ``replica_params``
when registered (:func:`replica_params`: e.g. the sign-flipping scale, the Gaussian
std, a clipping radius).

A run whose server model becomes non-finite (checked every round) or whose client
models do (checked at evaluations) is stopped and recorded as diverged
(``RunResult.diverged``, ``diverged_round``); the metrics up to there are kept.  In a
batch the other replicas carry on.
"""

from __future__ import annotations

import collections
import copy
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .algorithms import (
    LR_SCHEDULES,
    GradientMethod,
    PenaltyMethod,
    PerReplica,
    Problem,
    State,
    make_estimator,
    stack_problems,
)
from .attacks import ATTACKS, apply_data_attack, data_attack_of, get_attack
from .aggregators import geometric_median_convergence
from .config import Config
from .data import load_dataset
from .models import make_model
from .protocols import is_stateful
from .partition import PAD_LABEL, draw_byzantine, partition_clients

METRICS = ("round", "test_accuracy", "train_loss", "distance")


@dataclass
class RunResult:
    """Metrics of one run: columns of equal length (see :data:`METRICS`).

    ``distance`` is the mean ‖x_i − x0‖₂ over regular clients (penalty family; NaN for
    the gradient family).  ``train_loss`` is the server model's mean loss over the
    regular clients' training data (or the fixed subset ``train_eval_samples``).

    ``model``: the final server model ``(d,)`` (a copy of the replica's ``x`` after the
    last round; for a diverged run, ``x`` at the round it was stopped, which may hold
    non-finite values).
    """

    config: Config
    columns: dict[str, np.ndarray]
    diverged: bool = False
    diverged_round: int | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    model: np.ndarray | None = None

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


@dataclass(frozen=True)
class DataSpec:
    """Exactly what :func:`build_problem` reads from a config: equal specs give equal
    problems (the process cache's key and the replica batch's data sharing).  Nested
    parameters are frozen into sorted tuples; ``data_attack`` is the attack's name only
    when it changes the data (label flipping), else ``None``."""

    dataset: str
    dataset_params: tuple
    partition: str
    partition_params: tuple
    model: str
    model_params: tuple
    n_clients: int
    n_byzantine: int
    byzantine_indices: tuple | None
    seed: int
    train_eval_samples: int
    dtype: str
    data_attack: str | None

    @classmethod
    def from_config(cls, cfg: Config) -> "DataSpec":
        return cls(
            dataset=cfg.dataset, dataset_params=_freeze(dict(cfg.dataset_params)),
            partition=cfg.partition, partition_params=_freeze(dict(cfg.partition_params)),
            model=cfg.model, model_params=_freeze(dict(cfg.model_params)),
            n_clients=cfg.n_clients, n_byzantine=cfg.n_byzantine,
            byzantine_indices=_freeze(cfg.byzantine_indices), seed=cfg.seed,
            train_eval_samples=cfg.train_eval_samples, dtype=cfg.dtype,
            data_attack=cfg.attack if data_attack_of(cfg.attack) else None,
        )

    def params(self, name: str) -> dict:
        """A frozen parameter table as a dict (lists for frozen sequences)."""
        def thaw(v):
            return [thaw(u) for u in v] if isinstance(v, tuple) else v
        return {k: thaw(v) for k, v in getattr(self, name)}

    def build(self) -> Problem:
        """The problem, drawn from the data stream of ``SeedSequence(seed)``."""
        data_seq, _ = np.random.SeedSequence(self.seed).spawn(2)
        return _build_problem(self, np.random.default_rng(data_seq))


def _data_key(cfg: Config) -> DataSpec:
    """The process cache's key of a config's data (:class:`DataSpec`)."""
    return DataSpec.from_config(cfg)


_PROBLEMS: "collections.OrderedDict[DataSpec, Problem]" = collections.OrderedDict()
_PROBLEMS_LOCK = threading.Lock()


def problem_for(cfg: Config) -> Problem:
    """The run's :class:`Problem`, shared between runs with the same :class:`DataSpec`
    (a process-local cache of the last two; its client arrays are read-only)."""
    problem = _problem_of(DataSpec.from_config(cfg))
    _check_batch_size(cfg, problem)
    return problem


def _problem_of(spec: DataSpec) -> Problem:
    with _PROBLEMS_LOCK:  # Dask workers may run several threads
        if spec not in _PROBLEMS:
            _PROBLEMS[spec] = spec.build()
            while len(_PROBLEMS) > 2:
                _PROBLEMS.popitem(last=False)
        _PROBLEMS.move_to_end(spec)
        return _PROBLEMS[spec]


def _check_batch_size(cfg: Config, problem: Problem) -> None:
    """A batch is ``batch_size`` distinct samples of one client: refuse a batch larger
    than the smallest client (ragged clients: ``min_w J_w``), before any work."""
    counts = np.asarray(problem.counts)
    lo = int(counts.min())
    if cfg.batch_size > lo:
        if not problem.ragged:
            raise ValueError(
                f"invalid config field 'batch_size' = {cfg.batch_size}: at most the "
                f"{problem.J} samples each client holds"
            )
        w = int(np.unravel_index(np.argmin(counts), counts.shape)[-1])
        raise ValueError(
            f"invalid config field 'batch_size' = {cfg.batch_size}: at most the {lo} samples "
            f"of the smallest client (client {w}; the partition gives clients between {lo} "
            f"and {int(counts.max())} samples, and a batch is that many distinct samples of "
            f"one client)"
        )


def build_problem(cfg: Config, rng: np.random.Generator) -> Problem:
    """Load data, choose the Byzantine clients, partition, prepare features for the model."""
    problem = _build_problem(DataSpec.from_config(cfg), rng)
    _check_batch_size(cfg, problem)
    return problem


def _build_problem(spec: DataSpec, rng: np.random.Generator) -> Problem:
    ds = load_dataset(spec.dataset, **spec.params("dataset_params"))
    model = make_model(spec.model, ds.X_train.shape[1], ds.n_classes, **spec.params("model_params"))
    byz = draw_byzantine(spec.n_clients, spec.n_byzantine, rng,
                         indices=spec.byzantine_indices)
    # prepare (e.g. append the bias feature) before partitioning: one big copy, not two
    params = spec.params("partition_params")
    try:  # a bad parameter (beta <= 0), a client left without samples
        cd = partition_clients(spec.partition, model.prepare(ds.X_train), ds.y_train, spec.n_clients,
                               byz, rng, **params)
        # the counts only: ClientData.validate also copies every padding row (GBs on skewed splits)
        empty = np.flatnonzero(cd.counts < 1)
        if empty.size:
            raise ValueError(f"client {int(empty[0])} would hold no sample ({empty.size} such clients)")
    except ValueError as e:
        raise ValueError(
            f"invalid config field 'partition_params' = {params!r} of partition {spec.partition!r} "
            f"({spec.n_clients} clients, dataset {spec.dataset!r}): {e}"
        ) from None
    Xc, yc, counts = cd.X, cd.y, cd.counts
    ragged = not cd.equal_sizes
    # data attacks (label flipping) change the Byzantine clients' own (real) labels; no randomness
    if spec.data_attack is not None:
        yc = apply_data_attack(spec.data_attack, yc, byz, ds.n_classes)
        if ragged:
            yc = np.where(cd.mask, yc, PAD_LABEL)
    X_eval, y_eval = _eval_subset(Xc, yc, counts if ragged else None, ~byz, spec.train_eval_samples, rng)
    dtype = np.dtype(spec.dtype)
    Xc, X_eval = Xc.astype(dtype, copy=False), X_eval.astype(dtype, copy=False)
    for a in (Xc, yc):
        a.flags.writeable = False
    return Problem(
        model=model, X=Xc, y=yc, byzantine=byz,
        X_test=model.prepare(ds.X_test).astype(dtype, copy=False), y_test=ds.y_test,
        X_eval=X_eval, y_eval=y_eval, counts=counts,
    )


def _eval_subset(Xc: np.ndarray, yc: np.ndarray, counts: np.ndarray | None, regular: np.ndarray,
                 samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The training samples the training loss is evaluated on: ``(X_eval (E, p'),
    y_eval (E,))``, sorted by client then row.

    ``samples = 0``: every real sample of the regular clients.  Else an equal share
    ``per = max(1, samples // R)`` of each of the R regular clients, drawn without
    replacement (all of a client's samples when it holds fewer: ragged clients).
    ``counts``: the ragged clients' ``J_w`` (``None``: equal sizes, J each)."""
    reg = np.flatnonzero(regular)
    J = Xc.shape[1]
    if counts is None:
        per = J if not samples else max(1, min(J, samples // len(reg)))
        cols = np.sort(rng.permuted(np.tile(np.arange(J), (len(reg), 1)), axis=1)[:, :per], axis=1)
        return Xc[reg[:, None], cols].reshape(-1, Xc.shape[2]), yc[reg[:, None], cols].ravel()
    c = counts[reg]
    if not samples:
        keep = np.arange(J) < c[:, None]
    else:  # each client's first `per` of a uniform order of its real rows
        keys = rng.random((len(reg), J))
        keys[np.arange(J) >= c[:, None]] = 2.0  # padding after every real row
        rank = np.argsort(np.argsort(keys, axis=1), axis=1)
        keep = rank < np.minimum(c, max(1, samples // len(reg)))[:, None]
    r, j = np.nonzero(keep)  # one gather (no copy of the regular clients' padded blocks)
    return Xc[reg[r], j], yc[reg[r], j]


def _set_at(tree, path: tuple, value) -> None:
    """Put ``value`` at ``path`` (keys and list indices, as :func:`replica_params`
    gives them) in the nested dicts and lists ``tree``."""
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _with_params(cfg: Config, params: dict | None) -> tuple[dict, dict, list]:
    """``(attack_params, aggregator_params, preaggregators)`` of ``cfg`` (copies), with
    the values ``params`` (``{path: value}``, paths as :func:`replica_params`) put in."""
    tables = {"attack_params": dict(cfg.attack_params), "aggregator_params": dict(cfg.aggregator_params),
              "preaggregators": [dict(p) for p in cfg.preaggregators]}
    for path, value in (params or {}).items():
        _set_at(tables, path, value)
    return tables["attack_params"], tables["aggregator_params"], tables["preaggregators"]


def make_aggregate(cfg: Config, problem: Problem, params: dict | None = None) -> Callable:
    """The gradient family's ``aggregate(v, mask, rng) -> (d,)``: s-replacement resampling
    (``cfg.resample = s > 1``), then ``cfg.preaggregators`` in order, then the aggregator
    (:func:`byzsim.preaggregators.build_aggregate`).

    Rules with a number of Byzantine inputs ``f`` (Krum, trimmed mean, Bulyan, MDA, NNM,
    ARC, …) get it unless the config sets it: ``n_byzantine`` propagated through the chain
    (``s · n_byzantine`` after resampling; at most ``n_byzantine`` of the ``⌈n/s⌉``
    buckets after bucketing), capped to the rule's ``max_f`` (e.g. ``n − 3`` for Krum,
    ``(n − 1) // 2`` for trimmed mean).  Without pre-aggregators this is exactly
    ``resampled(get_aggregator(aggregator, f=...), s)``.  ``params``: values replacing
    the config's at paths of :func:`replica_params` (a batch's ``(S, 1, 1)`` arrays).
    """
    from .preaggregators import build_aggregate

    if dict(cfg.aggregator_params).get("weighted"):
        return _weighted_mean(cfg, problem)
    _, aggregator_params, preaggregators = _with_params(cfg, params)
    return build_aggregate(
        cfg.aggregator, aggregator_params, preaggregators,
        n=cfg.n_clients, n_byzantine=cfg.n_byzantine, resample=cfg.resample,
    )


def _weighted_mean(cfg: Config, problem: Problem) -> Callable:
    """``aggregate(v, mask, rng)``: the mean weighted by the clients' sample counts
    (``aggregator_params.weighted = true``; FedAvg's ``Σ_w J_w v_w / Σ_w J_w`` over the
    participating clients).  Each replica of a stacked batch uses its own counts."""
    from .aggregators import get_aggregator

    if cfg.preaggregators or cfg.resample > 1:
        raise ValueError(
            "invalid config field 'aggregator_params.weighted' = True: the mean weighted by "
            "each client's sample count needs the clients' own messages, so it takes no "
            f"preaggregators (got {list(cfg.preaggregators)!r}) and resample = 1 (got {cfg.resample})"
        )
    fn = get_aggregator(cfg.aggregator, **dict(cfg.aggregator_params))
    counts = problem.counts[problem.slot] if problem.stacked else problem.counts  # (S, n) / (n,)

    def aggregate(v, mask, rng):
        return fn(v, mask, weights=counts)

    return aggregate


def make_components(cfg: Config, problem: Problem, params: dict | None = None) -> tuple[Callable, Callable | None]:
    """``(attack, aggregate)`` of the run (``aggregate`` ``None`` in the penalty family).
    ``params``: values replacing the config's at paths of :func:`replica_params` (a
    batch's ``(S, 1, 1)`` arrays; the registries check every element)."""
    aggregate = make_aggregate(cfg, problem, params) if cfg.family == "gradient" else None
    attack_params = _with_params(cfg, params)[0]
    # attacks tuned against the server's aggregation (alie_opt, ipm_opt) get the run's own
    if (aggregate is not None and ATTACKS.entry(cfg.attack).meta["needs_aggregate"]
            and attack_params.get("aggregator") is None):
        attack_params["aggregator"] = aggregate
    if attack_params.get("aggregator") is not None and is_stateful(attack_params["aggregator"]):
        raise ValueError(
            f"invalid config: attack {cfg.attack!r} optimizes against the server's aggregation, "
            f"which holds a stateful component (aggregator {cfg.aggregator!r}, pre-aggregators "
            f"{[p['name'] for p in cfg.preaggregators]}): its state cannot be carried inside the "
            "attack's trial aggregations; use a stateless aggregator or another attack"
        )
    return get_attack(cfg.attack, **attack_params), aggregate


def make_method(cfg: Config, problem: Problem, components: tuple | None = None):
    """The configured :class:`GradientMethod` or :class:`PenaltyMethod`;
    ``components``: its ``(attack, aggregate)`` (default :func:`make_components`)."""
    estimator = make_estimator(cfg.estimator, problem, cfg.saga_table)
    attack, aggregate = make_components(cfg, problem) if components is None else components
    schedule = None
    if cfg.lr_schedule != "constant":  # constant: no schedule at all (bit-identical)
        schedule = functools.partial(LR_SCHEDULES[cfg.lr_schedule], **cfg.lr_schedule_params)
    common = dict(
        problem=problem, estimator=estimator, attack=attack, lr=cfg.lr,
        batch_size=cfg.batch_size, participation=cfg.participation, server_l2=cfg.server_l2,
        lr_schedule=schedule,
    )
    if cfg.family == "penalty":
        return PenaltyMethod(penalty=cfg.penalty, p=cfg.p, **common)
    return GradientMethod(aggregate=aggregate, momentum=cfg.momentum, local_steps=cfg.local_steps, **common)


#: config fields that may differ between the replicas of one batch: one ``(S,)`` array
#: each in the round (``seed`` and ``byzantine_indices`` select the replica's data and
#: random streams).  Every other field is structure and must be equal, except the
#: component parameters of :func:`replica_params`.
REPLICA_FIELDS = ("seed", "lr", "penalty", "server_l2", "participation", "byzantine_indices")

_PER_REPLICA = "<per replica>"  # stands for a replica_params value in the structure


def replica_params(cfg: Config) -> dict[tuple, float]:
    """The component parameters of ``cfg`` that may differ between the replicas of one
    batch: ``{path: value}`` for every parameter that the registry entry of the run's
    attack, aggregator or pre-aggregator declares ``replica_params``
    (:data:`byzsim.registry.REPLICA_PARAMS`) and that the config sets to a number.
    Paths: ``("attack_params", name)``, ``("aggregator_params", name)``,
    ``("preaggregators", i, name)``.  A value left to its default, or ``None``, stays
    structure (it may select another computation, e.g. a data-driven radius)."""
    from .aggregators import AGGREGATORS
    from .preaggregators import PREAGGREGATORS

    out: dict[tuple, float] = {}

    def take(path: tuple, registry, name: str, params) -> None:
        for k in registry.entry(name).meta["replica_params"]:
            v = params.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[path + (k,)] = v

    take(("attack_params",), ATTACKS, cfg.attack, cfg.attack_params)
    if cfg.family == "gradient" and cfg.aggregator is not None:
        take(("aggregator_params",), AGGREGATORS, cfg.aggregator, cfg.aggregator_params)
        for i, spec in enumerate(cfg.preaggregators):
            take(("preaggregators", i), PREAGGREGATORS, spec["name"], spec)
    return out


def _structure(cfg: Config) -> dict:
    """The config as a dict without :data:`REPLICA_FIELDS` and with every
    :func:`replica_params` value replaced by one marker: what replicas must share."""
    d = {k: v for k, v in copy.deepcopy(cfg.to_dict()).items() if k not in REPLICA_FIELDS}
    for path in replica_params(cfg):
        _set_at(d, path, _PER_REPLICA)
    return d


def replica_key(cfg: Config) -> tuple:
    """What must be equal for runs to share a replica batch: every config field except
    :data:`REPLICA_FIELDS` (method, family, estimator, aggregator and its parameters,
    pre-aggregators, resampling, attack and its parameters, sizes, data, partition,
    model, batch size, dtype, rounds, evaluation schedule, SAGA table kind), where the
    numeric component parameters of :func:`replica_params` count as one value."""
    return _freeze(_structure(cfg))


def group_replicas(cfgs: Sequence[Config]) -> list[list[int]]:
    """Indices of ``cfgs`` grouped by :func:`replica_key` (groups in order of first
    appearance, indices ascending): each group can be one :func:`run_batch` call."""
    groups: dict = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(replica_key(c), []).append(i)
    return list(groups.values())


def _check_batch(cfgs: Sequence[Config]) -> list[Config]:
    cfgs = list(cfgs)
    if not cfgs:
        raise ValueError("run_batch needs at least one config, got an empty list")
    for i, c in enumerate(cfgs):
        if not isinstance(c, Config):
            raise ValueError(f"run_batch: item {i} is a {type(c).__name__}, not a Config")
    ref = _structure(cfgs[0])
    for i, c in enumerate(cfgs[1:], 1):
        d = _structure(c)
        for k in ref:
            if _freeze(d[k]) != _freeze(ref[k]):
                name, a, b = _first_difference(k, c.to_dict()[k], cfgs[0].to_dict()[k])
                stackable = ", ".join(".".join(map(str, p)) for p in replica_params(cfgs[0])) or "none here"
                raise ValueError(
                    f"run_batch: config {i} differs from config 0 in the structural field {name!r} "
                    f"({a!r} != {b!r}), which may change shapes or control flow; only "
                    f"{', '.join(REPLICA_FIELDS)} and the numeric component parameters declared "
                    f"replica_params ({stackable}) may differ within a replica batch (group configs "
                    "with byzsim.simulate.group_replicas)"
                )
    return cfgs


def _first_difference(name: str, a, b) -> tuple[str, object, object]:
    """The dotted name and values of the first difference of two config values (into
    tables, e.g. ``aggregator_params.f``, and lists of tables)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if _freeze(a.get(k)) != _freeze(b.get(k)):
                return _first_difference(f"{name}.{k}", a.get(k), b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for j, (x, y) in enumerate(zip(a, b)):
            if _freeze(x) != _freeze(y):
                return _first_difference(f"{name}[{j}]", x, y)
    return name, a, b


def _nbytes(*arrays) -> int:
    return sum(a.nbytes for a in arrays if a is not None)


def replica_bytes(cfg: Config, problem: Problem | None = None) -> int:
    """Estimated memory of one replica of ``cfg`` in a batch, in bytes, when it has its
    own data set (distinct seeds): the client data and evaluation subset, plus the
    state (server and client models, SAGA table) and the round's work buffers
    (messages or penalty buffers, ~6 ``(n, d)`` arrays).  The shared test set is not
    counted.  Builds (and caches) the config's problem if not given."""
    P = problem if problem is not None else problem_for(cfg)
    return _data_bytes(P) + _state_bytes(cfg, P)


def _data_bytes(P: Problem) -> int:
    return _nbytes(P.X, P.y, P.X_eval, P.y_eval)


def _state_bytes(cfg: Config, P: Problem) -> int:
    item = np.dtype(cfg.dtype).itemsize
    d = P.model.dim
    nd = P.n * d * item
    out = d * item + 6 * nd + (nd if cfg.family == "penalty" else 0) + (nd if cfg.momentum else 0)  # + momenta
    if cfg.estimator == "saga":
        est = make_estimator("saga", P, cfg.saga_table)
        k = d if est.kind == "dense" else sum(
            getattr(P.model, "factor_sizes", lambda: (P.model.n_classes,))())
        out += P.n * P.J * k * item + nd
    return out


def batch_bytes(cfgs: Sequence[Config]) -> int:
    """Estimated memory of :func:`run_batch` on ``cfgs``: each distinct data set once
    (replicas with equal :class:`DataSpec` share it), plus every replica's state."""
    cfgs = _check_batch(cfgs)
    specs = list(dict.fromkeys(DataSpec.from_config(c) for c in cfgs))
    P = _problem_of(specs[0])
    return len(specs) * _data_bytes(P) + len(cfgs) * _state_bytes(cfgs[0], P)


def plan_batches(
    cfgs: Sequence[Config], *, memory_bytes: int | None = None, replicas: int | None = None
) -> list[list[int]]:
    """Indices of ``cfgs`` cut into replica batches for :func:`run_batch`: grouped by
    :func:`replica_key` (:func:`group_replicas`), each group cut in order into batches
    of at most ``replicas`` runs whose estimated memory (:func:`batch_bytes`: each
    distinct data set once, every replica's state) stays within ``memory_bytes``.
    ``None``: no bound of that kind.  Raises ``ValueError`` (before any run) for
    ``replicas < 1`` or a budget smaller than one replica of a group (builds, and
    caches, the first data set of each group for the estimate when a budget is given)."""
    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, (int, np.integer))
                                 or replicas < 1):
        raise ValueError(f"replicas must be a positive integer (runs per batch), got {replicas!r}")
    if memory_bytes is not None and not memory_bytes > 0:
        raise ValueError(f"memory_bytes must be a positive number of bytes, got {memory_bytes!r}")
    out: list[list[int]] = []
    for group in group_replicas(cfgs):
        data = state = 0
        if memory_bytes is not None:
            P = problem_for(cfgs[group[0]])
            data, state = _data_bytes(P), _state_bytes(cfgs[group[0]], P)
            if data + state > memory_bytes:
                raise ValueError(
                    f"memory budget of {memory_bytes} bytes is smaller than one replica of "
                    f"{cfgs[group[0]].method!r} on {cfgs[group[0]].dataset!r} ({data + state} bytes: "
                    f"data {data}, state {state})"
                )
        chunk: list[int] = []
        specs: set = set()
        for i in group:
            spec = DataSpec.from_config(cfgs[i])
            grown = specs | {spec}
            full = replicas is not None and len(chunk) >= replicas
            over = memory_bytes is not None and len(grown) * data + (len(chunk) + 1) * state > memory_bytes
            if chunk and (full or over):
                out.append(chunk)
                chunk, grown = [], {spec}
            chunk.append(i)
            specs = grown
        out.append(chunk)
    return out


def evaluate(problem: Problem, state: State) -> dict[str, float]:
    """Metrics of one run's state (``x (d,)``); see :func:`evaluate_replicas`."""
    m = evaluate_replicas([problem], np.zeros(1, np.intp), state)
    return {k: float(v[0]) for k, v in m.items()}


def evaluate_replicas(problems: list[Problem], slot: np.ndarray, state: State) -> dict[str, np.ndarray]:
    """Test accuracy and training loss of every replica's server model, and the mean
    distance of its regular client models to it (penalty family): ``(S,)`` each.

    The test set is shared (one forward pass over the ``(S, d)`` models); the training
    loss is the mean over ``problems[slot[s]].X_eval``: all of the regular clients'
    samples, or an equal-per-client random subset of ``train_eval_samples`` of them
    (reading every sample each evaluation is memory-bound: ~0.2 s for MNIST)."""
    x, W, _ = state.as_replicas()
    P0 = problems[0]
    model = P0.model
    acc = np.asarray(model.accuracy(x, P0.X_test, P0.y_test), dtype=np.float64)
    loss = np.empty(x.shape[0])
    for j, P in enumerate(problems):
        reps = np.flatnonzero(slot == j)
        loss[reps] = model.loss(x[reps], P.X_eval, P.y_eval)
    dist = np.full(x.shape[0], np.nan)
    if W is not None:
        reg = np.stack([problems[j].regular for j in slot])  # (S, n)
        nrm = np.linalg.norm(W - x[:, None, :], axis=-1)
        dist = np.where(reg, nrm, 0.0).sum(axis=1) / reg.sum(axis=1)
    return {"test_accuracy": acc, "train_loss": loss, "distance": dist}


def run(
    cfg: Config,
    *,
    problem: Problem | None = None,
    callback: Callable | None = None,
    blas_threads: int | None = 1,
) -> RunResult:
    """Simulate ``cfg.rounds`` rounds, evaluating at round 0, every ``eval_every`` rounds
    and at the end.  ``callback(round)`` is called after each evaluation (progress).
    The batch of one of :func:`run_batch`.

    ``blas_threads``: BLAS threads during the run (default 1: a round's arrays are small,
    and threaded level-1 BLAS on them is many times slower; parallelise over runs
    instead).  ``None`` leaves the process setting alone.
    """
    return run_batch([cfg], problem=problem, callback=callback, blas_threads=blas_threads)[0]


def run_batch(
    cfgs: Sequence[Config],
    *,
    problem: Problem | None = None,
    callback: Callable | None = None,
    blas_threads: int | None = 1,
    observe: Callable | None = None,
) -> list[RunResult]:
    """Simulate the runs ``cfgs`` as one replica batch: their arrays stacked along a
    leading replica axis, every round one vectorized step of all of them.

    The configs must have equal :func:`replica_key` (they may differ in
    :data:`REPLICA_FIELDS`); a ``ValueError`` naming the first differing field is raised
    before any work otherwise, and for an empty list.  Each replica draws from the
    streams of its own seed exactly as alone, so ``run_batch(cfgs)[i]`` has the metrics
    of ``run(cfgs[i])`` (to round-off: see the tests).  Replicas with equal
    :class:`DataSpec` share one data set; others are stacked (memory:
    :func:`batch_bytes`).  A replica whose server model (every round) or client models
    (at evaluations) become non-finite is recorded as diverged at that round and
    frozen (its arrays zeroed, its metrics ended) while the others carry on.

    ``problem``: use this problem for every replica (one run's tests).  ``callback``
    and ``blas_threads``: as in :func:`run`.  Each result's ``seconds`` is the batch's
    wall time divided by S, and ``info["replicas"]`` is S.

    ``observe(problems, slot, state) -> {name: (S,) array}``: extra measurements, made
    at every evaluation after the standard metrics (``problems[slot[s]]`` is replica
    s's data set; ``state.as_replicas()`` gives its server models ``(S, d)`` and client
    models ``(S, n, d)``).  Each name becomes a float column of every result, next to
    :data:`METRICS` (names must not repeat them); it must not change the state.
    """
    cfgs = _check_batch(cfgs)
    if observe is not None and not callable(observe):
        raise ValueError(f"run_batch: observe must be callable(problems, slot, state), got {observe!r}")
    if blas_threads is None:
        return _run_batch(cfgs, problem, callback, observe)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _run_batch(cfgs, problem, callback, observe)


def _replica_problem(cfgs: list[Config], problem: Problem | None):
    """``(problems, slot, stacked)``: the distinct data sets, each replica's, and the
    problem the round computes on."""
    if problem is not None:
        _check_batch_size(cfgs[0], problem)
        return [problem], np.zeros(len(cfgs), np.intp), problem
    specs = [DataSpec.from_config(c) for c in cfgs]
    distinct = list(dict.fromkeys(specs))
    slot = np.array([distinct.index(sp) for sp in specs], dtype=np.intp)
    problems = [_problem_of(sp) for sp in distinct]
    for p in problems:  # ragged partitions: each data set has its own smallest client
        _check_batch_size(cfgs[0], p)
    return problems, slot, stack_problems(problems, slot)


def _replica_components(cfgs: list[Config], problem: Problem) -> tuple | None:
    """``(attack, aggregate)`` of a batch whose :func:`replica_params` differ between
    replicas: each a :class:`byzsim.algorithms.PerReplica` (batched with the values as
    ``(S, 1, 1)`` arrays, and every replica's own component), or ``None`` (the plain
    components of ``cfgs[0]``) when they do not differ."""
    vals = [replica_params(c) for c in cfgs]
    differ = [p for p in vals[0] if any(v[p] != vals[0][p] for v in vals)]
    if not differ:
        return None
    arrays = {p: np.array([v[p] for v in vals], dtype=np.float64).reshape(-1, 1, 1) for p in differ}
    batched = make_components(cfgs[0], problem, arrays)
    own = [make_components(c, problem) for c in cfgs]
    attack = PerReplica(batched[0], tuple(a for a, _ in own))
    aggregate = None if batched[1] is None else PerReplica(batched[1], tuple(g for _, g in own))
    return attack, aggregate


def _set_replica_settings(method, cfgs: list[Config]) -> None:
    """The per-replica numeric settings as ``(S,)`` arrays on the method."""
    if len(cfgs) == 1:
        return
    for f in ("lr", "participation", "server_l2") + (("penalty",) if hasattr(method, "penalty") else ()):
        vals = np.array([getattr(c, f) for c in cfgs], dtype=np.float64)
        setattr(method, f, vals if (vals != vals[0]).any() else float(vals[0]))


def _freeze_replica(state: State, s: int) -> None:
    """Zero replica ``s``'s arrays (after it diverged) so that it stays finite."""
    x, W, table = state.as_replicas()
    x[s] = 0
    if W is not None:
        W[s] = 0
    if table is not None:
        for e in table.entries:
            e[s] = 0
        table.mean[s] = 0


@dataclass
class Batch:
    """A replica batch ready to step: ``method.step(state, rng)`` advances every replica
    (``rng``: the generators, or the only one for S = 1).  ``problems[slot[s]]`` is
    replica s's data set."""

    method: object
    state: State
    rng: object
    problems: list
    slot: np.ndarray


def prepare_batch(cfgs: Sequence[Config], problem: Problem | None = None) -> Batch:
    """Data, method, initial state (round 0) and generators of a replica batch, exactly
    as :func:`run_batch` starts it (checks as :func:`run_batch`)."""
    cfgs = _check_batch(cfgs)
    problems, slot, P = _replica_problem(cfgs, problem)
    gens = [np.random.default_rng(np.random.SeedSequence(c.seed).spawn(2)[1]) for c in cfgs]
    method = make_method(cfgs[0], P, _replica_components(cfgs, P))
    _set_replica_settings(method, cfgs)
    x0 = np.stack([P.model.init(g).astype(P.X.dtype) for g in gens])
    state = method.init(x0)
    return Batch(method, state, gens[0] if len(cfgs) == 1 else gens, problems, slot)


def _observed(observe: Callable, problems: list, slot: np.ndarray, state: State) -> dict[str, np.ndarray]:
    """``observe``'s measurements, checked: ``(S,)`` float arrays under new names."""
    S = len(slot)
    out = {}
    for k, v in dict(observe(problems, slot, state)).items():
        if k in METRICS:
            raise ValueError(f"run_batch: observe returned {k!r}, a name of the standard metrics {METRICS}")
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (S,):
            raise ValueError(f"run_batch: observe returned {k!r} of shape {v.shape}, expected ({S},)")
        out[k] = v
    return out


def _run_batch(cfgs: list[Config], problem: Problem | None, callback: Callable | None,
               observe: Callable | None = None) -> list[RunResult]:
    S = len(cfgs)
    t0 = time.perf_counter()
    batch = prepare_batch(cfgs, problem)
    method, state, problems, slot = batch.method, batch.state, batch.problems, batch.slot
    P = method.problem
    cfg = cfgs[0]
    cols: list[dict[str, list]] = [{k: [] for k in METRICS} for _ in range(S)]
    diverged_round: list[int | None] = [None] * S
    alive = np.ones(S, bool)
    x, W, _ = state.as_replicas()
    models: list[np.ndarray | None] = [None] * S  # the server model of a stopped replica

    def diverge(s: int, r: int) -> None:
        diverged_round[s] = r
        alive[s] = False
        models[s] = x[s].copy()
        _freeze_replica(state, s)

    def record(r: int) -> None:
        finite = np.isfinite(x).all(axis=1)
        if W is not None:
            finite &= np.isfinite(W).all(axis=(1, 2))
        for s in np.flatnonzero(alive & ~finite):
            diverge(int(s), r)
        if alive.any():
            m = evaluate_replicas(problems, slot, state)
            if observe is not None:
                m.update(_observed(observe, problems, slot, state))
            for s in np.flatnonzero(alive):
                cols[s]["round"].append(r)
                for k, v in m.items():
                    cols[s].setdefault(k, []).append(float(v[s]))
            if callback is not None:
                callback(r)

    record(0)
    step_rng = batch.rng
    with geometric_median_convergence(S) as gm:
        _rounds(cfg, method, state, step_rng, x, alive, diverge, record)
    seconds = time.perf_counter() - t0
    info = {"J": P.J, "d": P.model.dim, "replicas": S}
    if state.table is not None:
        info["saga_bytes"] = state.table.nbytes // S
    if gm["elements"]:
        # geometric medians that spent max_iter without meeting tol (their output is the
        # last iterate): this run's, and those of components called replica by replica
        info["geomed_calls"] = gm["elements"] // S
        info["geomed_unattributed_in_batch"] = gm["unattributed"]
    results = []
    for s, c in enumerate(cfgs):
        columns = {
            "round": np.asarray(cols[s]["round"], dtype=np.int64),
            **{k: np.asarray(v, dtype=np.float64) for k, v in cols[s].items() if k != "round"},
        }
        rinfo = dict(info)
        if gm["elements"]:
            rinfo["geomed_unconverged"] = int(gm["by_element"][s])
        results.append(RunResult(config=c, columns=columns, diverged=diverged_round[s] is not None,
                                 diverged_round=diverged_round[s], seconds=seconds / S, info=rinfo,
                                 model=models[s] if models[s] is not None else x[s].copy()))
    return results


def _rounds(cfg: Config, method, state: State, step_rng, x: np.ndarray, alive: np.ndarray,
            diverge: Callable, record: Callable) -> None:
    """The round loop of a batch: ``eval_every`` rounds between evaluations, a replica
    whose server model goes non-finite stopped at the round it breaks."""
    while alive.any() and state.round < cfg.rounds:
        todo = min(cfg.eval_every - state.round % cfg.eval_every, cfg.rounds - state.round)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(todo):
                method.step(state, step_rng)
                # the server models are (S, d): checking them every round costs
                # microseconds and stops a diverging replica at the round it breaks
                if not np.isfinite(x).all():
                    bad = alive & ~np.isfinite(x).all(axis=1)
                    for s in np.flatnonzero(bad):
                        diverge(int(s), state.round)
                    if not alive.any():
                        break
        record(state.round)
