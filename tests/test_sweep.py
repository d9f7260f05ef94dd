"""Sweeps: override parsing, grid expansion, validation, execution, resume, determinism."""

import io
import math
import socket
import time

import pytest

from byzsim.runs import (
    OverrideError, Progress, RunEntry, Store, SweepError, config_key, entries_from_dicts, expand_grid,
    load_entries,
)
from byzsim.runs.execute import execute
from byzsim.runs.spec import parse_override, parse_value, set_path

# tiny, fast runs that need no scikit-learn import in worker processes
BASE = dict(
    method="rsa", dataset="synthetic", dataset_params={"n_samples": 400, "n_test": 100},
    n_clients=6, n_byzantine=1, attack="gaussian", attack_params={"std": 10.0},
    rounds=30, eval_every=10,
)


def grid(**over):
    from byzsim.runs import parse_overrides

    ovs = parse_overrides(f"{k}={v}" for k, v in over.items())
    return entries_from_dicts(expand_grid(BASE, ovs))


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, value", [
    ("0.1", 0.1), ("3", 3), ("1e-3", 1e-3), (".5", 0.5), ("true", True), ("rsa", "rsa"),
    ("same-value", "same-value"), ("[1, 2]", [1, 2]), ('"a, b"', "a, b"), ("inf", math.inf),
    ("{std = 100.0}", {"std": 100.0}), ("null", None),
])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_parse_override_grid_and_nesting():
    o = parse_override("seed=0,1,2")
    assert o.path == ("seed",) and o.values == (0, 1, 2) and o.is_grid
    o = parse_override("attack_params.std=100")
    assert o.path == ("attack_params", "std") and o.values == (100,)
    o = parse_override("byzantine_indices=[1,2]")
    assert o.values == ([1, 2],) and not o.is_grid
    o = parse_override("byzantine_indices=[1,2],[3,4]")
    assert o.values == ([1, 2], [3, 4])
    assert parse_override("seed=range(3)").values == (0, 1, 2)
    assert parse_override("seed=range(1,7,2)").values == (1, 3, 5)
    assert parse_override("method=rsa,asynrsa-vr").values == ("rsa", "asynrsa-vr")
    assert parse_override('label="x,y"').values == ("x,y",)


@pytest.mark.parametrize("bad, msg", [
    ("lr", "expected key=value"), ("=1", "bad key"), ("lr=", "empty value"),
    ("lr=[1,2", "unclosed"), ("lr=1]", "unbalanced"), ("+lr=1", "only key=value"),
    ("a..b=1", "bad key"), ("lr=$x", "cannot read"), ("seed=range(a)", "range"),
    ("seed=range(0)", "empty"), ("lr=0.1,", "empty value"),
])
def test_malformed_overrides(bad, msg):
    with pytest.raises(OverrideError, match=msg):
        parse_override(bad)


def test_expand_grid_is_a_cartesian_product():
    from byzsim.runs import parse_overrides

    ds = expand_grid({"a": 1, "p": {"x": 0}}, parse_overrides(["a=1,2", "p.x=3,4,5", "p.y=7"]))
    assert len(ds) == 6
    assert ds[0] == {"a": 1, "p": {"x": 3, "y": 7}} and ds[-1] == {"a": 2, "p": {"x": 5, "y": 7}}


def test_set_path_refuses_non_table():
    with pytest.raises(OverrideError, match="not a table"):
        set_path({"lr": 0.1}, ("lr", "x"), 1)


def test_unknown_field_uses_make_config_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'n_byzantine'"):
        load_entries([], ["n_byzantin=2"])
    with pytest.raises(ValueError, match="did you mean 'attack_params'"):
        load_entries([], ["method=rsa", "atack_params.std=1"])


def test_unknown_values_and_parameters_are_refused_before_running():
    with pytest.raises(ValueError, match="did you mean 'rsa'"):
        load_entries([], ["method=rsaa"])
    with pytest.raises(ValueError, match=r"no parameter 'sd' \(did you mean attack_params.std\?\)"):
        load_entries([], ["method=rsa", "attack=gaussian", "attack_params.sd=1"])
    with pytest.raises(ValueError, match="needs parameter"):
        load_entries([], ["method=rsa", "attack=gaussian"])
    with pytest.raises(ValueError, match="model 'softmax' has no parameter 'biass'"):
        load_entries([], ["method=rsa", "model_params.biass=true"])
    with pytest.raises(ValueError, match="not a table"):
        load_entries([], ["method=rsa", "lr=0.1", "lr.x=1"])


def test_toml_files_grid_and_overrides(tmp_path):
    f = tmp_path / "base.toml"
    f.write_text(
        'method = "rsa"\ndataset = "synthetic"\nrounds = 10\neval_every = 5\n'
        "[grid]\nlr = [0.01, 0.1]\nseed = [0, 1]\n"
    )
    entries, _ = load_entries([f], [])
    assert len(entries) == 4
    entries, _ = load_entries([f], ["lr=0.5", "penalty=0.1,0.2,0.3"])
    assert len(entries) == 6 and {e.config.lr for e in entries} == {0.5}
    bad = tmp_path / "bad.toml"
    bad.write_text('metod = "rsa"\n')
    with pytest.raises(ValueError, match="did you mean 'method'"):
        load_entries([bad], [])
    with pytest.raises(FileNotFoundError):
        load_entries([tmp_path / "missing.toml"], [])


def test_duplicate_configs_run_once():
    # two spellings of one value make one config: it runs once
    entries, _ = load_entries([], ["method=rsa", "dataset=synthetic", "p=inf,Infinity"])
    assert len(entries) == 1
    with pytest.raises(ValueError, match="listed twice"):  # the same value twice is a typo
        load_entries([], ["method=rsa", "dataset=synthetic", "lr=1,1.0"])


# --------------------------------------------------------------------------- execution


def test_execute_stores_skips_and_forces(tmp_path):
    s = Store(tmp_path)
    entries = grid(seed="0,1")
    r1 = execute(entries, s)
    assert (r1.ran, r1.skipped, r1.ok) == (2, 0, True)
    texts = {e.key: s.get(e.key).metrics_text() for e in entries}
    r2 = execute(entries, s)
    assert (r2.ran, r2.skipped) == (0, 2)
    r3 = execute(entries[:1], s, force=True)
    assert r3.ran == 1
    assert {e.key: s.get(e.key).metrics_text() for e in entries} == texts  # deterministic rerun


def test_failing_run_is_recorded_and_sweep_continues(tmp_path):
    s = Store(tmp_path)
    entries = grid(partition="iid,by_class", seed="0,1")  # by_class: 6 clients, 4 classes raises when run
    rep = execute(entries, s)
    assert rep.ran == 2 and len(rep.failures) == 2 and not rep.ok
    for o in rep.failures:
        assert not s.has(o.entry.key)
        assert "by_class" in o.error and "by_class" in s.failure(o.entry.key)["error"]
    assert "2 failed" in rep.summary()


def test_diverged_run_is_stored_with_flag(tmp_path):
    s = Store(tmp_path)
    entries = entries_from_dicts([dict(method="sgd", dataset="synthetic", n_clients=6, n_byzantine=1,
                                       attack="same_value", attack_params={"c": 1e308}, lr=1.0,
                                       rounds=40, eval_every=10)]) + grid()
    rep = execute(entries, s)
    assert rep.ran == 2 and rep.ok and len(rep.diverged) == 1
    r = s.get(entries[0].key)
    assert r.diverged and r.diverged_round is not None and len(r.columns()["round"]) >= 1
    assert not s.get(entries[1].key).diverged


def _metrics(store, entries):
    return {e.key: (store.run_dir(e.key) / "metrics.csv").read_bytes() for e in entries}


@pytest.fixture(scope="module")
def serial_reference(tmp_path_factory):
    """A small sweep run serially: the reference for the parallel executors."""
    entries = grid(method="rsa,byrd-sgd", seed="0,1")
    s = Store(tmp_path_factory.mktemp("serial"))
    assert execute(entries, s).ran == 4
    return entries, _metrics(s, entries)


def test_joblib_two_workers_byte_identical_to_serial(tmp_path, serial_reference):
    entries, ref = serial_reference
    s = Store(tmp_path)
    rep = execute(entries, s, jobs=2)
    assert rep.ran == 4 and rep.ok
    assert _metrics(s, entries) == ref


def test_dask_cluster_byte_identical_to_serial(tmp_path, serial_reference):
    pytest.importorskip("distributed", reason="dask[distributed] not installed (optional extra byzsim[dask])")
    from distributed import LocalCluster

    entries, ref = serial_reference
    # a real scheduler and workers talking tcp on loopback; the workers run in-process
    # (processes=False) to keep the test fast.  Two of them: with a single worker thread
    # joblib's Dask backend would run every task in this process, not on the cluster.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=None, silence_logs=50) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        s = Store(tmp_path)
        rep = execute(entries, s, scheduler=cluster.scheduler_address, scheduler_timeout=20)
    assert rep.ran == 4 and rep.ok
    assert _metrics(s, entries) == ref


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    pytest.importorskip("distributed", reason="dask[distributed] not installed (optional extra byzsim[dask])")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    s = Store(tmp_path)
    t = time.perf_counter()
    with pytest.raises(SweepError, match="cannot reach the Dask scheduler"):
        execute(grid(), s, scheduler=f"tcp://127.0.0.1:{port}", scheduler_timeout=1.0)
    assert time.perf_counter() - t < 15
    assert s.keys() == []


def test_scheduler_without_dask_installed(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_dask(name, *a, **kw):
        if name.startswith(("distributed", "dask")):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(SweepError, match=r"byzsim\[dask\]"):
        execute(grid(), Store(tmp_path), scheduler="tcp://127.0.0.1:1")


def test_bad_jobs(tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        execute(grid(), Store(tmp_path), jobs=0)


# --------------------------------------------------------------------------- progress


def test_progress_line_and_quiet():
    buf = io.StringIO()
    p = Progress(label="t", enabled=True, stream=buf, interval_pipe=0.0)
    p.start(total=4, cached=1, rounds_to_run=300)
    p.finished(100)
    p.finished(100, diverged=True)
    p.finished(0, failed=True)
    p.close()
    out = buf.getvalue()
    assert "[t] 4/4 runs (1 stored before, 1 diverged, 1 failed)" in out
    assert "rounds/s" in out and "ETA" in out and "\r" not in out
    buf = io.StringIO()
    p = Progress(label="t", enabled=False, stream=buf)
    p.start(2, 0, 10)
    p.finished(10)
    p.close()
    assert buf.getvalue() == ""


def test_progress_is_rate_limited_when_not_a_terminal():
    buf = io.StringIO()
    p = Progress(label="t", enabled=True, stream=buf, interval_pipe=3600)
    p.start(total=100, cached=0, rounds_to_run=100)
    for _ in range(50):
        p.finished(1)
    assert len(buf.getvalue().splitlines()) == 1  # only the first line within the interval
    for _ in range(50):
        p.finished(1)
    assert len(buf.getvalue().splitlines()) == 2  # and the last one


def test_run_entry_key():
    e = grid()[0]
    assert isinstance(e, RunEntry) and e.key == config_key(e.config)


def test_failed_forced_rerun_keeps_the_stored_result(tmp_path, monkeypatch):
    import byzsim.runs.execute as sw

    s = Store(tmp_path)
    entries = grid()
    execute(entries, s)
    before = s.get(entries[0].key).metrics_text()
    monkeypatch.setattr(sw, "_simulate", lambda i, cfg, **kw: (i, {"ok": False, "error": "RuntimeError: x"}))
    rep = execute(entries, s, force=True)
    assert len(rep.failures) == 1 and rep.ran == 0
    assert s.get(entries[0].key).metrics_text() == before


def test_runs_stored_by_another_version_are_reported(tmp_path):
    import json

    s = Store(tmp_path)
    entries = grid()
    execute(entries, s)
    meta_path = s.run_dir(entries[0].key) / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["byzsim_version"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))
    from byzsim.runs.store import _marker_text  # seal the edit, as a store of that version would

    d = meta_path.parent
    (d / "COMPLETE").write_text(_marker_text(entries[0].key, {n: (d / n).read_bytes()
                                                              for n in ("metrics.csv", "config.json")}))
    rep = execute(entries, s)
    assert rep.skipped == 1 and rep.other_version == 1
    assert "another byzsim version" in rep.summary()


def test_runs_package_has_no_import_cycle():
    """Every import between the modules of byzsim.runs (function-local ones included)
    goes one way: the graph is acyclic."""
    import ast
    from pathlib import Path

    import byzsim.runs

    root = Path(byzsim.runs.__file__).parent
    mods = {p.stem for p in root.glob("*.py")} - {"__init__"}
    graph = {}
    for m in mods:
        tree = ast.parse((root / f"{m}.py").read_text())
        graph[m] = {n.module for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module in mods}
    done: set = set()

    def visit(m, path):
        assert m not in path, f"import cycle: {' -> '.join([*path, m])}"
        if m not in done:
            for d in graph[m]:
                visit(d, [*path, m])
            done.add(m)

    for m in graph:
        visit(m, [])
    assert graph["execute"] >= {"spec", "store"}  # the check sees the imports


# --------------------------------------------------------------------------- replica batches


def test_runs_of_equal_structure_go_as_replica_batches_with_the_metrics_of_runs_alone(tmp_path):
    entries = grid(seed="0,1,2,3", lr="0.01,0.02") + grid(method="asynrsa-vr", seed="0,1")
    batched, alone = Store(tmp_path / "b"), Store(tmp_path / "a")
    rb = execute(entries, batched, replicas=4)
    ra = execute(entries, alone, replicas=1)
    assert rb.ran == ra.ran == len(entries) and rb.ok and ra.ok
    sizes = [batched.get(e.key).meta["info"]["replicas"] for e in entries]
    assert max(sizes) == 4 and sizes[-1] == 2  # rsa: 8 runs in batches of 4; asynrsa-vr: 2
    assert {alone.get(e.key).meta["info"]["replicas"] for e in entries} == {1}
    for e in entries:
        assert batched.get(e.key).metrics_text() == alone.get(e.key).metrics_text()


def test_plan_gives_every_worker_a_batch_and_checks_the_budget():
    from byzsim.runs.execute import plan

    entries = grid(seed="0,1,2,3,4,5")
    assert [len(b) for b in plan(entries, jobs=1, replicas=8)] == [6]
    assert sorted(len(b) for b in plan(entries, jobs=2, replicas=8)) == [3, 3]
    assert [len(b) for b in plan(entries, jobs=1, replicas=1)] == [1] * 6
    assert sorted(i for b in plan(entries, jobs=4) for i in b) == list(range(6))
    with pytest.raises(ValueError, match="memory budget of 1000 bytes is smaller than one replica"):
        plan(entries, memory_bytes=1000)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="invalid replicas"):
            plan(entries, replicas=bad)


def test_a_failing_batch_is_rerun_run_by_run(tmp_path, monkeypatch):
    import byzsim.simulate as sim

    real = sim.run_batch

    def boom(cfgs, **kw):  # a batch fails, the runs alone (batches of one) work
        if len(cfgs) > 1:
            raise RuntimeError("batch failed")
        return real(cfgs, **kw)

    monkeypatch.setattr(sim, "run_batch", boom)
    entries = grid(seed="0,1,2")
    rep = execute(entries, Store(tmp_path), replicas=3)
    assert rep.ran == 3 and rep.ok


@pytest.mark.parametrize("flag, value, needle", [
    ("--replicas", "0", "expected an integer >= 1"),
    ("--replicas", "two", "expected an integer >= 1"),
    ("--memory-budget", "-2G", "expected a positive size"),
    ("--memory-budget", "lots", "e.g. 2G"),
])
def test_bad_batching_options_exit_2_before_any_work(tmp_path, capsys, flag, value, needle):
    from byzsim.cli import main

    code = main(["sweep", "method=rsa", "dataset=synthetic", "rounds=2", "--store", str(tmp_path), f"{flag}={value}"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and needle in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_budget_below_one_replica_is_refused_before_any_work(tmp_path, capsys):
    from byzsim.cli import main

    code = main(["sweep", "method=rsa", "dataset=synthetic", "rounds=2", "seed=0,1", "--store", str(tmp_path),
                 "--memory-budget", "1K", "--quiet"])
    assert code == 2 and "smaller than one replica" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
