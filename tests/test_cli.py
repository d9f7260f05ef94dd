"""The byzsim command: help, list, run, sweep, figure, bad input, interrupted sweeps."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from byzsim.cli import build_parser, main
from byzsim.runs.store import FORMAT_VERSION, Store
from byzsim.simulate import METRICS

SMALL = ["method=rsa", "dataset=synthetic", "dataset_params.n_samples=400", "dataset_params.n_test=100",
         "n_clients=6", "n_byzantine=1", "attack=gaussian", "attack_params.std=10", "rounds=30", "eval_every=10"]


def but(args, *keys):
    """``args`` without the overrides of ``keys`` (a key may be given once)."""
    return [a for a in args if a.split("=")[0] not in keys]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("cmd", [None, "run", "sweep", "figure", "experiment", "matrix", "list", "store", "bench"])
def test_help_shows_an_example(cmd, capsys):
    assert main([cmd, "--help"] if cmd else ["--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out and "byzsim" in out


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("methods:", "asynrsa-vr", "aggregators:", "geometric_median", "attacks:",
                 "std (required)", "partitions:", "datasets:", "models:", "fields:"):
        assert word in out
    assert main(["list", "attacks", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attacks"]["gaussian"]["required"] == ["std"]
    assert "same-value" in data["attacks"]["same_value"]["aliases"]
    assert main(["list", "atacks"]) == 2
    assert "did you mean 'attacks'" in capsys.readouterr().err


def test_run_prints_and_caches(here, capsys):
    assert main(["run", *SMALL, "--csv", "m.csv"]) == 0
    cap = capsys.readouterr()
    assert "test_accuracy" in cap.out and len(cap.out.strip().splitlines()) == 5
    assert (here / "m.csv").read_text().startswith("round,test_accuracy")
    assert len(Store(here / "results/store").keys()) == 1
    assert main(["run", *SMALL]) == 0
    assert "stored before" in capsys.readouterr().err
    assert main(["run", *SMALL, "seed=0,1"]) == 2
    assert "use `byzsim sweep`" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["n_byzantin=1"], "did you mean 'n_byzantine'"),
    (["attack_params.sd=1"], "did you mean attack_params.std"),
    (["lr=[1,2"], "malformed override"),
    (["method=rsaa"], "did you mean 'rsa'"),
    (["nofile.toml"], "not found"),
])
def test_bad_input_exit_2(here, capsys, args, msg):
    assert main(["sweep", *but(SMALL, "method"), *args]) == 2
    assert msg in capsys.readouterr().err
    assert not (here / "results/store/runs").exists()


def test_store_of_other_format_is_refused(here, capsys):
    Store("st")
    (here / "st/STORE.json").write_text(json.dumps({"byzsim_store_format": FORMAT_VERSION + 7}))
    assert main(["sweep", *SMALL, "--store", "st"]) == 2
    assert "store format version" in capsys.readouterr().err
    assert not (here / "st/runs").exists()


def test_sweep_failures_diverged_exit_code_and_figure(here, capsys):
    args = ["method=sgd", "dataset=synthetic", "n_clients=6", "n_byzantine=1", "attack=same_value",
            "attack_params.c=1e308,1e4", "lr=1.0", "partition=iid,by_class", "rounds=40", "eval_every=10"]
    assert main(["sweep", *args, "--name", "mixed"]) == 1
    err = capsys.readouterr().err
    assert "4 runs: 2 ran, 0 already stored, 2 failed, 1 diverged" in err
    assert err.count("failed: ") == 2 and "diverged: " in err
    assert main(["sweep", *args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("stored ") == 2 and out.count("failed-before") == 2
    assert main(["figure", "--metric", "train_loss"]) == 0  # the most recent sweep
    rows = (here / "results/mixed.csv").read_text().splitlines()
    assert rows[0] == "figure,panel,method,attack,seed,round,test_accuracy,train_loss,distance,diverged"
    assert any(r.endswith(",1") for r in rows[1:]) and any(r.endswith(",0") for r in rows[1:])
    assert (here / "figures/mixed.png").stat().st_size > 1000 and (here / "figures/mixed.pdf").exists()


def test_figure_from_overrides_and_errors(here, capsys):
    assert main(["sweep", *but(SMALL, "method"), "method=rsa,asynrsa-vr", "seed=0,1", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["figure", *but(SMALL, "method"), "method=rsa,asynrsa-vr", "seed=0,1", "--out", "f/x", "--csv", "x.csv",
                 "--metric", "distance", "--band", "std"]) == 0
    assert (here / "f/x.png").exists() and (here / "f/x.pdf").exists()
    text = (here / "x.csv").read_text()
    assert ",rsa," in text and ",asynrsa-vr," in text
    assert main(["figure", *SMALL, "seed=5"]) == 2
    assert "none of the runs is in the store" in capsys.readouterr().err
    assert main(["figure", "--sweep", "nope"]) == 2
    assert "no sweep named 'nope'" in capsys.readouterr().err


def test_progress_flags(here, capsys):
    assert main(["sweep", *SMALL, "seed=0,1"]) == 0
    err = capsys.readouterr().err
    assert "rounds/s" not in err and "2 runs: 2 ran" in err  # not a terminal: summary only
    assert main(["sweep", *SMALL, "seed=2,3", "--progress"]) == 0
    assert "rounds/s" in capsys.readouterr().err
    assert main(["sweep", *SMALL, "seed=4", "--progress", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- interruptions

SLOW = ["method=rsa", "dataset=synthetic", "dataset_params.n_samples=400", "dataset_params.n_test=100",
        "n_clients=8", "n_byzantine=2", "attack=gaussian", "attack_params.std=10", "rounds=2000",
        "eval_every=500", "seed=range(6)"]
N_SLOW = 6


def _sweep_cmd(store, *extra):
    return [sys.executable, "-m", "byzsim", "sweep", *SLOW, "--store", str(store), "--name", "slow",
            "--replicas", "1", *extra]  # one run per task: the interruption lands between runs


def _start_sweep(store, cwd, *extra) -> subprocess.Popen:
    """``python -m byzsim sweep`` of :data:`SLOW` on ``store`` in a new process."""
    return subprocess.Popen(_sweep_cmd(store, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=cwd)


def _env():
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _finished(store: Path) -> dict:
    """{key: (inode, mtime_ns) of metrics.csv} of every finished run, checking each is whole."""
    runs = store / "runs"
    out = {}
    if not runs.is_dir():
        return out
    for d in runs.iterdir():
        if d.name.startswith("."):
            continue
        assert (d / "COMPLETE").is_file(), f"run directory without completion marker: {d}"
        meta = json.loads((d / "config.json").read_text())
        lines = (d / "metrics.csv").read_text().splitlines()
        assert len(lines) == 1 + 2000 // 500 + 1 and meta["key"] == d.name
        st = (d / "metrics.csv").stat()
        out[d.name] = (st.st_ino, st.st_mtime_ns)
    return out


def _wait_for_runs(store: Path, n: int, proc, timeout=90.0) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        runs = store / "runs"
        if runs.is_dir() and sum((d / "COMPLETE").exists() for d in runs.iterdir()
                                 if not d.name.startswith(".")) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for finished runs")


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((int(p.name), (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _resume_and_check(store: Path, before: dict, capsys) -> None:
    """The next invocation (here in-process) lists and then runs only what is missing."""
    args = ["sweep", *SLOW, "--store", str(store), "--name", "slow"]
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    assert f"# {N_SLOW} runs, {N_SLOW - len(before)} to run, {len(before)} stored" in capsys.readouterr().err
    assert main(args) == 0
    assert f"{N_SLOW} runs: {N_SLOW - len(before)} ran, {len(before)} already stored" in capsys.readouterr().err
    after = _finished(store)
    assert len(after) == N_SLOW
    for k, v in before.items():
        assert after[k] == v  # finished runs were not rewritten


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_sigint_mid_sweep_then_resume(tmp_path, capsys):
    store = tmp_path / "store"
    proc = _start_sweep(store, tmp_path, "--jobs", "2")
    try:
        _wait_for_runs(store, 2, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err
    before = _finished(store)
    assert 2 <= len(before) < N_SLOW
    assert not [p for p in (store / "runs").iterdir() if p.name.startswith(".")]  # no temporary left
    _resume_and_check(store, before, capsys)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_sigkill_worker_then_resume(tmp_path, capsys):
    store = tmp_path / "store"
    proc = _start_sweep(store, tmp_path, "--jobs", "2")
    try:
        _wait_for_runs(store, 2, proc)
        workers = [pid for pid, cmd in _children(proc.pid) if "loky" in cmd and "resource_tracker" not in cmd]
        assert workers, _children(proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert "worker process died" in err and "run the same command again" in err
    before = _finished(store)
    assert 2 <= len(before) < N_SLOW
    _resume_and_check(store, before, capsys)


def test_python_dash_m_entry_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "byzsim", "--version"], capture_output=True, text=True,
                         env=_env(), timeout=60)
    assert res.returncode == 0 and re.match(r"byzsim \d", res.stdout)


def test_parser_builds():
    assert build_parser().prog == "byzsim"


def test_unreachable_scheduler_exit_3(here, capsys):
    pytest.importorskip("distributed", reason="dask[distributed] not installed (optional extra byzsim[dask])")
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert main(["sweep", *SMALL, "--scheduler", f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "1"]) == 3
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


# --------------------------------------------------------------------------- the front door


def _default_config(**fields):
    from byzsim.config import make_config

    try:
        return make_config(**fields)
    except ValueError as e:  # a config layer without defaults for a bare run
        pytest.skip(f"make_config() without a method has no default config: {e}")


@pytest.mark.slow
def test_bare_run_runs_the_default_config(here, capsys):
    cfg = _default_config()
    assert main(["run"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].split() == list(METRICS)
    assert f"# {cfg.method} on {cfg.dataset}: ok" in out.err


def test_run_takes_the_default_for_every_field_not_given(here, capsys):
    cfg = _default_config(rounds=4, eval_every=2)
    assert main(["run", "rounds=4", "eval_every=2", "--no-store"]) == 0
    out = capsys.readouterr()
    assert [int(line.split()[0]) for line in out.out.splitlines()[1:]] == [0, 2, 4]
    assert f"# {cfg.method} on {cfg.dataset}: ok" in out.err


@pytest.mark.parametrize("args, field", [(["method=rsa", "lr=abc"], "lr"), (["method=rsa", "rounds=-1"], "rounds")])
def test_run_bad_field_is_one_line_naming_it(here, args, field):
    out = subprocess.run([sys.executable, "-m", "byzsim", "run", *args], capture_output=True, text=True)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and f"'{field}'" in out.stderr
