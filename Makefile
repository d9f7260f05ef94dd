# byzsim — the two commands of the README are `make fig2` and `make test`.
# Every target installs what it needs into a local virtual environment (.venv).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
JOBS   ?= 2
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install test test-all test-thorough fig1 fig2 fig3 paper-a b-fig3 b-fig4 b-fig5 b-fig6 \
        b-fig4-6 b-fig7 b-fig8 b-fig9 b-fig10 b-fig11 paper-b reproduction bench bench-sweep matrix matrix-momentum clean

install: $(STAMP)

# the library and its runtime dependencies (enough for figures and benchmarks)
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	@touch $(STAMP)

# plus the test tools (pytest, hypothesis, dask for the cluster test)
$(TSTAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(TSTAMP)

## tests (quick hypothesis profile); `make test-all` includes the slow ones
test: $(TSTAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(TSTAMP)
	$(PY) -m pytest -q

test-thorough: $(TSTAMP)
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q

## paper A (AsynRSA-VR): figures/figN.{png,pdf}, results/figN.csv
fig1 fig2 fig3: %: $(STAMP)
	$(PY) -m byzsim experiment experiments/paper_a/$@.toml --jobs $(JOBS)

paper-a: fig1 fig2 fig3

## paper B (RS-Byrd-SAGA): figures/b_figN.{png,pdf}, results/b_figN.csv
b-fig3: $(STAMP)
	$(PY) experiments/paper_b/fig3_theory.py

b-fig4 b-fig5 b-fig6 b-fig4-6: $(STAMP)
	$(PY) -m byzsim experiment experiments/paper_b/fig4_6.toml --jobs $(JOBS)

b-fig7 b-fig8 b-fig9 b-fig10 b-fig11: b-%: $(STAMP)
	$(PY) -m byzsim experiment experiments/paper_b/$*.toml --jobs $(JOBS)

paper-b: b-fig3 b-fig4-6 b-fig7 b-fig8 b-fig9 b-fig10 b-fig11

## REPRODUCTION.md's evidence: every spec of experiments/reproduction.toml (stored runs are not
## run again) -> experiments/results/*.csv (committed), figures/, and the generated tables and
## claims of REPRODUCTION.md
reproduction: $(STAMP)
	$(PY) -m byzsim.reproduction --jobs $(JOBS)

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/preagg_bench.py

bench-sweep: $(STAMP)
	$(PY) benchmarks/sweep_bench.py

## robustness matrix: every aggregator x every attack -> figures/matrix.png, results/matrix.csv
matrix: $(STAMP)
	$(PY) -m byzsim matrix experiments/matrix.toml --jobs $(JOBS)

## the same with client momentum beta in {0, 0.9} -> figures/matrix_momentum.png
matrix-momentum: $(STAMP)
	$(PY) -m byzsim matrix experiments/matrix_momentum.toml --jobs $(JOBS)

clean:
	rm -rf results figures .pytest_cache .hypothesis

## paper A at stationarity (floors of RSA, AsynRSA-VR and full-gradient RSA against α, Theorem 1's Δ1,
## the γ sweep of Remark 3): results/a_stationary*.csv, figures/a_stationary.png
.PHONY: a-stationary
a-stationary: $(STAMP)
	$(PY) experiments/paper_a/stationary.py --jobs $(JOBS)

## why AsynRSA-VR's stationary floor rises with γ: AsynRSA-VR at (γ, λ) against γ = 1 at penalty γλ
## and the mean-field twin (f0/γ, step γα): experiments/results/a_gamma_penalty.csv, figures/a_gamma_penalty.png
.PHONY: a-gamma-penalty
a-gamma-penalty: $(STAMP)
	$(PY) experiments/paper_a/gamma_penalty.py --results experiments/results
