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

.PHONY: demo demo-sample demo-sweep demo-dpo demo-shapes rl-shapes test lint format install clean fit-digits fit-shapes bench bench-gpu

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

# AI-feedback pairs (best vs worst of 4 by the verifier), Diffusion-DPO with LoRA on them, then base / DPO /
# base + search / DPO + search compared (one thread: faster than two on small batches, see ENVIRONMENT.md)
runs/digits/pairs/metrics.json: recipes/digits/pairs.yaml runs/digits/verifier/classifier.ckpt runs/digits/generator/generator.ckpt
	rm -rf runs/digits/pairs  # pairs of an older generator or verifier
	OMP_NUM_THREADS=1 $(RUN) pairs --config recipes/digits/pairs.yaml
runs/digits/dpo/adapter/pytorch_lora_weights.safetensors: recipes/digits/dpo.yaml runs/digits/pairs/metrics.json
	rm -rf runs/digits/dpo/adapter runs/digits/dpo/*.ckpt  # an adapter or resume checkpoint of older pairs
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/digits/dpo.yaml
# GRPO with LoRA: online RL with the verifier classifier as the reward (the same verifier DPO's pairs and search use)
runs/digits/grpo/adapter/pytorch_lora_weights.safetensors: recipes/digits/grpo.yaml runs/digits/verifier/classifier.ckpt runs/digits/generator/generator.ckpt
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/digits/grpo.yaml
demo-dpo: fit-digits runs/digits/dpo/adapter/pytorch_lora_weights.safetensors runs/digits/grpo/adapter/pytorch_lora_weights.safetensors
	OMP_NUM_THREADS=1 $(RUN) compare --config recipes/digits/dpo_compare.yaml --force true
	@echo "demo-dpo outputs: runs/digits/dpo/compare/{report.md,report.html,bars.png,grid.png}, runs/digits/{dpo,grpo}/adapter/"

# Samples and sweep points are recomputed on every demo (a retrained generator must not meet old points);
# the models are retrained only when their recipe changed.
demo-sample: fit-digits
	rm -rf runs/digits/sample
	OMP_NUM_THREADS=1 $(RUN) predict --config recipes/digits/sample.yaml
demo-sweep: fit-digits
	OMP_NUM_THREADS=1 $(RUN) sweep --config recipes/digits/sweep.yaml --force true

# After the three fits, the sample, the sweep and the fine-tunes are independent: `-j2` runs two of them at a
# time, one thread each (one per core); `--output-sync` prints each one's output whole when it ends. (Here
# `sweep --jobs 2` on top gained nothing measurable: 201 s against 203 s, both cores are already busy.)
demo: | $(STAMP)
	$(MAKE) -j3 fit-digits
	$(MAKE) -j2 --output-sync=target demo-sweep demo-sample demo-dpo
	@echo "demo outputs: runs/digits/sample/{grid.png,metrics.json}, runs/digits/sweep/{scaling.csv,scaling.png,grid.png,report.md}, runs/digits/dpo/compare/{report.md,report.html}"
	@$(RUN) readme --check || echo "demo: this run's numbers differ from the README's (another machine or library version?); \`lightning-search readme\` rewrites the README from them"

# The shapes world (text-to-image with an exact judge): the small and big generators and the CLIP analogue are
# independent, so `make -j3 fit-shapes` trains them side by side, one thread each.
runs/shapes/small/generator.ckpt: recipes/shapes/fit_small.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/fit_small.yaml
runs/shapes/big/generator.ckpt: recipes/shapes/fit_big.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/fit_big.yaml
runs/shapes/clip/clip.ckpt: recipes/shapes/clip.yaml | $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/clip.yaml

fit-shapes: runs/shapes/small/generator.ckpt runs/shapes/big/generator.ckpt runs/shapes/clip/clip.ckpt

# Fine-tuning the small generator: AI-feedback pairs from the CLIP analogue (best vs worst of 4) and Diffusion-DPO
# with LoRA on them; GRPO with LoRA and the exact judge as the reward (independent of the pairs: `make -j2 rl-shapes`)
runs/shapes/pairs/metrics.json: recipes/shapes/pairs.yaml runs/shapes/small/generator.ckpt runs/shapes/clip/clip.ckpt
	rm -rf runs/shapes/pairs  # pairs of an older generator or CLIP analogue
	OMP_NUM_THREADS=1 $(RUN) pairs --config recipes/shapes/pairs.yaml
runs/shapes/dpo/adapter/pytorch_lora_weights.safetensors: recipes/shapes/dpo.yaml runs/shapes/pairs/metrics.json
	rm -rf runs/shapes/dpo/adapter runs/shapes/dpo/*.ckpt  # an adapter or resume checkpoint of older pairs
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/dpo.yaml
runs/shapes/grpo/adapter/pytorch_lora_weights.safetensors: recipes/shapes/grpo.yaml runs/shapes/small/generator.ckpt
	OMP_NUM_THREADS=1 $(RUN) fit --config recipes/shapes/grpo.yaml

rl-shapes: runs/shapes/dpo/adapter/pytorch_lora_weights.safetensors runs/shapes/grpo/adapter/pytorch_lora_weights.safetensors

# Samples, sweep points and compare runs are recomputed each time, the models only when their recipe changed.
# Runtime on a 2-core machine with the three models already trained: ~60 min (the sweep, N = 64 included, 31 min
# timed alone; pairs + DPO beside GRPO ~11 and compare ~11 on a shared machine; sample and start-ups ~4); training
# the models first adds ~25 min (fit_big's 1,289 s of CPU time is the longest of the three).
demo-shapes: | $(STAMP)
	$(MAKE) -j3 fit-shapes
	rm -rf runs/shapes/sample
	$(RUN) predict --config recipes/shapes/sample.yaml
	$(RUN) sweep --config recipes/shapes/sweep.yaml --force true
	$(MAKE) -j2 rl-shapes
	OMP_NUM_THREADS=1 $(RUN) compare --config recipes/shapes/compare.yaml --force true
	@echo "demo-shapes outputs: runs/shapes/sample/{grid.png,metrics.json,verifiers.md}, runs/shapes/sweep/{scaling.csv,report.md,grid.png}, runs/shapes/compare/{report.md,report.html,bars.png,grid.png}"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# two pytest-xdist workers, one per core (each test runs single-threaded: see tests/conftest.py)
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The GPU benchmark (BENCHMARKS.md): real-size FLUX.1-dev, SDXL, SD3.5-M, PixArt-Sigma with random weights on a CUDA
# device, ~8 minutes on an H100 / H200. BENCH_GPU_ARGS=--tiny runs the same code path on the tiny twins on a CPU;
# BENCH_GPU_ARGS=--preflight checks the real sizes on the meta device (CPU, no GPU time).
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py $(BENCH_GPU_ARGS)

clean:
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
