# Two entry points (see README): `make demo` and `make test`. Both create .venv when absent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONSTRAINTS := constraints/py311-cpu.txt
STAMP  := $(VENV)/.speechqe-installed
OUT    ?= speechqe-out

export OMP_NUM_THREADS ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: venv demo test test-fast lint clean-demo

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/speechqe score data/samples/systems --ref data/samples/reference \
		--text data/samples/transcripts.tsv --suite default --db $(OUT)/demo.duckdb \
		--out $(OUT)/demo-scores.csv
	$(BIN)/speechqe report latest --db $(OUT)/demo.duckdb --out $(OUT)/demo-report.html

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/lint-imports

clean-demo:
	rm -rf $(OUT)
