# Two commands on a fresh clone:
#   make quickstart   installs everything and runs the main job on the embedded synthetic world
#   make test         installs everything and runs the tests
PYTHON ?= python3
VENV ?= .venv
# torch goes in first, pinned, so that nothing else pulls an unpinned (multi-GB CUDA) build. On the project's machines
# the pin resolves to a local CPU wheel; elsewhere add the CPU index, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu.
# Both apply when .venv is created (`make clean` first to switch builds).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
QUICKSTART_DIR ?= outputs/quickstart

.PHONY: install quickstart test test-slow test-multiprocess bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e ".[test]"
	touch $@

quickstart: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/amrs pipeline --output-dir $(QUICKSTART_DIR)

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]  # exit 5: no slow tests collected

test-multiprocess: install
	$(BIN)/python -m pytest -m multiprocess

bench: install
	$(BIN)/python benchmarks/synthetic_generation.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
