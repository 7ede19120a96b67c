# The two commands of README: `make book` (main job) and `make test` (test suite).
# Each creates .venv on first use and reuses it afterwards.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= mini
BOOK_ARGS ?=  # e.g. BOOK_ARGS="-p data_root=/data/mvtec" (papermill parameters, .github/workflows/paper.yml)

.PHONY: book test bench install chromium clean-book

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Headless Chromium for the screenshot test of the built site (Debian package; needs root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the site screenshot test will be skipped"; }

# Two pytest workers (the CI machine has 2 cores), whole files per worker: the notebook and site
# tests (one file) share one smoke run of the notebooks.
test: install chromium
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

book: install
	$(PY) -m anomalysd_core book --profile $(PROFILE) --out . $(BOOK_ARGS)

bench: install
	$(PY) benchmarks/inference_speed.py

clean-book:
	rm -rf _build build/notebooks build/book
