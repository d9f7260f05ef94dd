"""BENCHMARKS.md's generated text states the load measured during the run: contention is
claimed only when the load averages show other processes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run as bench  # noqa: E402

SWEEP = {"stacked": {"ms_per_round": 1.0, "iqr": [0.9, 1.1]}, "run_by_run": {"ms_per_round": 3.0, "iqr": [2.9, 3.1]},
         "end_to_end_s": {"run_batch": 1.0, "run": 2.0}, "S": 4, "speedup": 3.0, "end_to_end_speedup": 2.0}


def sweep_text(load):
    res = {"machine": {"cpus": 2}, "scale_sweeps": {"_load": load, "gaussian std": SWEEP}}
    return "\n".join(bench.scale_sweep_table(res))


def test_a_quiet_run_claims_no_contention_and_a_busy_one_does_with_its_numbers():
    quiet, busy = sweep_text([1.0, 1.2]), sweep_text([3.4, 2.6])
    assert "1.0 / 1.2" in quiet and "no other load measured" in quiet and "shared" not in quiet
    assert "3.4 / 2.6" in busy and "shared with other processes" in busy and "inflates" in busy
    assert bench.load_note(None, 2) == ""
    # at the threshold: other processes' load 0.5 above the benchmark's own 1
    assert "shared" in bench.load_note([1.0, 1.0 + bench.SHARED_LOAD], 2)
    assert "shared" not in bench.load_note([1.0, 1.0 + bench.SHARED_LOAD - 0.01], 2)


def test_the_replica_section_states_the_same_note():
    r = {"S": {"1": {"ms_per_round": 1.0, "speedup": 1.0}}, "memory": {
        "per_replica_state_MB": 0.1, "data_MB": 1.0, "replica_bytes_estimate_MB": 1.0}}
    quiet = "\n".join(bench.replica_table({"machine": {"cpus": 2}, "replicas": {"_load": [0.4, 0.8], "w": r}}))
    assert "0.4 / 0.8" in quiet and "shared" not in quiet and "other processes ran" not in quiet
