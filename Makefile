# make demo : the digits main job end to end (fit, predict with search, report with plots)
# make test : ruff, then the whole test suite
# Both create (or reuse) a local virtual environment in .venv from pyproject.toml.
# make demo-shapes : the shapes text-to-image world with its exact judge (its own target, not part of demo)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN := $(BIN)/lightning-search
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: demo demo-dpo demo-shapes test lint format install clean fit-digits fit-shapes bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The three digits models are independent: `make -j3 fit-digits` trains them side by side, one thread
# each (on 2 cores, one thread per process beats two threads fighting over a core).
runs/digits/verifier/classifier.ckpt: recipes/digits/verifier.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/digits/verifier.yaml
runs/digits/evaluator/classifier.ckpt: recipes/digits/evaluator.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/digits/evaluator.yaml
runs/digits/generator/generator.ckpt: recipes/digits/fit.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/digits/fit.yaml

fit-digits: runs/digits/verifier/classifier.ckpt runs/digits/evaluator/classifier.ckpt runs/digits/generator/generator.ckpt

# Diffusion-DPO with LoRA on AI-feedback pairs, then base / DPO / base + search / DPO + search compared
# (one thread: faster than two on small batches, see ENVIRONMENT.md)
runs/digits/dpo/adapter/pytorch_lora_weights.safetensors: recipes/digits/dpo.yaml runs/digits/verifier/classifier.ckpt runs/digits/generator/generator.ckpt
	rm -rf runs/digits/dpo/pairs  # pairs of an older generator
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/digits/dpo.yaml
demo-dpo: fit-digits runs/digits/dpo/adapter/pytorch_lora_weights.safetensors
	OMP_NUM_THREADS=1 $(RUN) compare --config recipes/digits/dpo_compare.yaml --force true
	@echo "demo-dpo outputs: runs/digits/dpo/compare/{report.md,report.html,bars.png,grid.png}, runs/digits/dpo/adapter/"

# Samples and sweep points are recomputed on every demo (a retrained generator must not meet old points);
# the models are retrained only when their recipe changed.
demo: | $(STAMP)
	$(MAKE) -j3 fit-digits
	rm -rf runs/digits/sample
	$(RUN) predict --config recipes/digits/sample.yaml
	$(RUN) sweep --config recipes/digits/sweep.yaml --force true
	$(MAKE) demo-dpo
	@echo "demo outputs: runs/digits/sample/{grid.png,metrics.json}, runs/digits/sweep/{scaling.csv,scaling.png,grid.png,report.md}, runs/digits/dpo/compare/{report.md,report.html}"

# The shapes world (text-to-image with an exact judge): the small and big generators and the CLIP analogue are
# independent, so `make -j3 fit-shapes` trains them side by side, one thread each.
runs/shapes/small/generator.ckpt: recipes/shapes/fit_small.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/fit_small.yaml
runs/shapes/big/generator.ckpt: recipes/shapes/fit_big.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/fit_big.yaml
runs/shapes/clip/clip.ckpt: recipes/shapes/clip.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/clip.yaml

fit-shapes: runs/shapes/small/generator.ckpt runs/shapes/big/generator.ckpt runs/shapes/clip/clip.ckpt

# Samples and sweep points are recomputed each time, the models only when their recipe changed.
demo-shapes: | $(STAMP)
	$(MAKE) -j3 fit-shapes
	rm -rf runs/shapes/sample
	$(RUN) predict --config recipes/shapes/sample.yaml
	$(RUN) sweep --config recipes/shapes/sweep.yaml --force true
	@echo "demo-shapes outputs: runs/shapes/sample/{grid.png,metrics.json,verifiers.md}, runs/shapes/sweep/{scaling.csv,report.md,grid.png}"

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
