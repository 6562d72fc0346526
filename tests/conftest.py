"""Shared fixtures: the reference kit (skips when absent) and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.paths import reference_dir


@pytest.fixture(scope="session")
def reference() -> Path:
    ref = reference_dir()
    if ref is None:
        pytest.skip("reference kit ../shared/reference not present (set SRNAS_REFERENCE_DIR)")
    return ref
