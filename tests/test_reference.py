"""A figure spec's [reference]: a dashed line per panel, the mean of a results-CSV column
over the matching rows; read and checked when the spec is loaded, drawn by the figure,
never part of a run's key.  The committed specs' references resolve against the
committed CSVs, on the data of the runs they are drawn over."""

import csv
import math
import warnings
from pathlib import Path

import pytest

from byzsim.config import TheoryWarning
from byzsim.runs import load_entries, load_spec, parse_spec
from byzsim.runs import plots
from byzsim.runs.plots import plot_panels, plot_spec, reference_lines
from byzsim.runs.spec import is_figure_spec
from byzsim.config import load_toml
from byzsim.simulate import DataSpec

ROOT = Path(__file__).parents[1]

SPEC = """
figure = "tiny_ref"
title = "tiny spec"
seeds = [0, 1]
{reference}
[base]
dataset = "synthetic"
dataset_params = {{ n_samples = 400, n_test = 100 }}
n_clients = 6
n_byzantine = 1
rounds = 20
eval_every = 10

[[panels]]
name = "a"
attack = "same_value"
[[panels]]
name = "b"
attack = "gaussian"
attack_params = {{ std = 10.0 }}

[[lines]]
label = "SGD"
method = "sgd"
"""

CSV = """spec,panel,line,test_accuracy,note
tiny,a,SGD,0.5,
tiny,a,SGD,0.75,
tiny,b,SGD,0.25,
tiny,a,RSA,,penalty family
tiny,b,SGD,0.125,
other,a,SGD,0.9,
"""

REF = """
[reference]
label = "ceiling"
csv = "ceil.csv"
column = "test_accuracy"
where = { spec = "tiny", line = "SGD" }
panel_column = "panel"
"""


def write(tmp_path, reference=REF, name="tiny.toml"):
    (tmp_path / "ceil.csv").write_text(CSV)
    p = tmp_path / name
    p.write_text(SPEC.format(reference=reference))
    return p


def test_values_are_the_mean_over_the_matching_rows(tmp_path, monkeypatch):
    path = write(tmp_path)
    monkeypatch.chdir(ROOT)  # the csv path is relative to the spec file, not the working directory
    ref = load_spec(path).reference
    assert ref.label == "ceiling" and ref.metric == "test_accuracy"
    assert ref.values == {"a": pytest.approx(0.625), "b": pytest.approx(0.1875)}
    assert ref.rows == {"a": 2, "b": 2}
    assert "mean of test_accuracy" in ref.source and "spec = tiny, line = SGD" in ref.source


def test_without_panel_column_every_panel_gets_the_same_line(tmp_path):
    ref = load_spec(write(tmp_path, REF.replace('panel_column = "panel"', ""))).reference
    assert ref.values == {"a": (0.5 + 0.75 + 0.25 + 0.125) / 4, "b": (0.5 + 0.75 + 0.25 + 0.125) / 4}
    assert ref.rows == {"a": 4, "b": 4}


def test_the_reference_is_not_part_of_any_key(tmp_path):
    with_ref, _ = load_entries([write(tmp_path)], [])
    without, _ = load_entries([write(tmp_path, "", name="plain.toml")], [])
    assert [e.key for e in with_ref] == [e.key for e in without]
    assert load_spec(tmp_path / "plain.toml").reference is None


@pytest.mark.parametrize("change, field, needle", [
    (("label = \"ceiling\"", ""), "reference.label", "required"),
    (("csv = \"ceil.csv\"", "csv = \"missing.csv\""), "reference.csv", "no such file"),
    (("column = \"test_accuracy\"", "column = \"accuracy\""), "reference.column", "not a column"),
    (("column = \"test_accuracy\"", "column = 3"), "reference.column", "non-empty string"),
    (("line = \"SGD\"", "seed = 0"), "reference.where.seed", "not a column"),
    (("spec = \"tiny\"", "spec = \"nope\""), "reference.where", "no row"),
    (("where = { spec = \"tiny\", line = \"SGD\" }", "where = [1]"), "reference.where", "table"),
    (("spec = \"tiny\"", "spec = \"other\""), "reference.where", "panel = 'b'"),  # no row of panel b
    (("panel_column = \"panel\"", "panel_column = \"pane\""), "reference.panel_column", "not a column"),
    (("panel_column = \"panel\"", "metric = \"accuracy\""), "reference.metric", "valid choices"),
    (("panel_column = \"panel\"", "colour = \"red\""), "unknown [reference] key", "valid keys"),
])
def test_each_bad_field_is_an_error_naming_the_spec_and_the_field(tmp_path, change, field, needle):
    path = write(tmp_path, REF.replace(*change))
    with pytest.raises(ValueError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and field in str(e.value) and needle in str(e.value)


def test_a_matching_cell_that_is_not_a_number_is_an_error(tmp_path):
    path = write(tmp_path, REF.replace('line = "SGD"', 'panel = "a"').replace('panel_column = "panel"', ""))
    with pytest.raises(ValueError, match=r"reference.column.*line 5 of .*ceil.csv.*'', not a finite number"):
        load_spec(path)


def test_a_reference_that_is_not_a_table(tmp_path):
    raw = load_toml(write(tmp_path, ""))
    with pytest.raises(ValueError, match="invalid spec field 'reference' = 1"):
        parse_spec({**raw, "reference": 1}, "x.toml", base_dir=tmp_path)


def _drawn(fig) -> dict[str, tuple[str, list[float]]]:
    """Each panel's dashed line, read back from the axes: title -> (label, y data)."""
    out = {}
    for ax in fig.axes:
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        if dashed:
            (ln,) = dashed
            out[ax.get_title()] = (ln.get_label(), list(ln.get_ydata()))
    return out


def _rows(panels=("a", "b")):
    return [dict(panel=p, method="SGD", seed=s, round=r, test_accuracy=0.1 * r + s, diverged=0)
            for p in panels for s in (0, 1) for r in (0, 10, 20)]


def test_the_drawn_line_is_the_csv_mean(tmp_path, monkeypatch):
    spec = load_spec(write(tmp_path))
    with open(tmp_path / "ceil.csv") as fh:
        table = [r for r in csv.DictReader(fh) if r["spec"] == "tiny" and r["line"] == "SGD"]
    want = {p: sum(float(r["test_accuracy"]) for r in table if r["panel"] == p)
            / sum(r["panel"] == p for r in table) for p in "ab"}
    saved = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, stem: saved.append(fig) or [])
    plot_spec(spec, _rows(), tmp_path)
    drawn = _drawn(saved[0])
    for p in "ab":
        label, ys = drawn[p]
        assert ys == [pytest.approx(want[p], rel=1e-12)] * 2
        assert label.startswith("ceiling: ") and "mean of 2 rows" in label
    assert spec.reference.source in saved[0].texts[-1].get_text().replace("\n", " ")  # the note, wrapped
    # another metric drawn: no reference line
    saved.clear()
    plot_spec(spec, [{**r, "train_loss": 1.0} for r in _rows()], tmp_path, metric="train_loss")
    assert _drawn(saved[0]) == {}


def test_experiment_and_figure_commands_draw_it(tmp_path, monkeypatch):
    from byzsim.cli import main as cli

    path = write(tmp_path)
    saved = []
    capture = lambda fig, stem, *a, **k: saved.append(fig) or []  # noqa: E731
    monkeypatch.setattr(plots, "save_figure", capture)
    monkeypatch.setattr("byzsim.runs.save_figure", capture)
    dirs = ["--store", str(tmp_path / "store")]
    assert cli(["experiment", str(path), "--results", str(tmp_path / "res"), "--figures", str(tmp_path / "fig"),
                "--quiet", *dirs]) == 0
    assert cli(["figure", str(path), "--csv", str(tmp_path / "again.csv"), *dirs]) == 0
    assert len(saved) == 2
    for fig in saved:
        assert {p: ys for p, (_, ys) in _drawn(fig).items()} == {"a": [0.625] * 2, "b": [0.1875] * 2}


def test_plot_panels_draws_only_the_panels_given():
    fig = plot_panels(_rows(), panels=[("a", "a"), ("b", "b")], reference={"b": ("x*", 0.3)})
    assert _drawn(fig) == {"b": ("x*", [0.3, 0.3])}
    assert reference_lines(None, "test_accuracy") is None


# --------------------------------------------------------------------------------------
# the committed specs
# --------------------------------------------------------------------------------------
SPECS = sorted(p for p in (ROOT / "experiments").rglob("*.toml") if is_figure_spec(load_toml(p)))
#: the softmax paper-B specs drawn with the ceiling x* (the MLP specs have no computable optimum)
WITH_REFERENCE = {"fig4_6", "fig7", "fig7_batch1", "fig8", "fig9", "fig7_full", "fig8_full", "fig9_full"}


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return load_spec(path)


def test_the_paper_b_softmax_specs_have_a_reference_and_the_mlp_specs_none():
    have = {p.stem for p in SPECS if "reference" in load_toml(p) and p.parent.name == "paper_b"}
    assert have == WITH_REFERENCE
    assert all("reference" not in load_toml(p) for p in SPECS if p.parent.name != "paper_b")


@pytest.mark.parametrize("path", [p for p in SPECS if "reference" in load_toml(p)], ids=lambda p: p.stem)
def test_every_committed_reference_resolves_on_the_runs_own_data(path):
    """Loading checks the CSV, column and rows; here also that the rows averaged are those
    of the runs drawn: the CSV's ``spec`` names a spec whose runs (of the ``line``, in
    the panel) have the same data specs as this spec's runs in that panel, one CSV row
    per such run, and the rows' B and W are the panel's."""
    spec = _load(path)
    ref, raw = spec.reference, load_toml(path)["reference"]
    assert all(0.0 < v <= 1.0 and math.isfinite(v) for v in ref.values.values())
    where, pcol = raw.get("where", {}), raw.get("panel_column")
    source = _load(path.parent / f"{where['spec']}.toml")
    for panel in ref.values:
        mine = {DataSpec.from_config(r.config) for r in spec.runs if r.panel == panel}
        theirs = [r for r in source.runs if r.label == where["line"] and (pcol is None or r.panel == panel)]
        assert {DataSpec.from_config(r.config) for r in theirs} == mine, panel
        assert ref.rows[panel] == len(theirs), panel
    with open(path.parent / raw["csv"]) as fh:
        rows = [r for r in csv.DictReader(fh) if all(r[k] == str(v) for k, v in where.items())]
    for panel in ref.values:
        cfgs = {(r.config.n_byzantine, r.config.n_clients) for r in spec.runs if r.panel == panel}
        got = {(int(r["B"]), int(r["W"])) for r in rows if pcol is None or r[pcol] == panel}
        assert got == cfgs, panel
