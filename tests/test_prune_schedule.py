"""The pruning schedule (pruning/schedule.py), its report (pruning/report.py) and ``srnas prune``."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from nas import data as D
from nas.errors import SrnasError
from nas.images import write_image
from nas.network import build
from nas.profiler import count_complexity, profile_model
from nas.resolve import load_model, save_model
from pruning import schedule as S
from pruning.report import make_report, to_markdown
from pruning.schedule import STATE_FILE, PruneConfig, parse_target, prune

SCALE = 2
SIZE = (3, 24, 24)  # costs counted at the LR size of the test images
TINY = {
    "name": "tiny-rfdn",
    "scale": SCALE,
    "width": 8,
    "blocks": [{"type": "rfdb"}, {"type": "rfdb"}],
    "fusion": {"type": "concat"},
    "body_conv": True,
    "body_skip": True,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> D.PairedImages:
    """Three smooth 48x48 HR images (LR 24x24 by MATLAB bicubic)."""
    folder = tmp_path_factory.mktemp("hr")
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    for i in range(3):
        img = np.stack([np.sin(2 * np.pi * (xx * (i + 1) + c / 3 + yy * (c + 1))) for c in range(3)], axis=2)
        write_image(folder / f"{i}.png", np.round((img + 1) * 127.5).astype(np.uint8))
    return D.open_pairs(folder, SCALE)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(TINY)


def _cfg(**kw) -> PruneConfig:
    base = dict(
        target=0.7,
        rounds=2,
        round_steps=2,
        final_steps=2,
        score_batches=1,
        batch_size=2,
        patch_size=16,
        input_size=SIZE,
        device="cpu",
        progress=False,
        report=False,
        benchmarks=(),
    )
    return PruneConfig(**{**base, **kw})


def _fraction(model: torch.nn.Module, metric: str) -> float:
    return getattr(count_complexity(model, SIZE), metric) / getattr(count_complexity(tiny_model(), SIZE), metric)


def _state(folder) -> dict:
    return json.loads((folder / STATE_FILE).read_text())


# ----------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize(
    "mode, metric, target, importance",
    [
        ("coupled", "activations", 0.6, "taylor"),
        ("fine", "activations", 0.85, "taylor"),
        ("coupled", "flops", 0.5, "l1"),
        ("fine", "params", 0.8, "taylor"),
    ],
)
def test_schedule_reaches_the_target(data, tmp_path, mode, metric, target, importance):
    result = prune(
        tiny_model(),
        TINY,
        _cfg(mode=mode, metric=metric, target=target, importance=importance),
        tmp_path,
        train_data=data,
        val_data=D.validation_pairs(data),
    )
    assert _fraction(result.model, metric) <= target
    rounds = _state(tmp_path)["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["done"] for r in rounds)
    assert rounds[0]["fraction"] > rounds[1]["fraction"]  # a step of the gap per round
    assert math.isclose(rounds[1]["fraction"], _fraction(result.model, metric), rel_tol=1e-9)
    assert rounds[1]["val_psnr"] > 0 and rounds[1]["val_psnr_pruned"] > 0
    # the folder is a MODEL: same spec and outputs
    loaded = load_model(tmp_path)
    assert loaded.spec["pruned"]["mode"] == mode
    x = torch.rand(1, 3, 20, 22)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), result.model.eval()(x))


def test_unreachable_and_bad_targets(data, tmp_path):
    with pytest.raises(SrnasError, match=r"reachable minimum\); choose a target >= 0\.\d+ or coupled mode"):
        prune(tiny_model(), None, _cfg(mode="fine", target=0.3), tmp_path / "a", train_data=data)
    assert not (tmp_path / "a" / STATE_FILE).exists()
    for bad in (0, -0.5, 1.0, 1.5, float("nan"), True):
        with pytest.raises(SrnasError, match=r"fraction of the original model in \(0, 1\)"):
            _cfg(target=bad)
    with pytest.raises(SrnasError, match="exactly one pruning target"):
        parse_target(activations=0.5, flops=0.5)
    with pytest.raises(SrnasError, match="got none"):
        parse_target(activations=None, runtime=None)
    assert parse_target(activations=None, runtime=0.5) == ("runtime", 0.5)
    with pytest.raises(SrnasError, match="unknown pruning target"):
        _cfg(metric="latency")


@pytest.mark.parametrize("mode, metric, target", [("coupled", "flops", 0.5), ("fine", "flops", 0.8)])
def test_width_rounding_gives_multiples(data, tmp_path, mode, metric, target):
    n = 4
    cfg = _cfg(mode=mode, metric=metric, target=target, round_to=n)
    result = prune(tiny_model(), None, cfg, tmp_path, train_data=data)
    assert _fraction(result.model, metric) <= target
    original = dict(tiny_model().named_modules())
    changed = 0
    for name, m in result.model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            ref = original[name]
            for now, before in ((m.out_channels, ref.out_channels), (m.in_channels, ref.in_channels)):
                if now != before:
                    changed += 1
                    assert now % n == 0, (name, now, before)
    assert changed


class _Crash(Exception):
    pass


def test_interrupted_runs_resume_to_the_same_result(data, tmp_path, monkeypatch):
    cfg = _cfg(rounds=3, target=0.55)
    ref = prune(tiny_model(), None, cfg, tmp_path / "ref", train_data=data)
    out = tmp_path / "run"

    def crash_after_round_1(k, record):
        if k == 1:
            raise _Crash

    with pytest.raises(_Crash):
        prune(tiny_model(), None, cfg, out, train_data=data, on_round=crash_after_round_1)
    assert [r["done"] for r in _state(out)["rounds"]] == [True]
    # a crash inside round 2's fine-tune, after its masks were chosen and saved
    real = S._fine_tune

    def crash_in_round_2(model, cfg_, folder, *args, **kw):
        if folder.name == "round_2":
            raise _Crash
        return real(model, cfg_, folder, *args, **kw)

    monkeypatch.setattr(S, "_fine_tune", crash_in_round_2)
    with pytest.raises(_Crash):
        prune(tiny_model(), None, cfg, out, train_data=data)
    assert [r["done"] for r in _state(out)["rounds"]] == [True, False]
    monkeypatch.setattr(S, "_fine_tune", real)
    stopped = prune(tiny_model(), None, cfg, out, train_data=data, on_round=lambda k, r: k == 2)
    assert stopped.stopped and stopped.resumed and len(stopped.rounds) == 2
    result = prune(tiny_model(), None, cfg, out, train_data=data)
    assert [r["masks"] for r in _state(out)["rounds"]] == [r["masks"] for r in _state(tmp_path / "ref")["rounds"]]
    a, b = result.model.state_dict(), ref.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is not redone; other settings or another model are refused
    again = prune(tiny_model(), None, cfg, out, train_data=data)
    assert again.resumed and all(torch.equal(v, a[k]) for k, v in again.model.state_dict().items())
    with pytest.raises(SrnasError, match="other pruning settings.*round_steps"):
        prune(tiny_model(), None, _cfg(rounds=3, target=0.55, round_steps=3), out, train_data=data)
    with pytest.raises(SrnasError, match="another model or other weights"):
        prune(tiny_model(seed=1), None, cfg, out, train_data=data)


def test_proxy_calibration_line():
    points = [[100.0, 1.0], [20.0, 0.4]]  # runtime fraction = 0.25 + 0.0075 * proxy
    assert math.isclose(S._proxy_goal(points, 0.7), 60.0)
    assert math.isclose(S._proxy_goal([[100.0, 1.0]], 0.7), 70.0)  # one point: proportional


# ----------------------------------------------------------------------------- report and CLI


def test_report_table(data):
    before, after = tiny_model(), build({**TINY, "width": 4})
    report = make_report(
        {"before": before, "after": after},
        scale=SCALE,
        input_size=SIZE,
        val_pairs=D.validation_pairs(data),
        repeats=2,
        warmup=0,
        info={"model": "tiny", "mode": "coupled", "target": {"activations": 0.5}},
    )
    first, second = report["stages"]
    assert first["ratio"]["activations"] == 1.0 and second["ratio"]["activations"] < 0.6
    assert second["runtime_ms"] > 0 and set(second["psnr_y"]) == {"val"}
    md = to_markdown(report)
    assert "| after |" in md and "mode: coupled" in md and "target: activations 0.5" in md


def test_cli_prune_writes_a_model_folder(data, tmp_path, capsys):
    from nas.cli import main

    save_model(tmp_path / "tiny", tiny_model(), TINY)
    out = tmp_path / "out"
    args = ["prune", str(tmp_path / "tiny"), "--target-activations", "0.7", "--output", str(out)]
    args += ["--data", data.source, "--val", data.source, "--size", "24", "--rounds", "1", "--round-steps", "2"]
    args += ["--steps", "2", "--score-batches", "1", "--batch-size", "2", "--patch-size", "16", "--device", "cpu"]
    args += ["--bench", "none", "--repeats", "2", "--json"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert not info["resumed"] and [s["stage"] for s in info["report"]["stages"]] == [
        "before",
        "after pruning",
        "after fine-tuning",
    ]
    for name in ("spec.yaml", "weights.safetensors", "report.json", "report.md", STATE_FILE):
        assert (out / name).is_file(), name
    small = profile_model(load_model(out).model, SIZE)
    full = profile_model(load_model(tmp_path / "tiny").model, SIZE)
    assert small.activations <= 0.7 * full.activations and small.params < full.params
    assert "after fine-tuning" in (out / "report.md").read_text()
    assert main(args) == 0  # the same command again: already done
    assert json.loads(capsys.readouterr().out)["resumed"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target-activations", "0.5", "--target-flops", "0.5"], "exactly one pruning target"),
        ([], "got none"),
        (["--target-runtime", "1.5"], r"in \(0, 1\)"),
        (["--target-params", "0"], r"in \(0, 1\)"),
    ],
)
def test_cli_bad_targets(tmp_path, capsys, extra, message):
    from nas.cli import main

    assert main(["prune", "rfdn", "--weights", "x.pth", "--output", str(tmp_path / "o"), *extra]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_cli_needs_weights(tmp_path, capsys):
    from nas.cli import main

    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps(TINY))
    assert main(["prune", str(spec), "--target-activations", "0.5", "--output", str(tmp_path / "o")]) == 1
    assert "needs trained weights" in capsys.readouterr().err
