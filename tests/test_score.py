"""The NTIRE efficient-SR score (nas/measure/score.py) and ``srnas profile --baseline``."""

from __future__ import annotations

import json
import math

import pytest

from nas.errors import SrnasError
from nas.measure.score import WEIGHTS, esr_score, esr_scores

BASE = {"runtime": 12.5, "flops": 4.0e9, "params": 3.0e5}


def test_the_baseline_scores_e_squared_under_every_weighting():
    assert set(WEIGHTS) == {"ntire2026", "ntire2024-25"}
    for name, weights in WEIGHTS.items():
        assert sum(weights.values()) == pytest.approx(1.0), name
        assert esr_score(BASE, BASE, weights) == pytest.approx(math.exp(2), rel=1e-12)


def test_a_hand_computed_case():
    model = {"runtime": 6.25, "flops": 2.0e9, "params": 3.0e5}  # half the runtime and FLOPs, same params
    # 2026: 0.8 e^1 + 0.1 e^1 + 0.1 e^2 = 0.9 * 2.718281828 + 0.1 * 7.389056099 = 3.185359255
    # 2024-25: 0.7 e^1 + 0.15 e^1 + 0.15 e^2 = 0.85 * 2.718281828 + 0.15 * 7.389056099 = 3.418897969
    scores = esr_scores(model, BASE)
    assert scores["ntire2026"] == pytest.approx(3.185359255, abs=1e-8)
    assert scores["ntire2024-25"] == pytest.approx(3.418897969, abs=1e-8)
    slower = {**model, "runtime": 25.0}  # runtime dominates: twice the baseline's runtime is worse than it
    assert esr_scores(slower, BASE)["ntire2026"] > math.exp(2)


@pytest.mark.parametrize(
    "model, base, message",
    [({"runtime": 1, "flops": 1}, BASE, "'params' is missing"), (BASE, {**BASE, "flops": 0}, "flops must be")],
)
def test_bad_inputs_are_named(model, base, message):
    with pytest.raises(SrnasError, match=message):
        esr_scores(model, base)


def test_cli_prints_the_score(capsys):
    from nas.cli.main import main

    args = ["profile", "rfdn", "--baseline", "rfdn", "--size", "16", "--repeats", "2", "--warmup", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ESR score" in out and "ntire2026" in out and "ntire2024-25" in out and "baseline      rfdn" in out
    assert main([*args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["baseline"]["model"] == "rfdn" and info["score"]["ratio"]["params"] == 1.0
    runtime = info["score"]["ratio"]["runtime"]  # same model: only timing noise separates the two
    expected = 0.8 * math.exp(2 * runtime) + 0.2 * math.exp(2)
    assert info["score"]["scores"]["ntire2026"] == pytest.approx(expected)
    assert main(["profile", "--zoo", "--baseline", "rfdn"]) == 2  # a usage error
    assert "--baseline" in capsys.readouterr().err
