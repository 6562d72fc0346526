#!/usr/bin/env bash
# Set up (once) and run the checks: ruff lint + format check, import-linter contracts, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# tests/test_browser.py needs a Chromium: Debian's package, installed here when missing and we may (root + apt);
# elsewhere those tests skip with the reason.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "test.sh: could not install chromium; the browser tests will skip"
fi
.venv/bin/ruff check nas pruning scripts tests
.venv/bin/ruff format --check nas pruning scripts tests
.venv/bin/lint-imports  # the layering contracts in pyproject.toml
# Every core runs tests (pytest-xdist), whole files per worker so module fixtures (a trained supernet, a Ray
# instance) are built once; one torch thread per worker so the workers do not oversubscribe the cores.
# SRNAS_TEST_WORKERS=0 runs in one process; a caller's own -n N comes later on the line and wins.
workers="${SRNAS_TEST_WORKERS:-auto}"
if [ "$workers" = 0 ]; then
    .venv/bin/python -m pytest -q "$@"
else
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" .venv/bin/python -m pytest -q -n "$workers" --dist loadfile "$@"
fi
