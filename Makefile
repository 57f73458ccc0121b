# Set-up and entry points. `make demo` and `make test` create .venv themselves.
# TORCH is the pip requirement for PyTorch: pass a CPU pin (TORCH=torch==2.13.0)
# or a CUDA build's spec; the default lets pip choose.
# TORCH_INDEX is the package index PyTorch is taken from (empty: PyPI, whose Linux wheels are
# CUDA builds of about 3 GB). CPU-only Linux: TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (the CPU build, about 200 MB). Only the torch install step uses it (with torch's own dependencies,
# which that index mirrors); mrisr and everything else come from PyPI.
PYTHON ?= python3
TORCH ?= torch>=2.4,<3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
# One stamp per torch spec and index: changing either reinstalls torch into the same .venv.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH)$(TORCH_INDEX)' | cksum | cut -d' ' -f1)
INDEX_OPTION := $(if $(strip $(TORCH_INDEX)),--index-url "$(strip $(TORCH_INDEX))",)

.PHONY: demo test lint bench notebook clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(INDEX_OPTION) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

# The demo: thick slices of the bundled sample, upscaled with the default model, scored against
# tricubic interpolation; everything in demo-output/ (mrisr/demo.py). --force: reruns replace the
# folder an earlier demo wrote, and only that.
demo: $(STAMP)
	$(BIN)/mrisr demo --out demo-output --force

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/io.py

# The notebooks in JupyterLab (the notebooks extra: jupyterlab, matplotlib). The test suite runs
# their cells without Jupyter (tests/test_notebooks.py).
notebook: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[notebooks]"
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-output
