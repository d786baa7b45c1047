# Every target installs what it needs on a fresh machine (only python3 required) and is fast
# when already set up. `make demo` and `make test` are the two commands in the README.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PY := $(VENV)/bin/python
DBT_DIR := dbt_project
MANIFEST := $(DBT_DIR)/target/manifest.json
DBT_SOURCES := $(shell find $(DBT_DIR)/models $(DBT_DIR)/macros $(DBT_DIR)/seeds $(DBT_DIR)/tests -type f 2>/dev/null) $(DBT_DIR)/dbt_project.yml $(DBT_DIR)/profiles.yml

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export OPENBLAS_NUM_THREADS := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export UV_PYTHON := $(shell command -v $(PYTHON))
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Some machines set PYTHONDONTWRITEBYTECODE: every process (each dbt call, each Dagster run)
# would then recompile every module it imports, about 8 s here. Bytecode is compiled at install
# (--compile-bytecode) and our own modules may cache theirs.
unexport PYTHONDONTWRITEBYTECODE

# The Spark engine (issue #14): spark-up / spark-down / spark-status, ENGINE=duckdb|spark.
SPARK_DEPS := setup
include spark.mk

.PHONY: setup demo test dev lint generate summary clean smtp-sink smtp-sink-stop deliver collector api erase bench

setup: $(VENV)/.synced $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

$(MANIFEST): $(VENV)/.synced $(DBT_SOURCES)
	$(PY) -m personalization_assets.cli prepare

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: setup $(if $(filter spark,$(ENGINE)),spark-up) ## generate sample data if absent, run the whole graph, print a summary
	$(PY) -m personalization_assets.cli demo

test: setup ## run the test suite
	$(VENV)/bin/pytest

dev: setup ## open the Dagster UI on http://127.0.0.1:3000
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

generate: setup ## (re)write the sample landing zone; SCALE=demo|10k|100k|1m
	$(PY) -m personalization_assets.cli generate --scale $(or $(SCALE),demo)

summary: setup
	$(PY) -m personalization_assets.cli summary

lint: setup
	$(VENV)/bin/ruff check personalization_assets tests bench
	$(VENV)/bin/ruff format --check personalization_assets tests bench

clean:
	rm -rf data/warehouse.duckdb data/output $(DBT_DIR)/target $(DBT_DIR)/logs

SMTP_PORT ?= 8025
SMTP_PID := data/smtp_sink.pid

smtp-sink: setup ## local SMTP server on 127.0.0.1:$(SMTP_PORT), messages as .eml in data/smtp_sink
	@mkdir -p data
	@if [ -f $(SMTP_PID) ] && kill -0 $$(cat $(SMTP_PID)) 2>/dev/null; then echo "smtp sink already running (pid $$(cat $(SMTP_PID)))"; \
	else nohup $(PY) -m personalization_assets.defs.delivery.smtp_sink --port $(SMTP_PORT) --dir data/smtp_sink --pid-file $(SMTP_PID) > data/smtp_sink.log 2>&1 & \
	for i in $$(seq 100); do [ -f $(SMTP_PID) ] && break; sleep 0.1; done; cat data/smtp_sink.log; fi

smtp-sink-stop:
	@if [ -f $(SMTP_PID) ]; then kill $$(cat $(SMTP_PID)) && echo "smtp sink stopped"; else echo "no smtp sink running"; fi

deliver: setup ## journeys, feedback, then send due payloads; SENDER=smtp (default: the local sink)|http|dry_run
	PERSONALIZATION_SENDER_MODE=$(or $(SENDER),smtp) PERSONALIZATION_SMTP_PORT=$(SMTP_PORT) \
	  $(VENV)/bin/dagster job execute -m personalization_assets.definitions -j email_delivery

collector: setup ## event collector on http://127.0.0.1:8001 (config/edge.yaml)
	$(PY) -m personalization_assets.edge collector

api: setup ## send-time personalization API on http://127.0.0.1:8002 (reads the serving snapshot)
	$(PY) -m personalization_assets.edge api

erase: setup ## erase customers everywhere: make erase IDS="c0000001 c0000002"
	$(PY) -m personalization_assets.cli erase $(foreach id,$(IDS),--customer-id $(id))

bench: setup ## scale benchmark: generate, full graph, +1% incremental; SCALE=10k|100k|1m ENGINE=duckdb|spark → bench/results.md
	$(PY) bench/scale_bench.py --scale $(or $(SCALE),10k) --engine $(ENGINE) $(BENCH_ARGS)
