"""Where srnas finds the read-only reference kit and writes results."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def reference_dir() -> Path | None:
    """The reference kit (official checkpoints, Set5/Set14), or None when it is not present.

    ``SRNAS_REFERENCE_DIR`` overrides the default ``<repo>/../shared/reference``.
    """
    env = os.environ.get("SRNAS_REFERENCE_DIR")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "reference"
    return candidate if candidate.is_dir() else None


def results_dir() -> Path:
    """Root of run outputs (``SRNAS_RESULTS_DIR`` or ``<repo>/results``)."""
    return Path(os.environ.get("SRNAS_RESULTS_DIR", REPO_ROOT / "results"))
