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
.venv/bin/python -m pytest -q "$@"
