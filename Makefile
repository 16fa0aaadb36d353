# Two commands do all set-up on a fresh machine:
#   make demo   - build a venv, install rkfarm, run the demo on a real model
#   make test   - build a venv, install rkfarm + dev tools, run ruff, mypy and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rkfarm-installed
# Real models for the demo and tests ship inside these PyPI packages (installed without their heavy deps, and
# without their Python cap: rapidocr-onnxruntime 1.4.4 says <3.13 but its ONNX files are all rkfarm reads).
MODELS_PKG := rapidocr-onnxruntime==1.4.4 nudenet==3.4.2

# Heavy extras some tests need, installed for the test command only, each group where it installs (its tests
# skip elsewhere, saying why): torch 2.13.0 only from the CPU wheel this machine keeps on disk (--no-index: any
# other build downloads several GB); TensorFlow + tf2onnx (the TFLite/TensorFlow frontends) and LiteRT (their
# reference interpreter) co-install with rkfarm's own pins, checked with these versions.
TORCH_EXTRA := torch==2.13.0
TF_EXTRAS   := tensorflow-cpu==2.21.0 tf2onnx==1.17.0 ai-edge-litert==2.3.0
# The farm's optional engines: labgrid (a real labgrid-coordinator in tests/test_labgrid.py) and psycopg (the
# PostgreSQL perf history), checked to install beside rkfarm's grpcio/protobuf pins.
FARM_EXTRAS := labgrid==26.0.1 'psycopg[binary]==3.3.9'
TEST_STAMP  := $(VENV)/.rkfarm-test-extras

.PHONY: demo test lint typecheck unit bench proto clean board

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python $(MODELS_PKG)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-index --no-deps $(TORCH_EXTRA) \
	  && $(BIN)/python -m pip install --quiet $(TORCH_EXTRA) \
	  || echo "note: no $(TORCH_EXTRA) wheel on disk for this Python: the PyTorch tests will skip"
	$(BIN)/python -m pip install --quiet $(TF_EXTRAS) \
	  || echo "note: $(TF_EXTRAS) do not install on this Python: the TensorFlow/TFLite tests will skip"
	$(BIN)/python -m pip install --quiet $(FARM_EXTRAS) \
	  || echo "note: $(FARM_EXTRAS) do not install on this Python: the labgrid and PostgreSQL tests will skip"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/python -m rkfarm.demo

test: $(TEST_STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check proto agent host tests benchmarks tools
	$(BIN)/ruff format --check proto agent host tests benchmarks tools

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not board_arm64" $(PYTEST_ARGS)

# The agent on an emulated arm64 board (root; apt-get install debootstrap qemu-user-static): an arm64 Debian
# bookworm image cached in ~/.cache/rkfarm/board-arm64, the agent installed there from its wheel by
# deploy/install-agent.sh, served under qemu in a network namespace and driven from this host. Minutes; the
# timings land in ~/.cache/rkfarm/board-arm64/timings.txt.
board: $(TEST_STAMP)
	$(BIN)/python tools/board_arm64.py build
	$(BIN)/python -m pytest -q -p no:cacheprovider -m board_arm64 tests/test_board_arm64.py $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/simulator_overhead.py

proto: $(STAMP)
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
