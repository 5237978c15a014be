# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
EMANET := $(VENV)/bin/emanet

.PHONY: demo test test-fast lint fuzz venv clean

venv: $(STAMP)

# Reinstalls only when pyproject.toml changes; torch/torchvision come from the machine's local wheels.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The whole paper on the embedded tiny profile (CPU): synthetic archives in the official formats,
# download, prepare, every experiment trained and evaluated, MLflow, the report. A rerun does nothing.
demo: $(STAMP)
	$(VENV)/bin/snakemake -c2 --quiet rules
	@echo; cat results/tiny/report/report.md; echo
	@echo "Report: results/tiny/report/report.html   MLflow: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$$PWD/mlflow.db"

# Lint and format check first (ruff, configured in pyproject.toml): seconds, and a red line before a long run.
test: $(STAMP) lint
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

# Every reader of outside data fuzzed with 10,000 examples each (hypothesis profile "fuzz", tests/conftest.py;
# FUZZ_EXAMPLES=N for another count). `make test` runs the same properties on a small, fixed budget.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_fuzz_readers.py \
		--hypothesis-show-statistics

clean:
	rm -rf results .snakemake .pytest_cache
