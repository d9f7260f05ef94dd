"""experiments/paper_b/bounds_vs_runs.py on a tiny stored sweep: measured ‖x − x*‖² from
the kept models, each method's bound (NaN with the reason outside its range), x* shared
by equal regular data, runs without a model reported."""

import csv
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from byzsim.config import TheoryWarning
from byzsim.diagnose import config_bound, diagnose, distance_to_optimum
from byzsim.runs import Store, config_key, load_spec
from byzsim.runs.execute import run_spec

SCRIPT = Path(__file__).parents[1] / "experiments" / "paper_b" / "bounds_vs_runs.py"
SPEC = """
figure = "tiny_bounds"
seeds = [0, 1]
keep_models = {keep}
[base]
dataset = "digits"
partition = "by_class"
partition_params = {{ truncate = false }}
model = "{model}"
n_clients = 10
n_byzantine = 2
byzantine_indices = [0, 1]
attack = "sample_duplicating"
lr = 1e-5
batch_size = 4
rounds = 20
eval_every = 10
[[panels]]
name = "a"
[[lines]]
label = "SGD"
method = "sgd"
[[lines]]
label = "Byrd-SGD"
method = "byrd-sgd"
[[lines]]
label = "RS-Byrd-SGD s=3"
method = "rs-byrd-sgd"
resample = 3
[[lines]]
label = "RSA"
method = "rsa"
penalty = 0.1
"""


def load_script(path: Path):
    """The experiment script at ``path`` as a module (the experiments are not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


def make_spec(tmp_path, name="tiny.toml", keep="true", model="softmax"):
    path = tmp_path / name
    path.write_text(SPEC.format(keep=keep, model=model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return path, load_spec(path)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, script):
    tmp = tmp_path_factory.mktemp("bvr")
    path, spec = make_spec(tmp)
    store = Store(tmp / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        _, rep = run_spec(spec, results_dir=tmp / "res", store=store, quiet=True)
    assert rep.ok
    with pytest.warns(TheoryWarning, match="s·α"):
        rows, csv_path, fig = script.run([path], store, ridge=1e-3, results=tmp / "res", figures=tmp / "fig",
                                         log=lambda line: None)
    return tmp, spec, store, rows, csv_path, fig


def test_measured_distance_and_bounds(swept):
    tmp, spec, store, rows, _, _ = swept
    assert len(rows) == len(spec.runs) == 8
    by = {(r["line"], r["seed"]): r for r in rows}
    for run in spec.runs:
        r = by[(run.label, run.seed)]
        cfg = run.config
        stored = store.get(config_key(cfg))
        # paper B's problem on the run's data: RSA's row is measured against SGD's x*
        gcfg = cfg if cfg.family == "gradient" else next(
            o.config for o in spec.runs if o.label == "SGD" and o.seed == run.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TheoryWarning)
            d = diagnose(gcfg, ridge=1e-3)
        assert r["measured"] == pytest.approx(distance_to_optimum(stored.model(), d.optimum.x), rel=1e-9)
        assert r["delta2"] == pytest.approx(d.delta2, rel=1e-9) and r["mu"] == pytest.approx(1e-3)
        if run.label == "Byrd-SGD":  # step 1e-5 ≤ μ/(2L²): in range
            b = config_bound(cfg, d)
            assert b.holds and r["bound"] == pytest.approx(b.value, rel=1e-9) and r["reason"] == ""
            assert r["bound_name"] == "Byrd-SGD"
        elif run.label.startswith("RS-Byrd-SGD"):  # s·α = 0.6 ≥ 1/2: no bound
            assert math.isnan(r["bound"]) and "s·α" in r["reason"] and r["reason"].startswith("outside")
        else:  # SGD, RSA: paper B has none
            assert math.isnan(r["bound"]) and r["reason"] == "no bound in paper B for this method"


def test_x_star_is_shared_by_equal_regular_data(swept, script):
    _, _, _, rows, _, _ = swept
    # by_class with fixed Byzantine workers: the seeds only shuffle rows, so one x*
    assert {r["setting"] for r in rows} == {0}


def test_csv_and_figure(swept, script):
    _, _, _, rows, csv_path, fig = swept
    with open(csv_path) as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == script.FIELDS and len(table) == len(rows)
    assert fig is not None and fig.stat().st_size > 0
    summ = {s["line"]: s for s in script.summarise(rows)}
    assert summ["Byrd-SGD"]["n"] == 2 and np.isfinite(summ["Byrd-SGD"]["bound"])
    assert math.isnan(summ["RS-Byrd-SGD s=3"]["bound"])


def test_runs_without_model_or_optimum_are_reported(tmp_path, script):
    path, spec = make_spec(tmp_path, keep="false")
    store = Store(tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        run_spec(spec, results_dir=tmp_path / "res", store=store, quiet=True)
    rows = script.rows_for_spec(path, store, script.Diagnoses(1e-3, log=lambda line: None))
    assert all(r["note"].startswith("stored without its final model") and "measured" not in r for r in rows)
    assert script.plot(rows, tmp_path / "fig.png") is None
    mlp, _ = make_spec(tmp_path, "mlp.toml", model="mlp")
    rows = script.rows_for_spec(mlp, store, script.Diagnoses(1e-3))
    assert all("no computable optimum" in r["note"] for r in rows)


def test_command_line_writes_nothing_until_every_model_is_stored(tmp_path, script, capsys):
    path, spec = make_spec(tmp_path, keep="false")
    store = Store(tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        run_spec(spec, results_dir=tmp_path / "res", store=store, quiet=True)
    args = ["--store", str(store.root), "--specs", str(path), "--results", str(tmp_path / "out"),
            "--figures", str(tmp_path / "fig")]
    assert script.main(args) == 0
    assert "--keep-models" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert len(script.without_model([path], store)) == len(spec.runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        assert script.main(args + ["--partial"]) == 0
    assert (tmp_path / "out" / "b_bounds_vs_runs.csv").is_file()


def test_strict_exits_non_zero_naming_the_runs_without_a_model(tmp_path, script, capsys, monkeypatch):
    path, spec = make_spec(tmp_path, keep="false")
    store = Store(tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        run_spec(spec, results_dir=tmp_path / "res", store=store, quiet=True)
    args = ["--specs", str(path), "--results", str(tmp_path / "out"), "--figures", str(tmp_path / "fig"), "--strict"]
    assert script.main(["--store", str(store.root), *args]) == 1
    err = capsys.readouterr().err
    assert all(f"tiny_bounds a {r.label} seed {r.seed}" in err for r in spec.runs)
    assert not (tmp_path / "out").exists()
    # the default store missing: an error under --strict, not a silent success
    monkeypatch.setenv("BYZSIM_STORE", str(tmp_path / "nowhere"))
    assert script.main(args[:-1]) == 0
    assert script.main(args) == 2
