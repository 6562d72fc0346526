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


# --------------------------------------------------------------------------- search / pipeline fixtures

TINY_SPACE = {
    "name": "tiny",
    "widths": [8],
    "depths": [1, 2],
    "candidates": {
        "res": {"type": "residual"},
        "ir": {"type": "inverted_residual", "expand_ratio": 3, "norm": "none"},
    },
    "fusions": {"none": None, "concat": {"type": "concat"}},
    "upsamplers": {"ps": {"type": "pixelshuffle"}},
    "global_skips": ["none", "bilinear"],
    "references": {
        "two_res": {
            "width": 8,
            "depth": 2,
            "layers": ["res", "res"],
            "fusion": "none",
            "upsampler": "ps",
            "global_skip": "none",
        }
    },
    "train": {"data": "embedded", "steps": 6, "batch_size": 2, "patch_size": 16, "ckpt_every": 3, "progress": False},
    "search": {"trials": 5, "runtime_size": [3, 24, 24], "runtime_repeats": 1, "val_max_size": 48},
}
TINY_OPTIONS = {"trials": 5, "runtime_size": [3, 24, 24], "runtime_repeats": 1, "val_max_size": 48, "device": "cpu"}


@pytest.fixture
def tiny_space_data() -> dict:
    """A tiny search space (24 architectures at width 8) as YAML data; a fresh copy per test."""
    import copy

    return copy.deepcopy(TINY_SPACE)


@pytest.fixture
def tiny_space(tiny_space_data):
    from nas.search.space import parse_space

    return parse_space(tiny_space_data)


@pytest.fixture
def tiny_options():
    """Search options sized for the tiny space (5 trials, 24x24 runtime input, one repeat, CPU)."""
    from nas.search.options import SearchOptions

    return SearchOptions(**TINY_OPTIONS)


@pytest.fixture
def results_env(tmp_path, monkeypatch) -> Path:
    """An empty results folder the CLI writes into (``SRNAS_RESULTS_DIR``)."""
    root = tmp_path / "results"
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(root))
    return root


@pytest.fixture
def small_space_data(tiny_space_data) -> dict:
    """The tiny space cut to 8 architectures (one layer), so a search of 8 trials must meet repeats."""
    return {**tiny_space_data, "name": "small", "depths": [1], "references": {}}


# --------------------------------------------------------------------------- pruning fixtures


@pytest.fixture(scope="module")
def smooth_hr(tmp_path_factory) -> Path:
    """A folder of three smooth 48x48 HR images (sines of different frequencies per channel)."""
    import numpy as np

    from nas.measure.images import write_image

    folder = tmp_path_factory.mktemp("hr")
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    for i in range(3):
        img = np.stack([np.sin(2 * np.pi * (xx * (i + 1) + c / 3 + yy * (c + 1))) for c in range(3)], axis=2)
        write_image(folder / f"{i}.png", np.round((img + 1) * 127.5).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def smooth_pairs(smooth_hr):
    """``smooth_hr`` as x2 training pairs (LR 24x24 by MATLAB bicubic)."""
    from nas import data as D

    return D.open_pairs(smooth_hr, 2)


@pytest.fixture
def tiny_prune_config():
    """A factory of ``PruneConfig`` sized for tiny models on 24x24 LR images; keywords override."""
    from pruning.config import PruneConfig

    def make(**kw) -> PruneConfig:
        base = dict(target=0.7, rounds=2, round_steps=2, final_steps=2, score_batches=1, batch_size=2)
        base |= dict(patch_size=16, input_size=(3, 24, 24), device="cpu", progress=False, report=False)
        return PruneConfig(**{**base, "benchmarks": (), **kw})

    return make
