"""Figure specs through the result store: run once, assemble the CSV, draw the figure."""

import csv
import math

import pytest

from byzsim.cli import main as cli_main
from byzsim.experiment import main
from byzsim.runs import Store, derive_labels, load_entries, load_spec, parse_spec, run_spec
from byzsim.runs.store import canonical_config

SPEC = """
figure = "tiny"
title = "tiny spec"
metric = "test_accuracy"
seeds = [0, 1]

[base]
dataset = "synthetic"
dataset_params = { n_samples = 400, n_test = 100 }
n_clients = 6
n_byzantine = 1
rounds = 20
eval_every = 10

[[panels]]
name = "a"
title = "(a) same value"
attack = "same_value"

[[panels]]
name = "b"
title = "(b) gaussian"
attack = "gaussian"
attack_params = { std = 10.0 }

[[lines]]
label = "RSA"
method = "rsa"
[[lines]]
label = "Gm"
method = "byrd-sgd"
"""

COLUMNS = ["figure", "panel", "method", "attack", "seed", "round", "test_accuracy", "train_loss",
           "distance", "diverged"]


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(SPEC)
    return p


def _dirs(tmp_path):
    return ["--results", str(tmp_path / "res"), "--figures", str(tmp_path / "fig"),
            "--store", str(tmp_path / "store"), "--quiet"]


def test_make_fig_command_line_runs_once_and_writes_outputs(tmp_path, spec_file):
    assert main([str(spec_file), "--jobs", "1", *_dirs(tmp_path)]) == 0
    out = tmp_path / "res/tiny.csv"
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    assert len(rows) == 2 * 2 * 2 * 3  # panels x lines x seeds x evaluations
    assert {r["method"] for r in rows} == {"RSA", "Gm"} and {r["panel"] for r in rows} == {"a", "b"}
    assert (tmp_path / "fig/tiny.png").stat().st_size > 1000 and (tmp_path / "fig/tiny.pdf").exists()
    first = out.read_bytes()
    keys = Store(tmp_path / "store").keys()
    assert len(keys) == 8
    # second time: nothing is simulated, the CSV is assembled from the store, identical
    spec = load_spec(spec_file)
    _, report = run_spec(spec, results_dir=tmp_path / "res", store=tmp_path / "store", quiet=True)
    assert (report.ran, report.skipped) == (0, 8)
    assert out.read_bytes() == first
    # `byzsim figure SPEC` draws the same data from the store
    assert cli_main(["figure", str(spec_file), "--store", str(tmp_path / "store"),
                     "--csv", str(tmp_path / "again.csv"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again.csv").read_bytes() == first


def test_overrides_grid_labels_and_rounds(tmp_path, spec_file):
    spec = load_spec(spec_file, ["lr=0.01,0.1", "seed=0"])
    assert len(spec.runs) == 2 * 2 * 2
    assert {r.label for r in spec.runs} == {"RSA, lr=0.01", "RSA, lr=0.1", "Gm, lr=0.01", "Gm, lr=0.1"}
    assert main([str(spec_file), "lr=0.01,0.1", "seed=0", "--rounds", "10", *_dirs(tmp_path)]) == 0
    with open(tmp_path / "res/tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["round"]) for r in rows} == {0, 10}
    assert "Gm, lr=0.1" in {r["method"] for r in rows}


def test_spec_errors_name_the_place(spec_file):
    with pytest.raises(ValueError, match="unknown spec key"):
        parse_spec({"figure": "x", "bogus": 1})
    with pytest.raises(ValueError, match="missing 'figure'"):
        parse_spec({"base": {}})
    with pytest.raises(ValueError, match=r"line 'RSA'.*did you mean 'n_clients'"):
        load_spec(spec_file, ["n_client=3"])


def test_diverged_and_failed_runs_in_a_figure(tmp_path):
    spec = SPEC.replace('[[lines]]\nlabel = "Gm"\nmethod = "byrd-sgd"',
                        '[[lines]]\nlabel = "SGD lr=1"\nmethod = "sgd"\nlr = 1.0\n'
                        '[[lines]]\nlabel = "too big"\nmethod = "sgd"\npartition = "by_class"')
    spec = spec.replace('attack = "same_value"', 'attack = "same_value"\nattack_params = { c = 1e308 }')
    p = tmp_path / "div.toml"
    p.write_text(spec)
    assert main([str(p), *_dirs(tmp_path)]) == 1  # the by_class line fails (6 clients, 4 classes); the rest is drawn
    with open(tmp_path / "res/tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    div = [r for r in rows if r["diverged"] == "1"]
    assert div and all(r["panel"] == "a" and r["method"] == "SGD lr=1" for r in div)
    assert any(math.isnan(float(r["test_accuracy"])) for r in div)  # the marker row
    assert "too big" not in {r["method"] for r in rows}
    assert (tmp_path / "fig/tiny.png").exists()
    s = Store(tmp_path / "store")
    assert len(list(s.failed_dir.iterdir())) == 4 and len(s.keys()) == 8


def test_derive_labels_hides_what_follows_from_method_or_panel():
    entries, _ = load_entries([], [
        "dataset=synthetic", "method=rsa,byrd-sgd", "attack=gaussian", "attack_params.std=1",
        "lr=0.01,0.1", "seed=0,1"])
    labels = derive_labels([canonical_config(e.config) for e in entries])
    assert {p for p, _ in labels} == {"gaussian"}
    assert {l for _, l in labels} == {"rsa, lr=0.01", "rsa, lr=0.1", "byrd-sgd, lr=0.01", "byrd-sgd, lr=0.1"}
    labels = derive_labels([canonical_config(e.config) for e in entries], panel_fields=("method",),
                           line_fields=("lr",))
    assert {p for p, _ in labels} == {"rsa", "byrd-sgd"} and {l for _, l in labels} == {"lr=0.01", "lr=0.1"}


def test_python_m_byzsim_experiment_is_the_cli_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "byzsim.experiment", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: byzsim experiment")


@pytest.mark.parametrize("seeds, needle", [
    ([], "non-empty list"),
    ([0, 1, 1], r"seed\(s\) \[1\] listed twice"),
    ([0, -1], "integers >= 0"),
    ("0", "non-empty list"),
])
def test_bad_seeds_name_the_spec_and_the_field(seeds, needle):
    from byzsim.runs.spec import parse_spec

    raw = {"figure": "f", "seeds": seeds, "base": {"method": "sgd", "rounds": 2}}
    with pytest.raises(ValueError, match=rf"myspec\.toml: invalid spec field 'seeds'.*{needle}"):
        parse_spec(raw, source="myspec.toml")


def test_ci95_band_is_the_t_interval_of_the_mean():
    from byzsim.runs.plots import _mean_band

    # three seeds at round 10: 0.80, 0.82, 0.81 -> mean 0.81, half-width 4.302653 * 0.01 / sqrt(3)
    runs = [([0, 10], [0.1, v], None) for v in (0.80, 0.82, 0.81)]
    xs, mean, lo, hi = _mean_band(runs, "ci95")
    assert mean[1] == pytest.approx(0.81)
    assert hi[1] - mean[1] == pytest.approx(0.024841, abs=1e-6)
    assert mean[1] - lo[1] == pytest.approx(0.024841, abs=1e-6)
