# medsearch developer entry points. The README's quick start is `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off
PYTEST_ARGS ?=

.PHONY: help venv demo up down status test test-unit test-integration test-k8s test-images images images-cuda lint e2e bench clean web k8s-assets dicom-peers

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml dev/pyproject.toml model_server/pyproject.toml ingest_workers/pyproject.toml api/pyproject.toml operator/pyproject.toml requirements-dev.txt constraints.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (medsearch needs Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -q --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -q -c constraints.txt -r requirements-dev.txt
	@touch $@

venv: $(STAMP) ## create .venv and install every component and test tool

web: $(STAMP) ## build the web client (when missing or changed)
	@bash scripts/build-web.sh

demo: $(STAMP) web ## start the local stack, load the sample data, print the URLs and a token
	$(BIN)/medsearch demo --index operator/config/samples/demo-index.yaml

up: $(STAMP) ## start the local stack in the background
	$(BIN)/medsearch up --detach

down: ## stop the local stack
	$(BIN)/medsearch down

status: ## show the local stack's services and counts
	$(BIN)/medsearch status

lint: $(STAMP) ## ruff, mypy (strict) and the layering contracts (import-linter) on the source
	$(BIN)/ruff check .
	$(BIN)/mypy medsearch dev/medsearch_dev model_server/medsearch_model_server ingest_workers/medsearch_workers api/medsearch_api operator/medsearch_operator
	$(BIN)/lint-imports

k8s-assets: $(STAMP) ## fetch/build kube-apiserver, etcd and helm for the k8s tier (cached)
	@bash scripts/k8s-assets.sh

dicom-peers: ## install the real DICOM peers of the integration tier (dcmtk, Orthanc + DICOMweb; apt)
	@bash scripts/ensure-dicom-peers.sh

images: ## build the four images (Debian-made base images unless PYTHON_IMAGE/NODE_IMAGE; tag IMAGE_TAG, default git describe)
	@bash scripts/build-images.sh

images-cuda: ## build the CUDA model server image (onnxruntime-gpu; GBs; not part of `make images` nor the images tier)
	@bash scripts/build-images.sh model-server-cuda

test: $(STAMP) lint web k8s-assets dicom-peers ## every test tier this machine can run (unit, integration, k8s, images; e2e skips with a reason)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no network)
	$(BIN)/pytest -m "not integration and not k8s and not e2e and not browser and not images" $(PYTEST_ARGS)

test-integration: $(STAMP) web dicom-peers ## integration tier (Tansu, milvus-lite, model server as local processes)
	$(BIN)/pytest -m "integration or browser" $(PYTEST_ARGS)

test-k8s: $(STAMP) k8s-assets ## k8s tier (real etcd + kube-apiserver)
	$(BIN)/pytest -m k8s $(PYTEST_ARGS)

test-images: $(STAMP) k8s-assets ## images tier: build the images and run them as the chart does (needs root or a Docker engine)
	$(BIN)/pytest -m images $(PYTEST_ARGS)

e2e: $(STAMP) ## kind cluster end to end (needs Docker, kind, skaffold; skips otherwise)
	$(BIN)/pytest -m e2e -rs tests/e2e

bench: $(STAMP) dicom-peers ## run the benchmarks (JSON on stdout)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist api/medsearch_api/web/dist
