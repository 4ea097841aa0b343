# statestore-operator: the two commands of the quick start are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3500

.PHONY: run test lint format unit venv backends k8s-binaries cluster cluster-down clean bench

# A virtualenv with the project and its test tools; rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## The state API on port $(PORT), serving examples/ with the embedded SQLite store.
run: venv
	mkdir -p .data
	$(BIN)/statestore-sidecar --resources-path examples --app-id myapp --dapr-http-port $(PORT) --metrics-port 0

## Everything the tests need (database servers, Kubernetes binaries), then lint and the whole suite.
test: venv backends k8s-binaries lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Fast tests of pure logic and the embedded stores only.
unit: venv
	$(BIN)/python -m pytest -m "not backends and not k8s" $(PYTEST_ARGS)

backends:
	bash hack/backends/install.sh

## The state API against direct backend access on loopback (bench/README.md); BENCH_ARGS="--smoke" for a quick check.
bench: venv backends
	$(BIN)/python -m bench.run $(BENCH_ARGS)

k8s-binaries:
	bash hack/k8s/build.sh

## A local control plane (etcd, kube-apiserver, kube-controller-manager); kubeconfig in .cluster/kubeconfig.
cluster: venv k8s-binaries
	$(BIN)/python hack/k8s/cluster.py up

cluster-down: venv
	$(BIN)/python hack/k8s/cluster.py down

clean:
	rm -rf .data .cluster .mypy_cache .ruff_cache .pytest_cache
