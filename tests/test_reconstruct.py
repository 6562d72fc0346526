"""Layer-wise least-squares reconstruction (pruning/reconstruct.py) and its use in the schedule."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruning.reconstruct as R
from nas import data as D
from nas.measure.profiler import count_complexity
from nas.models.network import build
from pruning import GatedModel, shrink
from pruning.config import PruneConfig
from pruning.reconstruct import NormalEquations, ReconstructError, reconstruct, sample_rows, unfold_input, unfold_rows
from pruning.schedule import prune
from pruning.state import STATE_FILE

TINY = {
    "name": "tiny-rfdn",
    "scale": 2,
    "width": 8,
    "blocks": [{"type": "rfdb"}, {"type": "rfdb"}],
    "fusion": {"type": "concat"},
    "body_conv": True,
    "body_skip": True,
}


class Pair(nn.Module):
    """a (3 -> 6) -> ReLU -> b (6 -> 3): pruning a's outputs leaves b reading fewer channels."""

    def __init__(self, bias: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1, padding_mode=padding_mode)
        self.b = nn.Conv2d(6, 3, 3, padding=1, bias=bias, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def patches(n: int = 24, size: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pruned_pair(bias: bool = True, padding_mode: str = "zeros", drop=(1, 4)) -> tuple[GatedModel, nn.Module]:
    torch.manual_seed(0)
    model = Pair(bias, padding_mode)
    teacher = copy.deepcopy(model).eval()
    gated = GatedModel(model, "fine")
    keep = torch.ones(6, dtype=torch.bool)
    keep[list(drop)] = False
    gated.set_mask("a:out", keep)
    return gated, teacher


def output_error(model: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(x), teacher(x)))


@pytest.mark.parametrize(
    "bias, padding_mode, rows",
    [(True, "zeros", None), (False, "zeros", None), (True, "reflect", None), (True, "zeros", 1200)],
)
def test_refit_reaches_the_least_squares_optimum(bias, padding_mode, rows, monkeypatch):
    monkeypatch.setattr(R, "UNFOLD_ELEMENTS", 500)  # unfold a few images at a time
    gated, teacher = pruned_pair(bias, padding_mode)
    x = patches()
    kept = [0, 2, 3, 5]
    with torch.no_grad():  # the features by hand: kept channels of relu(a(x)), unfolded, plus ones
        feats = torch.relu(teacher.a(x))[:, kept]
        if padding_mode != "zeros":
            feats, pad = F.pad(feats, (1, 1, 1, 1), mode=padding_mode), 0
        else:
            pad = 1
        cols = F.unfold(feats, 3, padding=pad).transpose(1, 2).reshape(-1, len(kept) * 9)
        if bias:
            cols = torch.cat([cols, torch.ones(len(cols), 1)], 1)
        y = teacher(x).flatten(2).transpose(1, 2).reshape(-1, 3)
        if rows is not None:  # the rows the refit samples (its first conv's generator: seed + 0)
            picked = sample_rows(len(y), rows, torch.Generator().manual_seed(5))
            cols, y = cols[picked], y[picked]
        best = torch.linalg.lstsq(cols.double(), y.double()).solution
    summary = reconstruct(gated, teacher, x, ridge=0.0, rows=rows or 10**9, seed=5)
    (fit,) = summary.fits
    assert fit.name == "b" and fit.kept and fit.inputs == 4 and fit.mse_after < fit.mse_before and not summary.reverted
    b = gated.model.b
    weight = b.weight.detach()[:, kept].reshape(3, -1).T.double()
    if bias:
        weight = torch.cat([weight, b.bias.detach().double().view(1, -1)])
    torch.testing.assert_close(weight, best, rtol=1e-3, atol=1e-4)
    assert fit.mse_after == pytest.approx(float(((cols.double() @ best - y.double()) ** 2).mean()), rel=1e-4, abs=1e-9)


def test_unfold_matches_the_conv():
    conv = nn.Conv2d(4, 5, 3, padding=2, dilation=2, stride=2)
    x = torch.rand(2, 4, 9, 11)
    with torch.no_grad():
        y = conv(x).flatten(2).transpose(1, 2).reshape(-1, 5)
        mine = unfold_input(conv, x) @ conv.weight.view(5, -1).T + conv.bias
    torch.testing.assert_close(mine, y, rtol=1e-5, atol=1e-5)


def test_unfold_rows_in_chunks_equals_the_full_unfold(monkeypatch):
    conv = nn.Conv2d(4, 5, 3, padding=1, stride=2)
    x = torch.rand(7, 4, 9, 9)
    full = unfold_input(conv, x)
    rows = sample_rows(len(full), 40, torch.Generator().manual_seed(0))
    monkeypatch.setattr(R, "UNFOLD_ELEMENTS", 3 * 25 * 36)  # three images per chunk
    torch.testing.assert_close(unfold_rows(conv, x, rows), full[rows])
    torch.testing.assert_close(unfold_rows(conv, x, None), full)
    assert sample_rows(10, 10, torch.Generator()) is None


def test_reconstruction_never_increases_the_output_error():
    for drop in [(1, 4), (0, 1, 2, 3), (5,)]:
        gated, teacher = pruned_pair(drop=drop)
        x = patches(seed=3)
        plain = output_error(gated, teacher, x)
        summary = reconstruct(gated, teacher, x, ridge=1e-3)
        assert output_error(gated, teacher, x) <= plain
        assert all(f.mse_after <= f.mse_before or not f.kept for f in summary.fits)


def test_refits_that_worsen_the_network_output_are_undone(monkeypatch):
    """Every conv refit claims an improvement but writes noise: the output check restores the weights."""
    torch.manual_seed(0)
    model = build(TINY).eval()
    teacher = copy.deepcopy(model)
    gated = GatedModel(model, "coupled")
    for name, gate in gated.gates.items():
        keep = torch.ones(gate.size, dtype=torch.bool)
        keep[1::3] = False
        gated.set_mask(name, keep)
    x = patches(8, 16, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = output_error(gated, teacher, x)
    monkeypatch.setattr(NormalEquations, "solve", lambda self, ridge, penalised: torch.randn_like(self.cross) * 10)
    monkeypatch.setattr(NormalEquations, "error", lambda self, w: 1.0 if w.abs().max() < 5 else 0.0)
    summary = reconstruct(gated, teacher, x)
    assert summary.fits and all(f.kept for f in summary.fits) and summary.reverted
    assert summary.to_dict()["refit"] == 0 and summary.output_mse_after == summary.output_mse_before
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert output_error(gated, teacher, x) == pytest.approx(plain)


def test_a_refit_that_does_not_help_is_not_written():
    gated, teacher = pruned_pair()
    x = patches()
    eq = NormalEquations(3, 1)
    a = torch.rand(50, 3, dtype=torch.float64)
    w = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    eq.add(a, a @ w)
    assert eq.error(w) == pytest.approx(0.0, abs=1e-12) and eq.error(eq.solve(0.0, 3)) < 1e-12
    assert eq.error(eq.solve(1e3, 3)) > eq.error(w)  # a huge ridge is worse than the exact weights
    before = gated.model.b.weight.detach().clone()
    (fit,) = reconstruct(gated, teacher, x, ridge=1e6).fits  # shrinks the weights towards 0: rejected
    assert not fit.kept and torch.equal(gated.model.b.weight, before)


def test_input_gate_values_are_respected():
    ref, teacher = pruned_pair()
    x = patches()
    reconstruct(ref, teacher, x, ridge=0.0)
    gated, _ = pruned_pair()
    scale = torch.tensor([2.0, 1, 0.5, 3, 1, 1])
    gated.set_gate("b:in", gated.gate("b:in") * scale)
    reconstruct(gated, teacher, x, ridge=0.0)
    kept = [0, 2, 3, 5]
    with torch.no_grad():  # the gated model's output is the same optimum; its raw weights absorb the gates
        torch.testing.assert_close(gated(x), ref(x), rtol=1e-3, atol=1e-4)
        folded = gated.model.b.weight[:, kept] * scale[kept].view(1, -1, 1, 1)
        torch.testing.assert_close(folded, ref.model.b.weight[:, kept], rtol=1e-3, atol=1e-4)


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.dw, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.dw(self.a(x)))


def test_depthwise_convs_are_skipped_with_a_reason():
    model = Depthwise()
    teacher = copy.deepcopy(model)
    gated = GatedModel(model, "coupled")
    (name,) = gated.gates
    keep = torch.ones(gated.gates[name].size, dtype=torch.bool)
    keep[:2] = False
    gated.set_mask(name, keep)
    summary = reconstruct(gated, teacher, patches())
    assert "depthwise" in summary.skipped["dw"] and [f.name for f in summary.fits] == ["b"]
    with pytest.raises(ReconstructError, match="at least one calibration patch"):
        reconstruct(gated, teacher, patches(0))


@pytest.mark.parametrize("mode", ["coupled", "fine"])
def test_reconstructed_model_shrinks_to_the_same_output(mode):
    torch.manual_seed(0)
    model = build(TINY).eval()
    teacher = copy.deepcopy(model)
    gated = GatedModel(model, mode)
    gen = torch.Generator().manual_seed(1)
    for name, gate in gated.gates.items():
        keep = torch.rand(gate.size, generator=gen) > 0.3
        keep[0] = True
        gated.set_mask(name, keep)
    x = patches(16, 16, seed=5)
    plain = output_error(gated, teacher, x)
    summary = reconstruct(gated, teacher, x)
    assert summary.fits and sum(f.kept for f in summary.fits) >= len(summary.fits) // 2
    assert output_error(gated, teacher, x) < plain  # the whole network's output gets closer too
    with torch.no_grad():
        expected = gated(x[:2])
        small, spec = shrink(gated)
        torch.testing.assert_close(small.eval()(x[:2]), expected, rtol=1e-4, atol=1e-4)
    assert count_complexity(small, (3, 16, 16)).params < count_complexity(teacher, (3, 16, 16)).params


def _cfg(make, **kw) -> PruneConfig:
    """The shared tiny config with reconstruction on and no fine-tuning (only the refits change the model)."""
    return make(**{"round_steps": 0, "final_steps": 0, "reconstruct": True, "reconstruct_patches": 8, **kw})


def test_schedule_with_reconstruction_resumes_to_the_same_model(smooth_pairs, tmp_path, tiny_prune_config):
    cfg = _cfg(tiny_prune_config)
    torch.manual_seed(0)
    ref = prune(build(TINY), None, cfg, tmp_path / "ref", train_data=smooth_pairs)
    rounds = json.loads((tmp_path / "ref" / STATE_FILE).read_text())["rounds"]
    assert all(
        r["reconstruct"]["refit"] > 0 and r["reconstruct"]["mse_after"] < r["reconstruct"]["mse_before"] for r in rounds
    )
    a = ref.model.state_dict()
    torch.manual_seed(0)
    stopped = prune(build(TINY), None, cfg, tmp_path / "run", train_data=smooth_pairs, on_round=lambda k, r: k == 1)
    assert stopped.stopped
    torch.manual_seed(0)
    again = prune(build(TINY), None, cfg, tmp_path / "run", train_data=smooth_pairs)
    assert again.resumed
    c = again.model.state_dict()
    runs = [json.loads((tmp_path / n / STATE_FILE).read_text())["rounds"] for n in ("ref", "run")]
    assert [r["masks"] for r in runs[0]] == [r["masks"] for r in runs[1]]
    for k in a:  # the same refit up to float64 BLAS rounding (ill-conditioned ESA convs on 1x1 maps here)
        torch.testing.assert_close(c[k], a[k], rtol=1e-6, atol=1e-9)


def test_a_refit_that_lowers_the_validation_psnr_is_undone(smooth_pairs, tmp_path, monkeypatch, tiny_prune_config):
    import pruning.schedule as S

    psnrs = iter([30.0, 29.0, 29.5] * 4)  # before the refit, after it, then the round's own measurement
    monkeypatch.setattr(S, "mean_psnr", lambda *a, **k: next(psnrs))
    val = D.validation_pairs(smooth_pairs)
    torch.manual_seed(0)
    plain_cfg, cfg = _cfg(tiny_prune_config, reconstruct=False, rounds=1), _cfg(tiny_prune_config, rounds=1)
    plain = prune(build(TINY), None, plain_cfg, tmp_path / "plain", train_data=smooth_pairs)
    torch.manual_seed(0)
    undone = prune(build(TINY), None, cfg, tmp_path / "undone", train_data=smooth_pairs, val_data=val)
    (record,) = json.loads((tmp_path / "undone" / STATE_FILE).read_text())["rounds"]
    assert record["reconstruct"]["reverted_on_val"] and record["reconstruct"]["val_psnr_after"] == 29.0
    a, b = plain.model.state_dict(), undone.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
