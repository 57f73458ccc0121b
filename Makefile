# Set-up and entry points. `make demo` and `make test` create .venv themselves.
# TORCH is the pip requirement for PyTorch: pass a CPU pin (TORCH=torch==2.13.0)
# or a CUDA build's spec; the default lets pip choose.
PYTHON ?= python3
TORCH ?= torch>=2.4,<3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per torch spec: changing TORCH reinstalls torch into the same .venv.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-output
