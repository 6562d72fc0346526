"""Pareto fronts and hypervolume of trial tables.

An *objective* is a column with a direction, ``"max"`` (PSNR) or ``"min"`` (runtime, activations, FLOPs,
params). Trial ``a`` dominates ``b`` when it is at least as good in every objective and strictly better in one;
trials with identical objective vectors do not dominate each other, so ties on the front are all kept; a trial
that repeats an architecture (same ``spec``) is not a second point (``first_of_each_spec``).

Hypervolume is exact (no sampling): a sweep in 2-D and recursive slicing (HSO) in more dimensions, which is
quick for the fronts a search produces (hundreds of points, 2-4 objectives). Optuna has an implementation in
the private ``optuna._hypervolume`` whose signature changed between releases, so we keep our own.

Default reference point (``reference_point``): the worst value of each objective over every point that is
compared (all COMPLETE trials of all runs drawn on the same axes), pushed ``margin`` (10 %) of that
objective's range further out. Runs compared together must share one reference point, or their
hypervolumes are not comparable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from nas.errors import SrnasError

DIRECTIONS = ("max", "min")
COMPLETE = "COMPLETE"
MAXIMISED = frozenset({"psnr", "ssim", "set5_psnr_y", "set14_psnr_y"})


def direction(column: str) -> str:
    """The one encoding of an objective's direction: ``max`` for quality columns (PSNR, SSIM), ``min`` for
    every cost column (runtime, activations, FLOPs, params)."""
    return "max" if column in MAXIMISED else "min"


def _signs(directions: Sequence[str]) -> np.ndarray:
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise SrnasError(f"objective direction must be 'max' or 'min', got {bad[0]!r}")
    return np.array([-1.0 if d == "max" else 1.0 for d in directions])


def objective_matrix(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """The objective columns of ``df`` as floats (non-numeric -> NaN), one column per objective."""
    missing = [c for c in objectives if c not in df.columns]
    if missing:
        raise SrnasError(f"trial table has no column(s) {', '.join(map(repr, missing))}")
    cols = [pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for c in objectives]
    return np.stack(cols, axis=1) if cols else np.empty((len(df), 0))


def eligible(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Rows that may be on a front: state COMPLETE (when there is a ``state`` column) and finite objectives."""
    values = objective_matrix(df, objectives)
    ok = np.isfinite(values).all(axis=1)
    if "state" in df.columns:
        ok &= df["state"].astype(str).str.upper().to_numpy() == COMPLETE
    return ok


def _non_dominated_min(points: np.ndarray, block: int = 512) -> np.ndarray:
    """Mask of the non-dominated rows of ``points`` (all objectives minimised, all finite)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for start in range(0, n, block):
        p = points[start : start + block, None, :]  # (b, 1, d): candidates
        q = points[None, :, :]  # (1, n, d): possible dominators
        dominated = (np.all(q <= p, axis=2) & np.any(q < p, axis=2)).any(axis=1)
        keep[start : start + block] = ~dominated
    return keep


def _canonical_spec(text: object) -> object:
    try:
        return json.dumps(json.loads(text), sort_keys=True)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return text


def first_of_each_spec(df: pd.DataFrame) -> np.ndarray:
    """Mask of the rows that are the first COMPLETE row of their architecture (``spec`` column, compared as
    JSON), and of every row that is not COMPLETE or has no spec: a front lists an architecture once."""
    keep = np.ones(len(df), dtype=bool)
    if "spec" not in df.columns or df.empty:
        return keep
    done = df["state"].astype(str).str.upper().to_numpy() == COMPLETE if "state" in df.columns else keep.copy()
    specs = df["spec"].map(_canonical_spec)
    has = df["spec"].notna().to_numpy() & done
    keep[has] = ~specs[has].duplicated(keep="first").to_numpy()
    return keep


def non_dominated(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Boolean mask (aligned with ``df``'s rows) of the trials on the Pareto front of ``objectives``.

    ``objectives`` maps a column to ``"max"`` or ``"min"``. Only COMPLETE rows (when ``df`` has a ``state``
    column) with finite values in every objective can be on the front; ties are all kept.
    """
    if not objectives:
        raise SrnasError("non_dominated needs at least one objective")
    signs = _signs(list(objectives.values()))
    ok = eligible(df, objectives)
    mask = np.zeros(len(df), dtype=bool)
    if ok.any():
        mask[np.flatnonzero(ok)] = _non_dominated_min(objective_matrix(df, objectives)[ok] * signs)
    return mask


def reference_point(
    points: np.ndarray | Iterable[np.ndarray], directions: Sequence[str], margin: float = 0.1
) -> np.ndarray:
    """The default hypervolume reference: per objective the worst value of all ``points`` (one array or
    several, e.g. one per run) moved out by ``margin`` times the objective's range (or times its magnitude, or
    by ``margin``, when the range is zero). Non-finite values are ignored."""
    arrays = (
        [np.asarray(points, dtype=float)]
        if isinstance(points, np.ndarray)
        else [np.asarray(p, dtype=float).reshape(-1, len(directions)) for p in points]
    )
    allp = np.concatenate([a.reshape(-1, len(directions)) for a in arrays]) if arrays else np.empty((0, 0))
    allp = allp[np.isfinite(allp).all(axis=1)] if allp.size else allp
    if allp.size == 0:
        raise SrnasError("no finite points to place a hypervolume reference point")
    signs = _signs(directions)
    loss = allp * signs
    worst, best = loss.max(axis=0), loss.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.where(worst != 0, np.abs(worst), 1.0))
    return (worst + margin * span) * signs


def hypervolume(points: np.ndarray, reference: Sequence[float], directions: Sequence[str]) -> float:
    """Exact hypervolume dominated by ``points`` (n x d, in the objectives' own units) and bounded by
    ``reference``. Points not strictly better than the reference in every objective add nothing; so do
    non-finite ones."""
    signs = _signs(directions)
    pts = np.asarray(points, dtype=float).reshape(-1, len(signs))
    ref = np.asarray(reference, dtype=float) * signs
    if ref.shape != (len(signs),) or not np.isfinite(ref).all():
        raise SrnasError(f"hypervolume reference must be {len(signs)} finite values, got {reference!r}")
    loss = pts * signs
    loss = loss[np.isfinite(loss).all(axis=1) & (loss < ref).all(axis=1)]
    if len(loss) == 0:
        return 0.0
    loss = np.unique(loss[_non_dominated_min(loss)], axis=0)
    return float(_hv(loss, ref))


def _hv(loss: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of mutually non-dominated, minimised points all strictly inside ``ref``."""
    d = loss.shape[1]
    if d == 1:
        return float(ref[0] - loss[:, 0].min())
    if d == 2:
        order = np.lexsort((loss[:, 1], loss[:, 0]))  # by f1, then f2
        total, best_f2 = 0.0, ref[1]
        for f1, f2 in loss[order]:
            if f2 < best_f2:
                total += (ref[0] - f1) * (best_f2 - f2)
                best_f2 = f2
        return total
    order = np.argsort(loss[:, -1], kind="stable")
    loss = loss[order]
    total = 0.0
    for i in range(len(loss)):
        upper = loss[i + 1, -1] if i + 1 < len(loss) else ref[-1]
        depth = upper - loss[i, -1]
        if depth > 0:
            slab = loss[: i + 1, :-1]
            total += depth * _hv(slab[_non_dominated_min(slab)], ref[:-1])
    return total
