"""Result store: keys, atomic run directories, completion markers, format versions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from byzsim.runs import store as st
from byzsim.config import make_config
from byzsim.runs.store import (
    FORMAT_VERSION, Store, StoreError, StoreFormatError, config_key, format_metrics_csv,
    parse_metrics_csv,
)


def cfg(**kw):
    base = dict(method="sgd", dataset="synthetic", n_clients=4, rounds=10, eval_every=5)
    return make_config(**{**base, **kw})


def cols(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return {
        "round": np.arange(n, dtype=np.int64) * 5,
        "test_accuracy": rng.random(n),
        "train_loss": rng.random(n) * 3,
        "distance": np.full(n, np.nan),
    }


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_key_is_stable_and_canonical():
    a, b = cfg(lr=1), cfg(lr=1.0)
    assert config_key(a) == config_key(b)  # int vs float of a float field
    assert config_key(a) == config_key(cfg(lr=1.0))
    assert config_key(a) != config_key(cfg(lr=0.5))
    assert config_key(a) != config_key(cfg(lr=1.0, seed=1))
    assert len(config_key(a)) == 64 and all(c in "0123456789abcdef" for c in config_key(a))


def test_key_depends_on_format_version(monkeypatch):
    k = config_key(cfg())
    monkeypatch.setattr(st, "FORMAT_VERSION", FORMAT_VERSION + 1)
    assert config_key(cfg()) != k


def test_metrics_csv_roundtrip_is_exact_and_deterministic():
    c = cols()
    c["train_loss"][1] = np.inf
    text = format_metrics_csv(c)
    assert text == format_metrics_csv({k: v.copy() for k, v in c.items()})
    back = parse_metrics_csv(text)
    for k in c:
        np.testing.assert_array_equal(back[k], c[k])  # repr round-trips floats exactly
    assert text.splitlines()[0] == "round,test_accuracy,train_loss,distance"


def test_put_get_roundtrip(tmp_path):
    s = Store(tmp_path / "store")
    c = cfg()
    path = s.put(c, cols(), diverged=False, seconds=1.5, extra={"wall_seconds": 2.0})
    assert path == s.run_dir(config_key(c)) and s.has(config_key(c))
    r = s.get(config_key(c))
    assert r.config == c
    assert r.meta["byzsim_version"] and r.meta["numpy_version"] == np.__version__
    assert r.meta["seed"] == c.seed and r.meta["seconds"] == 1.5 and r.meta["diverged"] is False
    assert r.meta["store_format"] == FORMAT_VERSION
    np.testing.assert_array_equal(r.columns()["test_accuracy"], cols()["test_accuracy"])
    assert s.keys() == [config_key(c)]
    assert sorted(os.listdir(path)) == ["COMPLETE", "config.json", "metrics.csv"]


def test_diverged_flag_is_stored(tmp_path):
    s = Store(tmp_path)
    s.put(cfg(), cols(n=1), diverged=True, diverged_round=5)
    r = s.get(config_key(cfg()))
    assert r.diverged and r.diverged_round == 5


def test_directory_without_marker_is_not_finished_and_is_replaced(tmp_path):
    s = Store(tmp_path)
    c = cfg()
    d = s.run_dir(config_key(c))
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text("round,test_accuracy\n0,0.5\n")  # a torn write
    (d / "config.json").write_text("{")
    assert not s.has(config_key(c)) and s.get(config_key(c)) is None and s.keys() == []
    s.put(c, cols())
    assert s.has(config_key(c))
    np.testing.assert_array_equal(s.get(config_key(c)).columns()["round"], cols()["round"])


def test_temporary_directories_are_ignored_and_cleaned(tmp_path):
    s = Store(tmp_path)
    c = cfg()
    key = config_key(c)
    s.runs_dir.mkdir(parents=True, exist_ok=True)
    stale = s.runs_dir / f".tmp-{key}-{dead_pid()}-abcd1234"
    stale.mkdir()
    for name in ("metrics.csv", "config.json", "COMPLETE"):
        (stale / name).write_text("x")
    live = s.runs_dir / f".tmp-{key}-{os.getpid()}-abcd1234"
    live.mkdir()
    assert s.keys() == [] and not s.has(key)
    removed = s.clean_stale(min_age=0)
    assert stale in removed and not stale.exists() and live.exists()


def test_put_keeps_existing_result_unless_force(tmp_path):
    s = Store(tmp_path)
    c = cfg()
    s.put(c, cols(0))
    first = s.get(config_key(c)).metrics_text()
    s.put(c, cols(1))
    assert s.get(config_key(c)).metrics_text() == first
    s.put(c, cols(1), force=True)
    assert s.get(config_key(c)).metrics_text() == format_metrics_csv(cols(1))
    assert [p.name for p in s.runs_dir.iterdir()] == [config_key(c)]  # no leftovers


def test_failed_write_leaves_previous_result_and_no_partial(tmp_path, monkeypatch):
    s = Store(tmp_path)
    c = cfg()
    s.put(c, cols(0))
    before = s.get(config_key(c)).metrics_text()
    real = st._write_file

    def boom(path, data):
        if path.name == "COMPLETE":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(st, "_write_file", boom)
    with pytest.raises(st.StoreWriteError, match="disk full"):
        s.put(c, cols(1), force=True)
    assert s.get(config_key(c)).metrics_text() == before
    assert [p.name for p in s.runs_dir.iterdir()] == [config_key(c)]
    c2 = cfg(seed=3)
    with pytest.raises(st.StoreWriteError, match="disk full"):
        s.put(c2, cols(1))
    assert not s.has(config_key(c2)) and not s.run_dir(config_key(c2)).exists()


def test_interrupted_force_replacement_is_restored(tmp_path):
    s = Store(tmp_path)
    c = cfg()
    key = config_key(c)
    s.put(c, cols())
    os.rename(s.run_dir(key), s.runs_dir / f".old-{key}-{dead_pid()}-abcd1234")
    assert not s.has(key)
    s.clean_stale(min_age=0)
    assert s.has(key)


def test_failure_record_does_not_touch_result(tmp_path):
    s = Store(tmp_path)
    c = cfg()
    s.put(c, cols())
    before = s.get(config_key(c)).metrics_text()
    s.record_failure(c, "ValueError: boom", "tb")
    assert s.failure(config_key(c))["error"] == "ValueError: boom"
    assert s.get(config_key(c)).metrics_text() == before
    s.put(c, cols(), force=True)
    assert s.failure(config_key(c)) is None  # a success clears the failure


def test_other_format_version_is_refused(tmp_path):
    Store(tmp_path)
    (tmp_path / "STORE.json").write_text(json.dumps({"byzsim_store_format": FORMAT_VERSION + 1}))
    with pytest.raises(StoreFormatError, match="format version"):
        Store(tmp_path)


def test_non_store_directory_is_refused(tmp_path):
    (tmp_path / "something.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a byzsim result store"):
        Store(tmp_path)
    assert (tmp_path / "something.txt").read_text() == "mine"


def test_sweep_manifests(tmp_path):
    s = Store(tmp_path)
    s.write_sweep("a", {"runs": [{"key": "k"}]})
    s.write_sweep("b", {"runs": []})
    assert s.sweeps() == ["a", "b"]
    assert s.read_sweep("a")["runs"] == [{"key": "k"}]
    with pytest.raises(StoreError, match="stored sweeps: a, b"):
        s.read_sweep("c")
    with pytest.raises(ValueError):
        s.write_sweep("../x", {})


# --------------------------------------------------------------------------- a store written before

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "store_v1"


@pytest.fixture
def old_store(tmp_path):
    """A copy of ``tests/fixtures/store_v1``: a figure spec and a plain 2-run sweep, run and
    stored by byzsim 0.1.0 before the runs package existed (store format 1)."""
    import shutil

    shutil.copytree(FIXTURE, tmp_path / "fx")
    return tmp_path / "fx"


def test_store_written_before_the_runs_package_is_read(old_store, tmp_path):
    from byzsim.runs import load_spec, run_spec

    store = Store(old_store / "store")
    spec = load_spec(old_store / "old_store.toml")
    rows, report = run_spec(spec, results_dir=tmp_path / "res", store=store, quiet=True)
    assert (report.ran, report.skipped, len(report.failures)) == (0, 2, 0)
    assert (tmp_path / "res/old_store.csv").read_bytes() == (old_store / "old_store.csv").read_bytes()


def test_plain_sweep_stored_before_the_runs_package_is_found(old_store):
    from byzsim.runs import load_entries

    store = Store(old_store / "store")
    manifest = store.read_sweep("plain")
    entries, _ = load_entries([], manifest["command"][2:])
    assert [e.key for e in entries] == [r["key"] for r in manifest["runs"]]
    assert all(store.has(e.key) for e in entries)
