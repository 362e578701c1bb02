# Two commands do all the set-up on a fresh machine (see README):
#   make        creates .venv if needed, then builds every figure (snakemake --cores 4 all)
#   make test   creates .venv if needed, then runs the tests
SYSTEM_PYTHON := $(shell command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all test
all: $(VENV)/.installed
	snakemake --cores 4 all

test: $(VENV)/.installed
	python -m pytest

# torch==2.13.0 (pinned in pyproject.toml) resolves to the local CPU wheel; nothing else may pull torch.
$(VENV)/.installed: pyproject.toml
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@
