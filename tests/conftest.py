"""Shared fixtures: the reference kit (skips when absent) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nas.paths import reference_dir

REQUIRE_REFERENCE = "SRNAS_REQUIRE_REFERENCE"  # set to 1 by .ci/run: a missing kit fails instead of skipping


@pytest.fixture(scope="session")
def reference() -> Path:
    """The reference kit; skips with the reason when absent, fails when ``SRNAS_REQUIRE_REFERENCE=1`` (CI)."""
    ref = reference_dir()
    if ref is None:
        reason = "reference kit ../shared/reference not present (set SRNAS_REFERENCE_DIR)"
        if os.environ.get(REQUIRE_REFERENCE, "") not in ("", "0"):
            pytest.fail(f"{reason}, and {REQUIRE_REFERENCE} is set: CI must run the kit tests", pytrace=False)
        pytest.skip(reason)
    return ref


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_test_process():
    """Tiny tensors on a shared 2-core machine run far slower with torch's default 2 threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
