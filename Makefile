.PHONY: install lint format test bench serve

install:
	python3 -m venv .venv
	.venv/bin/pip install -q -e '.[test,bench]'

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
