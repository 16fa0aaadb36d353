# Two commands do all set-up on a fresh machine:
#   make demo   - build a venv, install rkfarm, run the demo on a real model
#   make test   - build a venv, install rkfarm + dev tools, run ruff, mypy and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rkfarm-installed
# Real models for the demo and tests ship inside these PyPI packages (installed without their heavy deps).
MODELS_PKG := rapidocr-onnxruntime==1.4.4 nudenet==3.4.2

# Heavy extras some tests need, installed for the test command only: torch 2.13.0 is the CPU build this machine
# keeps on disk (any other version downloads several GB); TensorFlow + tf2onnx (the TFLite/TensorFlow frontends)
# and LiteRT (their reference interpreter) co-install with rkfarm's own pins, checked with these versions.
TEST_EXTRAS := torch==2.13.0 tensorflow-cpu==2.21.0 tf2onnx==1.17.0 ai-edge-litert==2.3.0
TEST_STAMP  := $(VENV)/.rkfarm-test-extras

.PHONY: demo test lint typecheck unit bench proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODELS_PKG)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(TEST_EXTRAS)
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/python -m rkfarm.demo

test: $(TEST_STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check proto agent host tests benchmarks tools

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/simulator_overhead.py

proto: $(STAMP)
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
