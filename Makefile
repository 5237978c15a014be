# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
EMANET := $(VENV)/bin/emanet

.PHONY: demo test test-fast venv clean

venv: $(STAMP)

# Reinstalls only when pyproject.toml changes; torch/torchvision come from the machine's local wheels.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The end-to-end path that exists today: Table 1's cost columns and the heads' speed on this machine.
demo: $(STAMP)
	$(EMANET) bench complexity --output results/tiny/bench/complexity.json
	$(EMANET) bench latency --size 17 --min-run-time 0.2

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf results .snakemake .pytest_cache
