"""The one writer of run folders (the format ``nas.results.runs`` documents and reads).

``RunWriter`` writes a run's ``config.yaml``, ``status.json`` (once per state change, plus the trial count
as trials finish), ``trials.csv``/``pareto.csv`` and its ``results/index.csv`` row (once per state change),
and the exported models under ``models/<trial>/``. Both ``srnas search`` and ``srnas pipeline`` (its
``final/`` folder) write through it, so the two kinds of run folder cannot drift apart.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas.io import atomic_json, atomic_write
from nas.results.pareto import first_of_each_spec, non_dominated
from nas.results.runs import TRIAL_COLUMNS, update_index


def now() -> str:
    """The current UTC time, ISO format (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pareto_rows(df: pd.DataFrame, directions: Mapping[str, str], min_psnr: float | None = None) -> pd.DataFrame:
    """The non-dominated COMPLETE rows of ``df`` for ``directions`` (column -> max|min), PSNR-constrained;
    an architecture measured twice is one row (its first trial)."""
    distinct = first_of_each_spec(df)
    mask = np.zeros(len(df), dtype=bool)
    mask[distinct] = non_dominated(df[distinct], directions)
    if min_psnr is not None:
        mask &= (pd.to_numeric(df["psnr"], errors="coerce") >= min_psnr).to_numpy()
    return df[mask]


@dataclass
class RunWriter:
    """Writes one run folder ``path`` and its row of ``<index_root>/index.csv``.

    ``run`` is the index row's name (default: the folder name), ``space`` the space name in the index,
    ``directions`` the run's objectives (column -> max|min), ``min_psnr`` its PSNR constraint.
    """

    path: Path
    space: str
    directions: Mapping[str, str]
    device: str
    index_root: Path | None = None
    run: str | None = None
    min_psnr: float | None = None
    status_space: str | None = None  # the space as status.json names it (default: ``space``)
    _status: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.index_root = self.path.parent if self.index_root is None else Path(self.index_root)
        self.run = self.path.name if self.run is None else self.run
        file = self.path / "status.json"
        if file.is_file():
            try:
                self._status = json.loads(file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._status = {}

    # -- files -------------------------------------------------------------------------------------------
    def config(self, config: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))

    def tables(self, df: pd.DataFrame) -> pd.DataFrame:
        """Write ``trials.csv`` (TRIAL_COLUMNS first, extra columns after) and ``pareto.csv`` and record the
        trial count in status.json; returns the Pareto rows."""
        df = df[TRIAL_COLUMNS + [c for c in df.columns if c not in TRIAL_COLUMNS]]
        pareto = pareto_rows(df, self.directions, self.min_psnr)
        atomic_write(self.path / "trials.csv", df.to_csv(index=False))
        atomic_write(self.path / "pareto.csv", pareto.to_csv(index=False))
        self._write_status(trials=len(df))
        return pareto

    def model(self, trial: int, model, spec: dict[str, Any], profile: Mapping[str, Any]) -> Path:
        """Export one model: ``models/<trial>/`` spec.yaml + weights.safetensors + profile.json."""
        from nas.zoo.resolve import save_model

        folder = save_model(self.path / "models" / str(trial), model, spec)
        atomic_json(folder / "profile.json", dict(profile))
        return folder

    def has_model(self, trial: int) -> bool:
        return (self.path / "models" / str(trial) / "profile.json").is_file()

    # -- state changes: status.json and the index row, once each -----------------------------------------
    def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._status.pop("error", None)
        self._change("running", started=now(), finished=None)

    def complete(self, pareto: pd.DataFrame, **fields: Any) -> None:
        psnr = pd.to_numeric(pareto["psnr"], errors="coerce").dropna() if len(pareto) else pd.Series([], dtype=float)
        best = float(psnr.max()) if len(psnr) else None
        self._change("complete", finished=now(), pareto=len(pareto), best_psnr=best, **fields)

    def fail(self, exc: BaseException) -> None:
        kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        self._change("failed", finished=now(), error=f"{kind}: {exc}")

    def _change(self, state: str, **fields: Any) -> None:
        best = fields.pop("best_psnr", None)
        status = self._write_status(state=state, space=self.status_space or self.space, device=self.device, **fields)
        row = {k: status.get(k) for k in ("started", "finished", "trials", "pareto")}
        if state != "complete":
            row.update(finished=None, trials=None, pareto=None)
        update_index(
            self.index_root,
            {"run": self.run, "space": self.space, "state": state, **row, "best_psnr": best, "device": self.device},
        )

    def _write_status(self, **fields: Any) -> dict[str, Any]:
        self._status.update(fields, pid=os.getpid(), host=socket.gethostname())
        atomic_json(self.path / "status.json", self._status)
        return self._status
