"""Replica batches: each run alone is the same run.

``run_batch`` stacks runs that share their structure along a leading replica axis.
Each replica draws from its own seed's streams, and every operation of a round acts on
each replica's slice alone, so a replica's metrics must not depend on which other runs
share its array.  The property test draws small configs (both families, SGD and SAGA,
softmax and MLP, float64 and float32, random and deterministic attacks, a resampled, a
bucketed and a clipped aggregator, the stateful momentum centered clipping, partial
participation) and batch compositions (the
same structure with other seeds, step sizes, penalties, server l2, participation, and
attack scales and aggregator radii (the components' declared ``replica_params``), in
random order) and compares every replica with the same run made alone: its metrics to
1e-10 relative in float64 and 1e-5 relative in float32, and every array of its state
bit for bit (which holds: each replica's slice sees the same kernels as alone).  The
checks are shown to catch replicas sharing one random stream, an update rounded
differently in the batch, and a batch applying replica 0's attack scale and clipping
radius to every replica.
"""

from __future__ import annotations

import dataclasses
import re

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import byzsim.algorithms as alg
import byzsim.algorithms._gradient as gradient_round
import byzsim.algorithms._kernels as kernels
import byzsim.algorithms._penalty as penalty_round
import byzsim.algorithms._replicas as replicas_module
import byzsim.simulate as sim
from byzsim.config import make_config
from byzsim.simulate import DataSpec, batch_bytes, group_replicas, replica_bytes, replica_key, run, run_batch

DIGITS = dict(dataset="digits", train_eval_samples=300)
SYNTH = dict(dataset="synthetic", dataset_params={"n_samples": 400, "n_features": 6, "n_classes": 3, "n_test": 60})

STRUCTURES = {
    "asynrsa-vr": dict(method="asynrsa-vr", lr=0.01, penalty=0.05),
    "rsa-l2": dict(method="rsa", lr=0.01, penalty=0.1, p=2.0),
    "byrd-saga": dict(method="byrd-saga", lr=0.05),
    "byrd-sgd": dict(method="byrd-sgd", lr=0.05),
    "rs-byrd-saga": dict(method="rs-byrd-saga", lr=0.05),
    "krum": dict(method="krum", lr=0.05),
    "bucketing-gm": dict(method="sgd", aggregator="geometric_median",
                         preaggregators=[{"name": "bucketing", "s": 2}], lr=0.05),
    "clipped-cc": dict(method="sgd", aggregator="centered_clipping", aggregator_params={"tau": 1.0},
                       preaggregators=[{"name": "clipping", "c": 2.0}], lr=0.05),
    # stateful: each replica keeps its own center, clipped at its own tau
    "cc-momentum": dict(method="sgd", aggregator="centered_clipping_momentum", aggregator_params={"tau": 1.0},
                        lr=0.05),
}
ATTACKS = {
    "none": dict(attack="none"),
    "gaussian": dict(attack="gaussian", attack_params={"std": 50.0}),
    "sign_flipping": dict(attack="sign_flipping", attack_params={"c": -5.0}),
    "same_value": dict(attack="same_value", attack_params={"c": 100.0}),
    "alie": dict(attack="alie", attack_params={"z": 1.0}),
}


def with_replica_params(cfg, values: dict):
    """``cfg`` with the :func:`byzsim.simulate.replica_params` at the paths of
    ``values`` set to them."""
    attack_params, aggregator_params, preaggregators = sim._with_params(cfg, values)
    return cfg.replace(attack_params=attack_params, aggregator_params=aggregator_params,
                       preaggregators=preaggregators)


def worst_relative_gap(cfgs, batch=None) -> float:
    """Largest relative difference of any metric between ``run_batch(cfgs)`` and the runs
    made alone (``inf`` when the divergence records differ)."""
    batch = run_batch(cfgs) if batch is None else batch
    worst = 0.0
    for c, b in zip(cfgs, batch):
        a = run(c)
        if (a.diverged, a.diverged_round) != (b.diverged, b.diverged_round):
            return float("inf")
        for k, x in a.columns.items():
            y = b.columns[k]
            if x.shape != y.shape:
                return float("inf")
            both_nan = np.isnan(x) & np.isnan(y)
            gap = np.abs(x - y) / np.maximum(np.abs(x), 1e-12)
            worst = max(worst, float(np.max(np.where(both_nan, 0.0, gap), initial=0.0)))
    return worst


@st.composite
def batches(draw):
    structure = draw(st.sampled_from(sorted(STRUCTURES)))
    kw = dict(STRUCTURES[structure])
    kw.update(draw(st.sampled_from([DIGITS, SYNTH])))
    kw.update(ATTACKS[draw(st.sampled_from(sorted(ATTACKS)))])
    if draw(st.booleans()):
        kw.update(model="mlp", model_params={"hidden": [draw(st.sampled_from([3, 5]))]})
    dtype = draw(st.sampled_from(["float64", "float32"]))
    n = draw(st.integers(5, 9))
    kw.update(n_clients=n, n_byzantine=draw(st.integers(0 if kw["attack"] == "none" else 1, 2)), dtype=dtype,
              batch_size=draw(st.integers(1, 3)), rounds=draw(st.integers(4, 14)), eval_every=5)
    if kw["n_byzantine"] == 0:
        kw.update(attack="none", attack_params={})
    resampled = structure.startswith("rs-")
    with warnings.catch_warnings():  # s·B/W >= 1/2 is outside paper B's theory, not invalid
        warnings.simplefilter("ignore")
        base = make_config(**kw)
    S = draw(st.integers(2, 4))
    cfgs = []
    for _ in range(S):
        change = dict(seed=draw(st.integers(0, 3)), lr=base.lr * draw(st.sampled_from([0.5, 1.0, 2.0])))
        if not resampled:
            change["participation"] = draw(st.sampled_from([1.0, 0.7, 0.4]))
        if base.family == "penalty":
            change["penalty"] = draw(st.sampled_from([0.02, 0.05]))
        change["server_l2"] = draw(st.sampled_from([0.0, 0.01]))
        # attack scales, std, clipping radii: each replica its own
        scaled = {path: v * draw(st.sampled_from([0.5, 1.0, 3.0])) for path, v in sim.replica_params(base).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfgs.append(with_replica_params(base.replace(**change), scaled))
    order = draw(st.permutations(range(S)))
    return [cfgs[i] for i in order]


@given(cfgs=batches())
def test_each_replica_is_the_run_made_alone(cfgs):
    tol = 1e-10 if cfgs[0].dtype == "float64" else 1e-5
    assert worst_relative_gap(cfgs) <= tol
    assert _states_equal_alone(cfgs, 4)  # stronger, and what is measured: bit for bit


def test_momentum_centered_clipping_with_per_replica_tau_is_each_run_alone():
    """The stateful rule in one batch: each replica keeps its own center and clips at its
    own ``tau``; bit for bit the run made alone, and the radii do make the runs differ."""
    base = make_config(**{**STRUCTURES["cc-momentum"], **DIGITS}, n_clients=6, n_byzantine=1, rounds=8,
                       eval_every=4, attack="sign_flipping", attack_params={"c": -5.0}, participation=0.7)
    cfgs = [with_replica_params(base.replace(seed=1), {("aggregator_params", "tau"): tau}) for tau in (0.5, 1.0, 3.0)]
    assert group_replicas(cfgs) == [[0, 1, 2]]
    batch = run_batch(cfgs)
    assert worst_relative_gap(cfgs, batch) == 0.0 and _states_equal_alone(cfgs, 4)
    finals = [b.columns["train_loss"][-1] for b in batch]
    assert len(set(finals)) == 3


def test_the_check_catches_replicas_sharing_one_random_stream(monkeypatch):
    """Broken variant: every replica draws from the first replica's generator."""
    base = make_config(method="byrd-saga", n_clients=6, n_byzantine=1, rounds=6, eval_every=3,
                       attack="gaussian", attack_params={"std": 10.0}, participation=0.7, lr=0.05, **DIGITS)
    cfgs = [base.replace(seed=s) for s in range(3)]
    assert worst_relative_gap(cfgs) == 0.0
    real = alg.replica_generators
    for family in (gradient_round, penalty_round):
        monkeypatch.setattr(family, "replica_generators", lambda rng, S=None: [real(rng)[0]] * (S or 1))
    assert worst_relative_gap(cfgs) > 1e-3


def test_the_check_catches_a_batch_applying_replica_0s_parameters_to_all(monkeypatch):
    """Broken variant: the batched attack and aggregate are replica 0's own (its
    sign-flipping scale and clipping radius for every replica)."""
    base = make_config(method="sgd", aggregator="centered_clipping", aggregator_params={"tau": 0.5},
                       n_clients=6, n_byzantine=1, rounds=6, eval_every=3, attack="sign_flipping",
                       attack_params={"c": -5.0}, lr=0.05, **DIGITS)
    cfgs = [with_replica_params(base, {("attack_params", "c"): c, ("aggregator_params", "tau"): t})
            for c, t in ((-5.0, 0.5), (-1.0, 0.05), (3.0, 2.0))]
    assert len({replica_key(c) for c in cfgs}) == 1
    assert worst_relative_gap(cfgs) == 0.0 and _states_equal_alone(cfgs, 4)

    def first_replicas(component, s):
        if isinstance(component, alg.PerReplica):
            return component.replicas[0 if s is None else s]
        return component

    for module in (replicas_module, gradient_round):
        monkeypatch.setattr(module, "component_at", first_replicas)
    assert worst_relative_gap(cfgs) > 1e-3
    assert not _states_equal_alone(cfgs, 4)


def test_a_diverging_replica_is_recorded_and_the_others_carry_on():
    # Byzantine messages of 1e300 averaged: a step of 1e10 overflows at round 1, 1e-3 does not
    base = make_config(method="sgd", n_clients=5, n_byzantine=1, attack="same_value",
                       attack_params={"c": 1e300}, rounds=30, eval_every=10, lr=1e-3, **DIGITS)
    cfgs = [base, base.replace(lr=1e10), base.replace(seed=3)]
    out = run_batch(cfgs)
    assert out[1].diverged and out[1].diverged_round == run(cfgs[1]).diverged_round
    assert not out[0].diverged and not out[2].diverged
    assert len(out[0].columns["round"]) == 4
    assert worst_relative_gap(cfgs, out) == 0.0


def test_run_is_the_batch_of_one():
    cfg = make_config(method="asynrsa-vr", n_clients=6, n_byzantine=1, rounds=10, eval_every=5,
                      participation=0.5, **DIGITS)
    a, (b,) = run(cfg), run_batch([cfg])
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])


# --------------------------------------------------------------------------------------
# bad input, grouping


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one config"):
        run_batch([])


@pytest.mark.parametrize("field,value,named", [
    ("aggregator", "coordinate_median", "aggregator"), ("batch_size", 2, "batch_size"),
    ("n_clients", 7, "n_clients"), ("aggregator_params", {"tol": 1e-6}, "aggregator_params.tol"),
    ("attack_params", {"std": 2.0, "mean": None}, "attack_params.mean"), ("rounds", 11, "rounds"),
    ("dtype", "float32", "dtype")])
def test_mixing_structures_is_refused_naming_the_field(field, value, named, monkeypatch):
    base = make_config(method="byrd-sgd", n_clients=6, n_byzantine=1, attack="gaussian",
                       attack_params={"std": 1.0}, rounds=10, **DIGITS)
    monkeypatch.setattr(sim, "_run_batch", lambda *a: pytest.fail("work started"))
    with pytest.raises(ValueError, match=repr(named)):
        run_batch([base, base.replace(seed=1), base.replace(**{field: value})])


def test_a_per_replica_parameter_that_changes_shapes_is_refused_naming_it(monkeypatch):
    """Asking for one batch of runs that differ in a count (trimmed mean's f, the rows
    it drops) or a bucket size is bad input: a clear error before any work."""
    monkeypatch.setattr(sim, "_run_batch", lambda *a: pytest.fail("work started"))
    base = make_config(method="trimmed-mean", n_clients=9, n_byzantine=2, aggregator_params={"f": 1},
                       preaggregators=[{"name": "bucketing", "s": 2}, {"name": "clipping", "c": 1.0}],
                       attack="sign_flipping", attack_params={"c": -2.0}, **DIGITS)
    ok = with_replica_params(base, {("preaggregators", 1, "c"): 3.0, ("attack_params", "c"): 4.0})
    for change, named in ((dict(aggregator_params={"f": 2}), "aggregator_params.f"),
                          (dict(preaggregators=[{"name": "bucketing", "s": 3}, {"name": "clipping", "c": 1.0}]),
                           "preaggregators[0].s")):
        with pytest.raises(ValueError, match=rf"'{re.escape(named)}' .* may change shapes or control flow.*"
                                             r"attack_params\.c, preaggregators\.1\.c"):
            run_batch([base, ok, base.replace(**change)])


def test_replica_fields_do_not_change_the_key_and_groups_follow_it():
    base = make_config(method="asynrsa-vr", **DIGITS)
    same = [base.replace(seed=3), base.replace(lr=0.5), base.replace(penalty=0.2),
            base.replace(server_l2=0.1), base.replace(participation=0.3)]
    assert all(replica_key(c) == replica_key(base) for c in same)
    other = base.replace(method="rsa")
    assert replica_key(other) != replica_key(base)
    assert group_replicas([base, other, *same, other]) == [[0, *range(2, 7)], [1, 7]]


@pytest.mark.parametrize("base,stackable,structural", [
    (dict(attack="sign_flipping", attack_params={"c": -5.0}), dict(attack_params={"c": 2}),
     dict(attack="same_value", attack_params={"c": -5.0})),
    (dict(attack="gaussian", attack_params={"std": 5.0, "mean": 0.0}), dict(attack_params={"std": 50.0, "mean": 1.0}),
     dict(attack_params={"std": 5.0})),  # mean left to its default: another key
    (dict(attack="alie", attack_params={"z": 1.0}), dict(attack_params={"z": 0.3}), dict(attack_params={"z": None})),
    (dict(attack="mimic", attack_params={"target": 0}), None, dict(attack_params={"target": 1})),
    (dict(aggregator="centered_clipping", aggregator_params={"tau": 1.0}), dict(aggregator_params={"tau": 0.1}),
     dict(aggregator_params={"tau": 1.0, "iterations": 2})),
    (dict(aggregator="centered_clipping", aggregator_params={"tau": 1.0}), None, dict(aggregator_params={"tau": None})),
    (dict(aggregator="trimmed_mean", aggregator_params={"f": 1}), None, dict(aggregator_params={"f": 2})),
    (dict(aggregator="geometric_median", aggregator_params={"tol": 1e-5}), None,
     dict(aggregator_params={"tol": 1e-6})),  # the Weiszfeld loop's stopping rule: not per replica
    (dict(preaggregators=[{"name": "clipping", "c": 1.0}]), dict(preaggregators=[{"name": "clipping", "c": 4.0}]),
     dict(preaggregators=[{"name": "bucketing", "s": 2}])),
])
def test_runs_differing_only_in_declared_replica_params_share_a_key(base, stackable, structural):
    cfg = make_config(method="sgd", n_clients=7, n_byzantine=1, **{"attack": "none", **base}, **DIGITS)
    if stackable is not None:
        assert replica_key(cfg.replace(**stackable)) == replica_key(cfg)
    assert replica_key(cfg.replace(**structural)) != replica_key(cfg)


def test_a_plugin_component_without_declared_replica_params_keeps_them_in_the_key(monkeypatch):
    from byzsim.attacks import ATTACKS as REG

    for attr in ("_items", "_entries"):  # register into copies: nothing leaks
        monkeypatch.setattr(REG, attr, dict(getattr(REG, attr)))

    def plugin_scaled(v, byzantine, rng, *, c: float = 1.0):
        return c * v[..., byzantine, :]

    REG.register("plugin_scaled")(plugin_scaled)
    REG.register("plugin_scaled_stackable", replica_params=("c",))(plugin_scaled)
    for name, shared in (("plugin_scaled", False), ("plugin_scaled_stackable", True)):
        a = make_config(method="sgd", n_clients=6, n_byzantine=1, attack=name, attack_params={"c": 2.0}, **DIGITS)
        b = a.replace(attack_params={"c": -3.0})
        assert (replica_key(a) == replica_key(b)) is shared, name
    a = a.replace(rounds=4, eval_every=2)
    cfgs = [a, a.replace(attack_params={"c": -3.0}, seed=1)]
    assert worst_relative_gap(cfgs) == 0.0 and _states_equal_alone(cfgs, 3)


def _declared(registry):
    return [(name, registry.entry(name).meta["replica_params"]) for name, _, _ in registry.groups()
            if registry.entry(name).meta["replica_params"] and not registry.entry(name).meta["stateful"]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_component_given_per_replica_arrays_computes_each_replica_as_alone(dtype):
    """Every component declaring ``replica_params``, called on ``(S, n, d)`` messages
    with ``(S, 1, 1)`` parameter arrays, gives replica s bit for bit what it gives alone
    with the numbers (random ones: the same draws in the same order;
    :func:`byzsim.testing.check_replica_params`)."""
    from byzsim.aggregators import AGGREGATORS
    from byzsim.attacks import ATTACKS as ATT
    from byzsim.preaggregators import PREAGGREGATORS
    from byzsim.testing import check_replica_params

    S, n, d = 3, 7, 5
    v = np.random.default_rng(1).normal(size=(S, n, d)).astype(dtype)
    v[1] *= 30.0  # another scale, so that radii bite differently
    byz = np.zeros(n, bool)
    byz[[2, 5]] = True
    checked = 0
    for registry, call in ((ATT, lambda fn, x, p, rng: fn(x, byz, rng, **p)),
                           (AGGREGATORS, lambda fn, x, p, rng: fn(x, None, **p)),
                           (PREAGGREGATORS, lambda fn, x, p, rng: fn(x, None, rng, **p)[0])):
        for name, params in _declared(registry):
            fn = registry[name]
            check_replica_params(lambda x, p, rng, fn=fn, call=call: call(fn, x, p, rng), params, v)
            checked += 1
    assert checked >= 8


# --------------------------------------------------------------------------------------
# the data key

DATA_CHANGES = {
    "dataset": dict(dataset="synthetic"),
    "dataset_params": dict(dataset="digits", dataset_params={"test_fraction": 0.3}),
    "partition": dict(partition="by_class"),
    "partition_params": dict(partition_params={"samples_per_client": 20}),
    "model": dict(model="mlp"),
    "model_params": dict(model_params={"l2": 0.1}),
    "n_clients": dict(n_clients=7),
    "n_byzantine": dict(n_byzantine=2),
    "byzantine_indices": dict(byzantine_indices=[0]),
    "seed": dict(seed=1),
    "train_eval_samples": dict(train_eval_samples=100),
    "dtype": dict(dtype="float32"),
    "data_attack": dict(attack="label_flipping"),
}


def test_every_data_field_changes_the_data_key_and_method_fields_do_not():
    assert set(DATA_CHANGES) == {f.name for f in dataclasses.fields(DataSpec)}
    base = make_config(method="byrd-sgd", n_clients=6, n_byzantine=1, **DIGITS)
    key = DataSpec.from_config(base)
    for name, change in DATA_CHANGES.items():
        assert DataSpec.from_config(base.replace(**change)) != key, name
    for change in (dict(method="krum"), dict(lr=0.3), dict(rounds=7), dict(attack="sign_flipping"),
                   dict(aggregator_params={"tol": 1e-6}), dict(batch_size=2), dict(participation=0.5)):
        assert DataSpec.from_config(base.replace(**change)) == key, change


def test_the_data_key_builds_the_same_problem_as_the_config():
    cfg = make_config(method="byrd-sgd", n_clients=6, n_byzantine=1, seed=4, **DIGITS)
    a = DataSpec.from_config(cfg).build()
    b = sim.build_problem(cfg, np.random.default_rng(np.random.SeedSequence(4).spawn(2)[0]))
    for f in ("X", "y", "byzantine", "X_eval", "y_eval"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_memory_estimates_count_shared_data_once():
    cfg = make_config(method="asynrsa-vr", n_clients=6, n_byzantine=1, **DIGITS)
    one = replica_bytes(cfg)
    P = sim.problem_for(cfg)
    assert one > P.X.nbytes
    shared = batch_bytes([cfg, cfg.replace(lr=0.5)])
    separate = batch_bytes([cfg, cfg.replace(seed=1)])
    assert shared < separate <= 2 * one


def _states_equal_alone(cfgs, rounds: int) -> bool:
    """After ``rounds`` steps, every array of every replica (server and client models,
    SAGA table) equals, bit for bit, that of the run stepped alone."""
    batch = sim.prepare_batch(cfgs)
    for _ in range(rounds):
        batch.method.step(batch.state, batch.rng)
    x, W, table = batch.state.as_replicas()
    for s, c in enumerate(cfgs):
        one = sim.prepare_batch([c])
        for _ in range(rounds):
            one.method.step(one.state, one.rng)
        x1, W1, t1 = one.state.as_replicas()
        pairs = [(x[s], x1[0])] + ([(W[s], W1[0])] if W is not None else [])
        if table is not None:
            pairs += [(table.mean[s], t1.mean[0])] + [(e[s], e1[0]) for e, e1 in zip(table.entries, t1.entries)]
        if not all(np.array_equal(a, b) for a, b in pairs):
            return False
    return True


@pytest.mark.parametrize("kw", [
    dict(method="asynrsa-vr", byzantine_indices=[6, 7], attack="same_value"),  # the same rows: views
    dict(method="asynrsa-vr", participation=0.5, attack="gaussian", attack_params={"std": 5.0}),
    dict(method="byrd-saga", attack="sign_flipping", dtype="float32"),
    dict(method="rs-byrd-saga", model="mlp", model_params={"hidden": [4]}, attack="sign_flipping", n_clients=10),
])
def test_every_array_of_a_replica_is_bit_identical_to_the_run_alone(kw):
    base = make_config(**{**dict(n_clients=8, n_byzantine=2, batch_size=2, lr=0.02, **DIGITS), **kw})
    cfgs = [base.replace(seed=s) for s in (2, 0, 1)]  # equal settings: one BLAS call per update
    assert _states_equal_alone(cfgs, 12)


def test_the_state_check_catches_an_update_rounded_differently(monkeypatch):
    """Broken variant: updates of non-contiguous views (rows of every replica) by
    ``y += a * x`` (two roundings) instead of the fused kernel of the run alone."""
    base = make_config(method="asynrsa-vr", n_clients=8, n_byzantine=2, byzantine_indices=[6, 7],
                       batch_size=2, lr=0.02, attack="same_value", **DIGITS)
    cfgs = [base.replace(seed=s) for s in (0, 1)]
    real = kernels.axpy

    def unfused(a, x, y):
        if y.flags.c_contiguous:
            return real(a, x, y)
        y += a * x
        return y

    monkeypatch.setattr(kernels, "axpy", unfused)
    assert not _states_equal_alone(cfgs, 12)


def test_plan_batches_bounds_count_and_memory_and_refuses_bad_bounds():
    base = make_config(method="asynrsa-vr", n_clients=6, n_byzantine=1, **DIGITS)
    other = base.replace(method="rsa")
    cfgs = [base.replace(seed=s) for s in range(5)] + [other, other.replace(seed=1)]
    assert sim.plan_batches(cfgs) == [[0, 1, 2, 3, 4], [5, 6]]
    assert sim.plan_batches(cfgs, replicas=2) == [[0, 1], [2, 3], [4], [5, 6]]
    two = batch_bytes(cfgs[:2])
    plan = sim.plan_batches(cfgs, memory_bytes=two)
    assert all(batch_bytes([cfgs[i] for i in b]) <= two for b in plan)
    assert sorted(i for b in plan for i in b) == list(range(7)) and max(map(len, plan)) == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="replicas"):
            sim.plan_batches(cfgs, replicas=bad)
    with pytest.raises(ValueError, match="smaller than one replica"):
        sim.plan_batches(cfgs, memory_bytes=1000)


def test_a_run_records_its_unconverged_geometric_medians():
    """Every run of the gradient family with a geometric median records how many of its
    rounds' medians stopped at max_iter before tol (per replica in a batch)."""
    from byzsim import make_config
    from byzsim.simulate import run, run_batch

    base = dict(method="byrd-sgd", dataset="synthetic", n_clients=6, n_byzantine=1, attack="gaussian",
                attack_params={"std": 10.0}, rounds=5, eval_every=5)
    loose = make_config(**base, aggregator_params={"max_iter": 1, "tol": 1e-12})
    tight = make_config(**base, aggregator_params={"max_iter": 500, "tol": 1e-6})
    assert run(loose).info["geomed_unconverged"] == 5  # one median per round, none within tol
    assert run(tight).info["geomed_unconverged"] == 0
    res = run_batch([loose.replace(seed=1), loose.replace(seed=2, lr=0.02)])
    assert [r.info["geomed_unconverged"] for r in res] == [5, 5]
    assert "geomed_unconverged" not in run(make_config(method="sgd", dataset="synthetic", rounds=2)).info


@pytest.mark.parametrize("kw", [
    dict(method="byrd-saga", attack="sign_flipping"),
    dict(method="sgd", aggregator_params={"weighted": True}, attack="gaussian", attack_params={"std": 5.0},
         participation=0.7),
    dict(method="asynrsa-vr", attack="same_value", participation=0.6, partition="quantity_skew"),
    dict(method="rsa", p=2.0, attack="sign_flipping", dtype="float32", partition="quantity_skew"),
    dict(method="byrd-saga", model="mlp", model_params={"hidden": [4]}, attack="label_flipping"),
])
def test_ragged_replicas_are_each_the_run_made_alone(kw):
    """Replicas on ragged partitions of their own (other seeds: other sizes and J_max,
    stacked by padding to the largest): metrics equal to the runs alone, and every state
    array bit for bit (a SAGA table on the replica's own rows, its padding never written)."""
    base = make_config(**{**dict(n_clients=8, n_byzantine=2, batch_size=2, lr=0.02, rounds=10, eval_every=5,
                                 partition="dirichlet", partition_params={"beta": 0.5, "min_size": 4}, **DIGITS),
                          **kw})
    cfgs = [base.replace(seed=s) for s in (2, 0, 1)]
    Js = [sim.problem_for(c).J for c in cfgs]
    assert len(set(Js)) > 1  # the data sets are padded to one J_max in the batch
    assert worst_relative_gap(cfgs) == 0.0
    batch = sim.prepare_batch(cfgs)
    for _ in range(8):
        batch.method.step(batch.state, batch.rng)
    x, W, table = batch.state.as_replicas()
    for s, c in enumerate(cfgs):
        one = sim.prepare_batch([c])
        for _ in range(8):
            one.method.step(one.state, one.rng)
        x1, W1, t1 = one.state.as_replicas()
        assert np.array_equal(x[s], x1[0]) and (W is None or np.array_equal(W[s], W1[0]))
        if table is not None:
            assert np.array_equal(table.mean[s], t1.mean[0])
            for e, e1 in zip(table.entries, t1.entries):
                assert np.array_equal(e[s][:, :Js[s]], e1[0]) and not e[s][:, Js[s]:].any()
