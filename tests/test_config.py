import math

import pytest

from byzsim.config import METHODS, make_config


def test_method_presets_fill_the_space():
    c = make_config(method="byrd-saga")
    assert (c.family, c.estimator, c.aggregator) == ("gradient", "saga", "geometric_median")
    c = make_config(method="asynrsa-vr", participation=0.4)
    assert (c.family, c.estimator, c.aggregator) == ("penalty", "saga", None)
    c = make_config(method="custom", family="gradient", estimator="saga", aggregator="krum")
    assert c.aggregator == "krum"
    assert make_config(method="rsa", p="inf").p == math.inf
    assert "asynrsa-vr" in METHODS


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(method="asynrsa"), ["method", "asynrsa-vr"]),
        (dict(method="sgd", attack="bogus"), ["attack", "same_value"]),
        (dict(method="custom", family="gradient", estimator="sgd", aggregator="medain"), ["aggregator", "median"]),
        (dict(method="sgd", partition="noniid"), ["partition", "by_class"]),
        (dict(method="sgd", dataset="cifar"), ["dataset", "mnist"]),
        (dict(method="sgd", n_clients=5, n_byzantine=5), ["n_byzantine", "[0, 5)"]),
        (dict(method="rsa", participation=0.0), ["participation", "(0, 1]"]),
        (dict(method="rsa", participation=1.5), ["participation", "(0, 1]"]),
        (dict(method="rsa", penalty=0.0), ["penalty", "> 0"]),
        (dict(method="rsa", penalty=-1), ["penalty", "> 0"]),
        (dict(method="rsa", p=0.5), ["'p'", ">= 1"]),
        (dict(method="sgd", lr=0), ["lr"]),
        (dict(method="sgd", rounds=0), ["rounds"]),
        (dict(method="sgd", n_clients=4, n_byzantine=2, byzantine_indices=(0, 9)), ["byzantine_indices"]),
        (dict(method="sgd", lrate=0.1), ["lrate", "did you mean 'lr'"]),
        (dict(method="rsa", aggregator="mean"), ["aggregator", "penalty family"]),
        (dict(method="custom", family="gradient", estimator="adam", aggregator="mean"), ["estimator", "saga"]),
    ],
)
def test_bad_input_names_the_value_and_the_valid_choices(kw, words):
    with pytest.raises(ValueError) as e:
        make_config(**kw)
    for w in words:
        assert w in str(e.value)


def test_resampling_presets_and_checks():
    from byzsim.config import TheoryWarning

    c = make_config(method="rs-byrd-saga", n_clients=30, n_byzantine=6)
    assert (c.estimator, c.aggregator, c.resample) == ("saga", "geometric_median", 2)
    assert make_config(method="byrd-saga").resample == 1
    assert make_config(method="rs-byrd-saga", resample=3, n_clients=30, n_byzantine=4).resample == 3
    with pytest.raises(ValueError, match=r"resample.*>= 1"):
        make_config(method="rs-byrd-saga", resample=0)
    with pytest.raises(ValueError, match=r"\[1, n_clients\] = \[1, 10\]"):
        make_config(method="rs-byrd-saga", resample=11, n_clients=10)
    with pytest.raises(ValueError, match="partial participation"):
        make_config(method="rs-byrd-saga", participation=0.5)
    with pytest.warns(TheoryWarning, match="1/2"):
        make_config(method="rs-byrd-saga", resample=4, n_clients=30, n_byzantine=6)


def test_replace_with_a_new_method_reapplies_its_preset():
    c = make_config(method="sgd").replace(method="krum")
    assert (c.method, c.aggregator) == ("krum", "krum")
    c = make_config(method="rs-byrd-saga").replace(method="byrd-saga")
    assert c.resample == 1
    c = make_config(method="sgd").replace(lr=0.5)
    assert (c.aggregator, c.lr) == ("mean", 0.5)


# --------------------------------------------------------------------------------------
# the front door


def test_no_method_gives_the_documented_default_run():
    cfg = make_config()
    assert (cfg.method, cfg.family, cfg.estimator, cfg.aggregator, cfg.dataset) == (
        "asynrsa-vr", "penalty", "saga", None, "digits")
    # giving a family (no method) keeps the explicit, custom combination
    cfg = make_config(family="gradient", estimator="sgd", aggregator="mean")
    assert cfg.method == "custom"


@pytest.mark.parametrize("kw,field", [
    (dict(lr="abc"), "lr"),
    (dict(method="custom", lr="abc"), "lr"),
    (dict(method="custom", rounds=0), "rounds"),
    (dict(family="nope", seed=-1), "seed"),
    (dict(method="byrd-saga", n_byzantine=10), "n_byzantine"),
    (dict(dtype="float16"), "dtype"),
])
def test_errors_name_the_field_the_user_got_wrong(kw, field):
    with pytest.raises(ValueError, match=rf"invalid config field '{field}'"):
        make_config(**kw)


@pytest.mark.parametrize("field,spellings", [
    ("method", ["byrd_saga", "byrd-saga", "BYRD_SAGA"]),
    ("method", ["trimmed_mean", "trimmed-mean"]),
    ("attack", ["inner_product_manipulation", "inner-product-manipulation"]),
    ("partition", ["by_class", "by-class"]),
])
def test_hyphen_and_underscore_spellings_are_one_name(field, spellings):
    stored = {getattr(make_config(**{field: s, "n_byzantine": 1}), field) for s in spellings}
    assert len(stored) == 1


def test_the_registered_spelling_is_stored():
    cfg = make_config(method="byrd_saga", aggregator="trimmed-mean", aggregator_params={"f": 1},
                      preaggregators=["static-clipping"], n_byzantine=1)
    assert (cfg.method, cfg.aggregator, cfg.preaggregators[0]["name"]) == (
        "byrd-saga", "trimmed_mean", "static_clipping")
    assert make_config(attack="same-value").attack == "same-value"  # a registered alias stays
    with pytest.raises(ValueError, match=r"invalid config field 'aggregator'.*did you mean"):
        make_config(method="krum", aggregator="krumm")


@pytest.mark.parametrize("kw,field", [
    (dict(method="rsa", aggregator_params={"f": 2}), "aggregator_params"),
    (dict(method="asynrsa-vr", aggregator="krum"), "aggregator"),
    (dict(method="rsa", preaggregators=["nnm"]), "preaggregators"),
    (dict(method="rsa", resample=2), "resample"),
    (dict(method="byrd-saga", penalty=0.1), "penalty"),
    (dict(method="krum", p=2.0), "p"),
])
def test_a_field_the_family_does_not_use_is_an_error(kw, field):
    with pytest.raises(ValueError, match=rf"invalid config field '{field}'.*family"):
        make_config(**kw)


def test_defaults_of_unused_fields_are_accepted():
    """A spec may write the defaults (penalty, p) for every method of a figure."""
    for method in ("rsa", "byrd-saga", "krum"):
        make_config(method=method, penalty=0.05, p=1.0, aggregator_params={}, preaggregators=[],
                    resample=None if method == "rsa" else 1)


# ---- client momentum, local steps, step-size schedules ------------------------------------
@pytest.mark.parametrize("kw,field,match", [
    (dict(method="krum", momentum=1.0), "momentum", r"\[0, 1\)"),
    (dict(method="krum", momentum=-0.1), "momentum", r"\[0, 1\)"),
    (dict(method="krum", momentum="0.9"), "momentum", r"\[0, 1\)"),
    (dict(method="krum", local_steps=0), "local_steps", ">= 1"),
    (dict(method="krum", local_steps=1.5), "local_steps", ">= 1"),
    (dict(method="rsa", momentum=0.9), "momentum", "gradient family only"),
    (dict(method="asynrsa-vr", local_steps=2), "local_steps", "gradient family only"),
    (dict(method="krum", lr_schedule="inv_sqr"), "lr_schedule", "did you mean 'inv_sqrt'"),
    (dict(method="krum", lr_schedule="step", lr_schedule_params={"gama": 0.5}), "lr_schedule_params",
     "did you mean lr_schedule_params.gamma"),
    (dict(method="krum", lr_schedule="step", lr_schedule_params={"gamma": 1.5}), "lr_schedule_params", r"\(0, 1\]"),
    (dict(method="krum", lr_schedule="step", lr_schedule_params={"every": 0}), "lr_schedule_params", ">= 1"),
    (dict(method="krum", lr_schedule="inv_sqrt", lr_schedule_params={"gamma": 0.5}), "lr_schedule_params",
     "no parameter"),
    (dict(method="sgd", aggregator="centered_clipping_momentum", attack="alie_opt", n_byzantine=2), "attack",
     "stateful"),
])
def test_bad_momentum_local_steps_schedule(kw, field, match):
    with pytest.raises(ValueError, match=rf"'{field}'.*{match}"):
        make_config(**kw)


def test_schedule_spelling_and_defaults():
    assert make_config(method="krum", lr_schedule="inv-sqrt").lr_schedule == "inv_sqrt"
    c = make_config(method="byrd-saga", momentum=0.9, local_steps=3)
    assert (c.momentum, c.local_steps, c.lr_schedule) == (0.9, 3, "constant")
    make_config(method="rsa", lr_schedule="step", lr_schedule_params={"gamma": 0.5, "every": 10})


def test_new_fields_at_their_neutral_values_keep_the_store_keys():
    """The key of a default config is the one computed before momentum, local steps and
    schedules existed; a non-neutral value changes it."""
    from byzsim.runs.store import canonical_config, config_key

    assert config_key(make_config(method="rsa")) == "f466dda2a490ae80a8c345e7f8fe18fab11518e026e4d5ce08d69c73bb8bab96"
    assert config_key(make_config(method="byrd-saga", attack="sign_flipping", n_byzantine=2)) == (
        "8b5fff603d628f5cdfffd322bb6718c54814f2bc8aee9ad2c9c4eb8f8dc0b241")
    assert "momentum" not in canonical_config(make_config(method="krum"))
    moved = make_config(method="byrd-saga", attack="sign_flipping", n_byzantine=2, momentum=0.9)
    assert canonical_config(moved)["momentum"] == 0.9
    assert config_key(moved) != "8b5fff603d628f5cdfffd322bb6718c54814f2bc8aee9ad2c9c4eb8f8dc0b241"
