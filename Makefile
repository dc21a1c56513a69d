# make demo : the digits main job end to end (fit, predict with search, report with plots)
# make test : ruff, then the whole test suite
# Both create (or reuse) a local virtual environment in .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN := $(BIN)/lightning-search
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint format install clean fit-digits bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

runs/digits/verifier/classifier.ckpt: | $(STAMP)
	$(RUN) fit --config recipes/digits/verifier.yaml
runs/digits/evaluator/classifier.ckpt: | $(STAMP)
	$(RUN) fit --config recipes/digits/evaluator.yaml
runs/digits/generator/generator.ckpt: | $(STAMP)
	$(RUN) fit --config recipes/digits/fit.yaml

fit-digits: runs/digits/verifier/classifier.ckpt runs/digits/evaluator/classifier.ckpt runs/digits/generator/generator.ckpt

demo: fit-digits
	$(RUN) predict --config recipes/digits/sample.yaml
	$(RUN) sweep --config recipes/digits/sweep.yaml
	@echo "demo outputs: runs/digits/sample/{grid.png,metrics.json}, runs/digits/sweep/{scaling.csv,scaling.png,report.md}"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
