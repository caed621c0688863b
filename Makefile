.PHONY: install lint format test bench serve lock

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

bench:
	python bench/run.py

serve:
	tapad serve
