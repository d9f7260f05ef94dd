"""Reliability under real faults: every input checked before any work, a self-checking
store, clean write failures, concurrent sweeps that share work, killed parents."""

import pytest

from byzsim.cli import main
from byzsim.config import check_memory, estimate_bytes, make_config
from byzsim.runs import load_entries
from byzsim.runs.store import Store, canonical_config, canonical_json, config_key

TINY = ["rounds=2", "eval_every=1", "train_eval_samples=0"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BYZSIM_STORE", raising=False)
    return tmp_path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ------------------------------------------------------------------- validation first

#: inputs that were refused only once a run had started; (argv, field named, value shown)
LATE = [
    (["attack=gaussian", "attack_params.std=-1"], "attack_params.std", "-1"),
    (["batch_size=100000"], "batch_size", "100000"),
    (["dataset=synthetic", "dataset_params.n_classes=1"], "dataset_params.n_classes", "1"),
    (["dataset=synthetic", "dataset_params.n_samples=-5"], "dataset_params.n_samples", "-5"),
    (["dataset_params.test_fraction=2"], "dataset_params.test_fraction", "2"),
    (["dataset_params.seed=abc"], "dataset_params.seed", "'abc'"),
    (["model=mlp", "model_params.hidden=abc"], "model_params", "'abc'"),
    (["model=mlp", "model_params.hidden=[0]"], "model_params", "[0]"),
    (["partition_params.samples_per_client=-5"], "partition_params.samples_per_client", "-5"),
    (["partition_params.samples_per_client=1000"], "partition_params.samples_per_client", "1000"),
    (["partition=unbalanced", "partition_params.concentration=-1"], "partition_params.concentration", "-1"),
    (["attack=sign_flipping", "attack_params.c=abc"], "attack_params.c", "'abc'"),
    (["method=trimmed-mean", "aggregator_params.f=5"], "aggregator_params.f", "5"),
    (["method=trimmed-mean", "aggregator_params.f=-1"], "aggregator_params.f", "-1"),
    (["method=trimmed-mean", "aggregator_params.f=1.5"], "aggregator_params.f", "1.5"),
    (["method=trimmed-mean", "preaggregators=[{name=\"bucketing\",s=2}]", "aggregator_params.f=3"],
     "aggregator_params.f", "3"),
    (["model=mlp", "model_params.hidden=[100000000]"], "model_params", "100000000"),
]


@pytest.mark.parametrize("args,field,value", LATE, ids=[" ".join(a) for a, _, _ in LATE])
def test_bad_parameter_values_exit_2_before_any_work(args, field, value, here, capsys):
    assert main(["sweep", *TINY, *args, "--store", "st"]) == 2
    line = _one_error_line(capsys)
    assert f"'{field}" in line and value in line, line
    assert not (here / "st" / "runs").exists() and not (here / "st" / "failed").exists()


def test_f_is_checked_against_the_rows_that_reach_the_rule():
    ok = make_config(method="trimmed-mean", aggregator_params={"f": 4})  # n = 10: max_f = 4
    assert ok.aggregator_params["f"] == 4
    # bucketing s = 2 leaves 5 rows: max_f = 2
    make_config(method="trimmed-mean", preaggregators=[{"name": "bucketing", "s": 2}], aggregator_params={"f": 2})
    with pytest.raises(ValueError, match=r"'aggregator_params.f' = 3: expected an integer in \[0, 2\]"):
        make_config(method="trimmed-mean", preaggregators=[{"name": "bucketing", "s": 2}],
                    aggregator_params={"f": 3})


def test_memory_estimate_refuses_what_cannot_fit():
    small = make_config(dataset="digits", method="sgd")
    huge = make_config(dataset="digits", model="mlp", model_params={"hidden": [100_000_000]})
    assert 0 < estimate_bytes(small) < 50 * 2**20  # digits, softmax: a few MB
    assert estimate_bytes(huge) > 40 * 2**30  # d > 6.4e9 parameters
    check_memory(small, available=2**30)
    with pytest.raises(ValueError, match=r"'n_clients' = 10: the run needs at least .* MiB"):
        check_memory(small, available=2**20)  # a broken variant: nothing fits in 1 MiB


@pytest.mark.parametrize("args,what", [
    (["lr=0.1", "lr=0.2"], "'lr' given twice"),
    (["rounds=10", "rounds=20"], "'rounds' given twice"),
    (["seed=0,1", "seed=2"], "'seed' given twice"),
    (["seed=0,0"], "listed twice"),
    (["lr=1,1.0"], "listed twice"),
])
def test_duplicate_keys_and_grid_values_are_errors(args, what, here, capsys):
    assert main(["sweep", *TINY, *args, "--store", "st"]) == 2
    assert what in _one_error_line(capsys)


def test_true_and_one_are_different_grid_values():
    entries, _ = load_entries([], ["model=softmax", "model_params.bias=true,false", *TINY])
    assert len(entries) == 2


@pytest.mark.parametrize("opt", [["--jobs", "-5"], ["--jobs", "0"], ["--jobs", "two"],
                                 ["--scheduler-timeout", "-1"], ["--scheduler-timeout", "0"],
                                 ["--scheduler-timeout", "nan"]])
def test_jobs_and_timeouts_are_checked(opt, here, capsys):
    assert main(["sweep", *TINY, *opt, "--store", "st"]) == 2
    line = _one_error_line(capsys)
    assert opt[0] in line and opt[1] in line


# ------------------------------------------------------------------- store keys


def test_new_fields_at_their_neutral_value_keep_the_key(monkeypatch):
    import hashlib

    from byzsim import config as config_mod

    cfg = make_config(method="sgd", server_l2=0.0)
    before = config_key(cfg)
    old = canonical_config(cfg)
    # pretend server_l2 was added after store format 1 with the neutral value 0.0
    monkeypatch.setitem(config_mod.KEY_NEUTRAL_DEFAULTS, "server_l2", 0.0)
    now = canonical_config(cfg)
    assert "server_l2" not in now and {**now, "server_l2": 0.0} == old
    obj = {"store_format": 1, "config": {k: v for k, v in old.items() if k != "server_l2"}}
    assert config_key(cfg) == hashlib.sha256(canonical_json(obj).encode()).hexdigest() != before
    # a non-neutral value is part of the key, and a stored dict without the field reads back
    assert "server_l2" in canonical_config(make_config(method="sgd", server_l2=0.01))
    from byzsim.runs.store import config_from_dict

    assert config_from_dict(now) == cfg


# ------------------------------------------------------------------- self-checking store

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "store_v1"


def _sweep(*extra) -> list[str]:
    return ["sweep", *TINY, "method=sgd", "seed=0,1", "--store", "st", "--name", "s", *extra]


def _damage(path, how):
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "garble":
        path.write_bytes(b"{\"config\": ")
    elif how == "flip":  # still parses: only the checksum sees it
        text = path.read_text()
        path.write_text(text.replace("0.", "1.", 1))


@pytest.mark.parametrize("name,how", [("metrics.csv", "truncate"), ("config.json", "garble"),
                                      ("metrics.csv", "flip")])
def test_a_damaged_run_is_quarantined_reported_and_rerun(name, how, here, capsys):
    assert main(_sweep("-q")) == 0
    st = Store(here / "st")
    key = st.keys()[0]
    good = (st.run_dir(key) / "metrics.csv").read_bytes()
    assert "sha256" in (st.run_dir(key) / "COMPLETE").read_text()
    _damage(st.run_dir(key) / name, how)
    capsys.readouterr()
    assert main(["store", "verify", "--store", "st"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and key in out[0] and name in out[0]
    assert main(_sweep()) == 0
    err = capsys.readouterr().err
    assert err.count("failed its check") == 1 and "moved to" in err and "Traceback" not in err
    assert "2 runs: 1 ran, 1 already stored" in err
    assert (st.run_dir(key) / "metrics.csv").read_bytes() == good  # simulated again, same bytes
    (q,) = (here / "st" / "quarantine").iterdir()
    assert q.name.startswith(key) and (q / name).exists()  # kept, not deleted
    assert main(["store", "verify", "--store", "st"]) == 0


def test_figure_on_a_damaged_store_never_shows_a_traceback(here, capsys):
    assert main(_sweep("-q")) == 0
    st = Store(here / "st")
    k0, k1 = st.keys()
    _damage(st.run_dir(k0) / "metrics.csv", "truncate")
    (st.run_dir(k1) / "COMPLETE").write_text(f"{k1}\n")  # a run of the format without checksums
    _damage(st.run_dir(k1) / "config.json", "garble")
    capsys.readouterr()
    assert main(["figure", "--store", "st"]) == 2  # nothing left to plot: one clear line
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("failed its check") == 2 and "none of the runs" in err
    (here / "st" / "sweeps" / "s.json").write_text("{\"runs\": [")
    assert main(["figure", "--store", "st", "--sweep", "s"]) == 2
    line = _one_error_line(capsys)
    assert "s.json" in line and "unreadable" in line


def test_runs_without_checksums_stay_readable(tmp_path, capsys):
    import shutil

    shutil.copytree(FIXTURE / "store", tmp_path / "store")
    st = Store(tmp_path / "store")
    assert st.keys() and st.verify() == []
    assert all(st.get(k) is not None for k in st.keys())
    assert main(["store", "verify", "--store", str(tmp_path / "store")]) == 0
    # a broken variant of the check: a truncated old run is caught by parsing
    k = st.keys()[0]
    _damage(st.run_dir(k) / "metrics.csv", "truncate")
    assert [key for key, _ in st.verify()] == [k]


# ------------------------------------------------------------------- write failures


def _no_tmp_left(root):
    return [p for p in root.rglob("*") if p.name.startswith((".tmp-", ".old-"))] == []


@pytest.mark.parametrize("err", [28, 30, 13])  # ENOSPC, EROFS, EACCES
def test_a_failing_write_is_one_line_and_keeps_what_is_stored(err, here, capsys, monkeypatch):
    import errno
    import os

    from byzsim.runs import store as store_mod

    assert main(_sweep("-q")) == 0  # two runs stored
    st = Store(here / "st")
    before = {k: (st.run_dir(k) / "metrics.csv").read_bytes() for k in st.keys()}
    real = store_mod._write_file

    def failing(path, data):
        if path.name == "metrics.csv":  # the next run's first file
            raise OSError(err, os.strerror(err), str(path))
        real(path, data)

    monkeypatch.setattr(store_mod, "_write_file", failing)
    capsys.readouterr()
    code = main(["sweep", *TINY, "method=sgd", "seed=0,1,2", "--store", "st", "-q"])
    line = _one_error_line(capsys)
    assert code == 4 and "cannot write to the result store st:" in line
    assert os.strerror(err) in line and errno.errorcode[err] in line and "intact" in line
    monkeypatch.undo()
    st = Store(here / "st")
    assert {k: (st.run_dir(k) / "metrics.csv").read_bytes() for k in st.keys()} == before
    assert st.verify() == [] and _no_tmp_left(here / "st")


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_store_is_one_line(here, capsys):
    import os

    assert main(_sweep("-q")) == 0
    for d in (here / "st", here / "st" / "runs", here / "st" / "failed", here / "st" / "sweeps"):
        if d.exists():
            os.chmod(d, 0o555)
    try:
        code = main(["sweep", *TINY, "method=sgd", "seed=5", "--store", "st", "-q"])
        line = _one_error_line(capsys)
        assert code == 4 and "Permission denied" in line
    finally:
        for d in (here / "st", here / "st" / "runs", here / "st" / "failed", here / "st" / "sweeps"):
            if d.exists():
                os.chmod(d, 0o755)
    assert len(Store(here / "st").keys()) == 2 and _no_tmp_left(here / "st")


# ------------------------------------------------------------------- claims


def test_claims_are_exclusive_and_stale_ones_are_released(tmp_path, monkeypatch):
    import json
    import os
    import socket
    import subprocess
    import sys

    st = Store(tmp_path)
    assert st.claim("k") and st.claim_owner("k")["pid"] == os.getpid()
    assert not st.claim("k")  # held (by this live process)
    st.release("k")
    assert st.claim_owner("k") is None and st.claim("k")
    st.release("k")
    # a claim of a process that has exited on this host is stale: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (st.claims_dir / "d").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": 0}))
    assert st.claim_owner("d") is None and st.claim("d")
    # another host's claim is live until the timeout
    (st.claims_dir / "h").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    assert st.claim_owner("h") is not None and not st.claim("h")
    monkeypatch.setattr(Store, "CLAIM_TIMEOUT", 0.0)
    assert st.claim("h")


# ------------------------------------------------------------------- concurrent sweeps, killed parents


def _summary_counts(err: str) -> tuple[int, int]:
    """(ran, already stored) of a sweep's summary line."""
    import re

    m = re.search(r"(\d+) runs: (\d+) ran, (\d+) already stored", err)
    assert m, err
    return int(m.group(2)), int(m.group(3))


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_two_concurrent_sweeps_simulate_each_run_once(tmp_path):
    from test_cli import N_SLOW, _finished, _start_sweep

    store = tmp_path / "store"
    Store(store)  # created once: two processes creating one store at once is not the point here
    procs = [_start_sweep(store, tmp_path) for _ in range(2)]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs
    (ran1, stored1), (ran2, stored2) = map(_summary_counts, errs)
    assert ran1 + ran2 == N_SLOW, errs  # every run simulated exactly once between them
    assert ran1 + stored1 == N_SLOW and ran2 + stored2 == N_SLOW
    assert len(_finished(store)) == N_SLOW and Store(store).verify() == []
    assert not list((store / "claims").iterdir())  # every claim released
    assert not [p for p in store.rglob("*") if p.name.startswith((".tmp-", ".old-"))]


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killed_parent_takes_its_workers_with_it(tmp_path, capsys):
    import os
    import signal
    import time
    from pathlib import Path

    from test_cli import _children, _finished, _resume_and_check, _start_sweep, _wait_for_runs

    store = tmp_path / "store"
    proc = _start_sweep(store, tmp_path, "--jobs", "2")
    try:
        _wait_for_runs(store, 1, proc)
        children = [pid for pid, _ in _children(proc.pid)]
        assert any("loky" in cmd for _, cmd in _children(proc.pid)), _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    deadline = time.monotonic() + 10.0
    alive = children
    while alive and time.monotonic() < deadline:  # poll: the workers notice within a second
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()
                 and "Z" not in (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1] or ["Z"])]
        time.sleep(0.1)
    assert not alive, [Path(f"/proc/{p}/cmdline").read_bytes() for p in alive]
    leaked = [p for d in ("/dev/shm", "/tmp") if Path(d).is_dir()
              for p in Path(d).glob(f"joblib_memmapping_folder_{proc.pid}_*")]
    assert not leaked
    before = _finished(store)
    assert before  # and the rerun runs only what is missing (the dead sweep's claims are stale)
    _resume_and_check(store, before, capsys)


def test_a_component_declares_ranges_and_its_own_check():
    from byzsim.registry import ParameterValueError, Range, Registry

    reg = Registry("widget")

    def at_most_clients(params, cfg):
        if params.get("k", 1) > cfg["n"]:
            raise ParameterValueError("k", params["k"], f"expected at most n = {cfg['n']}")

    @reg.register("w", ranges={"x": Range(0, 1)}, check=at_most_clients)
    def w(*, x=0.5, k=1, name="a"):
        return x

    reg.check("w", {"x": 1, "k": 3}, field="widget_params")  # no context: ranges and types only
    with pytest.raises(ValueError, match=r"'widget_params.x' = 2: expected a finite number in \[0, 1\]"):
        reg.check("w", {"x": 2}, field="widget_params")
    with pytest.raises(ValueError, match=r"'widget_params.name' = 3: expected a string"):
        reg.check("w", {"name": 3}, field="widget_params")
    with pytest.raises(ValueError, match=r"'widget_params.k' = 3: expected at most n = 2"):
        reg.check("w", {"k": 3}, field="widget_params", context={"n": 2})
    with pytest.raises(ValueError, match="ranges for unknown parameter"):
        reg.register("v", ranges={"nope": Range()})(lambda *, x=1: x)
