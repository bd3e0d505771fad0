# ComputeDomain operator. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export CD_TOOLS_DIR ?= $(CURDIR)/.tools
# The test bed is its own source root, outside the product package and its wheel.
TESTBED := PYTHONPATH=$(CURDIR)/testbed:$(CURDIR)/tests $(PY) -m cdtestbed

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with runtime, test and lint dependencies

.PHONY: tools
tools: ## Build etcd, Kubernetes (kubelet too), kwok, helm, promtool, containerd, runc, CNI, the pause image and the runtime double
	tools/build.sh

.PHONY: image
image: venv ## Build the product image without a container engine (an OCI archive in .work/image)
	tools/host-packages.sh
	$(PY) image/build.py

.PHONY: lint
lint: venv ## ruff (lint + format check), mypy --strict and the import rules
	$(VENV)/bin/ruff check operator testbed tests bench image
	$(VENV)/bin/ruff format --check operator testbed tests bench image
	$(VENV)/bin/mypy
	MYPYPATH=operator:testbed:tests:bench $(VENV)/bin/mypy --strict --explicit-package-bases bench/*.py
	MYPYPATH=image $(VENV)/bin/mypy --strict --explicit-package-bases image/*.py
	PYTHONPATH=operator:testbed $(VENV)/bin/lint-imports

.PHONY: fmt
fmt: venv ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format operator testbed tests bench image
	$(VENV)/bin/ruff check --fix operator testbed tests bench image

.PHONY: crds
crds: venv ## Regenerate crds/ from the pydantic models
	$(PY) -m computedomain.api.crd write crds

.PHONY: protos
protos: venv ## Regenerate the kubelet plugin's gRPC stubs from its vendored kubelet protos
	$(PY) scripts/gen_protos.py

.PHONY: test
test: venv tools ## Run the whole test suite (unit, control plane, end to end)
	@$(VENV)/bin/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

.PHONY: test-unit
test-unit: venv ## Run only the fast unit tests (no control plane)
	$(VENV)/bin/pytest tests/unit

# CI runs the chaos suite at CHAOS_SCALE=1 with the rest; this runs bigger bursts and longer outages.
CHAOS_SCALE ?= 5
.PHONY: chaos
chaos: venv tools ## Run the chaos suite longer (CHAOS_SCALE=5: bigger bursts, longer outages)
	CHAOS_SCALE=$(CHAOS_SCALE) $(VENV)/bin/pytest -m chaos -s tests/chaos

.PHONY: cluster-up
cluster-up: venv tools ## Start the local control plane with one fake NVL72 rack (.work/cluster)
	$(TESTBED) up

.PHONY: cluster-down
cluster-down: venv ## Stop the local control plane
	$(TESTBED) down

.PHONY: demo
demo: venv tools ## Example 01 on real kubelet nodes with the kubelet plugin (KWOK nodes where kubelets cannot run)
	$(TESTBED) demo

.PHONY: bench
bench: venv tools ## Run the benchmarks (they print their figures): controller, memory to 10,000 domains, kubelets, containers, channel pool
	$(PY) bench/run.py
	$(PY) bench/channels.py
	$(PY) bench/scale.py --scenarios domains
	$(PY) bench/kubelets.py
	$(PY) bench/containers.py

.PHONY: bench-scale
bench-scale: venv tools ## Scale benchmarks: controller memory up to 10,000 domains, one 5,000-node join
	$(PY) bench/scale.py

.PHONY: gpu-check
gpu-check: ## Read the real NVML once and print GPUs, fabric state and clique (needs a GPU)
	scripts/gpu-check.sh

.PHONY: clean
clean: ## Remove test and cluster state (keeps the tool cache)
	rm -rf .work .pytest_cache .mypy_cache .ruff_cache
