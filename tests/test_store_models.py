"""Final server models in the store: ``keep_models`` writes ``model.npy`` (checksummed),
never changes a key, reruns stored runs that lack one, and carries the model through
replica batches and worker processes unchanged."""

import numpy as np
import pytest

from byzsim.cli import main
from byzsim.runs import Store, config_key, entries_from_dicts, expand_grid, parse_overrides
from byzsim.runs.execute import execute, run_spec
from byzsim.runs.spec import load_entries, parse_spec
from byzsim.runs.store import StoreError, model_bytes, parse_model
from byzsim.simulate import run, run_batch

BASE = dict(
    method="rsa", dataset="synthetic", dataset_params={"n_samples": 400, "n_test": 100},
    n_clients=6, n_byzantine=1, attack="gaussian", attack_params={"std": 10.0},
    rounds=30, eval_every=10,
)


def grid(**over):
    return entries_from_dicts(expand_grid(BASE, parse_overrides(f"{k}={v}" for k, v in over.items())))


def cols(n=3):
    return {"round": np.arange(n, dtype=np.int64), "test_accuracy": np.linspace(0, 1, n),
            "train_loss": np.ones(n), "distance": np.full(n, np.nan)}


def models(store, entries):
    return {e.key: (store.run_dir(e.key) / "model.npy").read_bytes() for e in entries}


# --------------------------------------------------------------------------- store


def test_model_is_written_checksummed_and_read_back(tmp_path):
    s = Store(tmp_path)
    e = grid()[0]
    x = np.array([1.5, -2.0, np.nan, 0.0])
    path = s.put(e.config, cols(), model=x)
    assert (path / "model.npy").is_file()
    marker = (path / "COMPLETE").read_text().splitlines()
    assert any(line.startswith("sha256 ") and line.endswith(" model.npy") for line in marker)
    r = s.get(e.key)
    assert r.has_model and s.has_model(e.key)
    np.testing.assert_array_equal(r.model(), x)  # NaN (a diverged run's model) round-trips
    assert s.verify() == []


def test_run_without_model_stays_valid(tmp_path):
    s = Store(tmp_path)
    e = grid()[0]
    s.put(e.config, cols())
    assert s.verify() == [] and s.has(e.key) and not s.has_model(e.key)
    assert s.get(e.key).model() is None and not s.get(e.key).has_model


@pytest.mark.parametrize("damage", ["flip", "truncate", "not an array", "added later"])
def test_damaged_model_is_found_by_verify_and_quarantined(tmp_path, damage, capsys):
    s = Store(tmp_path / "store")
    e = grid()[0]
    path = s.put(e.config, cols(), model=None if damage == "added later" else np.arange(5.0))
    f = path / "model.npy"
    if damage == "flip":
        data = bytearray(f.read_bytes())
        data[-1] ^= 1  # one bit of the last float
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:-8])
    elif damage == "not an array":
        f.write_bytes(b"garbage")
    else:  # a model.npy the run was not written with
        f.write_bytes(model_bytes(np.arange(5.0)))
    (bad,) = s.verify()
    assert bad[0] == e.key and "model.npy" in bad[1]
    assert main(["store", "verify", "--store", str(tmp_path / "store")]) == 1
    assert "model.npy" in capsys.readouterr().out
    s.report = lambda line: None
    assert not s.has(e.key)  # quarantined: the next sweep runs it again
    assert list(s.quarantine_dir.iterdir())


def test_model_bytes_are_deterministic_and_refuse_non_vectors():
    a = np.linspace(-1, 1, 7)
    assert model_bytes(a) == model_bytes(a.copy())
    np.testing.assert_array_equal(parse_model(model_bytes(a)), a)
    with pytest.raises(ValueError, match="shape"):
        model_bytes(np.zeros((2, 3)))
    with pytest.raises(StoreError, match="model.npy"):
        parse_model(b"\x93NUMPY broken")


# --------------------------------------------------------------------------- keys and specs


SPEC = {"figure": "figm", "seeds": [0, 1], "base": BASE, "lines": [{"label": "RSA"}]}


def test_keep_models_does_not_change_keys(tmp_path):
    plain = parse_spec(dict(SPEC))
    kept = parse_spec({**SPEC, "keep_models": True})
    assert not plain.keep_models and kept.keep_models
    assert [r.config for r in plain.runs] == [r.config for r in kept.runs]
    assert [config_key(r.config) for r in plain.runs] == [config_key(r.config) for r in kept.runs]
    flat = tmp_path / "flat.toml"
    flat.write_text('keep_models = true\nmethod = "rsa"\ndataset = "synthetic"\n')
    entries, info = load_entries([flat], [])
    assert info["keep_models"] is True
    assert entries[0].key == load_entries([], ["method=rsa", "dataset=synthetic"])[0][0].key
    with pytest.raises(ValueError, match="keep_models"):
        parse_spec({**SPEC, "keep_models": "yes"})


# --------------------------------------------------------------------------- execution


def test_run_result_model_is_the_final_server_model():
    e = grid()[0]
    res = run(e.config)
    assert res.model.shape == (res.info["d"],) and np.isfinite(res.model).all()
    shorter = run(e.config.replace(rounds=20, eval_every=10))
    assert not np.array_equal(res.model, shorter.model)  # it moves with the rounds


def test_diverged_replica_keeps_the_model_of_the_round_it_stopped():
    cfg = entries_from_dicts([dict(BASE, method="sgd", attack="same_value", attack_params={"c": 1e308},
                                   lr=1.0, rounds=40, eval_every=10)])[0].config
    res = run(cfg)
    assert res.diverged and res.model.shape == (res.info["d"],)
    assert not np.isfinite(res.model).all()  # not the zeros the frozen replica holds afterwards


def test_stored_run_without_model_is_rerun_only_when_models_are_asked(tmp_path):
    s = Store(tmp_path)
    entries = grid(seed="0,1")
    assert execute(entries, s).ran == 2
    metrics = {e.key: s.get(e.key).metrics_text() for e in entries}
    assert not any(s.has_model(e.key) for e in entries)
    r = execute(entries, s)  # not asked: kept as they are
    assert (r.ran, r.skipped) == (0, 2) and not any(s.has_model(e.key) for e in entries)
    r = execute(entries, s, keep_models=True)  # asked: run again, directories replaced
    assert (r.ran, r.skipped) == (2, 0) and all(s.has_model(e.key) for e in entries)
    assert {e.key: s.get(e.key).metrics_text() for e in entries} == metrics
    assert s.verify() == [] and not [p for p in s.runs_dir.iterdir() if p.name.startswith(".")]
    r = execute(entries, s, keep_models=True)  # they have it now
    assert (r.ran, r.skipped) == (0, 2)
    for e in entries:
        np.testing.assert_array_equal(s.get(e.key).model(), run(e.config).model)


def test_batch_and_serial_give_identical_models(tmp_path):
    entries = grid(seed="0,1,2,3") + grid(method="byrd-saga", seed="0,1")
    batched, alone = Store(tmp_path / "b"), Store(tmp_path / "a")
    assert execute(entries, batched, replicas=4, keep_models=True).ran == len(entries)
    assert execute(entries, alone, replicas=1, keep_models=True).ran == len(entries)
    assert max(batched.get(e.key).meta["info"]["replicas"] for e in entries) == 4
    assert models(batched, entries) == models(alone, entries)
    for e, res in zip(entries[:4], run_batch([e.config for e in entries[:4]])):
        np.testing.assert_array_equal(batched.get(e.key).model(), res.model)


def test_two_workers_carry_the_models(tmp_path):
    entries = grid(method="rsa,byrd-sgd", seed="0,1")
    serial, par = Store(tmp_path / "s"), Store(tmp_path / "p")
    execute(entries, serial, keep_models=True)
    rep = execute(entries, par, jobs=2, keep_models=True)
    assert rep.ran == 4 and rep.ok
    assert models(par, entries) == models(serial, entries)


def test_spec_field_and_cli_flag_keep_models(tmp_path):
    spec = parse_spec({**SPEC, "keep_models": True})
    s = Store(tmp_path / "store")
    run_spec(spec, results_dir=tmp_path / "res", store=s, quiet=True)
    assert all(s.has_model(config_key(r.config)) for r in spec.runs)
    args = ["sweep", *(f"{k}={v}" for k, v in BASE.items() if not isinstance(v, dict)),
            "dataset_params.n_samples=400", "dataset_params.n_test=100", "attack_params.std=10.0",
            "seed=5", "--store", str(tmp_path / "cli"), "-q"]
    assert main(args) == 0
    cli = Store(tmp_path / "cli")
    (key,) = cli.keys()
    assert not cli.has_model(key)
    assert main(args + ["--keep-models"]) == 0
    assert cli.keys() == [key] and cli.has_model(key)
