# statestore-operator: the two commands of the quick start are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3500

.PHONY: run test lint format unit venv backends k8s-binaries daprd go-client pluggable images cluster cluster-down clean bench

# A virtualenv with the project and its test tools; rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## The state API on port $(PORT) (gRPC on 50001), serving examples/ with the embedded SQLite store.
run: venv
	mkdir -p .data
	$(BIN)/statestore-sidecar --resources-path examples --app-id myapp --dapr-http-port $(PORT) --metrics-port 0

## Everything the tests need (database servers, Kubernetes binaries, daprd, the Go SDK client, the
## pluggable test store, the images), then lint and the whole suite.
test: venv backends k8s-binaries daprd go-client pluggable images lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy: the packages, then the shared fixtures, then each test folder on its own (a folder's helper
# modules are imported by plain name, as pytest puts the folder on sys.path).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests/conftest.py tests/fixtures
	for dir in $(filter-out tests/fixtures/,$(wildcard tests/*/)); do MYPYPATH=$$dir $(BIN)/mypy $$dir || exit 1; done

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Fast tests of pure logic and the embedded stores only: nothing but Python needed.
unit: venv
	$(BIN)/python -m pytest -m "not backends and not k8s and not helm and not images" $(PYTEST_ARGS)

backends:
	bash hack/backends/install.sh

## The state API against direct backend access on loopback (bench/README.md); BENCH_ARGS="--smoke" for a quick check.
bench: venv backends daprd go-client
	$(BIN)/python -m bench.run $(BENCH_ARGS)

k8s-binaries:
	bash hack/k8s/build.sh

## Both images with podman (installed if missing), from a Debian base bootstrapped here, or IMAGE_BASE=<image>.
images:
	bash hack/images/build.sh

## A lean daprd, the reference the tests hold the server to, built once and cached (docs/daprd.md).
daprd:
	bash hack/daprd/build.sh

## The state operations client of the official Dapr Go SDK that tests run (docs/daprd.md).
go-client:
	bash hack/sdk/go-client/build.sh

## A components-contrib state store served as a Dapr pluggable component, for tests (docs/daprd.md).
pluggable:
	bash hack/pluggable/build.sh

## A local control plane (etcd, kube-apiserver, kube-controller-manager); kubeconfig in .cluster/kubeconfig.
cluster: venv k8s-binaries
	$(BIN)/python -m statestore_testing.control_plane up

cluster-down: venv
	$(BIN)/python -m statestore_testing.control_plane down

clean:
	rm -rf .data .cluster .mypy_cache .ruff_cache .pytest_cache

# --- kind: try the operator in a local cluster (needs Docker, kind, kubectl and helm; docs/install.md) ---
.PHONY: kind-up kind-deploy kind-down
KIND ?= kind
HELM ?= helm
KUBECTL ?= kubectl
KIND_CLUSTER ?= statestore
KIND_CONTEXT := kind-$(KIND_CLUSTER)
# The chart's default image references (values.yaml repositories, tag = the chart's appVersion).
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/statestore-operator/Chart.yaml)
OPERATOR_IMAGE ?= ghcr.io/statestore-operator/statestore-operator:$(IMAGE_TAG)
SIDECAR_IMAGE ?= ghcr.io/statestore-operator/statestore-sidecar:$(IMAGE_TAG)

## A kind cluster from kind-config.yaml (kept if it exists already).
# The list is read whole: `kind get clusters | grep -q` could fail on SIGPIPE.
kind-up:
	clusters=$$($(KIND) get clusters) || true; grep -qx '$(KIND_CLUSTER)' <<<"$$clusters" || $(KIND) create cluster --config kind-config.yaml --name $(KIND_CLUSTER)

## Build both images, load them into the kind cluster, install the chart, apply examples/.
kind-deploy:
	docker build -f images/operator.Dockerfile -t $(OPERATOR_IMAGE) .
	docker build -f images/sidecar.Dockerfile -t $(SIDECAR_IMAGE) .
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(SIDECAR_IMAGE)
	$(HELM) upgrade --install statestore-operator charts/statestore-operator --kube-context $(KIND_CONTEXT) \
		--namespace statestore-system --create-namespace --wait --timeout 5m
	$(KUBECTL) --context $(KIND_CONTEXT) apply -f examples/

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)
