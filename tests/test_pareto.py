"""Pareto fronts against a brute-force filter; hypervolume on hand cases and against inclusion-exclusion."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from nas.errors import SrnasError
from nas.results.pareto import hypervolume, non_dominated, reference_point


def brute_front(df: pd.DataFrame, objectives: dict[str, str]) -> np.ndarray:
    """O(n^2) definition: COMPLETE, finite, and no other such row at least as good everywhere, better once."""
    rows = []
    for _, r in df.iterrows():
        vals = [float(r[c]) if not pd.isna(r[c]) else math.nan for c in objectives]
        ok = r["state"] == "COMPLETE" and all(math.isfinite(v) for v in vals)
        rows.append((ok, [v if d == "min" else -v for v, d in zip(vals, objectives.values(), strict=True)]))
    mask = []
    for ok, a in rows:
        dominated = any(
            ok2
            and all(bj <= aj for aj, bj in zip(a, b, strict=True))
            and any(bj < aj for aj, bj in zip(a, b, strict=True))
            for ok2, b in rows
        )
        mask.append(ok and not dominated)
    return np.array(mask, dtype=bool)


def random_trials(rng: np.random.Generator, n: int) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "trial": np.arange(n),
            "state": rng.choice(["COMPLETE"] * 6 + ["FAIL", "RUNNING", "PRUNED"], size=n),
            "psnr": rng.integers(0, 8, size=n).astype(float),  # few values: many ties and duplicates
            "runtime_ms": rng.integers(1, 9, size=n).astype(float),
            "params": rng.integers(1, 5, size=n).astype(float),
        }
    )
    df.loc[rng.random(n) < 0.1, "psnr"] = np.nan
    df.loc[rng.random(n) < 0.05, "runtime_ms"] = np.inf
    # a failed trial with the best possible metrics must not enter the front
    df.loc[0, ["state", "psnr", "runtime_ms", "params"]] = ["FAIL", 100.0, 0.0, 0.0]
    return df


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "objectives",
    [
        {"psnr": "max", "runtime_ms": "min"},
        {"psnr": "max", "runtime_ms": "min", "params": "min"},
        {"runtime_ms": "min"},
    ],
)
def test_non_dominated_matches_brute_force(seed: int, objectives: dict[str, str]) -> None:
    df = random_trials(np.random.default_rng(seed), 60)
    mask = non_dominated(df, objectives)
    np.testing.assert_array_equal(mask, brute_front(df, objectives))
    assert mask.any() and not mask[0]


def test_duplicates_on_front_are_all_kept_and_strings_are_coerced() -> None:
    df = pd.DataFrame(
        {"state": ["COMPLETE"] * 4 + ["complete"], "psnr": ["30", 30, 29, "bad", 31], "runtime_ms": [5, 5, 4, 1, 9]}
    )
    # lower-case state counts as COMPLETE; "bad" PSNR is NaN -> not eligible
    assert non_dominated(df, {"psnr": "max", "runtime_ms": "min"}).tolist() == [True, True, True, False, True]


def test_non_dominated_errors_and_empty() -> None:
    df = pd.DataFrame({"state": ["FAIL"], "psnr": [1.0], "runtime_ms": [1.0]})
    assert not non_dominated(df, {"psnr": "max", "runtime_ms": "min"}).any()
    with pytest.raises(SrnasError, match="flops"):
        non_dominated(df, {"flops": "min"})
    with pytest.raises(SrnasError, match="direction"):
        non_dominated(df, {"psnr": "up"})


def test_hypervolume_hand_cases() -> None:
    # 2-D minimisation: staircase of (1,3), (2,2), (3,1) to (4,4): 3 + 2 + 1 = 6
    pts = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    assert hypervolume(pts, [4, 4], ["min", "min"]) == pytest.approx(6.0)
    # a dominated point, a duplicate and a point outside the reference change nothing
    more = np.vstack([pts, [[3, 3], [2, 2], [5, 0.5], [np.nan, 0]]])
    assert hypervolume(more, [4, 4], ["min", "min"]) == pytest.approx(6.0)
    # max/min mix (PSNR up, runtime down): points (psnr 30, 10 ms), (28, 5 ms), reference (25 dB, 20 ms)
    hv = hypervolume(np.array([[30, 10], [28, 5]]), [25, 20], ["max", "min"])
    assert hv == pytest.approx(5 * 10 + 3 * 5)
    # 3-D: unit cube corner and two boxes
    assert hypervolume(np.zeros((1, 3)), [1, 1, 1], ["min"] * 3) == pytest.approx(1.0)
    two = np.array([[0, 0, 1], [1, 1, 0]], dtype=float)
    assert hypervolume(two, [2, 2, 2], ["min"] * 3) == pytest.approx(4 + 2 - 1)
    assert hypervolume(np.empty((0, 2)), [1, 1], ["min", "min"]) == 0.0
    with pytest.raises(SrnasError):
        hypervolume(pts, [4, np.nan], ["min", "min"])


def inclusion_exclusion(loss: np.ndarray, ref: np.ndarray) -> float:
    total = 0.0
    for k in range(1, len(loss) + 1):
        for subset in itertools.combinations(range(len(loss)), k):
            corner = loss[list(subset)].max(axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(ref - corner, 0, None))
    return float(total)


@pytest.mark.parametrize("dims", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_matches_inclusion_exclusion(dims: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 5, size=(8, dims)).astype(float)
    ref = np.full(dims, 5.0)
    directions = ["min"] * dims
    assert hypervolume(pts, ref, directions) == pytest.approx(inclusion_exclusion(pts, ref))
    # the same problem stated with maximised objectives
    flip = np.array([-1.0] + [1.0] * (dims - 1))
    assert hypervolume(pts * flip, ref * flip, ["max"] + directions[1:]) == pytest.approx(inclusion_exclusion(pts, ref))


def test_reference_point_is_worst_plus_margin_over_all_runs() -> None:
    run_a = np.array([[30.0, 10.0], [28.0, 5.0]])
    run_b = np.array([[26.0, 20.0], [np.nan, 50.0]])
    ref = reference_point([run_a, run_b], ["max", "min"], margin=0.1)
    # psnr: worst 26, range 4 -> 25.6; runtime: worst 20, range 15 -> 21.5 (the NaN row is ignored)
    np.testing.assert_allclose(ref, [25.6, 21.5])
    assert hypervolume(run_a, ref, ["max", "min"]) > hypervolume(run_b, ref, ["max", "min"]) > 0
    np.testing.assert_allclose(reference_point(np.array([[2.0, 3.0]]), ["max", "min"]), [1.8, 3.3])
    with pytest.raises(SrnasError):
        reference_point([np.full((1, 2), np.nan)], ["max", "min"])


def test_an_architecture_measured_twice_is_one_row_of_the_front():
    from nas.results.pareto import first_of_each_spec
    from nas.results.writer import pareto_rows

    a, b, c = (json.dumps({"width": w, "blocks": [{"type": "residual"}]}) for w in (8, 12, 16))
    a_reordered = json.dumps({"blocks": [{"type": "residual"}], "width": 8})  # the same spec, keys reordered
    df = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3, 4, 5],
            "state": ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE"],
            "spec": [a, a, b, a_reordered, c, b],
            "psnr": [None, 27.0, 28.0, 27.0, 26.0, 28.2],  # 5 re-measures 2 (runtime noise)
            "runtime_ms": [None, 2.0, 4.0, 1.9, 9.0, 3.9],
        }
    )
    assert first_of_each_spec(df).tolist() == [True, True, True, False, True, False]
    front = pareto_rows(df, {"psnr": "max", "runtime_ms": "min"})
    assert front["trial"].tolist() == [1, 2]  # not 3 nor 5: their architectures are trials 1 and 2
