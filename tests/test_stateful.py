"""Stateful components: the ``init``/``apply`` interface, the engine that carries their
state, client momentum, local steps and step-size schedules.

Every component registered ``stateful=True`` (aggregators, pre-aggregators, attacks) is
checked by being listed in its registry: its state's arrays have the leading replica
axis S and the messages' dtype; ``apply`` is deterministic given its generator, never
modifies its state or its input, and a fresh ``init`` replays the same trajectory; the
batched call on ``(S, n, d)`` equals the calls replica by replica.  The lift
:func:`byzsim.protocols.stateless` equals the pure rule.  Reference values are small
enough to check with pencil and paper: centered clipping with its momentum centre on
1-D messages, a client-momentum sequence with β = 0.5, the schedules.  The purity check
is shown to catch a variant that updates its state in place.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from byzsim.aggregators import AGGREGATORS, centered_clipping, centered_clipping_momentum, dnc, dnc_fresh, get_aggregator
from byzsim.algorithms import LR_SCHEDULES, GradientMethod
from byzsim.attacks import ATTACKS, get_attack, mimic_online
from byzsim.config import make_config
from byzsim.pipeline import Pipeline
from byzsim.preaggregators import PREAGGREGATORS, build_aggregate, get_preaggregator
from byzsim.protocols import EmptyState, Stateful, state_slice, state_stack, stateless
from byzsim.simulate import make_method, problem_for, run, run_batch

SYNTH = dict(dataset="synthetic", dataset_params={"n_samples": 300, "n_features": 5, "n_classes": 3, "n_test": 60},
             train_eval_samples=200)
GRAD = dict(family="gradient", estimator="sgd", n_clients=8, n_byzantine=2, rounds=6, eval_every=3, lr=0.05, **SYNTH)

#: parameters that make a registered stateful component draw or learn within a few rounds
PARAMS = {"dnc_fresh": {"f": 2, "sub_dim": 2}, "mimic_online": {"warmup": 2}, "centered_clipping_momentum": {}}


def stateful_components():
    out = []
    for reg, kind in ((AGGREGATORS, "aggregator"), (PREAGGREGATORS, "preaggregator"), (ATTACKS, "attack")):
        for name, _, _ in reg.groups():
            if reg.entry(name).meta["stateful"]:
                out.append((kind, name))
    return out


COMPONENTS = stateful_components()


def build(kind: str, name: str) -> Stateful:
    reg = {"aggregator": AGGREGATORS, "preaggregator": PREAGGREGATORS, "attack": ATTACKS}[kind]
    comp = reg.bind(name, PARAMS.get(name, {}))()
    assert isinstance(comp, Stateful) and comp.kind == kind
    return comp


def leaves(state):
    if isinstance(state, tuple):
        for a in state:
            yield from leaves(a)
    else:
        yield np.asarray(state)


BYZ = np.array([False, True, False, False, True, False, False])


def call(comp: Stateful, state, z, rng):
    if comp.kind == "attack":
        return comp.apply(state, z, BYZ, rng=rng)
    return comp.apply(state, z, None, rng=rng)


def trajectory(comp: Stateful, zs, seed: int = 0):
    """Outputs and states of ``len(zs)`` rounds from a fresh ``init``."""
    rng = np.random.default_rng(seed)
    state = comp.init(zs[0].shape, zs[0].dtype)
    outs, states = [], [state]
    for z in zs:
        out, state = call(comp, state, z, rng)
        outs.append(out)
        states.append(state)
    return outs, states


def messages(S=3, n=7, d=4, rounds=4, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(S, n, d)) + rng.normal(size=(S, 1, d)) for _ in range(rounds)]


def test_the_stateful_components_are_registered():
    assert {n for _, n in COMPONENTS} >= {"centered_clipping_momentum", "dnc_fresh", "mimic_online"}


# --------------------------------------------------------------------------------------
# conformance of every registered stateful component
def check_state_shapes(comp, S=3, n=7, d=4, dtype=np.float32):
    zs = [z.astype(dtype) for z in messages(S, n, d)]
    _, states = trajectory(comp, zs)
    for st in states:
        for a in leaves(st):
            assert a.shape[:1] == (S,), f"state array {a.shape} lacks the leading replica axis S = {S}"
            if np.issubdtype(a.dtype, np.floating):
                assert a.dtype == dtype, f"state dtype {a.dtype} != messages' {dtype}"
    # the structure stays the same from round to round
    assert all(type(st) is type(states[0]) for st in states)


def check_pure_and_deterministic(comp):
    zs = messages()
    outs1, states1 = trajectory(comp, zs, seed=5)
    outs2, states2 = trajectory(comp, zs, seed=5)  # a reset replays the same trajectory
    for a, b in zip(outs1, outs2):
        np.testing.assert_array_equal(a, b)
    for s1, s2 in zip(states1, states2):
        for a, b in zip(leaves(s1), leaves(s2)):
            np.testing.assert_array_equal(a, b)
    # apply never modifies its state or its input
    rng = np.random.default_rng(0)
    state = comp.init(zs[0].shape, zs[0].dtype)
    _, state = call(comp, state, zs[0], rng)
    before = [a.copy() for a in leaves(state)]
    z = zs[1].copy()
    call(comp, state, z, rng)
    for a, b in zip(before, leaves(state)):
        np.testing.assert_array_equal(a, b, err_msg="apply modified its state in place")
    np.testing.assert_array_equal(z, zs[1], err_msg="apply modified its input")


def check_batched_equals_replicas(comp):
    """One call on (S, n, d) equals S calls on one replica's (n, d) and state slice (a
    component that draws gets one generator per replica, as in the engine)."""
    zs = messages()
    S = zs[0].shape[0]
    state = comp.init(zs[0].shape, zs[0].dtype)
    per = [state_slice(state, s) for s in range(S)]
    gens = [np.random.default_rng(10 + s) for s in range(S)]
    for z in zs:
        res = [call(comp, per[s], z[s], gens[s]) for s in range(S)]
        per = [r[1] for r in res]
        try:
            out, state = call(comp, state, z, None)  # no generator: a drawing component raises
        except AttributeError:
            continue
        np.testing.assert_allclose(out, np.stack([r[0] for r in res]), rtol=1e-12, atol=1e-12)
        for a, b in zip(leaves(state), leaves(state_stack(per))):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,name", COMPONENTS)
def test_stateful_component_conforms(kind, name):
    comp = build(kind, name)
    check_state_shapes(comp)
    check_pure_and_deterministic(comp)
    check_batched_equals_replicas(comp)


def _cc_updating_in_place(tau=1.0):
    """Broken: centered clipping with momentum that writes the new centre into the old state."""
    good = centered_clipping_momentum(tau=tau)

    def apply(state, z, mask=None, rng=None):
        out, new = good.apply(state, z, mask, rng=rng)
        state.center[...] = new.center
        return out, new

    return Stateful(good.init, apply, "aggregator")


def test_the_purity_check_catches_a_state_updated_in_place():
    with pytest.raises(AssertionError, match="modified its state"):
        check_pure_and_deterministic(_cc_updating_in_place())


@pytest.mark.parametrize("kind,name", [c for c in COMPONENTS if c[0] != "preaggregator"])
def test_each_stateful_rule_in_a_batch_equals_its_run_alone(kind, name):
    """The engine: a replica batch (other seeds and step sizes) with client momentum gives
    each run's metrics exactly as alone."""
    kw = dict(GRAD, momentum=0.9, aggregator="mean", attack="sign_flipping")
    kw["aggregator" if kind == "aggregator" else "attack"] = name
    kw["aggregator_params" if kind == "aggregator" else "attack_params"] = PARAMS.get(name, {})
    if kind == "attack":
        kw["aggregator"] = "krum"
    cfgs = [make_config(**kw), make_config(**{**kw, "seed": 3}), make_config(**{**kw, "lr": 0.02})]
    batch = run_batch(cfgs)
    for c, b in zip(cfgs, batch):
        a = run(c)
        for k in a.columns:
            np.testing.assert_allclose(b.columns[k], a.columns[k], rtol=1e-10, err_msg=f"{name}: {k}")


# --------------------------------------------------------------------------------------
# the stateless lift
@pytest.mark.parametrize("name", ["mean", "krum", "geometric_median", "centered_clipping", "trimmed_mean"])
def test_stateless_lift_equals_the_pure_rule(name):
    fn = get_aggregator(name, **({"f": 2} if "f" in AGGREGATORS.parameters(name) else {}))
    z = messages(S=2, n=8, d=3)[0]
    mask = np.array([True] * 7 + [False])
    lifted = stateless(fn)
    st0 = lifted.init(z.shape, z.dtype)
    assert st0 == EmptyState()
    for m in (None, mask):
        out, st1 = lifted.apply(st0, z, m)
        np.testing.assert_array_equal(out, fn(z, m))
        assert st1 is st0


def test_stateless_lift_of_an_attack_and_a_pipeline():
    att = get_attack("gaussian", std=2.0)
    v = messages(S=1, n=7, d=3)[0][0]
    out, _ = stateless(att, "attack").apply(EmptyState(), v, BYZ, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(out, att(v, BYZ, np.random.default_rng(4)))
    steps = (get_preaggregator("nnm", f=1),)
    pure = Pipeline(steps, get_aggregator("krum", f=1))
    lifted = Pipeline((stateless(steps[0], "preaggregator"),), stateless(get_aggregator("krum", f=1)))
    assert lifted.stateful and not pure.stateful
    out, st = lifted.apply(lifted.init(v.shape), v, None, np.random.default_rng(0))
    np.testing.assert_array_equal(out, pure(v, None, np.random.default_rng(0)))
    assert st == (EmptyState(), EmptyState())


# --------------------------------------------------------------------------------------
# reference values
def test_centered_clipping_momentum_by_hand():
    """τ = 1, L = 1, v_0 = 0.  Round 1, messages (0, 2, 10): clip(0) = 0, clip(2) = 1,
    clip(10) = 1, so v_1 = 2/3.  Round 2, messages (1, 1, −10): the differences to 2/3
    are 1/3, 1/3, −32/3 -> clipped 1/3, 1/3, −1, so v_2 = 2/3 + (−1/3)/3 = 5/9.  Round 3,
    messages (5/9, 5/9, 5/9): nothing moves, v_3 = 5/9."""
    cc = centered_clipping_momentum(tau=1.0)
    st = cc.init((1, 3, 1), np.float64)
    want = [2 / 3, 5 / 9, 5 / 9]
    for z, w in zip(([0.0, 2.0, 10.0], [1.0, 1.0, -10.0], [5 / 9] * 3), want):
        out, st = cc.apply(st, np.array(z)[None, :, None], None)
        assert out.shape == (1, 1)
        assert out[0, 0] == pytest.approx(w, rel=1e-15)
        assert st.center[0, 0] == out[0, 0]
    # two iterations from v_0 = 0 on (0, 2, 10): v = 2/3, then (−2/3, 4/3, 28/3) -> (−2/3, 1, 1)
    # adds (4/3)/3 = 4/9: 10/9
    cc2 = centered_clipping_momentum(tau=1.0, iterations=2)
    out, _ = cc2.apply(cc2.init((1, 3, 1)), np.array([0.0, 2.0, 10.0])[None, :, None], None)
    assert out[0, 0] == pytest.approx(10 / 9, rel=1e-15)


def test_centered_clipping_momentum_round_one_is_the_pure_rule():
    z = messages(S=2, n=9, d=3)[0]
    for first in ("medoid", "median", "mean"):
        cc = centered_clipping_momentum(first=first, iterations=3)
        out, _ = cc.apply(cc.init(z.shape), z, None)
        np.testing.assert_allclose(out, centered_clipping(z, init=first, iterations=3), rtol=1e-13)


def test_dnc_fresh_draws_from_the_run_generator():
    """One round of ``dnc_fresh`` with ``rng = default_rng(k)`` is ``dnc(seed=k)``; the next
    round draws other subsets; with ``sub_dim >= d`` it is ``dnc`` and draws nothing."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(9, 40))
    z[:2] += 3.0
    comp = dnc_fresh(f=2, sub_dim=5)
    st = comp.init((1, 9, 40))
    g = np.random.default_rng(7)
    out1, st = comp.apply(st, z, None, rng=g)
    np.testing.assert_array_equal(out1, dnc(z, f=2, sub_dim=5, seed=7))
    state_after_one = g.bit_generator.state
    comp.apply(st, z, None, rng=g)
    assert g.bit_generator.state != state_after_one  # fresh subsets every round
    full = dnc_fresh(f=2)
    out, _ = full.apply(full.init((1, 9, 40)), z, None, rng=None)  # no draw: rng unused
    np.testing.assert_array_equal(out, dnc(z, f=2))


def test_mimic_online_by_hand():
    """Regular messages (2, 0), (−1, 0), (0, 0.1): mean (1/3, 1/30), centred
    (5/3, −1/30), (−4/3, −1/30), (−1/3, 1/15); the top direction is ~e_1 and the largest
    |projection| is client 0's, so both Byzantine clients copy (2, 0).  After the warm-up
    the target stays client 0 even when another client is more extreme."""
    byz = np.array([False, True, False, True, False])
    v = np.array([[2.0, 0.0], [9.0, 9.0], [-1.0, 0.0], [9.0, 9.0], [0.0, 0.1]])
    att = mimic_online(warmup=1)
    st = att.init((1, 5, 2))
    np.testing.assert_allclose(st.direction, [[1 / math.sqrt(2)] * 2])
    out, st = att.apply(st, v[None], byz)  # state and messages share the replica axis
    np.testing.assert_array_equal(out[0], [[2.0, 0.0], [2.0, 0.0]])
    assert abs(st.direction[0] @ [1.0, 0.0]) > 0.99 and st.target[0] == 0 and st.t[0] == 1
    v2 = v.copy()
    v2[2] = [-50.0, 0.0]  # client 2 now dominates; the learned target is kept
    out2, st2 = att.apply(state_slice(st, 0), v2, byz)  # one replica's slice and (n, d)
    np.testing.assert_array_equal(out2, [[2.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(st2.direction, st.direction[0])
    longer = mimic_online(warmup=5)
    _, s = longer.apply(longer.init((1, 5, 2)), v[None], byz)
    out3, _ = longer.apply(s, v2[None], byz)  # still learning: follows client 2
    np.testing.assert_array_equal(out3[0], [[-50.0, 0.0], [-50.0, 0.0]])


class _Scripted:
    """A stand-in estimator that returns the scripted gradients round by round."""

    def __init__(self, grads):
        self.grads = list(grads)

    def init(self, w, slot=None):
        return None

    def __call__(self, table, w, idx, active=None, out=None, rows=None):
        out[...] = self.grads.pop(0)
        return out


def test_momentum_sequence_by_hand():
    """β = 0.5, one client, gradients 4, 8, 0, mean aggregation, lr = 1, x_0 = 0:
    m_1 = 0.5·0 + 0.5·4 = 2, m_2 = 0.5·2 + 0.5·8 = 5, m_3 = 0.5·5 + 0 = 2.5, so
    x = −2, −7, −9.5."""
    cfg = make_config(**{**GRAD, "n_clients": 2, "n_byzantine": 0, "aggregator": "mean"})
    P = problem_for(cfg)
    grads = [np.full((P.n, P.model.dim), g) for g in (4.0, 8.0, 0.0)]
    m = GradientMethod(problem=P, estimator=_Scripted(grads), attack=get_attack("none"),
                       aggregate=build_aggregate("mean", n=P.n), lr=1.0, momentum=0.5)
    st = m.init(np.zeros(P.model.dim))
    xs, moms = [], []
    for _ in range(3):
        m.step(st, np.random.default_rng(0))
        xs.append(st.x[0])
        moms.append(st.momentum[0, 0, 0])
    assert moms == [2.0, 5.0, 2.5]
    assert xs == [-2.0, -7.0, -9.5]


def test_schedules_by_hand():
    assert LR_SCHEDULES["constant"](7) == 1.0
    assert LR_SCHEDULES["inv_sqrt"](3) == 0.5  # 1/√4
    assert LR_SCHEDULES["step"](25, gamma=0.5, every=10) == 0.25  # 0.5^⌊25/10⌋
    assert LR_SCHEDULES["step"](9, gamma=0.5, every=10) == 1.0


# --------------------------------------------------------------------------------------
# the engine: neutral settings are today's runs, and the new settings take effect
@pytest.mark.parametrize("method", ["byrd-saga", "rsa"])
def test_neutral_settings_are_bit_identical(method):
    base = {**GRAD, "method": method, "family": None, "estimator": None, "attack": "sign_flipping"}
    a = run(make_config(**base))
    b = run(make_config(**base, lr_schedule="step", lr_schedule_params={"gamma": 1.0}))
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
    if method != "rsa":
        c = run(make_config(**base, momentum=0.0, local_steps=1))
        for k in a.columns:
            np.testing.assert_array_equal(a.columns[k], c.columns[k])


def test_local_steps_message_is_the_sum_of_local_gradients():
    """E = 2 with full batches (b = J, no randomness in the gradients): the message of
    client w is g(x) + g(x − lr g(x)) = (x − x_2)/lr, with g its local full gradient."""
    kw = {**GRAD, "n_byzantine": 0, "aggregator": "mean", "local_steps": 2, "rounds": 1}
    cfg = make_config(**kw)
    P = problem_for(cfg)
    cfg = cfg.replace(batch_size=P.J)
    m = make_method(cfg, P)
    x0 = np.random.default_rng(0).normal(size=P.model.dim) * 0.1
    st = m.init(x0.copy())
    m.step(st, np.random.default_rng(1))
    lr = cfg.lr
    msgs = []
    for w in range(P.n):
        X, y = P.X[w], P.y[w]
        g1 = P.model.grad(x0, X, y)
        msgs.append(g1 + P.model.grad(x0 - lr * g1, X, y))
    np.testing.assert_allclose(st.x, x0 - lr * np.mean(msgs, axis=0), rtol=1e-10, atol=1e-14)


def test_momentum_and_local_steps_compose_with_saga_resampling_and_participation():
    for kw in (dict(estimator="saga", aggregator="geometric_median", resample=2, momentum=0.9, local_steps=2),
               dict(aggregator="centered_clipping_momentum", preaggregators=["bucketing"], participation=0.6,
                    momentum=0.9, lr_schedule="inv_sqrt"),
               dict(aggregator="dnc_fresh", aggregator_params={"sub_dim": 2}, attack="mimic_online", local_steps=3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = run(make_config(**{**GRAD, "attack": "sign_flipping", **kw}))
        assert not r.diverged and np.isfinite(r.columns["train_loss"]).all()


def test_momentum_changes_the_run():
    base = {**GRAD, "aggregator": "krum", "attack": "sign_flipping"}
    a, b = run(make_config(**base)), run(make_config(**base, momentum=0.9))
    assert not np.array_equal(a.columns["train_loss"][1:], b.columns["train_loss"][1:])


def test_a_stateful_pipeline_cannot_be_called_as_a_pure_one():
    p = Pipeline((), centered_clipping_momentum())
    with pytest.raises(ValueError, match="stateful component"):
        p(np.zeros((3, 2)), None, np.random.default_rng(0))
