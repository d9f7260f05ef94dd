"""Plugins: a user's module registers components; every command and worker sees them."""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from byzsim import plugins as pl
from byzsim.cli import main
from byzsim.runs import Store, config_key, load_entries
from byzsim.runs.execute import execute

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TINY = ["family=gradient", "estimator=sgd", "dataset=synthetic", "dataset_params={n_samples=300, n_test=60}",
        "n_clients=6", "n_byzantine=1", "rounds=6", "eval_every=3"]

PLUGIN = '''
"""A test plugin."""
import numpy as np

from byzsim.aggregators import AGGREGATORS
from byzsim.attacks import ATTACKS

__version__ = "{version}"


@AGGREGATORS.register("{prefix}_first")
def first(z, mask=None):
    """The first row."""
    return np.asarray(z, dtype=float)[..., 0, :]


@ATTACKS.register("{prefix}_zero")
def zero(v, byzantine, rng):
    """Zeros."""
    return np.zeros(v.shape[:-2] + (int(byzantine.sum()), v.shape[-1]))


@AGGREGATORS.register("{prefix}_broken")
def broken(z, mask=None):
    """Always raises."""
    raise RuntimeError("this aggregator is broken")
'''


@pytest.fixture
def isolated(monkeypatch):
    """Plugins loaded by a test leave no trace: registries, loaded plugins and imported
    modules are restored afterwards."""
    regs = pl.registries()
    items = {k: dict(r._items) for k, r in regs.items()}
    path = list(sys.path)
    monkeypatch.setattr(pl, "_LOADED", {})
    monkeypatch.delenv(pl.ENV_VAR, raising=False)
    yield
    for k, r in regs.items():
        r._items.clear()
        r._items.update(items[k])
    for name in list(pl._LOADED):
        sys.modules.pop(name, None)
    sys.path[:] = path


def _write(tmp_path, name="tplug", prefix=None, version="1.0", body=PLUGIN):
    """A plugin module ``name`` registering ``<prefix>_first``, ``_zero``, ``_broken``
    (prefix: ``tp`` for ``tplug``, else the name: loky's workers outlive a test, and a
    name registered by an earlier test's plugin would be taken in them)."""
    prefix = prefix or ("tp" if name == "tplug" else name)
    d = tmp_path / "plugdir"
    d.mkdir(exist_ok=True)
    f = d / f"{name}.py"
    f.write_text(body.format(prefix=prefix, version=version))
    return f


def test_plugin_components_are_visible_listed_and_marked(tmp_path, isolated, capsys):
    f = _write(tmp_path)
    assert main(["list", "aggregators", "--plugin", str(f)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"tp_first \[plugin tplug\]", out)
    assert "[plugin" not in out.replace("tp_first [plugin tplug]", "").replace("tp_broken [plugin tplug]", "")
    assert main(["list", "--json"]) == 0  # loaded once per process; still listed
    cat = json.loads(capsys.readouterr().out)
    assert cat["attacks"]["tp_zero"]["plugin"] == "tplug" and "plugin" not in cat["attacks"]["gaussian"]
    assert cat["plugins"]["tplug"]["added"] == {"aggregators": ["tp_broken", "tp_first"], "attacks": ["tp_zero"]}
    assert cat["plugins"]["tplug"]["version"] == "1.0"


def test_store_key_has_the_plugin_version_and_source_only_when_used(tmp_path, isolated):
    builtin = dict(arg.split("=", 1) for arg in TINY)
    before, _ = load_entries([], [*TINY, "aggregator=mean"])
    f = _write(tmp_path)
    pl.load_plugin(str(f))
    after, _ = load_entries([], [*TINY, "aggregator=mean"])
    assert after[0].key == before[0].key == config_key(after[0].config)  # built-in only: today's key
    assert builtin  # (the same overrides)
    used, _ = load_entries([], [*TINY, "aggregator=tp_first"])
    assert [p.name for p in used[0].plugins] == ["tplug"]
    assert used[0].key != config_key(used[0].config)
    # nested names count too (an attack parameter naming a plugin aggregator)
    e, _ = load_entries([], [*TINY, "aggregator=mean", "attack=tp_zero"])
    assert [p.name for p in e[0].plugins] == ["tplug"]
    # editing the plugin (or its version) gives another key
    refs = [p.ref() for p in used[0].plugins]
    edited = dict(refs[0], sha256="0" * 64)
    assert config_key(used[0].config, [edited]) != used[0].key
    assert config_key(used[0].config, [dict(refs[0], version="1.1")]) != used[0].key


def test_plugin_runs_in_loky_workers_and_is_stored_with_its_provenance(tmp_path, isolated):
    f = _write(tmp_path, name="tplug_loky")  # a name of its own: loky's workers outlive a test
    store = tmp_path / "store"
    code = main(["sweep", *TINY, "aggregator=tplug_loky_first,mean", "attack=tplug_loky_zero", "--plugin", str(f),
                 "--jobs", "2", "--store", str(store), "--quiet", "--name", "plug"])
    assert code == 0
    s = Store(store)
    assert len(s.keys()) == 2
    metas = [s.get(k).meta for k in s.keys()]
    assert sorted(m["config"]["aggregator"] for m in metas) == ["mean", "tplug_loky_first"]
    assert all(m["plugins"][0]["name"] == "tplug_loky" and m["plugins"][0]["version"] == "1.0" for m in metas)
    assert s.read_sweep("plug")["plugins"] == [{"name": "tplug_loky", "root": str(f.parent)}]


def test_plugin_runs_in_dask_worker_processes(tmp_path, isolated):
    pytest.importorskip("distributed", reason="dask[distributed] not installed (optional extra byzsim[dask])")
    from distributed import LocalCluster

    f = _write(tmp_path, name="tplug_dask")
    pl.load_plugin(str(f))
    entries, _ = load_entries([], [*TINY, "aggregator=tplug_dask_first", "attack=tplug_dask_zero", "seed=0,1"])
    # workers in processes of their own: they have to import the plugin themselves (two
    # of them: with a single worker thread joblib would run the tasks in this process)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster:
        rep = execute(entries, Store(tmp_path / "s"), scheduler=cluster.scheduler_address, scheduler_timeout=30)
    assert rep.ran == 2 and rep.ok, [o.error for o in rep.failures]


def test_plugin_failing_in_a_worker_is_a_recorded_failure_naming_it(tmp_path, isolated, capsys):
    f = _write(tmp_path, name="tplug_fail")
    store = tmp_path / "store"
    code = main(["sweep", *TINY, "aggregator=tplug_fail_broken,tplug_fail_first", "--plugin", str(f), "--jobs", "2",
                 "--store", str(store), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "in plugin 'tplug_fail': RuntimeError: this aggregator is broken" in err and "Traceback" not in err
    fails = [json.loads(p.read_text()) for p in (store / "failed").glob("*.json")]
    assert [x["config"]["aggregator"] for x in fails] == ["tplug_fail_broken"]
    # a plugin that cannot be imported in the worker: the run fails and names it
    g = _write(tmp_path, name="tplug_parent_only")
    pl.load_plugin(str(g))
    entries, _ = load_entries([], [*TINY, "aggregator=tplug_parent_only_first"])
    g.write_text("raise ImportError('only in the parent')\n")  # the workers import this
    rep = execute(entries, Store(tmp_path / "s2"), jobs=2)
    assert len(rep.failures) == 1
    assert rep.failures[0].error.startswith(
        "plugin 'tplug_parent_only' (worker) cannot be imported: ImportError: only in the parent")


def test_plugin_edited_during_a_sweep_is_not_run_with_a_stale_key(tmp_path, isolated):
    f = _write(tmp_path, name="tplug_edited")
    pl.load_plugin(str(f))
    entries, _ = load_entries([], [*TINY, "aggregator=tplug_edited_first"])
    f.write_text(f.read_text() + "\n# edited\n")
    rep = execute(entries, Store(tmp_path / "s"), jobs=2)
    assert "differs from the one the run's key was made with" in rep.failures[0].error


@pytest.mark.parametrize("body, expected", [
    (None, "plugin 'no_such_plugin_xyz' (--plugin) cannot be imported: ModuleNotFoundError: "
           "No module named 'no_such_plugin_xyz'"),
    ("from byzsim.aggregators import AGGREGATORS\n@AGGREGATORS.register('mean')\ndef m(z, mask=None): return z\n",
     "plugin 'dup_plugin' (--plugin) failed on import: ValueError: aggregator 'mean' is already registered"),
    ("import no_such_dependency_xyz\n",
     "plugin 'dep_plugin' (--plugin) cannot be imported: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
])
def test_bad_plugins_are_one_line_errors(tmp_path, body, expected):
    """Run as the command (a subprocess): one line on stderr, exit status 2."""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop(pl.ENV_VAR, None)
    name = "no_such_plugin_xyz"
    if body is not None:
        name = "dup_plugin" if "register" in body else "dep_plugin"
        (tmp_path / f"{name}.py").write_text(body)
    out = subprocess.run([sys.executable, "-m", "byzsim", "run", *TINY, "--plugin", name, "--no-store"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"byzsim: error: {expected}"


def test_env_var_and_entry_points_name_plugins(tmp_path):
    """$BYZSIM_PLUGINS (os.pathsep- or comma-separated) and the 'byzsim.plugins' entry
    point group of an installed distribution."""
    _write(tmp_path, name="envplug", prefix="ev")
    _write(tmp_path, name="epplug", prefix="ep")
    site = tmp_path / "site"
    dist = site / "epplug_dist-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[byzsim.plugins]\nmine = epplug\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugdir"), str(site)]),
           pl.ENV_VAR: "envplug,"}
    out = subprocess.run([sys.executable, "-m", "byzsim", "list", "--json"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cat = json.loads(out.stdout)
    assert cat["aggregators"]["ev_first"]["plugin"] == "envplug"
    assert cat["aggregators"]["ep_first"]["plugin"] == "epplug"
    assert cat["plugins"]["epplug"]["origin"] == "entry point 'mine' of epplug-dist"
    assert cat["plugins"]["envplug"]["origin"] == "$BYZSIM_PLUGINS"


def _readme_example() -> list[str]:
    """The `byzsim sweep … --plugin my_plugin --jobs 2` command of the README's
    "Extending byzsim" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Extending byzsim"):]
    section = section[:section.index("\n## ", 5)] if "\n## " in section[5:] else section
    cmd = " ".join(line.strip().rstrip("\\") for line in
                   re.search(r"\n(byzsim sweep .*?)\n(?!\s)", section + "\n", re.S).group(1).splitlines())
    return shlex.split(cmd)


def test_readme_plugin_example_runs_as_written(tmp_path):
    cmd = _readme_example()
    assert cmd[:2] == ["byzsim", "sweep"] and "--plugin" in cmd and cmd[cmd.index("--jobs") + 1] == "2"
    env = {**os.environ, "BYZSIM_STORE": str(tmp_path / "store")}
    env.pop(pl.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-m", "byzsim", *cmd[1:], "--quiet"], capture_output=True, text=True,
                         env=env, cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr
    s = Store(tmp_path / "store")
    final = {s.get(k).config_dict["aggregator"]: s.get(k).columns()["test_accuracy"][-1] for k in s.keys()}
    assert set(final) == {"clipped_mean", "mean"}
    assert final["clipped_mean"] > 0.5 > final["mean"]  # the plugin rule resists the plugin attack
    # the figure of the stored sweep loads the plugin from the sweep's manifest
    fig = subprocess.run([sys.executable, "-m", "byzsim", "figure", "--out", str(tmp_path / "fig"),
                          "--csv", str(tmp_path / "fig.csv")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert fig.returncode == 0, fig.stderr
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_plugin_file_named_like_an_imported_module_is_refused(tmp_path, isolated):
    f = tmp_path / "json.py"
    f.write_text("x = 1\n")
    with pytest.raises(pl.PluginError, match="the module name 'json' is taken by .*json/__init__.py; rename the file"):
        pl.load_plugin(str(f))
