"""`byzsim matrix`: a matrix spec's cells go through the run entries and the result store."""

import csv
import math
from pathlib import Path

import pytest

from byzsim.cli import main
from byzsim.runs import MATRIX_COLUMNS, Store, load_matrix

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "matrix.toml"
# written by the matrix script before `byzsim matrix` (same selection, --tiny)
BEFORE = Path(__file__).parent / "fixtures" / "matrix_tiny_before.csv"
ROWS, COLUMNS = "mean,Krum,NNM + Krum,RS (s=2) + geomed", "none,sign flip,ALIE opt."


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _args(tmp_path, *extra, overrides=()):
    return ["matrix", str(SPEC), *overrides, "--tiny", "--rows", ROWS, "--columns", COLUMNS, "--quiet",
            "--results", str(tmp_path / "res"), "--figures", str(tmp_path / "fig"),
            "--store", str(tmp_path / "store"), *extra]


def test_matrix_writes_the_same_csv_as_before_and_resumes_from_the_store(tmp_path):
    assert main(_args(tmp_path)) == 0
    out = _read(tmp_path / "res/matrix_tiny.csv")
    before = _read(BEFORE)
    assert list(out[0]) == list(MATRIX_COLUMNS) == list(before[0])
    # the same cells with the same values; the metrics to 1e-6 relative: the geometric median
    # stops at tol 1e-5, so a change of its start (duplicated rows are one point with
    # multiplicity) moves a resampled-geomed run's loss by ~2e-8 relative
    metrics = ("final_test_accuracy", "final_train_loss")
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds" and k not in metrics}  # noqa: E731
    assert [drop(r) for r in out] == [drop(r) for r in before]
    for r, b in zip(out, before):
        for k in metrics:
            assert float(r[k]) == pytest.approx(float(b[k]), rel=1e-6), (r["row"], r["column"], k)
    assert (tmp_path / "fig/matrix_tiny.png").stat().st_size > 1000
    store = Store(tmp_path / "store")
    assert len(store.keys()) == 12 and "matrix_tiny" in store.sweeps()
    # a second time simulates nothing: every cell comes from the store
    spec = load_matrix(SPEC, rows=ROWS.split(","), columns=COLUMNS.split(","), tiny=True)
    from byzsim.runs import run_matrix

    rows, report = run_matrix(spec, results_dir=tmp_path / "res2", store=store, quiet=True)
    assert (report.ran, report.skipped) == (0, 12)
    assert (tmp_path / "res2/matrix_tiny.csv").read_bytes() == (tmp_path / "res/matrix_tiny.csv").read_bytes()


def test_matrix_spec_errors_and_failed_cells(tmp_path, capsys):
    assert main(_args(tmp_path, "--rows", "nope")) == 2
    assert "unknown row label(s) ['nope']" in capsys.readouterr().err
    assert main(_args(tmp_path, overrides=["lr=0.1,0.2"])) == 2
    assert "one value" in capsys.readouterr().err


def test_a_failed_cell_is_recorded_and_shown(tmp_path, monkeypatch):
    import byzsim.simulate

    real = byzsim.simulate.run

    def run(cfg, **kw):
        if cfg.aggregator == "krum":
            raise RuntimeError("krum broke")
        return real(cfg, **kw)

    monkeypatch.setattr(byzsim.simulate, "run", run)
    assert main(_args(tmp_path, "--rows", "mean,Krum", "--columns", "none")) == 1
    out = {r["row"]: r for r in _read(tmp_path / "res/matrix_tiny.csv")}
    assert out["mean"]["status"] == "ok" and float(out["mean"]["final_test_accuracy"]) > 0.5
    assert out["Krum"]["status"] == "error: RuntimeError: krum broke"
    assert math.isnan(float(out["Krum"]["final_test_accuracy"]))


def test_a_matrix_spec_is_a_sweep_input(tmp_path):
    from byzsim.runs import load_entries

    entries, info = load_entries([SPEC], [])
    assert len(entries) == 21 * 13 and info["lines"][0] == "none"
    with pytest.raises(ValueError, match="only config file"):
        load_entries([SPEC, SPEC], [])
