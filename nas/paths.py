"""Where srnas reads its built-in data and the reference kit, and where it writes: always relative to the user
(the working directory, ``--results-dir`` or an environment variable), never into the install tree."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the source checkout when srnas runs from one
RESULTS_ENV = "SRNAS_RESULTS_DIR"


def is_source_checkout() -> bool:
    """True when srnas runs from a source checkout (editable install), not from an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "nas").is_dir()


def reference_dir() -> Path | None:
    """The reference kit (official checkpoints, Set5/Set14), or None when it is not present.

    ``SRNAS_REFERENCE_DIR`` names it; without it a source checkout looks at ``<checkout>/../shared/reference``
    (how the project's machines and CI lay it out). An installed srnas has no default.
    """
    env = os.environ.get("SRNAS_REFERENCE_DIR")
    if env:
        candidate = Path(env).expanduser()
    elif is_source_checkout():
        candidate = REPO_ROOT.parent / "shared" / "reference"
    else:
        return None
    return candidate if candidate.is_dir() else None


def results_dir(default: Path | None = None) -> Path:
    """Root of run outputs: ``SRNAS_RESULTS_DIR`` (``--results-dir`` sets it), else ``default``, else
    ``./results`` in the working directory."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return default if default is not None else Path.cwd() / "results"


def home_dir() -> Path:
    """``SRNAS_HOME``, else ``$XDG_CACHE_HOME/srnas`` or ``~/.cache/srnas``: the per-user cache (downloaded
    weights, generated LR images)."""
    env = os.environ.get("SRNAS_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srnas"


def builtin_spaces() -> dict[str, Path]:
    """The search spaces shipped with srnas (``search_spaces/*.yaml``, package data in a wheel): name -> file."""
    folder = resources.files("search_spaces")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}
