# Wallet mesh — every entry point a developer or CI needs.
#   make run    start PostgreSQL, Redis, the services and Envoy on localhost:8080
#   make status what make run's supervisor sees: each process's pid, state and restarts
#   make test   run every test (unit, integration, end-to-end); sets up what it needs
#   make lint   ruff, mypy, sqlfluff, buf lint and breaking, and a check that gen/ is up to date
#   make gen    regenerate gen/ from protos/
#   make admin EMAIL=...  give a registered user the admin role (make run's database)
#   make audit  recompute every ledger invariant of make run's database
#   make move-shard SHARDS=200-255 TO=2  move logical shards to make run's second ledger database
#   make bench  benchmark transfers and reads (BENCH_ARGS='--seconds 10 --concurrency 8,32,128')
#   make chaos  the bank workload under faults (CHAOS_ARGS='--seed 42 --rounds 3'); see README
#   make image  the OCI image of every service and Envoy (image/README.md; root or sudo)
#   make test-image  build the image, run each service and Envoy from it (smoke test)
#   make k8s-tools  build helm, kubeconform, kwok, etcd and the Kubernetes control plane into .tools/k8s (once)
#   make test-k8s   tests on a real Kubernetes control plane on loopback (tests/k8s)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := $(CURDIR)/.tools
OPENAPI_PLUGIN := $(TOOLS)/protoc-gen-openapi
GNOSTIC_VERSION := v0.7.1
GHZ := $(TOOLS)/ghz
GHZ_VERSION := v0.120.0
# The last released contract, which `make lint` runs `buf breaking` against: protos/
# at this commit of main (the last one that changed protos/ before the check existed).
# Releasing a contract moves it to the release's commit; a change that has to break a
# released package goes into a new version of it (wallet.<service>.v2) instead.
CONTRACT_RELEASE := febb1cb15a45fb38fd4f9aa8fbb5076fd52374dc

.PHONY: help
help:
	@sed -n 's/^#   //p' Makefile

# --- set-up -----------------------------------------------------------------
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# xds-protos (Envoy's rate-limit stubs) also ships an older copy of the
	# OpenTelemetry protos into the same folder; whichever installs last wins. Put
	# opentelemetry-proto's back so the OTLP exporter finds what it needs.
	$(BIN)/pip install --quiet --no-deps --force-reinstall \
	  "$$(grep -o 'opentelemetry-proto==[^"]*' pyproject.toml)"
	# Generated code lives in gen/python; put it on the virtualenv's path.
	echo "$(CURDIR)/gen/python" > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/wallet-gen.pth
	touch $@

.PHONY: venv
venv: $(STAMP)

.PHONY: system-deps
system-deps:
	@scripts/ensure-system-deps.sh

$(OPENAPI_PLUGIN):
	GOBIN=$(TOOLS) go install github.com/google/gnostic/cmd/protoc-gen-openapi@$(GNOSTIC_VERSION)

$(GHZ):
	GOBIN=$(TOOLS) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

# Versions and stamps live in the script; a second run checks the stamps and returns.
.PHONY: k8s-tools
k8s-tools:
	PYTHON=$(PYTHON) scripts/ensure-k8s-tools.sh

# --- contracts --------------------------------------------------------------
.PHONY: gen
gen: $(STAMP) $(OPENAPI_PLUGIN)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gen.sh $(OPENAPI_PLUGIN)
	# The chart's files from the service catalogue and the edge's template.
	$(BIN)/python -m services.chart

.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy
	# The ledger's SQL (.sqlfluff says what is configured and why).
	$(BIN)/sqlfluff lint services/transaction/sql
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/buf.sh lint
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/buf-breaking.sh $(CONTRACT_RELEASE)
	$(MAKE) --no-print-directory gen
	@git diff --exit-code --stat -- gen helm || { echo "gen/ or helm/ is stale: run 'make gen' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen helm)" || { git status --porcelain -- gen helm; echo "gen/ or helm/ has files make gen does not produce"; exit 1; }

.PHONY: fmt
fmt: $(STAMP)
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

# --- running ----------------------------------------------------------------
.PHONY: run
run: $(STAMP) system-deps
	$(BIN)/python -m services.localmesh run

.PHONY: status
status: $(STAMP)
	@$(BIN)/python -m services.localmesh status

.PHONY: traces
traces: $(STAMP)
	$(BIN)/python -m services.localmesh traces

.PHONY: audit
audit: $(STAMP)
	$(BIN)/python -m services.localmesh audit

.PHONY: move-shard
move-shard: $(STAMP)
	@test -n "$(SHARDS)" -a -n "$(TO)" || { echo "usage: make move-shard SHARDS=200-255 TO=2"; exit 2; }
	$(BIN)/python -m services.localmesh move-shard "$(SHARDS)" --to "$(TO)"

.PHONY: admin
admin: $(STAMP)
	@test -n "$(EMAIL)" || { echo "usage: make admin EMAIL=person@example.com"; exit 2; }
	$(BIN)/python -m services.localmesh grant-admin "$(EMAIL)"

# --- benchmarks -------------------------------------------------------------
# Its own mesh on free ports; results in bench/results/<UTC timestamp>/ (see README).
# wrk (REST stage) is installed from Debian when missing and permitted, else skipped.
BENCH_ARGS ?=

BENCH_STAMP := $(VENV)/.installed-bench

# The bench extra (matplotlib), once per change of the dependencies.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

.PHONY: bench
bench: $(BENCH_STAMP) system-deps $(GHZ)
	$(BIN)/python -m bench run $(BENCH_ARGS)

# --- fault injection --------------------------------------------------------
# Its own mesh on free ports; results in .run/chaos/<UTC time>-seed<N>/ (or --out).
# `make test` runs the short version (tests/chaos/test_chaos.py).
CHAOS_ARGS ?=

.PHONY: chaos
chaos: $(STAMP) system-deps
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

# --- container image ----------------------------------------------------------
# localhost/wallet-mesh:<version> in buildah's storage and .run/image/wallet-mesh-<version>.tar;
# caches (base root filesystem, wheelhouse) in .tools/image. See image/README.md.
.PHONY: image
image: $(STAMP)
	image/build.sh

# --- tests ------------------------------------------------------------------
PYTEST := $(BIN)/python -m pytest

# tests/k8s needs `make k8s-tools` (a long build, once): its own target for now.
.PHONY: test
test: $(STAMP) system-deps k8s-tools
	$(PYTEST) tests

.PHONY: test-unit
test-unit: $(STAMP)
	$(PYTEST) tests/unit

.PHONY: test-integration
test-integration: $(STAMP) system-deps
	$(PYTEST) tests/integration

.PHONY: test-e2e
test-e2e: $(STAMP) system-deps
	$(PYTEST) tests/e2e

.PHONY: test-image
test-image: image system-deps
	$(PYTEST) tests/image

# A control plane of its own on loopback (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok's three fake nodes), started once per run.
.PHONY: test-k8s
test-k8s: $(STAMP) k8s-tools
	$(PYTEST) tests/k8s

.PHONY: clean
clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
