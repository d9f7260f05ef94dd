"""Registries: declared metadata checked at registration, one spelling, one parameter
checker."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from byzsim.aggregators import AGGREGATORS, get_aggregator
from byzsim.attacks import ATTACKS
from byzsim.preaggregators import PREAGGREGATORS
from byzsim.registry import Meta, Range, Registry, UnknownNameError, bool_, check_parameters


def fresh(registry: Registry) -> Registry:
    """An empty registry with the schema of ``registry`` (registering into the real ones
    would leak into other tests)."""
    return Registry(registry.kind, registry.schema)


def test_an_aggregator_with_f_must_declare_max_f():
    reg = fresh(AGGREGATORS)

    def mine(z, mask=None, *, f=None):
        return z[..., 0, :]

    with pytest.raises(ValueError, match=r"aggregator 'mine' must be registered with max_f="):
        reg.register("mine")(mine)
    assert "mine" not in reg
    reg.register("mine", max_f=lambda n: (n - 1) // 2)(mine)
    assert reg.entry("mine").meta["max_f"](9) == 4
    reg.register("plain")(lambda z, mask=None: z[..., 0, :])  # no f: nothing to declare
    assert reg.entry("plain").meta == {"max_f": None, "per_call": (), "stateful": False, "replica_params": ()}


def test_unknown_or_invalid_metadata_fails_at_registration():
    reg = fresh(AGGREGATORS)
    with pytest.raises(ValueError, match=r"unknown metadata 'max_F'.*valid metadata: max_f, per_call"):
        reg.register("x", max_F=3)(lambda z, mask=None: z)
    with pytest.raises(ValueError, match=r"metadata max_f = 3 is invalid; expected a callable or None"):
        reg.register("x", max_f=3)(lambda z, mask=None: z)


def test_a_pre_aggregator_must_declare_its_chain():
    reg = fresh(PREAGGREGATORS)
    with pytest.raises(ValueError, match=r"pre-aggregator 'p' must be registered with chain="):
        reg.register("p")(lambda z, mask, rng: (z, mask))


def test_an_attack_taking_the_aggregate_must_say_so():
    reg = fresh(ATTACKS)

    def tuned(v, byzantine, rng, *, aggregator=None):
        return v[..., byzantine, :]

    with pytest.raises(ValueError, match=r"attack 'tuned' must be registered with needs_aggregate="):
        reg.register("tuned")(tuned)
    reg.register("tuned", needs_aggregate=True)(tuned)
    assert reg.entry("tuned").meta["needs_aggregate"] is True
    assert ATTACKS.entry("alie_opt").meta["needs_aggregate"] is True
    assert ATTACKS.entry("alie").meta["needs_aggregate"] is False
    assert ATTACKS.entry("label_flipping").meta["data_attack"] is not None


def test_registered_metadata_of_the_library():
    assert AGGREGATORS.entry("krum").meta["max_f"](10) == 7
    assert AGGREGATORS.entry("bulyan").meta["max_f"](11) == 2
    assert AGGREGATORS.entry("geomed").meta["per_call"] == ("mix",)
    assert PREAGGREGATORS.entry("bucketing").meta["chain"](10, 3, {"s": 2}) == (5, 3)
    for name, _, _ in AGGREGATORS.groups():  # every rule with f declares max_f
        if "f" in AGGREGATORS.parameters(name):
            assert callable(AGGREGATORS.entry(name).meta["max_f"]), name


def test_spellings_name_one_component():
    reg = Registry("colour", {"warm": Meta("warm?", default=False, check=bool_)})
    reg.register("dark-red", warm=True)(red := lambda: "r")
    assert reg["dark_red"] is red and reg.canonical("DARK_RED") == "dark-red"
    assert "dark_red" in reg and reg.entry("dark_red").name == "dark-red"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("dark_red")(lambda: "other")
    with pytest.raises(UnknownNameError, match=r"did you mean 'dark-red'"):
        reg["dark-rad"]


def test_entry_of_finds_a_bound_component():
    bound = get_aggregator("krum", f=1)
    assert AGGREGATORS.entry_of(bound).name == "krum"
    assert AGGREGATORS.entry_of(functools.partial(np.mean)) is None


def test_one_parameter_checker():
    accepted = {"std": 1.0, "mean": 0.0, "c": __import__("inspect").Parameter.empty}
    with pytest.raises(ValueError, match=r"^attack 'g' has no parameter 'sd' \(did you mean std\?\)"):
        check_parameters("attack", "g", accepted, {"sd": 1, "c": 1})
    with pytest.raises(ValueError, match=r"^invalid config field 'attack_params': attack 'g' needs parameter\(s\): c"):
        check_parameters("attack", "g", accepted, {}, field="attack_params")
    check_parameters("attack", "g", accepted, {}, filled=("c",))
    with pytest.raises(ValueError, match="has no parameter 'mix'"):
        AGGREGATORS.check("geometric_median", {"mix": None})  # per-call, not configurable


def test_names_removed_from_the_items_are_gone_everywhere():
    """Code that edits ``_items`` directly (a plugin rollback, a test fixture) leaves the
    registry consistent: spellings, entries and re-registration follow it."""
    reg = Registry("colour")
    reg.register("dark-red")(lambda: "r")
    del reg._items["dark-red"]
    assert "dark_red" not in reg
    with pytest.raises(UnknownNameError):
        reg["dark_red"]
    reg.register("dark_red")(other := lambda: "o")
    assert reg["dark-red"] is other and reg.entry("dark-red").obj is other


def test_replica_params_are_declared_parameters_and_checked_element_by_element():
    reg = fresh(ATTACKS)

    def scaled(v, byzantine, rng, *, c: float = 1.0, k: int = 2):
        return c * v[..., byzantine, :]

    with pytest.raises(ValueError, match=r"replica_params for unknown parameter\(s\) \['d'\]"):
        reg.register("scaled", replica_params=("d",))(scaled)
    with pytest.raises(ValueError, match=r"replica_params = 'c' is invalid; expected a tuple of parameter names"):
        reg.register("scaled", replica_params="c")(scaled)
    reg.register("scaled", ranges={"c": Range(lo=0)}, replica_params=("c",))(scaled)
    reg.check("scaled", {"c": np.array([0.5, 2.0]).reshape(-1, 1, 1)})  # one value per replica
    with pytest.raises(ValueError, match=r"invalid config field 'attack_params.c' = -1.0: expected a finite number >= 0"):
        reg.check("scaled", {"c": np.array([0.5, -1.0])}, field="attack_params")
    with pytest.raises(ValueError, match=r"parameter .k. of attack .scaled. = array.*expected an integer"):  # not declared
        reg.check("scaled", {"k": np.array([1, 2])})
    # the library's scales, radii and thresholds are declared; counts and strings are not
    assert ATTACKS.entry("sign_flipping").meta["replica_params"] == ("c",)
    assert ATTACKS.entry("gaussian").meta["replica_params"] == ("std", "mean")
    assert AGGREGATORS.entry("centered_clipping").meta["replica_params"] == ("tau",)
    assert PREAGGREGATORS.entry("clipping").meta["replica_params"] == ("c",)
    for reg_ in (ATTACKS, AGGREGATORS, PREAGGREGATORS):
        for name, _, _ in reg_.groups():
            assert not {"f", "m", "s", "iterations", "max_iter", "target", "warmup"} & set(
                reg_.entry(name).meta["replica_params"]), name
