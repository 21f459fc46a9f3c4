# Two entry points: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/freshrank/v1/*.proto)
GEN    := services/freshrank/v1/.generated
CODE   := services/freshrank operator/freshrank_operator

.PHONY: demo test install protos envtest lint typecheck pytest format clean

demo: install protos
	$(BIN)/freshrank demo $(if $(DATASET),--dataset $(DATASET),)

test: install protos lint typecheck pytest

install: $(STAMP)

# torch first: the pinned CPU build lies on local disk; anything asking for torch before it
# would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

protos: $(GEN)

$(GEN): $(PROTOS) $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --python_out=services --mypy_out=services $(PROTOS)
	touch services/freshrank/v1/__init__.py $@

# The real Kubernetes control plane the operator tests run on (kube-apiserver,
# kube-controller-manager, kubectl built from the Go module proxy with the machine's Go), cached
# in ~/.cache/freshrank/envtest/<version>/: only a new machine pays the build (tens of minutes);
# FRESHRANK_ENVTEST_ASSETS points at prebuilt binaries instead. etcd comes from the dev extra.
envtest:
	tests/envtest/build.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install protos
	$(BIN)/mypy $(CODE)

pytest: install protos envtest
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) services/freshrank/v1 .freshrank .pytest_cache .mypy_cache .ruff_cache
