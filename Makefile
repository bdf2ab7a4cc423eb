# Stockade: `make demo` and `make test` do all set-up on a fresh machine (as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Every Debian package whose commands Stockade, its tests or its benchmarks run: one list,
# deps/commands.tsv (command, package, who runs it), which tests/preflight.py checks before pytest.
APT_PACKAGES := $(sort $(shell awk -F'\t' '!/^\#/ && NF == 3 {print $$2}' deps/commands.tsv) python3-venv)
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit bench clean lab-down

install: $(STAMP)
	@ln -sf $(CURDIR)/$(VENV)/bin/stockade /usr/local/bin/stockade
	@echo "stockade installed: $$(command -v stockade)"

$(STAMP): pyproject.toml requirements.lock deps/commands.tsv
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: install
	stockade lab up --hosts 2
	stockade apply -f examples/three-tier/ --wait
	$(PY) examples/three-tier/demo.py
	@sleep 1; echo; echo "Flow records of the probes above, as the agents logged them:"
	stockade flows --limit 30

# Three workers on this machine's two cores (lab tests spend much of their time waiting on
# processes, timeouts and the kernel), a test module per worker at a time so that a module's
# lab is built once; tests run in a random order (pytest-randomly) whose seed is printed first:
# `make test SEED=N` replays it. See docs/testing.md.
ifndef SEED
SEED := $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
endif
test: install
	$(PY) -m tests.preflight
	@echo "tests in random order, seed $(SEED): replay with make test SEED=$(SEED)"
	$(PY) -m pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=25 -p randomly --randomly-seed=$(SEED)

# The benchmark suite (issue 8): figures as ratios measured in one run; writes bench/results.json.
bench: install
	@$(PY) -m pip show -q py-spy >/dev/null 2>&1 || $(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	timeout 1500 $(PY) -m bench.run

test-unit: install
	$(PY) -m pytest -q -m "not kernel"

lab-down:
	-stockade lab down

clean: lab-down
	rm -rf $(VENV) build src/*.egg-info
