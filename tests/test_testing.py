"""byzsim.testing: the conformance suite a user runs on their own component.

Every registered rule passes it (the attacks: tests/test_attacks.py); a correct user-written rule passes it; each
deliberately broken variant fails it with the property named.
"""

from __future__ import annotations

import numpy as np
import pytest

from byzsim.aggregators import AGGREGATORS
from byzsim.testing import check_aggregator, check_attack

#: Test parameters: a tight tolerance for the iterative rule, and its slack.
PARAMS = {"geometric_median": dict(tol=1e-11, max_iter=1000, atol=1e-7)}


@pytest.mark.parametrize("name", [name for name, _, _ in AGGREGATORS.groups()
                                  if not AGGREGATORS.entry(name).meta["stateful"]])  # test_stateful.py
def test_every_registered_rule_passes(name):
    kw = dict(PARAMS.get(name, {}))
    if "f" in AGGREGATORS.parameters(name):
        kw["f"] = 1
    check_aggregator(AGGREGATORS[name], replica_params=AGGREGATORS.entry(name).meta["replica_params"], **kw)


# --------------------------------------------------------------------------------------
# a user's correct rule passes


def masked_coordinate_median(z, mask=None):
    """A user's coordinate median: absent rows become NaN and are skipped."""
    z = np.asarray(z, dtype=float)
    if mask is None:
        return np.median(z, axis=-2)
    mask = np.broadcast_to(mask, z.shape[:-1])
    w = np.where(mask[..., None], z, np.nan)
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        out = np.nanmedian(w, axis=-2)
    return np.where(mask.any(-1)[..., None], out, 0.0)


def test_a_correct_user_rule_passes():
    check_aggregator(masked_coordinate_median, tolerates=4)


def user_attack(v, byzantine, rng, *, scale=3.0):
    """Minus ``scale`` times the honest mean plus noise, one per Byzantine client
    (``scale`` cast to the messages' dtype, so that a per-replica array rounds as a number)."""
    mu = v[..., ~byzantine, :].mean(-2, keepdims=True)
    noise = rng.normal(size=v.shape[:-2] + (int(byzantine.sum()), v.shape[-1]))
    return -np.asarray(scale, dtype=v.dtype) * mu + noise


def test_a_correct_user_attack_passes():
    check_attack(user_attack, scale=2.0)
    check_attack(user_attack, replica_params=("scale",))  # declared per-replica: (S, 1, 1) arrays work


def first_replica_scale(v, byzantine, rng, *, scale=3.0):
    """Declares ``scale`` per-replica but applies the first replica's number to all."""
    return user_attack(v, byzantine, rng, scale=np.asarray(scale).flat[0])


def test_an_attack_that_ignores_its_per_replica_parameter_fails():
    check_attack(first_replica_scale)  # without the declaration nothing is asked of it
    with pytest.raises(AssertionError, match=r"attack 'first_replica_scale': per-replica parameters \('scale',\)"):
        check_attack(first_replica_scale, replica_params=("scale",))


# --------------------------------------------------------------------------------------
# broken variants fail with the property named


def ignores_mask(z, mask=None):
    return np.median(np.asarray(z, float), axis=-2)


def first_row_weighted(z, mask=None):
    z = np.asarray(z, float)
    return 0.5 * z[..., 0, :] + 0.5 * masked_coordinate_median(z, mask)


def mutates(z, mask=None):
    z.sort(axis=-2)
    return masked_coordinate_median(z, mask)


def global_scale(z, mask=None):
    """Normalizes by a statistic of the whole batch: batched != loop."""
    z = np.asarray(z, float)
    return masked_coordinate_median(z, mask) * (1 + 1e-3 * np.abs(z).max())


def clipped_at_origin(z, mask=None):
    out = masked_coordinate_median(z, mask)
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    return out * np.minimum(1.0, 1e4 / np.maximum(norm, 1e-300))


def plain_mean(z, mask=None):
    z = np.asarray(z, float)
    w = np.ones(z.shape[:-1]) if mask is None else np.broadcast_to(mask, z.shape[:-1]).astype(float)
    return np.einsum("...n,...nd->...d", w, np.where(w[..., None] > 0, z, 0.0)) / np.maximum(w.sum(-1), 1)[..., None]


@pytest.mark.parametrize("fn,kwargs,prop", [
    (ignores_mask, {}, "masks"),
    (first_row_weighted, {}, "permutation invariance"),
    (mutates, {}, "purity"),
    (global_scale, {}, "batch axes"),
    (clipped_at_origin, {}, "translation equivariance"),
    (plain_mean, {"tolerates": 1}, "f-tolerance"),
])
def test_broken_rules_fail_naming_the_property(fn, kwargs, prop):
    with pytest.raises(AssertionError, match=rf"aggregator '{fn.__name__}': {prop}"):
        check_aggregator(fn, **kwargs)


def test_the_mean_passes_when_not_asked_for_robustness():
    check_aggregator(plain_mean)


def global_rng_attack(v, byzantine, rng):
    return np.random.normal(size=v.shape[:-2] + (int(byzantine.sum()), v.shape[-1]))


def modifies_v(v, byzantine, rng):
    v[..., byzantine, :] *= -1
    return v[..., byzantine, :].copy()


def returns_all_rows(v, byzantine, rng):
    return -v


def returns_a_view(v, byzantine, rng):
    return v[..., : int(byzantine.sum()), :]


@pytest.mark.parametrize("fn,prop", [
    (global_rng_attack, "determinism"),
    (modifies_v, "purity"),
    (returns_all_rows, "shape"),
    (returns_a_view, "purity"),
])
def test_broken_attacks_fail_naming_the_property(fn, prop):
    with pytest.raises(AssertionError, match=rf"attack '{fn.__name__}': {prop}"):
        check_attack(fn)
