# The two commands of a fresh clone: `make run-all` and `make test`.
# Everything else (venv, kernel, demo data) is made on the way.

PROFILE  ?= smoke
DATA_DIR ?=
THYROID_DIR ?=
PYTHON   ?= python3.11
VENV     := .venv
PY       := $(VENV)/bin/python
KERNEL   := idc-notebooks
# TensorFlow build: the GPU one where an NVIDIA driver answers, else the CPU one.
TF_EXTRA ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
PYTEST_ARGS ?=
# Three test processes on a 2-core machine: a notebook test waits on its kernel's start-up
# and file writes, and with two processes the cores sat idle a fifth of the time (user CPU
# 33.8 min in 21.1 min of wall time). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
APP_PORT ?= 5000
OUTPUTS  ?=
# The browser test drives Debian's chromium: Playwright's own browser download is not reachable everywhere.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

.PHONY: help setup data run-all html test test-fast lab bench app browser clean distclean

help:
	@echo "make run-all [PROFILE=smoke|cpu|colab|full] [DATA_DIR=/path/to/IDC|generated] [THYROID_DIR=/path/to/thyroid]"
	@echo "                 run every notebook"
	@echo "make html        the notebooks as last run, with their figures, as a static site: outputs/html/index.html"
	@echo "make test        the whole test suite (notebooks included, smoke profile)"
	@echo "make test-fast   unit tests only"
	@echo "make lab         JupyterLab on notebooks/"
	@echo "make data        check the data for PROFILE (full, no DATA_DIR: download the Kaggle set once)"
	@echo "make bench       the full-size set's table (DATA_DIR=...: input pipelines on that folder)"
	@echo "make app         web app on http://127.0.0.1:5000: upload an image, see its class and Grad-CAM"
	@echo "                 (APP_PORT=5000, OUTPUTS=dir: where the saved models are)"
	@echo "make browser     install Debian's chromium for the app's browser test (as root)"
	@echo "make clean       remove outputs/ (distclean: also .venv and data/demo)"

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(TF_EXTRA),dev]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) \
		--display-name "Python (idc-notebooks)" --env TF_CPP_MIN_LOG_LEVEL 2
	touch $@

setup: $(VENV)/.installed

# No DATA_DIR: PROFILE=full (or colab) downloads the Kaggle set once and checks it (helpers/data/download.py);
# the other profiles index the real sample that ships in data/idc-sample.
data: setup
ifeq ($(strip $(DATA_DIR)),)
ifneq ($(filter $(PROFILE),full colab),)
	$(PY) -m helpers download
else
	$(PY) -m helpers index data/idc-sample --examples 3
endif
else ifeq ($(strip $(DATA_DIR)),generated)
	$(PY) -m helpers make-demo --profile $(PROFILE)
else
	$(PY) -m helpers index "$(DATA_DIR)" --examples 3
endif

run-all: data
	$(PY) -m helpers run-all --profile $(PROFILE) $(if $(strip $(DATA_DIR)),--data-dir "$(DATA_DIR)") \
		$(if $(strip $(THYROID_DIR)),--thyroid-dir "$(THYROID_DIR)")

html: setup
	$(PY) -m helpers html

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not notebook and not slow" $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

bench: setup
	$(PY) -m helpers bench $(if $(strip $(DATA_DIR)),--data-dir "$(DATA_DIR)",--full)

app: setup
	$(PY) -m helpers.tools.app --port $(APP_PORT) $(if $(strip $(OUTPUTS)),--outputs "$(OUTPUTS)")

browser:
	@if [ -x $(CHROMIUM) ]; then echo "$(CHROMIUM) is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(APT_CHROMIUM) >/dev/null || { apt-get update -qq && $(APT_CHROMIUM) >/dev/null; }; \
	else echo "the browser test needs Debian's chromium: sudo apt-get install chromium"; exit 1; fi

clean:
	rm -rf outputs

distclean: clean
	rm -rf $(VENV) data/demo
