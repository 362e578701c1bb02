# Two commands do all the set-up on a fresh machine (see README):
#   make        creates .venv if needed, then builds every figure (mifeatures build: Snakemake over the records)
#   make test   creates .venv if needed, then runs the tests
SYSTEM_PYTHON := $(shell command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all test test-pythons rehearse-gpu browser pull
all: $(VENV)/.installed
	mifeatures build all

# One xdist worker per core that the memory holds, each running whole test files, the longest first
# (tests/conftest.py).
test: $(VENV)/.installed browser
	python -m pytest -n auto --dist loadfile --no-loadscope-reorder

# The suite on Python 3.12 and 3.13 too, each in .venv-3.1x at the lock's pins (CI runs it after `make test`):
# the suite but its slowest files and tests (named in .ci/pythons and the README), then a tiny build and its checks.
test-pythons:
	.ci/pythons 3.12 3.13

# The GPU check rehearsed on the CPU (CI runs it last): a Python 3.12 venv with only the GPU image's packages and the
# wheels the check carries (.ci/gpu-image), then the check end to end there (docs/gpu-and-cluster.md).
rehearse-gpu: $(VENV)/.installed
	.ci/gpu-image
	MIFEATURES_GPU_IMAGE=$(CURDIR)/.venv-gpu-image/bin/python python -m pytest -q -p no:cacheprovider \
		tests/test_device_check.py -k rehearsed

# Results built elsewhere: dvc pull, then mark up to date what their records say this checkout would make,
# under CONFIG (e.g. make pull CONFIG=config/tiny.yaml); see mifeatures.workflow.pull.
pull: $(VENV)/.installed
	mifeatures pull $(if $(CONFIG),--configfile $(CONFIG))

# The report test drives Debian's headless Chromium; install it when missing and we may (root, as on CI).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "make test: installing Debian's chromium and chromium-driver for the report test (apt-get install)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else echo "chromium/chromedriver missing and not root: the report test will be skipped" \
			"(to run it: sudo apt-get install chromium chromium-driver)"; fi; \
	fi

# The exact environment of requirements.lock; its torch==2.13.0 resolves to the local CPU wheel here.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[workflow,test]"
	touch $@
