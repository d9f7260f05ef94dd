"""Run configuration: a frozen dataclass, named method presets, validation, TOML loading.

A :class:`Config` describes one simulation run completely.  Named methods of the
papers are presets (:data:`METHODS`) that fill ``family``, ``estimator`` and
``aggregator``; any other combination can be given explicitly.  :func:`make_config`
builds and validates a config from keyword arguments (or a TOML table) and raises a
``ValueError`` naming the bad field, the bad value and the valid choices *before* any
data is loaded or any simulation work is done.

Rules of :func:`make_config`:

* **Default run.**  Without ``method`` (and without ``family``/``estimator``/
  ``aggregator``) the method is :data:`DEFAULT_METHOD`, ``"asynrsa-vr"`` (paper A's
  method: penalty family, SAGA estimator) on the ``digits`` dataset with the defaults
  of :class:`Config` (10 clients, none Byzantine, 1000 rounds).
* **Field types first.**  Every scalar field is checked before the presets and names,
  so a bad ``lr`` is reported as ``lr``.
* **Spelling.**  Every registered name (method, aggregator, pre-aggregator, attack,
  dataset, partition, model) may be spelled with hyphens or underscores
  (``byrd_saga`` = ``byrd-saga``, ``trimmed-mean`` = ``trimmed_mean``); the config
  stores the registered spelling.
* **Fields the family does not use are errors.**  The penalty family (RSA,
  AsynRSA-VR) has no ``aggregator``, ``aggregator_params``, ``preaggregators`` or
  ``resample > 1``; the gradient family has no ``penalty`` or ``p``.  A field counts as
  set when it differs from its default (:class:`Config`), so a spec may write the
  defaults (``penalty = 0.05``, ``p = 1.0``) for every method of a figure.

>>> make_config().method, make_config(method="byrd_saga").method
('asynrsa-vr', 'byrd-saga')
>>> make_config(lr="abc")
Traceback (most recent call last):
...
ValueError: invalid config field 'lr' = 'abc': the step size must be a finite number > 0
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .registry import Registry, UnknownNameError, parameters_of

__all__ = [
    "DEFAULT_METHOD",
    "DTYPES",
    "ESTIMATORS",
    "KEY_NEUTRAL_DEFAULTS",
    "FAMILIES",
    "FIELDS",
    "KEY_NEUTRAL_DEFAULTS",
    "METHODS",
    "PRESET_FIELDS",
    "SAGA_TABLES",
    "Config",
    "TheoryWarning",
    "check_component_params",
    "check_memory",
    "component_parameters",
    "estimate_bytes",
    "load_toml",
    "make_config",
    "validate",
]

FAMILIES = ("gradient", "penalty")
PRESET_FIELDS = ("family", "estimator", "aggregator", "resample")  # what a method preset sets
ESTIMATORS = ("sgd", "saga")
SAGA_TABLES = ("auto", "dense", "factored")
DTYPES = ("float64", "float32")

#: Named methods of the papers as points of the (family, estimator, aggregator) space.
METHODS: Registry = Registry("method")
for _name, _aliases, _preset in [
    ("asynrsa-vr", (), dict(family="penalty", estimator="saga")),
    ("rsa", (), dict(family="penalty", estimator="sgd")),
    ("sgd", ("fedsgd", "federated-sgd"), dict(family="gradient", estimator="sgd", aggregator="mean")),
    ("saga", (), dict(family="gradient", estimator="saga", aggregator="mean")),
    ("byrd-sgd", ("gm",), dict(family="gradient", estimator="sgd", aggregator="geometric_median")),
    ("med", (), dict(family="gradient", estimator="sgd", aggregator="coordinate_median")),
    ("krum", (), dict(family="gradient", estimator="sgd", aggregator="krum")),
    ("trimmed-mean", (), dict(family="gradient", estimator="sgd", aggregator="trimmed_mean")),
    ("byrd-saga", (), dict(family="gradient", estimator="saga", aggregator="geometric_median")),
    ("rs-byrd-sgd", (), dict(family="gradient", estimator="sgd", aggregator="geometric_median", resample=2)),
    ("rs-byrd-saga", (), dict(family="gradient", estimator="saga", aggregator="geometric_median", resample=2)),
    ("custom", (), dict()),
]:
    METHODS.register(_name, *_aliases)(_preset)

#: The method of ``make_config()`` when neither ``method`` nor a family is given.
DEFAULT_METHOD = "asynrsa-vr"


@dataclass(frozen=True)
class Config:
    """One simulation run.  Field docs give shapes/units.

    Gradient family: ``x ← x − lr · (Agg(messages) + server_l2 · x)``.
    Penalty family (RSA/AsynRSA-VR): client ``x_i ← x_i − lr (g_i + penalty · ∂‖x_i − x0‖_p)``,
    server ``x0 ← x0 − lr (server_l2 · x0 + penalty Σ_{i∈S} ∂‖x0 − m_i‖_p)``.
    """

    method: str = "custom"
    family: str | None = None  # "gradient" | "penalty"
    estimator: str | None = None  # "sgd" | "saga"
    aggregator: str | None = None  # gradient family only
    aggregator_params: Mapping[str, Any] = field(default_factory=dict)
    # gradient family: applied in order before the aggregator, e.g. [{name = "nnm"},
    # {name = "bucketing", s = 2}] (byzsim.preaggregators; a bare name is accepted)
    preaggregators: tuple[Mapping[str, Any], ...] = ()
    resample: int | None = None  # s of paper B's s-replacement resampling (1 = none)
    attack: str = "none"
    attack_params: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    partition: str = "iid"
    partition_params: Mapping[str, Any] = field(default_factory=dict)
    model: str = "softmax"
    model_params: Mapping[str, Any] = field(default_factory=dict)
    n_clients: int = 10
    n_byzantine: int = 0
    byzantine_indices: tuple[int, ...] | None = None  # explicit; else drawn from the seed
    lr: float = 0.01  # step size (α in paper A, γ in paper B)
    batch_size: int = 1  # samples per client per round
    participation: float = 1.0  # γ of paper A: Bernoulli probability of taking part
    penalty: float = 0.05  # λ (penalty family)
    p: float = 1.0  # l_p norm of the penalty, >= 1, or math.inf
    server_l2: float = 0.0  # f0(x) = server_l2/2 ‖x‖² (paper A: 0.01)
    saga_table: str = "auto"  # "auto" | "dense" | "factored"
    dtype: str = "float64"  # "float64" | "float32": arithmetic of the data, models and tables
    rounds: int = 1000
    eval_every: int = 50
    train_eval_samples: int = 10000  # training loss on this many regular samples (0 = all)
    seed: int = 0
    # client momentum, local steps and the step-size schedule (see the block "momentum,
    # local steps, schedules" below)
    momentum: float = 0.0  # β of the clients' momentum m ← β m + (1 − β) g (gradient family)
    local_steps: int = 1  # E local SGD steps per round, message = model delta / lr (gradient family)
    lr_schedule: str = "constant"  # "constant" | "inv_sqrt" | "step" (byzsim.algorithms.LR_SCHEDULES)
    lr_schedule_params: Mapping[str, Any] = field(default_factory=dict)  # e.g. {gamma = 0.5, every = 100}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, Mapping):
                d[k] = dict(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        if d["p"] == math.inf:
            d["p"] = "inf"
        return d

    def replace(self, **changes) -> "Config":
        """A validated copy with ``changes``.  A new ``method`` re-applies its preset:
        the preset-owned fields (family, estimator, aggregator, resample) are reset
        unless given in ``changes`` too.  Fields the new family does not use must be at
        their defaults (e.g. a penalty-family config with ``penalty = 0.1`` needs
        ``penalty=0.05`` in ``changes`` to become a gradient-family one)."""
        d = self.to_dict()
        if "method" in changes:
            for k in PRESET_FIELDS:
                if k not in changes:
                    d[k] = None
        return make_config(**{**d, **changes})


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

#: Config fields added after store format 1, with the value that does what the code did
#: before the field existed.  The store key leaves a field out while it holds this
#: neutral value (:func:`byzsim.runs.store.canonical_config`), so adding a field never
#: changes the key of an existing run.  Add a new field here.
KEY_NEUTRAL_DEFAULTS: dict[str, Any] = {"momentum": 0.0, "local_steps": 1, "lr_schedule": "constant",
                                        "lr_schedule_params": {}}


def _fail(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"invalid config field {name!r} = {value!r}: {valid}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _registries() -> dict[str, Registry]:
    """Config field -> the registry of the names it holds (local imports: the
    registries live with their components)."""
    from .aggregators import AGGREGATORS
    from .attacks import ATTACKS
    from .data import DATASETS
    from .models import MODELS
    from .partition import PARTITIONS

    return {"method": METHODS, "aggregator": AGGREGATORS, "attack": ATTACKS, "dataset": DATASETS,
            "partition": PARTITIONS, "model": MODELS}


def _canonical(field_name: str, reg: Registry, value: Any) -> str:
    try:
        return reg.canonical(value)
    except UnknownNameError as e:
        raise UnknownNameError(f"invalid config field {field_name!r}: {e}") from None


def make_config(**kw: Any) -> Config:
    """Build a validated, resolved :class:`Config`.

    The ``method`` preset fills ``family``/``estimator``/``aggregator`` unless given;
    without ``method`` and family fields the method is :data:`DEFAULT_METHOD`.  Names
    are stored in their registered spelling.  Raises ``ValueError`` (field, value,
    valid range) on any bad input; see the module notes for the rules.
    """
    unknown = sorted(set(kw) - set(FIELDS))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(FIELDS), n=1, cutoff=0.5)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"unknown config field(s) {', '.join(hints)}; valid fields: {', '.join(FIELDS)}"
        )
    kw = dict(kw)
    if kw.get("p") in ("inf", "Infinity", "infinity"):
        kw["p"] = math.inf
    if isinstance(kw.get("byzantine_indices"), list):
        kw["byzantine_indices"] = tuple(kw["byzantine_indices"])
    _check_scalars(kw)
    regs = _registries()
    for k, reg in regs.items():
        if kw.get(k) is not None:
            kw[k] = _canonical(k, reg, kw[k])
    if kw.get("method") is None:
        kw["method"] = DEFAULT_METHOD if all(kw.get(k) is None for k in PRESET_FIELDS) else "custom"
    for k, v in METHODS[kw["method"]].items():
        if kw.get(k) is None:
            kw[k] = v
    if kw.get("resample") is None:
        kw["resample"] = 1
    for k in ("aggregator_params", "attack_params", "dataset_params", "partition_params", "model_params",
              "lr_schedule_params"):
        if k in kw and not isinstance(kw[k], Mapping):
            raise _fail(k, kw[k], "expected a table/dict of parameters")
        if k in kw:
            kw[k] = dict(kw[k])
    if "preaggregators" in kw:
        from .preaggregators import normalize_preaggregators

        try:
            kw["preaggregators"] = normalize_preaggregators(kw["preaggregators"])
        except ValueError as e:
            raise _fail("preaggregators", kw["preaggregators"], str(e)) from None
    if isinstance(kw.get("lr_schedule"), str):
        from .algorithms import LR_SCHEDULES

        kw["lr_schedule"] = _canonical("lr_schedule", LR_SCHEDULES, kw["lr_schedule"])
    cfg = Config(**kw)
    validate(cfg)
    _warn_outside_theory(cfg)
    return cfg


def _check_scalars(kw: Mapping[str, Any]) -> None:
    """Type and range of the scalar fields that do not depend on a preset or a registry."""
    def get(k):
        return kw.get(k, FIELDS[k].default)

    for name in ("n_clients", "rounds", "eval_every", "batch_size"):
        v = get(name)
        if not (_is_int(v) and v >= 1):
            raise _fail(name, v, "expected an integer >= 1")
    n = get("n_clients")
    if not (_is_int(get("n_byzantine")) and 0 <= get("n_byzantine") < n):
        raise _fail("n_byzantine", get("n_byzantine"), f"expected an integer in [0, n_clients) = [0, {n})")
    if not (_is_num(get("participation")) and 0 < get("participation") <= 1):
        raise _fail("participation", get("participation"), "the participation probability γ must be in (0, 1]")
    lr = get("lr")
    if not (_is_num(lr) and lr > 0 and math.isfinite(lr)):
        raise _fail("lr", lr, "the step size must be a finite number > 0")
    pen = get("penalty")
    if not (_is_num(pen) and pen > 0 and math.isfinite(pen)):
        raise _fail("penalty", pen, "the penalty λ must be a finite number > 0")
    if not (_is_num(get("p")) and get("p") >= 1):
        raise _fail("p", get("p"), "the norm order p must be a number >= 1 or 'inf'")
    if not (_is_num(get("server_l2")) and get("server_l2") >= 0):
        raise _fail("server_l2", get("server_l2"), "expected a number >= 0")
    if not (_is_int(get("train_eval_samples")) and get("train_eval_samples") >= 0):
        raise _fail("train_eval_samples", get("train_eval_samples"), "expected an integer >= 0 (0 = all samples)")
    if not (_is_int(get("seed")) and get("seed") >= 0):
        raise _fail("seed", get("seed"), "expected an integer >= 0")
    if get("dtype") not in DTYPES:
        raise _fail("dtype", get("dtype"), f"valid choices: {', '.join(DTYPES)}")
    if get("saga_table") not in SAGA_TABLES:
        raise _fail("saga_table", get("saga_table"), f"valid choices: {', '.join(SAGA_TABLES)}")
    for k in ("method", "aggregator", "attack", "dataset", "partition", "model", "family", "estimator"):
        if get(k) is not None and not isinstance(get(k), str):
            raise _fail(k, get(k), "expected a name (a string)")


class TheoryWarning(UserWarning):
    """A valid config outside the range where the papers' guarantees hold."""


def _warn_outside_theory(cfg: Config) -> None:
    """Warn (do not refuse) when resampling leaves the range of paper B's analysis:
    the contaminated fraction s·B/W must stay below 1/2 (the paper itself runs s = 3, 4
    beyond it)."""
    import warnings

    if cfg.family == "gradient" and cfg.n_byzantine and 2 * cfg.resample * cfg.n_byzantine >= cfg.n_clients:
        warnings.warn(
            f"s·B/W = {cfg.resample}·{cfg.n_byzantine}/{cfg.n_clients} = "
            f"{cfg.resample * cfg.n_byzantine / cfg.n_clients:.3f} >= 1/2: outside the range where "
            "paper B's bound holds (the geometric median may be dominated by contaminated messages)",
            TheoryWarning,
            stacklevel=3,
        )


def validate(cfg: Config) -> None:
    """Check every field of a config; raise ``ValueError`` naming the first bad one."""
    _check_scalars(dataclasses.asdict(cfg))
    regs = _registries()
    for k in ("method", "attack", "dataset", "partition", "model"):
        _canonical(k, regs[k], getattr(cfg, k))
    AGGREGATORS = regs["aggregator"]
    if cfg.family not in FAMILIES:
        raise _fail("family", cfg.family, f"valid choices: {', '.join(FAMILIES)} (or pick a method: {', '.join(METHODS)})")
    if cfg.estimator not in ESTIMATORS:
        raise _fail("estimator", cfg.estimator, f"valid choices: {', '.join(ESTIMATORS)}")
    if cfg.family == "gradient":
        if cfg.aggregator is None:
            raise _fail("aggregator", None, f"the gradient family needs one of: {', '.join(AGGREGATORS)}")
        _canonical("aggregator", AGGREGATORS, cfg.aggregator)
    _check_family_fields(cfg)
    if not (_is_int(cfg.resample) and cfg.resample >= 1):
        raise _fail("resample", cfg.resample, "the resampling size s must be an integer >= 1 (1 = no resampling)")
    if cfg.resample > 1:
        if cfg.resample > cfg.n_clients:
            raise _fail("resample", cfg.resample, f"s must be in [1, n_clients] = [1, {cfg.n_clients}]")
        if cfg.participation < 1:
            raise _fail("resample", cfg.resample, "resampling with partial participation (participation < 1) is not supported")
    if cfg.preaggregators:
        names = [p["name"] for p in cfg.preaggregators]
        if cfg.participation < 1 and any(
            p["name"] in ("resample", "resampling") and p.get("s", 2) > 1 for p in cfg.preaggregators
        ):
            raise _fail("preaggregators", names,
                        "resampling with partial participation (participation < 1) is not supported")
    if cfg.byzantine_indices is not None:
        idx = cfg.byzantine_indices
        if not isinstance(idx, (tuple, list)) or len(idx) != cfg.n_byzantine or len(set(idx)) != len(idx) or not all(
            _is_int(i) and 0 <= i < cfg.n_clients for i in idx
        ):
            raise _fail(
                "byzantine_indices", idx,
                f"expected {cfg.n_byzantine} distinct integers in [0, {cfg.n_clients})",
            )
    check_component_params(cfg)
    _check_dynamics(cfg)


# ---- momentum, local steps, schedules ---------------------------------------------------
def _check_dynamics(cfg: Config) -> None:
    """Client momentum β in [0, 1) and local steps ``E >= 1`` (gradient family only), a
    registered step-size schedule with valid parameters, and no stateful component
    inside an optimizing attack's trial aggregations (its state cannot be carried)."""
    from .aggregators import AGGREGATORS
    from .algorithms import LR_SCHEDULES, check_momentum_local_steps, check_schedule_params
    from .attacks import ATTACKS
    from .preaggregators import PREAGGREGATORS

    check_momentum_local_steps(cfg.momentum, cfg.local_steps)
    for name, neutral in (("momentum", 0.0), ("local_steps", 1)):
        if cfg.family == "penalty" and getattr(cfg, name) != neutral:
            raise _fail(name, getattr(cfg, name),
                        "client momentum and local steps apply to the gradient family only (the penalty "
                        f"family's clients keep their own models); method {cfg.method!r}")
    if not isinstance(cfg.lr_schedule, str):
        raise _fail("lr_schedule", cfg.lr_schedule, "expected a name (a string)")
    check_schedule_params(_canonical("lr_schedule", LR_SCHEDULES, cfg.lr_schedule), cfg.lr_schedule_params)
    if cfg.family == "gradient" and ATTACKS.entry(cfg.attack).meta["needs_aggregate"] \
            and not cfg.attack_params.get("aggregator"):
        stateful = [cfg.aggregator] if AGGREGATORS.entry(cfg.aggregator).meta["stateful"] else []
        stateful += [p["name"] for p in cfg.preaggregators if PREAGGREGATORS.entry(p["name"]).meta["stateful"]]
        if stateful:
            raise _fail("attack", cfg.attack,
                        f"it optimizes against the server's aggregation, whose stateful part(s) "
                        f"{', '.join(map(repr, stateful))} cannot carry their state inside the attack's "
                        "trial aggregations; use a stateless aggregator or another attack")


#: Fields one family does not use: ``(family, field, what it means there)``.
_UNUSED_BY_FAMILY = (
    ("penalty", "aggregator", "the penalty family (RSA, AsynRSA-VR) aggregates by the penalty; leave it unset"),
    ("penalty", "aggregator_params", "the penalty family (RSA, AsynRSA-VR) has no aggregator"),
    ("penalty", "preaggregators", "pre-aggregators apply to the gradient family only"),
    ("penalty", "resample", "resampling applies to the gradient family only"),
    ("gradient", "penalty", "the gradient family has no penalty (it is a parameter of RSA/AsynRSA-VR)"),
    ("gradient", "p", "the gradient family has no penalty norm p (it is a parameter of RSA/AsynRSA-VR)"),
)


def _check_family_fields(cfg: Config) -> None:
    """A field that the family does not use, set to a value other than its default
    (``resample``: other than 1), is an error that says so."""
    for family, name, why in _UNUSED_BY_FAMILY:
        if cfg.family != family:
            continue
        value = getattr(cfg, name)
        default = 1 if name == "resample" else FIELDS[name].default
        if isinstance(FIELDS[name].default_factory, type):  # dict / tuple fields
            default = FIELDS[name].default_factory()
        if value != default and not (name in ("aggregator_params", "preaggregators") and not value):
            raise _fail(name, list(value) if isinstance(value, tuple) else value,
                        f"{why} (method {cfg.method!r}, {family} family)")


def component_parameters(obj: Any) -> dict[str, Any]:
    """Keyword parameters of a component with their defaults
    (``inspect.Parameter.empty`` when required): :func:`byzsim.registry.parameters_of`.
    A registered aggregator's declared per-call parameters (e.g. ``mix``) are left out.
    Prefer ``REGISTRY.parameters(name)``."""
    entry = _registries()["aggregator"].entry_of(obj)
    return parameters_of(obj, entry.meta["per_call"] if entry is not None else ())


def check_component_params(cfg: Config) -> None:
    """Check the ``*_params`` tables before any run starts (``make_config`` checks the
    component names): names, types and declared ranges of the values and each
    component's own check (one checker, :meth:`byzsim.registry.Registry.check`), then the
    rules across fields: an explicit ``f`` against the rule's ``max_f`` of the rows it
    receives, the dataset's shape (known without loading it) against the partition,
    ``batch_size`` against the smallest client's data, and the model's parameters."""
    regs = _registries()
    regs["attack"].check(cfg.attack, cfg.attack_params, field="attack_params", context=cfg)
    if cfg.aggregator is not None:
        regs["aggregator"].check(cfg.aggregator, cfg.aggregator_params, field="aggregator_params",
                                 filled=("f",), context=cfg)
    for k in ("dataset", "partition", "model"):
        regs[k].check(getattr(cfg, k), getattr(cfg, f"{k}_params"), field=f"{k}_params", context=cfg)
    if cfg.family == "gradient":
        _check_f(cfg)
    _check_shapes(cfg)


def _check_f(cfg: Config) -> None:
    """An explicit ``f`` of a rule (pre-aggregator or aggregator) must be an integer in
    ``[0, max_f(n)]`` for the ``n`` rows that reach it (``n_clients`` passed through the
    pre-aggregators' declared ``chain``: resampling keeps n rows, bucketing leaves
    ⌈n/s⌉)."""
    from .preaggregators import PREAGGREGATORS

    specs = list(cfg.preaggregators)
    if cfg.resample > 1 and specs:
        specs.insert(0, {"name": "resample", "s": cfg.resample})
    n, f = cfg.n_clients, cfg.n_byzantine
    steps = []
    for i, spec in enumerate(specs):
        params = {k: v for k, v in spec.items() if k != "name"}
        entry = PREAGGREGATORS.entry(spec["name"])
        steps.append((f"preaggregators[{i}].f", entry, params, n))
        n, f = entry.meta["chain"](n, f, params)
    agg = _registries()["aggregator"].entry(cfg.aggregator)
    steps.append(("aggregator_params.f", agg, dict(cfg.aggregator_params), n))
    for where, entry, params, rows in steps:
        if params.get("f") is None or entry.meta.get("max_f") is None:
            continue
        cap = entry.meta["max_f"](rows)
        if not (_is_int(params["f"]) and 0 <= params["f"] <= cap):
            raise ValueError(f"invalid config field {where!r} = {params['f']!r}: expected an integer in "
                             f"[0, {cap}] ({entry.name} tolerates at most {cap} Byzantine of the {rows} "
                             f"rows it receives)")


def _shapes(cfg: Config) -> tuple[tuple[int, int, int, int], Any] | None:
    """``((n_train, n_test, n_features, n_classes), model)`` from the dataset's declared
    size and the model built without data, or ``None`` when the dataset declares none."""
    from .models import make_model

    size_of = _registries()["dataset"].entry(cfg.dataset).meta.get("size")
    if size_of is None:
        return None
    size = tuple(int(v) for v in size_of(dict(cfg.dataset_params)))
    try:
        model = make_model(cfg.model, size[2], size[3], **cfg.model_params)
    except (ValueError, TypeError) as e:
        raise _fail("model_params", dict(cfg.model_params), str(e)) from None
    return size, model


def _check_shapes(cfg: Config) -> None:
    """The partition's smallest client (when it follows from the dataset's size) must
    hold at least ``batch_size`` samples."""
    from .registry import ParameterValueError

    shapes = _shapes(cfg)
    if shapes is None:
        return
    (n_train, *_), _ = shapes
    entry = _registries()["partition"].entry(cfg.partition)
    smallest_of = entry.meta.get("smallest_client")
    if smallest_of is None:
        return
    try:
        J = smallest_of(dict(cfg.partition_params), n_train, cfg.n_clients, cfg.n_byzantine)
    except ParameterValueError as e:
        raise e.at("partition", entry.name, "partition_params") from None
    if J is not None and cfg.batch_size > J:
        raise _fail("batch_size", cfg.batch_size,
                    f"expected at most the {J} samples of the smallest client ({cfg.dataset}: "
                    f"{n_train} training samples, partition {cfg.partition!r} over {cfg.n_clients} clients)")


def estimate_bytes(cfg: Config) -> int | None:
    """A lower bound of the memory one run needs, in bytes, or ``None`` when the
    dataset declares no size: the dataset as loaded (float64, train and test), its
    partitioned copy in ``cfg.dtype``, about four ``(n, d)`` arrays of client
    messages, models and gradients, and a dense SAGA table ``(n, J, d)`` when the run
    keeps one (``saga_table = "dense"``, or a model without gradient factors)."""
    shapes = _shapes(cfg)
    if shapes is None:
        return None
    (n_train, n_test, p, _), model = shapes
    item = 4 if cfg.dtype == "float32" else 8
    d, n = int(model.dim), cfg.n_clients
    total = 8 * (n_train + n_test) * p + item * n_train * p + item * 4 * n * d
    if cfg.estimator == "saga" and (cfg.saga_table == "dense" or not hasattr(model, "sample_factors")):
        total += item * n_train * d  # one gradient per sample: n·J ≈ N rows of d
    return int(total)


def available_bytes() -> int | None:
    """The memory available to a new run: ``MemAvailable`` of /proc/meminfo, else the
    physical memory; ``None`` when neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: Config, available: int | None = None) -> None:
    """Refuse a run whose memory (:func:`estimate_bytes`, a lower bound) exceeds the
    memory available (:func:`available_bytes` unless given)."""
    need = estimate_bytes(cfg)
    have = available_bytes() if available is None else available
    if need is None or have is None or need <= have:
        return
    big = "model_params" if cfg.model_params else "dataset_params" if cfg.dataset_params else "n_clients"
    value = getattr(cfg, big)
    raise _fail(big, dict(value) if isinstance(value, Mapping) else value,
                f"the run needs at least {_size(need)} of memory ({cfg.model} on {cfg.dataset}, "
                f"{cfg.n_clients} clients), {_size(have)} are available")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file (experiment spec) into a dict; clear error when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment spec not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"malformed TOML in {path}: {e}") from None
