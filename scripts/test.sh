#!/usr/bin/env bash
# Set up (once) and run the checks: ruff lint + format check, import-linter contracts, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check nas pruning scripts tests
.venv/bin/ruff format --check nas pruning scripts tests
.venv/bin/lint-imports  # the layering contracts in pyproject.toml
.venv/bin/python -m pytest -q "$@"
