"""experiments/paper_b/theory_on_data.py and the diagnosis cache it shares with
bounds_vs_runs.py (:class:`byzsim.diagnose.Diagnoses`) on a tiny digits spec."""

import csv
import warnings
from pathlib import Path

import pytest

from byzsim.config import TheoryWarning, make_config
from byzsim.diagnose import Diagnoses, diagnose
from test_bounds_vs_runs import SPEC as TINY
from test_bounds_vs_runs import load_script

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "experiments" / "paper_b" / "theory_on_data.py"
# bounds_vs_runs's tiny spec (SGD, Byrd-SGD, RS-Byrd-SGD, RSA; two seeds) with a
# [reference] whose CSV does not exist
SPEC = TINY.format(keep="false", model="softmax") + """
[reference]
label = "not made yet"
csv = "missing.csv"
column = "test_accuracy"
"""


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


def tiny(**kw):
    base = dict(dataset="digits", partition="by_class", partition_params={"truncate": False}, n_clients=10,
                n_byzantine=2, byzantine_indices=[0, 1], method="byrd-sgd", lr=1e-5, batch_size=4, rounds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return make_config(**{**base, **kw})


def test_diagnoses_share_x_star_and_diagnose_per_batch_size():
    lines = []
    cache = Diagnoses(1e-3, log=lines.append)
    s0, d0 = cache(tiny(seed=0), "a")
    s1, d1 = cache(tiny(seed=1), "b")  # fixed Byzantine workers, one worker per class: same rows
    s2, d2 = cache(tiny(seed=0, batch_size=8), "c")
    assert (s0, s1, s2) == (0, 0, 0) and len(cache.optima) == 1
    assert d2.optimum is d0.optimum and d2.sigma2_batch != d0.sigma2_batch
    assert cache(tiny(seed=0, method="byrd-saga"), "d")[1] is d0  # same data, l2 and batch: cached
    assert len(lines) == 3 and lines[1].startswith("  b: x* shared")
    direct = diagnose(tiny(seed=0, batch_size=8), ridge=1e-3)
    assert d2.delta2 == pytest.approx(direct.delta2, rel=1e-9)
    assert d2.sigma2_batch == pytest.approx(direct.sigma2_batch, rel=1e-9)


def test_csv_rows_and_format(tmp_path, script, monkeypatch):
    (tmp_path / "tiny.toml").write_text(SPEC)  # its [reference] CSV does not exist: not read
    monkeypatch.setattr(script, "HERE", tmp_path)
    assert script.main(["--specs", "tiny", "--out", "t", "--results", str(tmp_path / "r"),
                        "--figures", str(tmp_path / "f")]) == 0
    text = (tmp_path / "r" / "t.csv").read_text()
    assert "\r" not in text
    table = list(csv.DictReader(text.splitlines()))
    assert tuple(table[0]) == script.FIELDS and len(table) == 8  # 4 lines × 2 seeds
    rsa = [r for r in table if r["method"] == "rsa"]
    assert len(rsa) == 2 and all(r["note"].startswith("penalty family") and r["setting"] == "" for r in rsa)
    byrd = [r for r in table if r["line"] != "RSA"]
    assert {r["setting"] for r in byrd} == {"0"}
    assert {r["line"]: r["bound_name"] for r in byrd} == {"SGD": "", "Byrd-SGD": "Byrd-SGD",
                                                          "RS-Byrd-SGD s=3": "RS-Byrd-SGD s=3"}
    for r in byrd:  # floats at 6 significant digits, booleans as True/False
        for k in ("delta2", "sigma2_batch", "mu"):
            assert r[k] == f"{float(r[k]):.6g}"
        assert r["holds"] in (("True", "False") if r["bound_name"] else ("",))
    one = next(r for r in byrd if r["line"] == "Byrd-SGD")
    assert one["bound_formula"] == f"{float(one['bound_formula']):.6g}"


def test_the_committed_csvs_keep_their_columns_and_cells(script, tmp_path):
    from byzsim.runs.tables import write_csv

    for name in ("b_theory_on_data", "b_theory_on_data_full"):
        path = ROOT / "experiments" / "results" / f"{name}.csv"
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            assert tuple(reader.fieldnames) == script.FIELDS
            rows = list(reader)
        out = write_csv(tmp_path / f"{name}.csv", rows, script.FIELDS, floats=".6g")
        # the same cells; the line ends are now \n (the committed files have \r\n)
        assert out.read_text() == path.read_text().replace("\r\n", "\n")
