# Set-up and entry points. `make demo` and `make test` create .venv themselves.
# TORCH is the pip requirement for PyTorch: pass a CPU pin (TORCH=torch==2.13.0)
# or a CUDA build's spec; the default lets pip choose.
PYTHON ?= python3
TORCH ?= torch>=2.4,<3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per torch spec: changing TORCH reinstalls torch into the same .venv.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)
SAMPLE := mrisr/data/sample_t1_mni152.nii.gz

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mrisr info $(SAMPLE)
	$(BIN)/mrisr simulate $(SAMPLE) -o demo-out/sample_thick_x4.nii.gz --protocol thick-slice-x4 --nominal --force
	$(BIN)/mrisr info demo-out/sample_thick_x4.nii.gz

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/io.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out
