"""The command line fuzzed with hypothesis: argv drawn from the config schema (keys and
values, valid and invalid) and malformed overrides.

Every argv either runs (a tiny run on digits), or fails for a stated reason: bad input
exits 2 with exactly one line that names a field (or the malformed token) and no
traceback; a run that fails while running exits 1 with one line saying why.  Nothing
escapes ``byzsim.cli.main`` as an exception.
"""

import contextlib
import io

import pytest
from hypothesis import event, given, strategies as st

from byzsim.aggregators import AGGREGATORS
from byzsim.attacks import ATTACKS
from byzsim.cli import main
from byzsim.config import FIELDS, METHODS
from byzsim.partition import PARTITIONS


def _text(*values):
    return st.sampled_from([str(v) for v in values])


junk = st.sampled_from(["abc", "-1", "0", "1.5", "nan", "inf", "-inf", "true", "[]", "[1,2]", "{a=1}",
                        "\"x y\"", "null", "1e400", "range(3)", "range(0)", "0,0", "1,2"])
names = lambda reg: st.sampled_from(sorted(reg)) | st.sampled_from(["nope", "krum_", "GM"])  # noqa: E731

#: config keys (top level and nested parameters) and values, valid or not
SCHEMA = {
    "method": names(METHODS),
    "aggregator": names(AGGREGATORS),
    "attack": names(ATTACKS),
    "partition": names(PARTITIONS),
    "model": _text("softmax", "mlp", "cnn"),
    "dataset": _text("digits", "synthetic", "mnist_"),
    "n_clients": st.integers(-1, 12).map(str),
    "n_byzantine": st.integers(-1, 4).map(str),
    "byzantine_indices": _text("[0]", "[0,1]", "[0,0]", "[99]", "null"),
    "lr": _text("0.1", "1e-3", "1", "0", "-1", "nan"),
    "batch_size": st.integers(-1, 200).map(str),
    "participation": _text("0.5", "1", "0", "1.5"),
    "penalty": _text("0.05", "0", "-2"),
    "p": _text("1", "2", "inf", "0.5"),
    "resample": _text("1", "2", "0", "11"),
    "preaggregators": _text('[{name="bucketing",s=2}]', '["nnm"]', '[{name="nope"}]', '[{name="bucketing",s=0}]'),
    "rounds": st.integers(-1, 3).map(str),
    "eval_every": st.integers(-1, 3).map(str),
    "seed": _text("0", "1", "-1", "0,1", "0,0", "a"),
    "dtype": _text("float32", "float64", "int8"),
    "saga_table": _text("auto", "dense", "factored", "sparse"),
    "attack_params.std": _text("1", "0", "-1", "abc"),
    "attack_params.c": _text("-5", "abc", "1e308"),
    "attack_params.sd": _text("1"),
    "aggregator_params.f": _text("0", "1", "4", "5", "-1", "1.5", "abc"),
    "dataset_params.test_fraction": _text("0.25", "0", "2", "abc"),
    "dataset_params.seed": _text("0", "-1", "abc"),
    "dataset_params.n_samples": _text("300", "-5", "1.5"),
    "dataset_params.n_classes": _text("3", "1"),
    "partition_params.samples_per_client": _text("10", "0", "-5", "100000"),
    "partition_params.concentration": _text("1", "-1"),
    "partition_params.beta": _text("0.5", "0"),
    "model_params.hidden": _text("[5]", "[]", "[0]", "abc", "[100000000]"),
    "model_params.l2": _text("0", "0.1", "-1"),
}

#: values that are valid on their own (a combination may still be refused, with a reason)
VALID = {
    "method": st.sampled_from(sorted(m for m in METHODS if m != "custom")),
    "attack": _text("none", "gaussian", "sign_flipping", "same_value", "alie", "ipm", "zero_gradient"),
    "partition": _text("iid", "unbalanced", "by_class"),
    "model": _text("softmax", "mlp"),
    "n_byzantine": _text("0", "1", "2"),
    "lr": _text("0.1", "0.01"),
    "batch_size": _text("1", "4"),
    "participation": _text("0.5", "1"),
    "seed": _text("0", "1", "0,1"),
    "dtype": _text("float32", "float64"),
    "attack_params.std": _text("1", "100"),
    "aggregator_params.f": _text("0", "1"),
    "model_params.hidden": _text("[5]", "[]"),
    "dataset_params.test_fraction": _text("0.25", "0.5"),
}

valid_override = st.sampled_from(sorted(VALID)).flatmap(lambda k: VALID[k].map(lambda v: f"{k}={v}"))

override = st.one_of(
    valid_override,
    st.sampled_from(sorted(SCHEMA)).flatmap(lambda k: (SCHEMA[k] | junk).map(lambda v: f"{k}={v}")),
    # malformed overrides and unknown keys
    st.sampled_from(["lr=", "=1", "+lr=1", "~lr", "lr+=1", "lr=[1,2", "lr=1]", "lr='a", "a..b=1",
                     "n_client=3", "attack_params=1", "attack_params.std.x=1", "seed=range(a)",
                     "rounds=1 2", "lr=1,,2", "method=rsa,,", "x.toml", "lr=1=2"]),
    st.text(alphabet="abcz_.=,[]{}\"'0123456789-", min_size=1, max_size=12),
)


def _key(token: str) -> str:
    return token.partition("=")[0]


@given(argv=st.lists(override, min_size=0, max_size=5) | st.lists(valid_override, max_size=4))
def test_every_argv_runs_or_is_refused_in_one_line(argv, tmp_path_factory):
    base = {"rounds": "2", "eval_every": "1", "train_eval_samples": "0"}
    given_keys = {_key(t) for t in argv}
    full = [f"{k}={v}" for k, v in base.items() if k not in given_keys] + argv
    store = tmp_path_factory.mktemp("store")
    out, errf = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errf):
        code = main(["sweep", *full, "--store", str(store), "-q"])
    err = errf.getvalue()
    event(f"exit status {code}")
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln]
    if code == 2:  # bad input: one line naming a field or the token
        assert len(lines) == 1 and lines[0].startswith("byzsim: error: "), lines
        names = ({_key(t).split(".")[0] for t in full} | set(full) | {repr(t) for t in full}
                 | {f"'{f}" for f in FIELDS})
        assert any(n and n in lines[0] for n in names), lines
        assert not (store / "runs").exists()
    elif code == 1:  # refused while running: every failure says why
        assert any("failed" in ln for ln in lines), lines
    else:
        assert code == 0, (code, lines)


@pytest.mark.parametrize("argv", [["lr=1", "lr=2"], ["seed=0,0"], ["--jobs", "-5"]])
def test_known_bad_argv_is_one_line(argv, tmp_path, capsys):
    """Fixed examples of the property (a broken variant of the checks fails these)."""
    assert main(["sweep", *argv, "rounds=1", "--store", str(tmp_path), "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("byzsim: error: ")
