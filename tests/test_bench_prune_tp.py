"""The Torch-Pruning peer cases of scripts/bench_prune.py (scripts/bench_prune_tp.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nas.errors import SrnasError
from nas.measure.profiler import count_complexity
from nas.models.network import build
from nas.paths import REPO_ROOT

pytest.importorskip("torch_pruning", reason="torch-pruning is not installed (pip install -e '.[bench]' or '.[test]')")

TINY = {
    "name": "tiny-rfdn",
    "scale": 2,
    "width": 16,
    "blocks": [{"type": "rfdb"}, {"type": "rfdb"}],
    "fusion": {"type": "concat"},
    "body_conv": True,
    "body_skip": True,
}


@pytest.fixture
def tp_bench(monkeypatch):
    """``bench_prune_tp`` and ``bench_prune``, importable from scripts/."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import bench_prune
    import bench_prune_tp

    return bench_prune_tp, bench_prune


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_search_reaches_target_keeps_upsampler_and_rebuilds(tp_bench, importance, smooth_pairs, tiny_prune_config):
    tpb, _ = tp_bench
    torch.manual_seed(0)
    model = build(TINY).eval()
    cfg = tiny_prune_config(target=0.75, score_batches=2)
    if importance == "taylor":
        tpb.taylor_gradients(model, smooth_pairs, cfg)
        assert model.head.conv.weight.grad is not None
    pruned, keep, search = tpb.search_ratio(model, importance, cfg)
    ratio = count_complexity(pruned, cfg.input_size).activations / count_complexity(model, cfg.input_size).activations
    assert ratio == pytest.approx(search["activations_ratio"])
    assert cfg.target - 0.08 < ratio <= cfg.target
    (up,) = tpb.upsampler_convs(pruned)
    assert up.out_channels == 3 * TINY["scale"] ** 2  # the PixelShuffle's sub-pixel groups are intact
    assert keep["upsampler.conv"]["out"] == list(range(up.out_channels))
    assert up.in_channels < TINY["width"]  # its input follows the pruned trunk
    spec = tpb.pruned_spec(model, keep)
    rebuilt = tpb.rebuild(pruned, spec)
    original = dict(model.named_modules())
    for name, k in keep.items():  # the plan names the original channels TP kept
        kept = original[name].weight[k["out"]][:, k["in"]]
        assert torch.equal(dict(rebuilt.named_modules())[name].weight, kept), name


def test_no_upsampler_is_a_clear_error(tp_bench):
    tpb, _ = tp_bench
    with pytest.raises(SrnasError, match="PixelShuffle"):
        tpb.upsampler_convs(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3)))


def test_state_of_other_options_is_refused(tp_bench, tmp_path):
    tpb, _ = tp_bench
    (tmp_path / tpb.TP_STATE).write_text(json.dumps({"options": {"target": 0.5}}))
    with pytest.raises(SrnasError, match="other options"):
        tpb.load_state(tmp_path, {"target": 0.75})
    assert tpb.load_state(tmp_path / "new", {"target": 0.75}) == {"options": {"target": 0.75}}


def test_tp_cases_parse_and_previous_rows_fill_gaps(tp_bench, tmp_path):
    _, bp = tp_bench
    case = bp.parse_case("rfdn:tp-taylor:0.75")
    assert (case["name"], case["mode"], case["target"]) == ("rfdn-tp-taylor-a075", "tp-taylor", 0.75)
    with pytest.raises(SrnasError, match="unknown mode"):
        bp.parse_case("rfdn:tp-l1:0.75")
    args = SimpleNamespace(importance="l1", reconstruct=True, data=None, steps=None)
    assert bp.variant_suffix(args, case) == ""  # srnas prune's options do not apply to TP cases
    cases = [bp.parse_case("rfdn:0.75"), case]
    now = [{"case": "rfdn-tp-taylor-a075", "model": "rfdn"}]
    previous = {"rfdn-a075": {"case": "rfdn-a075", "params": 1}}
    rows = bp.with_previous(cases, now, tmp_path, previous, "2026-11-27")
    assert [(r["case"], r["measured"]) for r in rows] == [
        ("rfdn-a075", "2026-11-27 run"),
        ("rfdn-tp-taylor-a075", "this run"),
    ]


@pytest.mark.slow
def test_tp_case_end_to_end_on_rfdn(tp_bench, reference, tmp_path, monkeypatch):
    """The official RFDN through bench_prune's TP case (2 fine-tune steps): a MODEL folder, reused when done."""
    _, bp = tp_bench
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(tmp_path / "results"))
    work = tmp_path / "work"
    argv = ["--cases", "rfdn:tp-magnitude:0.75", "--work", str(work), "--steps", "2", "--sets", "none"]
    argv += ["--repeats", "1", "--warmup", "0", "--size", "32"]
    assert bp.main(argv) == 0
    folder = work / "rfdn-tp-magnitude-a075-s2"
    from nas.zoo.resolve import load_model

    model = load_model(folder).model
    assert model.upsampler.conv.out_channels == 48
    data = json.loads((tmp_path / "results" / "bench" / "prune.json").read_text())
    (row,) = [r for r in data["rows"] if r["case"] == "rfdn-tp-magnitude-a075-s2"]
    assert 0.7 < row["activations_ratio"] <= 0.75 and row["measured"] == "this run"
    stamp = (folder / "weights.safetensors").stat().st_mtime
    assert bp.main([*argv, "--prune-only"]) == 0  # finished: reused, nothing re-run
    assert (folder / "weights.safetensors").stat().st_mtime == stamp
    assert Path(folder / "pruned" / "spec.yaml").is_file()
