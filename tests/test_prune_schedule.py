"""The pruning schedule (pruning/schedule.py and its config, state, select, calibrate modules), its report
(pruning/report.py) and ``srnas prune``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

import pytest
import torch

from nas import data as D
from nas.errors import SrnasError
from nas.measure.profiler import count_complexity, profile_model
from nas.models.network import build
from nas.zoo.resolve import load_model, save_model
from pruning import calibrate as C
from pruning import schedule as S
from pruning.config import PruneConfig, PruneTargetError, parse_prune_target
from pruning.report import make_report, to_markdown
from pruning.schedule import prune
from pruning.state import STATE_FILE

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


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(TINY)


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
def test_schedule_reaches_the_target(smooth_pairs, tmp_path, mode, metric, target, importance, tiny_prune_config):
    result = prune(
        tiny_model(),
        TINY,
        tiny_prune_config(mode=mode, metric=metric, target=target, importance=importance),
        tmp_path,
        train_data=smooth_pairs,
        val_data=D.validation_pairs(smooth_pairs),
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


def test_unreachable_and_bad_targets(smooth_pairs, tmp_path, tiny_prune_config):
    with pytest.raises(SrnasError, match=r"reachable minimum\); choose a target >= 0\.\d+ or coupled mode"):
        prune(tiny_model(), None, tiny_prune_config(mode="fine", target=0.3), tmp_path / "a", train_data=smooth_pairs)
    assert not (tmp_path / "a" / STATE_FILE).exists()
    for bad in (0, -0.5, 1.0, 1.5, float("nan"), True):
        with pytest.raises(SrnasError, match=r"fraction of the original model in \(0, 1\)"):
            tiny_prune_config(target=bad)
    with pytest.raises(PruneTargetError, match="exactly one pruning target"):
        parse_prune_target(activations=0.5, flops=0.5)
    with pytest.raises(PruneTargetError, match="got none"):
        parse_prune_target(activations=None, runtime=None)
    assert parse_prune_target(activations=None, runtime=0.5) == ("runtime", 0.5)
    assert parse_prune_target(params=0.6, default=("activations", 0.7)) == ("params", 0.6)
    assert parse_prune_target(default=("activations", 0.7)) == ("activations", 0.7)
    with pytest.raises(PruneTargetError, match=r"target flops must be a fraction"):
        parse_prune_target(flops=1.2)
    with pytest.raises(SrnasError, match="unknown pruning target"):
        tiny_prune_config(metric="latency")


@pytest.mark.parametrize("mode, metric, target", [("coupled", "flops", 0.5), ("fine", "flops", 0.8)])
def test_width_rounding_gives_multiples(smooth_pairs, tmp_path, mode, metric, target, tiny_prune_config):
    n = 4
    cfg = tiny_prune_config(mode=mode, metric=metric, target=target, round_to=n)
    result = prune(tiny_model(), None, cfg, tmp_path, train_data=smooth_pairs)
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


def test_interrupted_runs_resume_to_the_same_result(smooth_pairs, tmp_path, monkeypatch, tiny_prune_config):
    cfg = tiny_prune_config(rounds=3, target=0.55)
    ref = prune(tiny_model(), None, cfg, tmp_path / "ref", train_data=smooth_pairs)
    out = tmp_path / "run"

    def crash_after_round_1(k, record):
        if k == 1:
            raise _Crash

    with pytest.raises(_Crash):
        prune(tiny_model(), None, cfg, out, train_data=smooth_pairs, on_round=crash_after_round_1)
    assert [r["done"] for r in _state(out)["rounds"]] == [True]
    # a crash inside round 2's fine-tune, after its masks were chosen and saved
    real = S._fine_tune

    def crash_in_round_2(run, model, folder, *args, **kw):
        if folder.name == "round_2":
            raise _Crash
        return real(run, model, folder, *args, **kw)

    monkeypatch.setattr(S, "_fine_tune", crash_in_round_2)
    with pytest.raises(_Crash):
        prune(tiny_model(), None, cfg, out, train_data=smooth_pairs)
    assert [r["done"] for r in _state(out)["rounds"]] == [True, False]
    monkeypatch.setattr(S, "_fine_tune", real)
    stopped = prune(tiny_model(), None, cfg, out, train_data=smooth_pairs, on_round=lambda k, r: k == 2)
    assert stopped.stopped and stopped.resumed and len(stopped.rounds) == 2
    result = prune(tiny_model(), None, cfg, out, train_data=smooth_pairs)
    assert [r["masks"] for r in _state(out)["rounds"]] == [r["masks"] for r in _state(tmp_path / "ref")["rounds"]]
    a, b = result.model.state_dict(), ref.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is not redone; other settings or another model are refused
    again = prune(tiny_model(), None, cfg, out, train_data=smooth_pairs)
    assert again.resumed and all(torch.equal(v, a[k]) for k, v in again.model.state_dict().items())
    with pytest.raises(SrnasError, match="other pruning settings.*round_steps"):
        prune(tiny_model(), None, tiny_prune_config(rounds=3, target=0.55, round_steps=3), out, train_data=smooth_pairs)
    with pytest.raises(SrnasError, match="another model or other weights"):
        prune(tiny_model(seed=1), None, cfg, out, train_data=smooth_pairs)


def test_feature_distillation_prunes_end_to_end_and_resumes(smooth_pairs, tmp_path, monkeypatch, tiny_prune_config):
    cfg = tiny_prune_config(target=0.55, feature_weight=0.5)
    ref = prune(tiny_model(), None, cfg, tmp_path / "ref", train_data=smooth_pairs)
    plain = prune(tiny_model(), None, tiny_prune_config(target=0.55), tmp_path / "plain", train_data=smooth_pairs)
    assert _fraction(ref.model, "activations") <= 0.55 + 1e-9
    assert not torch.equal(ref.model.body[0].c5.weight, plain.model.body[0].c5.weight)  # the loss differs
    # the block outputs are matched on the channels the gates keep, in the rounds and after shrinking
    seen = []
    real_train = S.train

    def spy(model, *args, features=None, **kw):
        seen.append(features)
        return real_train(model, *args, features=features, **kw)

    monkeypatch.setattr(S, "train", spy)
    real = S._fine_tune

    def crash_in_final(run, model, folder, *args, **kw):
        if folder.name == S.FINAL_DIR:
            raise _Crash
        return real(run, model, folder, *args, **kw)

    monkeypatch.setattr(S, "_fine_tune", crash_in_final)
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        prune(tiny_model(), None, cfg, out, train_data=smooth_pairs)
    monkeypatch.setattr(S, "_fine_tune", real)
    result = prune(tiny_model(), None, cfg, out, train_data=smooth_pairs)
    assert result.resumed
    a, b = result.model.state_dict(), ref.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rounds, final = seen[0], seen[-1]
    widths = [len(layer.teacher_channels) for layer in final.layers]
    assert [layer.model for layer in rounds.layers] == ["model.body.0", "model.body.1"]
    assert [layer.model for layer in final.layers] == ["body.0", "body.1"] and final.layers[0].model_channels is None
    assert widths == [result.model.body[i].c5.out_channels for i in range(2)] and min(widths) < TINY["width"]
    with pytest.raises(SrnasError, match="other pruning settings.*feature_weight"):
        prune(tiny_model(), None, tiny_prune_config(target=0.55, feature_weight=1.0), out, train_data=smooth_pairs)
    with pytest.raises(SrnasError, match="feature_weight must be"):
        tiny_prune_config(feature_weight=-0.1)


def test_proxy_calibration_line():
    points = [[100.0, 1.0], [20.0, 0.4]]  # runtime fraction = 0.25 + 0.0075 * proxy
    assert math.isclose(C.proxy_goal(points, 0.7), 60.0)
    assert math.isclose(C.proxy_goal([[100.0, 1.0]], 0.7), 70.0)  # one point: proportional


# ----------------------------------------------------------------------------- runtime targets (fake timer)


def _latency(model: torch.nn.Module) -> float:
    """The latency proxy of ``model`` at SIZE, as counted by the profiler (flops + 64 * activations)."""
    counts = count_complexity(model, SIZE)
    return counts.flops + 64 * counts.activations


class _FakeTimer:
    """Stands in for ``measure_runtimes``: each model's "milliseconds" are ``curve(latency proxy)``, so runs are
    deterministic; records every call's result."""

    def __init__(self, curve: Callable[[float], float]) -> None:
        self.curve = curve
        self.calls: list[dict[str, float]] = []

    def __call__(self, models, input_size, *, device="cpu", repeats=10, warmup=3) -> dict[str, float]:
        assert tuple(input_size) == SIZE and set(models) == {"base", "small"}
        times = {name: self.curve(_latency(m)) for name, m in models.items()}
        self.calls.append(times)
        return times

    def fraction(self, model: torch.nn.Module) -> float:
        return self.curve(_latency(model)) / self.curve(_latency(tiny_model()))


def _runtime_cfg(make, **kw) -> PruneConfig:
    return make(**{"metric": "runtime", "round_steps": 0, "final_steps": 0, **kw})


def test_runtime_target_is_met_on_the_calibrated_proxy(smooth_pairs, tmp_path, monkeypatch, tiny_prune_config):
    base = _latency(tiny_model())
    # a fixed overhead: runtime fraction = (0.3 + proxy fraction) / 1.3, so a goal proportional to the proxy
    # misses (0.85 of the proxy measures 0.885); the calibration line through the minimum is exact
    timer = _FakeTimer(lambda p: 0.3 * base + p)
    monkeypatch.setattr(C, "measure_runtimes", timer)
    result = prune(
        tiny_model(), None, _runtime_cfg(tiny_prune_config, target=0.7, rounds=2), tmp_path, train_data=smooth_pairs
    )
    state = _state(tmp_path)
    rounds = state["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["goal_fraction"] for r in rounds] == pytest.approx([0.85, 0.7])
    for r in rounds:  # every round meets its goal on the measurement, not just on the proxy
        assert r["fraction"] <= r["goal_fraction"]
        assert r["fraction"] == pytest.approx((0.3 * base + r["counts"]["latency"]) / (1.3 * base), rel=1e-9)
        assert r["fraction"] == pytest.approx(r["runtime_ms"] / r["baseline_runtime_ms"], rel=1e-12)
        assert r["baseline_runtime_ms"] == pytest.approx(1.3 * base)
    assert rounds[0]["fraction"] > rounds[1]["fraction"]
    # the final model is the last measured candidate, and the result carries the same records
    assert result.rounds[-1]["fraction"] == rounds[-1]["fraction"] <= 0.7
    assert timer.fraction(result.model) == pytest.approx(rounds[-1]["fraction"], rel=1e-9)
    # calibration: the unpruned model, the measured minimum, then one (proxy, measured fraction) point per round
    minimum = state["minimum_runtime"]["fraction"]
    assert len(timer.calls) == 1 + len(rounds)  # the minimum once, then each round's candidate
    assert minimum == pytest.approx(timer.calls[0]["small"] / timer.calls[0]["base"], rel=1e-12)
    calibration = state["calibration"]
    assert len(calibration) == 2 + len(rounds)
    assert calibration[0] == pytest.approx([base, 1.0], rel=1e-9)
    assert calibration[1][1] == minimum and calibration[1][0] < rounds[-1]["counts"]["latency"]
    assert minimum == pytest.approx((0.3 * base + calibration[1][0]) / (1.3 * base), rel=1e-9)
    for (proxy, fraction), r in zip(calibration[2:], rounds, strict=True):
        assert proxy == pytest.approx(r["counts"]["latency"], rel=1e-12) and fraction == r["fraction"]


def test_runtime_rounds_go_past_the_plan_until_met(smooth_pairs, tmp_path, monkeypatch, tiny_prune_config):
    # runtime falls slower than the proxy (sqrt): the calibration line is optimistic, so the planned rounds
    # measure above their goals and extra rounds, each aiming 2% lower, go on until the measurement meets it
    timer = _FakeTimer(math.sqrt)
    monkeypatch.setattr(C, "measure_runtimes", timer)
    cfg = _runtime_cfg(tiny_prune_config, target=0.7, rounds=2, importance="l1")
    result = prune(tiny_model(), None, cfg, tmp_path / "ref", train_data=smooth_pairs)
    rounds = _state(tmp_path / "ref")["rounds"]
    assert 2 < len(rounds) <= 4 and all(r["done"] for r in rounds)
    assert all(r["fraction"] > 0.7 for r in rounds[:-1]) and rounds[-1]["fraction"] <= 0.7
    fractions = [r["fraction"] for r in rounds]
    assert fractions == sorted(fractions, reverse=True)
    expected_goals = [0.85, 0.7] + [0.7 - C.RUNTIME_MARGIN * e for e in range(1, len(rounds) - 1)]
    assert [r["goal_fraction"] for r in rounds] == pytest.approx(expected_goals)
    assert timer.fraction(result.model) == pytest.approx(rounds[-1]["fraction"], rel=1e-9)
    assert len(_state(tmp_path / "ref")["calibration"]) == 2 + len(rounds)
    # stopped in a round past the plan and continued: the same rounds, calibration and model; the minimum
    # and the finished rounds are not measured again
    calls = len(timer.calls)
    out = tmp_path / "run"
    stopped = prune(tiny_model(), None, cfg, out, train_data=smooth_pairs, on_round=lambda k, r: k == 3)
    assert stopped.stopped and len(_state(out)["rounds"]) == 3
    again = prune(tiny_model(), None, cfg, out, train_data=smooth_pairs)
    assert again.resumed and len(timer.calls) == 2 * calls  # as many measurements as the uninterrupted run
    ref, run = _state(tmp_path / "ref"), _state(out)
    assert run["calibration"] == ref["calibration"] and run["minimum_runtime"] == ref["minimum_runtime"]
    assert [r["masks"] for r in run["rounds"]] == [r["masks"] for r in ref["rounds"]]
    assert load_model(out).spec == load_model(tmp_path / "ref").spec


def test_unreachable_runtime_target_names_the_measured_minimum(smooth_pairs, tmp_path, monkeypatch, tiny_prune_config):
    timer = _FakeTimer(math.sqrt)
    monkeypatch.setattr(C, "measure_runtimes", timer)
    with pytest.raises(SrnasError, match="unreachable in coupled mode") as err:
        prune(tiny_model(), None, _runtime_cfg(tiny_prune_config, target=0.3), tmp_path, train_data=smooth_pairs)
    (times,) = timer.calls  # the smallest reachable model, timed once against the unpruned one
    minimum = times["small"] / times["base"]
    assert 0.3 < minimum < 0.7
    message = str(err.value)
    assert f"leaves {minimum:.4f} of the original measured runtime (the reachable minimum)" in message
    assert f"choose a target >= {math.ceil(minimum * 1000) / 1000:.3f}" in message
    assert not (tmp_path / STATE_FILE).exists()


def test_runtime_target_never_measured_stops_after_twice_the_rounds(
    smooth_pairs, tmp_path, monkeypatch, tiny_prune_config
):
    calls = []

    def stuck(models, input_size, **kw):  # the minimum measures 0.4, every candidate 0.95 (e.g. noise)
        calls.append(kw)
        return {"base": 2.0, "small": 0.8 if len(calls) == 1 else 1.9}

    monkeypatch.setattr(C, "measure_runtimes", stuck)
    cfg = _runtime_cfg(tiny_prune_config, target=0.7, rounds=2, repeats=4, warmup=1)
    message = r"runtime target 0\.7 not met after 4 rounds: the last candidate measured 1\.90 ms \(0\.950 of"
    with pytest.raises(SrnasError, match=message):
        prune(tiny_model(), None, cfg, tmp_path, train_data=smooth_pairs)
    assert len(calls) == 5 and all(kw == {"device": "cpu", "repeats": 4, "warmup": 1} for kw in calls)
    state = _state(tmp_path)
    assert [r["done"] for r in state["rounds"]] == [True] * 4 and len(state["calibration"]) == 6
    with pytest.raises(SrnasError, match=message):  # the same folder again: nothing measured again
        prune(tiny_model(), None, cfg, tmp_path, train_data=smooth_pairs)
    assert len(calls) == 5


# ----------------------------------------------------------------------------- report and CLI


def test_report_table(smooth_pairs):
    before, after = tiny_model(), build({**TINY, "width": 4})
    report = make_report(
        {"before": before, "after": after},
        scale=SCALE,
        input_size=SIZE,
        val_pairs=D.validation_pairs(smooth_pairs),
        repeats=2,
        warmup=0,
        info={"model": "tiny", "mode": "coupled", "target": {"activations": 0.5}},
    )
    first, second = report["stages"]
    assert first["ratio"]["activations"] == 1.0 and second["ratio"]["activations"] < 0.6
    assert second["runtime_ms"] > 0 and set(second["psnr_y"]) == {"val"}
    assert first["esr_score"] == pytest.approx({"ntire2026": math.exp(2), "ntire2024-25": math.exp(2)})
    ratio = {"runtime": second["ratio"]["runtime_ms"], "params": second["ratio"]["params"]}
    ratio["flops"] = second["flops_fvcore"] / first["flops_fvcore"]
    expected = 0.8 * math.exp(2 * ratio["runtime"]) + 0.1 * math.exp(2 * ratio["flops"])
    expected += 0.1 * math.exp(2 * ratio["params"])
    assert second["esr_score"]["ntire2026"] == pytest.approx(expected)
    md = to_markdown(report)
    assert "| after |" in md and "mode: coupled" in md and "target: activations 0.5" in md
    assert f"- after: ntire2026 {expected:.3f}" in md and "NTIRE ESR score against before" in md


def test_cli_prune_writes_a_model_folder(smooth_pairs, tmp_path, capsys):
    from nas.cli.main import main

    save_model(tmp_path / "tiny", tiny_model(), TINY)
    out = tmp_path / "out"
    args = ["prune", str(tmp_path / "tiny"), "--target-activations", "0.7", "--output", str(out)]
    folder = smooth_pairs.source
    args += ["--data", folder, "--val", folder, "--size", "24", "--rounds", "1", "--round-steps", "2"]
    args += ["--steps", "2", "--score-batches", "1", "--batch-size", "2", "--patch-size", "16", "--device", "cpu"]
    args += ["--bench", "none", "--repeats", "2", "--json"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    stages = info["report"]["stages"]
    assert not info["resumed"] and [s["stage"] for s in stages] == [
        "before",
        "after pruning",
        "after the rounds",  # the round's fine-tune, before the final one
        "after fine-tuning",
    ]
    # the rounds' model is the one the last round ended with: its fine-tune's validation PSNR
    state = json.loads((out / STATE_FILE).read_text())
    assert stages[2]["psnr_y"]["val"] == pytest.approx(state["rounds"][-1]["val_psnr"], abs=1e-3)
    assert stages[2]["psnr_y"]["val"] != pytest.approx(stages[1]["psnr_y"]["val"], abs=1e-6)
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
        (["--target-params", "0.5", "--feature-weight", "-1"], r"--feature-weight: must be a number >= 0"),
    ],
)
def test_cli_bad_targets(tmp_path, capsys, extra, message):
    from nas.cli.main import main

    assert main(["prune", "rfdn", "--weights", "x.pth", "--output", str(tmp_path / "o"), *extra]) == 2  # usage
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_cli_needs_weights(tmp_path, capsys):
    from nas.cli.main import main

    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps(TINY))
    assert main(["prune", str(spec), "--target-activations", "0.5", "--output", str(tmp_path / "o")]) == 1
    assert "needs trained weights" in capsys.readouterr().err
