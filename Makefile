# Mercato's developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else from the Python that pip installed it into.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
STACK := deploy/local/stack.sh
SERVICES := deploy/local/services.sh
PY_SOURCES := shared/src gateway/src order-service/src inventory-service/src ops/src deploy \
	payment-service/src notification-service/src payment-sandbox/src tests bench

.PHONY: help install dev up down status token demo check dlq stack-up stack-down traces trace test bench soak lint lint-types format env-example events clean images compose-test deploy-tools validate-deploy rules metrics

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install: ## Install Python and its dependencies (uv, then the locked workspace)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet 'uv>=0.5'
	$(UV) sync --locked

dev: install ## Run everything in the foreground on loopback; Ctrl-C stops it all
	bash $(SERVICES) run

up: install ## Run everything in the background
	bash $(SERVICES) start

down: ## Stop everything that `make up` or `make dev` started
	bash $(SERVICES) stop

status: ## Show which processes and servers run
	@bash $(SERVICES) status

token: ## Print a dev bearer token: make token SUB=alice ROLES=customer[,admin]
	@$(UV) run --locked mercato token --sub "$(or $(SUB),dev-customer)" --roles "$(or $(ROLES),customer)"

demo: ## Place N orders through the gateway and wait for them: make demo N=500
	@$(UV) run --locked mercato demo $(or $(N),100)

check: ## Verify every invariant of the running system (make up first)
	@$(UV) run --locked mercato check

dlq: ## List dead letters (make dlq ACTION=replay to replay them)
	@$(UV) run --locked mercato dlq $(or $(ACTION),list)

stack-up: ## Start only Postgres, Redis and Kafka
	bash $(STACK) start

stack-down: ## Stop Postgres, Redis and Kafka
	bash $(STACK) stop

traces: ## Build Jaeger once (several minutes) so make dev / make up trace into it
	bash deploy/local/jaeger.sh install
	@echo "Jaeger is built; the next make dev / make up starts it (MERCATO_TRACES=off to skip)"

trace: ## Print an order's trace from the stack's Jaeger: make trace ORDER=<order or trace id>
	@$(UV) run --locked python deploy/local/trace.py "$(ORDER)"

test: install ## Run the whole test suite (starts the servers and builds the k6 it needs)
	bash bench/tools.sh k6 >/dev/null
	bash $(STACK) start
	$(UV) run --locked pytest

bench: install ## Run the benchmarks on loopback (about 20 min) into bench/results/: make bench [BENCH=gateway]
	bash bench/tools.sh >/dev/null
	bash $(STACK) start
	$(UV) run --locked python -m bench $(BENCH)

soak: install ## Soak test at 70 % of the last bench's saturation, then judge it: make soak [DURATION=30m] [RATE=orders/s]
	bash bench/tools.sh >/dev/null
	bash $(STACK) start
	DURATION="$(DURATION)" RATE="$(RATE)" READ_RATE="$(READ_RATE)" $(UV) run --locked python -m bench soak

lint: install ## ruff, mypy, import-linter, shellcheck
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy $(PY_SOURCES)
	$(UV) run --locked lint-imports
	@if command -v shellcheck >/dev/null; then (cd deploy/local && shellcheck -x *.sh) && (cd bench && shellcheck -x *.sh) && shellcheck .ci/run \
		&& (cd deploy/compose && shellcheck -x *.sh offline/*.sh offline/*/*.sh offline/kafka/bin/*.sh offline/kafka/bin/run); \
		else echo "shellcheck not installed: shell scripts not checked"; fi

lint-types: ## mypy alone (strict)
	$(UV) run --locked mypy $(PY_SOURCES)

format: install ## Format and autofix the Python code
	$(UV) run --locked ruff format .
	$(UV) run --locked ruff check --fix .

events: ## Regenerate the event catalogue in docs/events/ (refuses breaking changes)
	$(UV) run --locked mercato events write

rules: ## Regenerate the Prometheus rules and the PrometheusRule from deploy/prometheus/slo_rules.py
	$(UV) run --locked python deploy/prometheus/slo_rules.py rules > deploy/prometheus/rules.yml
	$(UV) run --locked python deploy/prometheus/slo_rules.py k8s > deploy/k8s/base/prometheus-rules.yaml

metrics: ## Install Debian's Prometheus (its service off) so make dev / make up run it on loopback
	bash deploy/local/prometheus.sh install

env-example: ## Regenerate .env.example from the settings classes
	$(UV) run --locked python deploy/env_example.py > .env.example

clean: ## Remove caches and the virtualenv (the stack's data stays; see deploy/local/README.md)
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

deploy-tools: ## Install the pinned deployment validators (kustomize, KEDA and Compose schemas)
	bash deploy/tools/install.sh

validate-deploy: install deploy-tools ## Validate Dockerfiles, docker-compose.yml and every k8s overlay
	$(UV) run --locked pytest tests/deploy -q

images: ## Build every image (Docker; installs and starts the engine if needed): make images [BASE=offline] [TAG=dev]
	bash deploy/compose/images.sh $(if $(filter offline,$(BASE)),--offline) --tag $(or $(TAG),dev)

compose-test: ## docker compose up the whole system on stand-in images, demo, kill a worker, check; then down
	bash deploy/compose/test.sh
