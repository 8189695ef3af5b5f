# seq2attn: `make train` trains on the built-in corpus, `make test` runs the test suite.
# Both create .venv and install the project when it is missing or pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch from pip's configured sources; TORCH_SPEC=... installs another version, and
# TORCH_INDEX=https://download.pytorch.org/whl/cpu the CPU build where PyPI's default is CUDA's.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install browser allocators train test test-fast lint format sweep bench bench-quick bench-data bench-decoding bench-trained bench-onednn clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install seq2attn with its dev extras

browser: ## Install Debian's headless Chromium and chromedriver (apt, as root) for the attention page's browser test
	apt-get install -y --no-install-recommends chromium chromium-driver \
		|| (apt-get update -qq && apt-get install -y --no-install-recommends chromium chromium-driver)

allocators: ## Install Debian's tcmalloc and jemalloc (apt, as root) for cpu.allocator=tcmalloc / jemalloc
	apt-get install -y --no-install-recommends libtcmalloc-minimal4 libjemalloc2 \
		|| (apt-get update -qq && apt-get install -y --no-install-recommends libtcmalloc-minimal4 libjemalloc2)

train: $(STAMP) ## Train the default model on the built-in corpus (ARGS="key=value ...")
	$(PY) src/train.py $(ARGS)

test: $(STAMP) ## Run the whole test suite (what CI runs)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff lint + format check, mypy
	$(PY) -m ruff check src tests benchmarks experiments
	$(PY) -m ruff format --check src tests benchmarks experiments
	$(PY) -m mypy src/seq2attn

format: $(STAMP) ## Format and fix with ruff
	$(PY) -m ruff format src tests benchmarks experiments
	$(PY) -m ruff check --fix src tests benchmarks experiments

SWEEP_DIR ?= logs/sweep/toy_grid
sweep: $(STAMP) ## Small attention x cell x seed grid on the toy corpus (2 jobs at once), then its report
	rm -rf $(SWEEP_DIR)
	$(PY) src/train.py -m attention=luong,bahdanau cell=gru,lstm seed=1,2 \
		data.corpus.num_train=4000 data.corpus.num_val=200 data.corpus.num_test=200 \
		data.vocab_size=200 model.embedding_size=32 model.hidden_size=64 trainer.max_epochs=4 \
		trainer.enable_progress_bar=false hydra/launcher=joblib hydra.launcher.n_jobs=2 \
		hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(PY) src/report.py $(SWEEP_DIR) --out $(SWEEP_DIR)/report.md --chart $(SWEEP_DIR)/report.png

bench: $(STAMP) ## Speed vs OpenNMT-py and JoeyNMT, 3 runs each (needs ../shared; 20-60 min) -> benchmarks/results/latest.{json,md}
	$(PY) -m benchmarks.speed $(ARGS)

bench-quick: $(STAMP) ## A few steps against OpenNMT-py only, for iterating -> benchmarks/results/quick.{json,md}
	$(PY) -m benchmarks.speed --quick $(ARGS)

bench-data: $(STAMP) ## Data pipeline benchmarks: loading vs. step time on Multi30k, 1M-pair scale
	$(PY) -m benchmarks.data_loading && $(PY) -m benchmarks.data_scale

CKPT ?= last
bench-decoding: $(STAMP) ## Greedy/beam speed and scheduled-sampling cost of a Multi30k checkpoint (CKPT=<file, run folder or last>)
	$(PY) -m benchmarks.decoding --ckpt $(CKPT)

bench-trained: $(STAMP) ## Decoding speed against OpenNMT-py with the budget runs' trained R1 models (~5 min) -> benchmarks/results/trained_decoding.{json,md}
	$(PY) -m benchmarks.trained_decoding $(ARGS)

bench-onednn: $(STAMP) ## oneDNN's kernel cache against a training run's product shapes (needs Multi30k; ~10 min)
	$(PY) -m benchmarks.onednn_cache $(ARGS)

clean: ## Remove the venv, caches and run outputs
	rm -rf $(VENV) .cache logs .pytest_cache .ruff_cache .mypy_cache .hypothesis src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
