import numpy as np
import pytest

from byzsim.attacks import ATTACKS, apply_attack, get_attack
from byzsim.testing import check_attack

BYZ = np.array([False, True, False, True, False])


def _v(shape=(5, 3)):
    return np.arange(np.prod(shape), dtype=float).reshape(shape) + 1.0


@pytest.mark.parametrize("name", [g[0] for g in ATTACKS.groups() if not ATTACKS.entry(g[0]).meta["stateful"]])
def test_every_attack_conforms(name):
    """Shape ``(..., q, d)`` with and without batch axes, ``v`` untouched and not aliased,
    all randomness from ``rng``, finite messages, and the declared per-replica parameters
    (byzsim.testing.check_attack)."""
    params = {"gaussian": {"std": 1.0}, "inf": {"finite": False}}.get(name, {})
    check_attack(ATTACKS[name], replica_params=ATTACKS.entry(name).meta["replica_params"], **params)


def test_hand_values():
    v = _v()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(get_attack("same_value", c=7.0)(v, BYZ, rng), np.full((2, 3), 7.0))
    np.testing.assert_array_equal(get_attack("sign_flipping")(v, BYZ, rng), -5 * v[[1, 3]])
    np.testing.assert_array_equal(get_attack("sample_duplicating")(v, BYZ, rng), v[[0, 0]])
    np.testing.assert_array_equal(get_attack("sample_duplicating", target=4)(v, BYZ, rng), v[[4, 4]])
    np.testing.assert_array_equal(get_attack("none")(v, BYZ, rng), v[[1, 3]])
    w = apply_attack(get_attack("zero_gradient"), v.copy(), BYZ, rng)
    np.testing.assert_allclose(w.sum(0), 0, atol=1e-12)
    np.testing.assert_array_equal(w[~BYZ], v[~BYZ])


def test_gaussian_std_is_the_standard_deviation():
    z = get_attack("gaussian", std=100.0)(np.zeros((5, 20000)), BYZ, np.random.default_rng(1))
    assert abs(z.std() - 100.0) < 1.0 and abs(z.mean()) < 1.0


def test_bad_attack_input_is_named():
    with pytest.raises(ValueError, match="valid choices"):
        get_attack("sign_flip")
    with pytest.raises(ValueError, match="valid parameters"):
        get_attack("same_value", scale=3)
    with pytest.raises(ValueError, match="needs parameter"):
        get_attack("gaussian")
    with pytest.raises(ValueError, match="target"):
        get_attack("sample_duplicating", target=1)(_v(), BYZ, None)
