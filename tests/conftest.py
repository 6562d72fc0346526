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


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_test_process():
    """Tiny tensors on a shared 2-core machine run far slower with torch's default 2 threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
