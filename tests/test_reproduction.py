"""REPRODUCTION.md's generated tables and claims: statistics by hand, checks, markers, and the
committed document against the committed CSVs."""

from pathlib import Path

import pytest

from byzsim.reproduction import (
    ManifestError, Results, render_claims, render_table, summary,
    update_document, welch_p,
)

def rows(figure, panel, method, finals, rounds=(0, 100), diverged=()):
    """Long CSV rows: every seed's run evaluated at ``rounds``, ending at ``finals[seed]``."""
    out = []
    for seed, v in enumerate(finals):
        for r in rounds:
            out.append({"figure": figure, "panel": panel, "method": method, "seed": str(seed),
                        "round": str(r), "test_accuracy": str(v if r == rounds[-1] else 0.1),
                        "diverged": "1" if seed in diverged else "0"})
    return out


def results(**figures):
    return Results({f: [r for part in parts for r in part] for f, parts in figures.items()}, "test")


def test_summary_by_hand():
    # mean 0.81, s = 0.01, t_{0.975, 2} = 4.302653: half-width 4.302653 · 0.01 / √3 = 0.024841
    s = summary([0.80, 0.82, 0.81])
    assert s.mean == pytest.approx(0.81)
    assert s.half_width == pytest.approx(0.024841, abs=1e-6)
    assert s.format(3) == "0.810 ± 0.025"
    assert summary([0.5]).format(2) == "0.50 (1 seed)"
    assert summary([]).format() == "–"


def test_welch_p_separates_only_clear_differences():
    assert welch_p([0.80, 0.81, 0.82], [0.60, 0.61, 0.62]) < 0.01
    assert welch_p([0.80, 0.82, 0.81], [0.81, 0.80, 0.82]) > 0.5
    assert welch_p([1, 1], [1, 1]) == 1.0


def test_table_cells_and_final_round():
    res = results(fig=[rows("fig", "a", "A", [0.8, 0.82, 0.81]), rows("fig", "a", "B", [0.5, 0.5, 0.5])])
    table = {"name": "t", "rows": ["A", "B"], "digits": 3,
             "columns": [{"label": "final", "figure": "fig", "panel": "a"},
                         {"label": "start", "figure": "fig", "panel": "a", "round": 0}]}
    md = render_table(table, res).splitlines()
    assert md[0] == "| method | final | start |"
    assert md[2] == "| A | 0.810 ± 0.025 | 0.100 ± 0.000 |"
    assert md[3].startswith("| B | 0.500 ± 0.000 |")


def test_diverged_run_counts_with_its_last_finite_value():
    r = rows("fig", "", "A", [0.7, 0.9], rounds=(0, 100, 200))
    for x in r:  # seed 1 diverged at round 200
        if x["seed"] == "1" and x["round"] == "200":
            x["test_accuracy"] = "nan"
        if x["seed"] == "1":
            x["diverged"] = "1"
    vals, div = results(fig=[r]).values("fig", "", "A")
    assert vals == [0.7, 0.1] and div == 1


def claim(**kw):
    return {"paper": "A", "figure": "fig", "claim": "c", **kw}


@pytest.mark.parametrize("b_final, expected", [
    ([0.5, 0.51, 0.52], "holds"),
    ([0.9, 0.91, 0.92], "does not hold: reversed against B (a)"),
    ([0.80, 0.82, 0.81], "does not hold: not separated"),
])
def test_better_verdicts(b_final, expected):
    res = results(fig=[rows("fig", "a", "A", [0.80, 0.81, 0.82]), rows("fig", "a", "B", b_final)])
    md = render_claims([claim(check="better", method="A", others=["B"], panels=["a"])], res)
    assert f"**{expected}**" in md


def test_better_mixed_names_the_pairs():
    res = results(fig=[rows("fig", "a", "A", [0.80, 0.81, 0.82]), rows("fig", "a", "B", [0.5, 0.5, 0.51]),
                       rows("fig", "a", "C", [0.80, 0.82, 0.81])])
    md = render_claims([claim(check="better", method="A", others=["B", "C"], panels=["a"])], res)
    assert "**holds only against B (a); not separated from C (a)**" in md


def test_threshold_checks_use_the_whole_interval():
    res = results(fig=[rows("fig", "", "SGD", [0.10, 0.12, 0.11]), rows("fig", "", "X", [0.25, 0.35, 0.30])])
    assert "**holds**" in render_claims([claim(check="at_most", methods=["SGD"], value=0.3)], res)
    # X's mean is 0.30 but its interval reaches above 0.3: not shown to stay below
    assert "**does not hold**" in render_claims([claim(check="at_most", methods=["X"], value=0.3)], res)
    assert "**holds except for X**" in render_claims([claim(check="at_most", methods=["SGD", "X"], value=0.3)], res)


def test_decreasing_and_close_to():
    res = results(fig=[rows("fig", "1", "A", [0.9, 0.91, 0.9]), rows("fig", "2", "A", [0.8, 0.81, 0.8]),
                       rows("fig", "3", "A", [0.7, 0.7, 0.71]),
                       rows("fig", "1", "C", [0.9, 0.91, 0.9]), rows("fig", "2", "C", [0.8, 0.81, 0.8]),
                       rows("fig", "3", "C", [0.8, 0.8, 0.81])])
    three = ["1", "2", "3"]
    assert "**holds**" in render_claims([claim(check="decreasing", method="A", panels=three)], res)
    assert "**does not hold**" in render_claims([claim(check="decreasing", method="C", panels=three)], res)
    assert "**holds except for C**" in render_claims([claim(check="decreasing", methods=["A", "C"], panels=three)], res)
    assert "**holds**" in render_claims([claim(check="close_to", method="A", panels=["1"], value=0.9, tol=0.02)], res)


@pytest.mark.parametrize("bad, needle", [
    (dict(figure="nofig"), "figure 'nofig' is not in the results"),
    (dict(method="Nobody"), "has no method 'Nobody'"),
    (dict(panels=["z"]), "has no panel 'z'"),
    (dict(check="bogus"), "unknown claim check 'bogus'"),
])
def test_claim_naming_what_the_results_lack_is_an_error(bad, needle):
    res = results(fig=[rows("fig", "a", "A", [0.8, 0.81]), rows("fig", "a", "B", [0.5, 0.5])])
    c = claim(check="better", method="A", others=["B"], panels=["a"])
    c.update(bad)
    with pytest.raises((ManifestError, ValueError), match=needle):
        render_claims([c], res)


def test_update_document_replaces_only_marked_blocks():
    text = "intro\n<!-- generated: table t -->\nold\n<!-- end generated -->\nprose\n"
    new = update_document(text, {("table", "t"): "| new |"})
    assert new == "intro\n<!-- generated: table t -->\n| new |\n<!-- end generated -->\nprose\n"
    assert update_document(new, {("table", "t"): "| new |"}) == new  # idempotent
    with pytest.raises(ManifestError, match="has no entry"):
        update_document(text, {})
    with pytest.raises(ManifestError, match="lacks the marker"):
        update_document(text, {("table", "t"): "x", ("table", "u"): "y"})


def test_least_drop_uses_per_seed_drops():
    res = results(fig=[rows("fig", "1", "A", [0.9, 0.91, 0.92]), rows("fig", "2", "A", [0.885, 0.905, 0.912]),
                       rows("fig", "1", "B", [0.9, 0.91, 0.92]), rows("fig", "2", "B", [0.6, 0.62, 0.61])])
    md = render_claims([claim(check="least_drop", method="A", others=["B"], panels=["1", "2"])], res)
    assert "**holds**" in md
    md = render_claims([claim(check="least_drop", method="B", others=["A"], panels=["1", "2"])], res)
    assert "**does not hold**" in md


def test_rows_table_shows_a_summary_csv_with_its_intervals():
    from byzsim.reproduction import render_rows_table

    res = Results({"fits": [{"method": "RSA", "q": "0", "slope": "1.0643", "slope_ci": "0.0747"},
                            {"method": "RSA", "q": "5", "slope": "0.5", "slope_ci": "0.3"}]}, "test")
    t = {"name": "f", "source": "fits", "where": {"q": 0}, "columns": ["method", "slope"],
         "ci": {"slope": "slope_ci"}, "digits": 2}
    assert render_rows_table(t, res).splitlines() == ["| method | slope |", "|---|---|", "| RSA | 1.06 ± 0.075 |"]
    with pytest.raises(ManifestError, match="no row of 'fits' matches"):
        render_rows_table({**t, "where": {"q": 7}}, res)
    with pytest.raises(ManifestError, match="no column"):
        render_rows_table({**t, "columns": ["nope"]}, res)


def test_large_means_are_shown_with_significant_digits():
    assert summary([2.0e7, 2.2e7]).format(3) == "2.1e+07 ± 1.27e+07"
    assert summary([1.0, 3.0]).format(2) == "2.00 ± 12.71"


def test_grouped_rows_table_means_over_seeds_and_dashes_a_quantity_a_group_lacks():
    from byzsim.reproduction import render_rows_table

    res = Results({"b": [{"method": "Byrd-SGD", "seed": "0", "measured": "1.0", "bound": "10"},
                         {"method": "Byrd-SGD", "seed": "1", "measured": "3.0", "bound": "10"},
                         {"method": "SGD", "seed": "0", "measured": "2.0", "bound": ""},
                         {"method": "SGD", "seed": "1", "measured": "2.0", "bound": "nan"}]}, "test")
    t = {"name": "g", "source": "b", "group": ["method"], "columns": ["method", "measured", "bound"], "digits": 3}
    lines = render_rows_table(t, res).splitlines()
    # two seeds: mean 2, t(0.975, 1) = 12.706 times the standard error 1
    assert lines[2] == f"| Byrd-SGD | {summary([1.0, 3.0]).format(3)} | {summary([10.0, 10.0]).format(3)} |"
    assert summary([1.0, 3.0]).half_width == pytest.approx(12.706, abs=1e-3)
    assert lines[3].endswith("| — |")
    res.rows["b"][0]["bound"] = ""  # empty in one row of a group only: an error, not a dropped seed
    with pytest.raises(ManifestError, match="'bound' is empty in 1 of the 2 rows"):
        render_rows_table(t, res)


def test_a_figure_the_manifest_will_run_is_pending_and_an_unknown_one_an_error(tmp_path):
    from byzsim.reproduction import render

    spec = tmp_path / "later.toml"
    spec.write_text('figure = "later"\n')
    res = results(fig=[rows("fig", "a", "A", [0.8, 0.81]), rows("fig", "a", "B", [0.5, 0.5])])
    manifest = {"specs": [str(spec)],
                "tables": [{"name": "t", "rows": ["A"], "columns": [{"figure": "later"}]}],
                "claims": [claim(figure="later", check="better", method="A", others=["B"])]}
    blocks = render(manifest, res)
    assert blocks[("table", "t")].startswith("*Not run yet: later")
    assert "**not run yet**" in blocks[("claims", "all")]
    manifest["claims"][0]["figure"] = "typo"
    with pytest.raises(ManifestError, match="figure 'typo' is not in the results"):
        render(manifest, res)


def test_script_args_fill_every_placeholder_and_name_an_unknown_one():
    from byzsim.reproduction import script_args

    sc = {"path": "s.py", "output": "o.csv", "args": ["--store", "{store}", "{output}", "{results}/x", "{figures}"]}
    assert script_args(sc, results="res", figures="fig", store="/st") == [
        "--store", "/st", str(Path("res") / "o.csv"), "res/x", "fig"]
    assert script_args({"path": "s.py", "output": "o.csv"}, results="r", figures="f", store="s") == [
        str(Path("r") / "o.csv")]
    with pytest.raises(ManifestError, match=r"unknown placeholder 'stor'.*\{store\}"):
        script_args({**sc, "args": ["{stor}"]}, results="r", figures="f", store="s")


def test_the_manifest_gives_bounds_vs_runs_the_reproduction_store_and_strict():
    from byzsim.reproduction import load_manifest, script_args

    root = Path(__file__).parents[1]
    manifest = load_manifest(root / "experiments" / "reproduction.toml")
    sc = next(s for s in manifest["scripts"] if s["path"].endswith("bounds_vs_runs.py"))
    args = script_args(sc, results="r", figures="f", store="/the/store")
    assert args[args.index("--store") + 1] == "/the/store" and "--strict" in args


TINY_SPEC = """
figure = "tiny_ref"
seeds = [0]
[base]
dataset = "digits"
n_clients = 4
n_byzantine = 0
method = "sgd"
batch_size = 8
rounds = 2
eval_every = 2
train_eval_samples = 0
[[lines]]
label = "SGD"
[reference]
label = "made by the script"
csv = "results/ref.csv"
column = "test_accuracy"
"""

MAKE_REF = """
import sys
from pathlib import Path
Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
Path(sys.argv[1]).write_text("test_accuracy\\n0.5\\n")
"""


def test_a_reference_csv_made_by_a_manifest_script_works_from_a_clean_results_dir(tmp_path):
    from byzsim.reproduction import main
    from byzsim.runs import load_spec

    spec, script = tmp_path / "tiny.toml", tmp_path / "make_ref.py"
    spec.write_text(TINY_SPEC)
    script.write_text(MAKE_REF)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'specs = ["{spec}"]\n[[scripts]]\npath = "{script}"\noutput = "ref.csv"\n')
    doc = tmp_path / "DOC.md"
    doc.write_text("no generated blocks\n")
    with pytest.raises(ValueError, match=r"reference\.csv"):  # what failed before any run
        load_spec(spec)
    args = ["--manifest", str(manifest), "--document", str(doc), "--results", str(tmp_path / "results"),
            "--figures", str(tmp_path / "figures"), "--store", str(tmp_path / "store"), "--jobs", "1"]
    assert main(args) == 0
    assert (tmp_path / "results" / "ref.csv").is_file() and (tmp_path / "results" / "tiny_ref.csv").is_file()
    assert (tmp_path / "figures" / "tiny_ref.png").is_file()
    assert load_spec(spec).reference.values == {"": 0.5}
