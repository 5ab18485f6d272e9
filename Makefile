# The two commands a new user needs: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MLSERVER_VENV ?= .venv-mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed-stamp

.PHONY: setup demo test test-unit test-integration test-conformance mlserver-venv bench lint clean components example-pipeline images

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@$(MAKE) --no-print-directory tools
	@touch $(STAMP)

# Tools the tests run that PyPI does not have: Prometheus (rollout tests) and kubectl
# (`kubectl kustomize` in the manifest tests). Installed from Debian's packages when running
# as root and missing; setup never fails over them (the tests skip or say what to install).
# $(call debian_tool,COMMAND,PACKAGE,WHAT NEEDS IT)
define debian_tool
	@command -v $(1) >/dev/null 2>&1 || test -x /usr/bin/$(1) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) >/dev/null 2>&1 \
	      || echo "note: could not install $(2); $(3) (apt-get install -y $(2))"; \
	  else \
	    echo "note: no $(1); $(3) (install: apt-get install -y $(2))"; \
	  fi; }
endef

.PHONY: tools
tools:
	$(call debian_tool,kubectl,kubectl,the manifest tests need it)
	$(call debian_tool,prometheus,prometheus,the rollout tests will skip)

demo: setup
	$(BIN)/python examples/local_demo.py

# Two workers (the machine's two cores); a test file stays on one worker, so its module
# fixtures and its order are as in a serial run. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: setup tools $(MLSERVER_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile tests

test-unit: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

test-integration: setup tools
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration

# KServe conformance harness (tests/conformance): MLServer as KServe's kserve-mlserver
# runtime runs it, in its own venv (the runtime image carries its own MLflow).
mlserver-venv: $(MLSERVER_STAMP)

$(MLSERVER_STAMP): tests/conformance/mlserver-constraints.txt
	@test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(MLSERVER_VENV)/bin/python -m pip install -q -c tests/conformance/mlserver-constraints.txt mlserver mlserver-mlflow
	@touch $(MLSERVER_STAMP)

test-conformance: setup $(MLSERVER_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/conformance

# The daemon image's environment (`.[daemon,mlflow-k8s-auth]`, no dev extras): the benchmarks run
# the copying process in it, so its memory is what a deployed sync would use.
RUNTIME_VENV ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed-stamp

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	@test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(RUNTIME_VENV)/bin/python -m pip install -q -c constraints.txt -e '.[daemon,mlflow-k8s-auth]'
	@touch $(RUNTIME_STAMP)

bench: setup $(RUNTIME_STAMP)
	BRIDGE_BENCH_RUNTIME_PYTHON=$(RUNTIME_VENV)/bin/python $(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check bridge tests examples benchmarks components
	$(BIN)/ruff format --check bridge tests examples benchmarks components

# Images (Dockerfile targets daemon and components), tagged with the package version.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DAEMON_IMAGE ?= ghcr.io/mlflow-kubeflow-bridge/bridge:$(VERSION)
COMPONENTS_IMAGE ?= ghcr.io/mlflow-kubeflow-bridge/bridge-kfp:$(VERSION)
# docker or podman, whichever answers `info` (a client without a running engine does not).
ENGINE ?= $(shell (docker info >/dev/null 2>&1 && echo docker) || (podman info >/dev/null 2>&1 && echo podman))

images:
	@if [ -z "$(ENGINE)" ]; then \
	  echo "make images: no container engine here (neither 'docker info' nor 'podman info' works); start one, or set ENGINE=docker|podman" >&2; \
	  exit 1; fi
	$(ENGINE) build --target daemon -t $(DAEMON_IMAGE) .
	$(ENGINE) build --target components -t $(COMPONENTS_IMAGE) .

# Regenerate every compiled KFP YAML (components/*/component.yaml, examples/kfp_pipeline.yaml)
# naming COMPONENTS_IMAGE: `make components COMPONENTS_IMAGE=registry.example/bridge-kfp:0.1.0`.
components: setup
	$(BIN)/python -m components.compile --image $(COMPONENTS_IMAGE)

# Run the example pipeline with kfp.local against the local stack (`bridge dev up`).
example-pipeline: setup
	$(BIN)/bridge dev up > /dev/null
	eval "$$($(BIN)/bridge dev env)" && $(BIN)/python examples/kfp_pipeline.py --run-local

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) $(MLSERVER_VENV) build dist *.egg-info .bridge-dev .pytest_cache demo-output
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
