.PHONY: install lint format test test-fast test-latest test-python313 typecheck bench serve lock

install:
	python3 -m venv .venv
	.venv/bin/pip install -q --require-hashes -r requirements.lock
	.venv/bin/pip install -q -e '.[test,bench]'

# requirements.lock: every runtime dependency pinned with hashes, for the Docker image and CI.
# Refresh it after changing pyproject.toml's dependencies (pins that still fit are kept;
# `uv pip compile ... --upgrade` takes the newest releases).
lock:
	.venv/bin/pip install -q uv
	.venv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock" -o requirements.lock

lint:
	ruff check .
	ruff format --check .

format:
	ruff check --fix .
	ruff format .

test:
	bash scripts/test

# Everything but the tests marked slow (the Docker stack, the benchmark's smoke run): the loop
# while developing. CI runs them all.
test-fast:
	.venv/bin/python -m pytest -q -m "not slow"

# The suite against the newest releases of every dependency, ignoring the upper bounds and the
# lock file: how a bound is checked before it is raised. Its own venv, so .venv stays as locked.
test-latest:
	python3 -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	.venv-latest/bin/python scripts/unbounded-requirements > .venv-latest/requirements.txt
	.venv-latest/bin/pip install -q --upgrade --upgrade-strategy eager -r .venv-latest/requirements.txt
	.venv-latest/bin/pip install -q --no-deps -e .
	.venv-latest/bin/pip list
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider

test-python313:
	bash scripts/test-python313

typecheck:
	.venv/bin/mypy

bench:
	python bench/run.py

serve:
	tapad serve
