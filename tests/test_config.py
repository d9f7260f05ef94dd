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
