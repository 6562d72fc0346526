"""The model zoo and its block families.

Every zoo model (``list_zoo()``: a new ``nas/zoo/<name>.yaml`` is tested for free) must build, run on any input
shape and at other widths and scales, round-trip its spec, count exactly the official complexity numbers, carry
reference numbers equal to the reference kit's measured summary, import its official checkpoint strictly and
reproduce the kit's Set5 (and, in the slow tier, Set14) x4 Y-PSNR. The family sections below test what is
particular to the distillation (RFDB, RLFB, IMDB + ESA), attention (SC-PA + U-PA, lattice + BFM + MeanShift,
SPAB + SPAN fusion) and residual (residual, inverted residual, MSRResNet upsampler) families.
"""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from nas.errors import CheckpointError, DataError, SpecError
from nas.measure.evaluate import evaluate_folder
from nas.measure.images import modcrop, read_image, to_tensor, to_uint8
from nas.measure.metrics import psnr
from nas.measure.profiler import count_complexity, profile_model
from nas.models.blocks.lattice import DIV2K_MEAN, MeanShift
from nas.models.blocks.upsample_msrresnet import shuffle_factors
from nas.models.blocks.upsample_pa import stage_factors
from nas.models.checkpoint import read_state_dict, rename_keys
from nas.models.network import build
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.models.spec import load_spec, save_spec
from nas.zoo import (
    ZOO_DIR,
    build_zoo_model,
    checkpoint_path,
    import_rules,
    import_weights,
    list_zoo,
    reference_profile,
    zoo_spec,
)

COUNTS = ("params", "flops", "flops_fvcore", "activations", "num_conv")
PSNRS = ("set5_psnr_y", "set14_psnr_y")
PSNR_TOL = 0.001  # dB, against the kit's 4-decimal numbers (measured here: all within 0.0001)
ACTS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.ReLU6)


def _entry(name: str) -> dict:
    """The zoo YAML as written (checkpoint file, reference source)."""
    return yaml.safe_load((ZOO_DIR / f"{name}.yaml").read_text())


def _checkpoint_file(name: str) -> str | None:
    return (_entry(name).get("checkpoint") or {}).get("file")


ZOO = list_zoo()
WITH_CHECKPOINT = [n for n in ZOO if _checkpoint_file(n)]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(model: nn.Module, kind: type | tuple) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def _kit_rows(reference: Path, file: str) -> dict[str, dict[str, str]]:
    with open(reference / file, newline="") as f:
        return {row["key"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def official_models(reference):
    """Zoo models with their official weights, built once per module."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            cache[name] = build_zoo_model(name, official=True).eval()
        return cache[name]

    return get


def _psnr_y(model: nn.Module, reference: Path, dataset: str) -> dict:
    root = reference / "images" / dataset
    return evaluate_folder(model, root, lr_dir=root / "LR_bicubic_X4", scale=4, ssim=False, progress=False)


# ================================================================ every zoo model


def test_the_zoo_holds_every_reference_model_and_complete_entries():
    known = {"msrresnet", "rfdn", "rfdn_pruned", "pan", "imdn", "imdn_aim2019", "latticenet", "rlfn", "span"}
    assert known | {"nasnetbn"} <= set(ZOO)
    for name in ZOO:
        entry = _entry(name)
        ref = entry["reference"]
        assert entry["spec"]["name"] == name
        assert all(isinstance(ref[k], int) and ref[k] > 0 for k in COUNTS), name
        # a Set5/Set14 number exists exactly when an official checkpoint was measured
        assert all((k in ref) == bool(_checkpoint_file(name)) for k in PSNRS), name
        source = entry["reference_source"]
        assert source["file"] == "results/measured_summary.csv" and source["key"], name
        assert set(source["columns"]) == set(ref), f"{name}: every reference number needs a source column"


@pytest.mark.parametrize("name", ZOO)
def test_reference_numbers_equal_the_kits_measured_summary(name, reference):
    source = _entry(name)["reference_source"]
    rows = _kit_rows(reference, source["file"])
    assert source["key"] in rows, f"{name}: no row {source['key']!r} in {source['file']}"
    row, ref = rows[source["key"]], reference_profile(name)
    for ours, column in source["columns"].items():
        if ours in COUNTS:
            assert ref[ours] == int(row[column]), f"{name}.{ours} vs {column}"
        else:
            assert ref[ours] == pytest.approx(float(row[column]), abs=1e-9), f"{name}.{ours} vs {column}"
    if _checkpoint_file(name):  # the row measured the very file the zoo imports
        assert Path(_checkpoint_file(name)).stem == source["key"]


@pytest.mark.parametrize("name", ZOO)
def test_builds_at_the_official_size_on_any_input_shape_and_round_trips(name, tmp_path):
    model = build(zoo_spec(name)).eval()
    assert _params(model) == reference_profile(name)["params"]
    scale = model.spec["scale"]
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 17, 15))  # odd, non-square; the ESA needs >= 15x15 feature maps
    assert out.shape == (1, 3, 17 * scale, 15 * scale) and torch.isfinite(out).all()
    save_spec(model.spec, tmp_path / "spec.yaml")
    again = build(load_spec(tmp_path / "spec.yaml"))
    assert again.spec == model.spec
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("scale", [2, 3])
def test_families_work_at_tiny_width_and_other_scales(name, scale):
    spec = copy.deepcopy(zoo_spec(name))
    spec.update(width=6, scale=scale)
    spec["blocks"] = [{"type": b["type"]} for b in spec["blocks"][:2]]  # widths derived from width 6
    model = build(spec)
    x = torch.rand(1, 3, 17, 15, requires_grad=True)
    out = model(x)
    assert out.shape == (1, 3, 17 * scale, 15 * scale)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ZOO)
def test_complexity_equals_official(name):
    """Both entry points: ``count_complexity`` at 3x256x256 and ``profile_model``'s default size."""
    ref = {k: reference_profile(name)[k] for k in COUNTS}
    model = build(zoo_spec(name)).eval()
    counts = count_complexity(model, (3, 256, 256))
    assert {k: getattr(counts, k) for k in COUNTS} == ref
    prof = profile_model(model)
    assert tuple(prof.input_size) == (3, 256, 256)
    assert {k: getattr(prof, k) for k in COUNTS} == ref


@pytest.mark.parametrize("name", ZOO)
def test_flop_split_equals_the_kits_breakdown(name, reference):
    """The per-operator split of the official counts (the kit's ``flops_breakdown.csv``)."""
    rows = _kit_rows(reference, "results/flops_breakdown.csv")
    key = _entry(name)["reference_source"]["key"]
    if key not in rows:
        pytest.skip(f"the kit's flops_breakdown.csv has no row {key!r} (its README splits that model in prose)")
    row = rows[key]
    c = count_complexity(build(zoo_spec(name)), (3, 256, 256))
    fv = c.flops_fvcore_by_op
    split = {
        "conv_macs": (c.flops_by_op.get("conv", 0), fv.get("conv", 0)),
        "act_module_output_elems": (c.flops_by_op.get("activation", 0),),
        "model_summary_flops": (c.flops,),
        "fvcore_total": (c.flops_fvcore,),
        "fvcore_upsample_nearest2d": (fv.get("upsample_nearest2d", 0),),
        "fvcore_upsample_bilinear2d": (fv.get("upsample_bilinear2d", 0),),
        "fvcore_adaptive_avg_pool2d": (fv.get("adaptive_avg_pool2d", 0),),
    }
    assert split == {col: (int(row[col]),) * len(values) for col, values in split.items()}


@pytest.mark.parametrize("name", WITH_CHECKPOINT)
def test_official_checkpoint_imports_strictly(name, reference, official_models):
    path = reference / "checkpoints" / _checkpoint_file(name)
    assert path.is_file(), f"{name}: the zoo names {path.name}, which the reference kit does not hold"
    assert checkpoint_path(name) == path
    model, official = official_models(name), read_state_dict(path)
    ours = model.state_dict()
    assert _params(model) == reference_profile(name)["params"]
    assert len(ours) == len(official)
    assert sum(v.numel() for v in ours.values()) == sum(v.numel() for v in official.values())
    renamed = official if set(official) <= set(ours) else rename_keys(official, import_rules(name))
    assert set(renamed) == set(ours)
    assert all(torch.equal(ours[k], renamed[k].to(ours[k].dtype)) for k in ours), "weights not where the rules say"


@pytest.mark.parametrize("name", WITH_CHECKPOINT)
def test_set5_psnr_matches_reference(name, reference, official_models):
    result = _psnr_y(official_models(name), reference, "Set5")
    assert len(result["images"]) == 5
    assert result["mean"]["psnr_y"] == pytest.approx(reference_profile(name)["set5_psnr_y"], abs=PSNR_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_CHECKPOINT)
def test_set14_psnr_matches_reference(name, reference, official_models):
    result = _psnr_y(official_models(name), reference, "Set14")
    assert len(result["images"]) == 14
    assert result["mean"]["psnr_y"] == pytest.approx(reference_profile(name)["set14_psnr_y"], abs=PSNR_TOL)


def test_evaluate_folder_equals_a_hand_written_loop(reference, official_models):
    """The PSNR above, recomputed from the metric itself (no evaluate_folder) for one (fast) model."""
    model, root = official_models("span"), reference / "images" / "Set5"
    values = []
    with torch.inference_mode():
        for hr_path in sorted(root.glob("*.png")):
            lr = read_image(root / "LR_bicubic_X4" / f"{hr_path.stem}x4.png")
            sr = to_uint8(model(to_tensor(lr)))
            values.append(psnr(sr, modcrop(read_image(hr_path), 4), crop_border=4, test_y_channel=True))
    assert len(values) == 5
    assert float(np.mean(values)) == pytest.approx(reference_profile("span")["set5_psnr_y"], abs=PSNR_TOL)
    assert float(np.mean(values)) == pytest.approx(_psnr_y(model, reference, "Set5")["mean"]["psnr_y"], abs=1e-9)


# ================================================================ distillation families: RFDB, RLFB, IMDB + ESA


def _tiny_spec(block: dict, width: int = 8, scale: int = 2, fusion: dict | None = None) -> dict:
    return {
        "scale": scale,
        "width": width,
        "blocks": [dict(block), dict(block)],
        "fusion": fusion,
        "body_conv": True,
        "body_skip": True,
    }


@pytest.mark.parametrize(
    ("block", "fusion"),
    [
        ({"type": "rfdb"}, {"type": "concat"}),
        ({"type": "rfdb", "shallow_residual": False, "distilled": 3, "esa_channels": 5}, {"type": "concat"}),
        ({"type": "rlfb", "mid_channels": 6, "esa_channels": 4}, None),
        ({"type": "imdb"}, {"type": "concat"}),
        ({"type": "imdb", "cca": False, "distilled": 3}, None),
    ],
)
@pytest.mark.parametrize("scale", [2, 3])
def test_distillation_blocks_work_at_other_widths_and_scales(block, fusion, scale):
    model = build(_tiny_spec(block, width=8, scale=scale, fusion=fusion))
    x = torch.rand(1, 3, 17, 15, requires_grad=True)
    out = model(x)
    assert out.shape == (1, 3, 17 * scale, 15 * scale)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_block_variants_differ_only_where_documented():
    with_srb, without = (
        BLOCKS.build({"type": "rfdb"}, channels=8),
        BLOCKS.build({"type": "rfdb", "shallow_residual": False}, channels=8),
    )
    without.load_state_dict(with_srb.state_dict())
    x = torch.rand(1, 8, 16, 16)
    assert not torch.allclose(with_srb(x), without(x))
    assert "cca.conv_du.0.weight" in BLOCKS.build({"type": "imdb"}, channels=8).state_dict()
    assert not any("cca" in k for k in BLOCKS.build({"type": "imdb", "cca": False}, channels=8).state_dict())
    rlfb_esa = BLOCKS.build({"type": "rlfb"}, channels=8).esa
    assert not hasattr(rlfb_esa, "conv_max") and not hasattr(rlfb_esa, "conv3_")


@pytest.mark.parametrize(
    "cfg",
    [
        {"type": "imdb", "distilled": 8},
        {"type": "rfdb", "distilled": 0},
        {"type": "rfdb", "esa_channels": 0},
        {"type": "rlfb", "esa": 3},
    ],
)
def test_bad_block_options_are_spec_errors(cfg):
    with pytest.raises(SpecError):
        BLOCKS.build(cfg, channels=8)


def test_rlfn_accepts_the_ntire2024_renamed_file(reference, official_models):
    renamed = reference / "checkpoints" / "rlfn_ntire2024baseline_x4.pth"
    a = official_models("rlfn")
    b = build_zoo_model("rlfn", weights=renamed)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


class _Marker:
    """Unpickling this would call ``_mark`` — weights_only loading must refuse it without executing anything."""

    def __reduce__(self):
        return (_mark, ())


EXECUTED: list[bool] = []


def _mark() -> None:
    EXECUTED.append(True)


def test_corrupt_or_foreign_checkpoints_are_checkpoint_errors(reference, tmp_path):
    ckpts = reference / "checkpoints"
    model = build(zoo_spec("rfdn"))
    truncated = tmp_path / "rfdn_truncated.pth"
    truncated.write_bytes((ckpts / "rfdn_aim2020_x4.pth").read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="rfdn_truncated.pth"):
        import_weights(model, "rfdn", truncated)

    with pytest.raises(CheckpointError) as err:  # another architecture's file
        import_weights(model, "rfdn", ckpts / "pan_x4.pth")
    msg = str(err.value)
    assert "pan_x4.pth does not match" in msg and "missing: head.conv.weight" in msg
    assert "unexpected: conv_first.weight" in msg

    with pytest.raises(CheckpointError) as err:  # same key names, other widths (nf 40 vs 50)
        import_weights(model, "rfdn", ckpts / "rfdn_pruned_ntire2022_x4.pth")
    assert "mis-shaped: head.conv.weight: checkpoint (40, 3, 3, 3) vs model (50, 3, 3, 3)" in str(err.value)

    evil = tmp_path / "evil.pth"
    torch.save({"head.conv.weight": torch.zeros(1), "payload": _Marker()}, evil)
    with pytest.raises(CheckpointError, match="only plain tensor checkpoints"):
        read_state_dict(evil)
    assert not EXECUTED


def test_too_small_input_is_a_clear_error():
    with pytest.raises(DataError, match="at least 15x15"):
        build(zoo_spec("rlfn"))(torch.rand(1, 3, 14, 20))


# ================================================================ attention families: SC-PA + U-PA


def test_scpa_widths_and_forward():
    block = _randomize(BLOCKS.build({"type": "scpa", "branch": 3}, channels=8))
    assert _params(block) == 2 * 8 * 3 + 3 * 3 * 9 + (3 * 3 + 3) + 2 * 3 * 3 * 9 + 6 * 8
    assert BLOCKS.build({"type": "scpa"}, channels=40).conv1_a.out_channels == 20
    assert _count(block, ACTS) == 1 and block.lrelu.negative_slope == 0.2
    x = torch.randn(2, 8, 5, 6)

    def c(m, t):
        return F.conv2d(t, m.weight, m.bias, padding=m.padding)

    a = F.leaky_relu(c(block.k1[0], F.leaky_relu(c(block.conv1_a, x), 0.2)), 0.2)
    pa, b = block.PAConv, F.leaky_relu(c(block.conv1_b, x), 0.2)
    b = F.leaky_relu(c(pa.k4, c(pa.k3, b) * torch.sigmoid(c(pa.k2, b))), 0.2)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), x + c(block.conv3, torch.cat([a, b], 1)))
    with pytest.raises(SpecError, match="branch"):
        BLOCKS.build({"type": "scpa", "branch": 0}, channels=8)


@pytest.mark.parametrize(("scale", "factors"), [(2, [2]), (3, [3]), (4, [2, 2]), (8, [2, 2, 2])])
def test_upa_upsampler_scales(scale, factors):
    assert stage_factors(scale) == factors
    up = UPSAMPLERS.build({"type": "upa", "up_channels": 5}, channels=8, out_channels=3, scale=scale)
    assert [s.factor for s in up.stages] == factors
    assert up.stages[0].upconv.in_channels == 8 and up.conv_last.in_channels == 5
    assert _count(up, nn.Conv2d) == 3 * len(factors) + 1  # upconv, PA conv, HRconv per stage + conv_last
    assert up(torch.randn(1, 8, 3, 4)).shape == (1, 3, 3 * scale, 4 * scale)


def test_upa_rejects_unsupported_scale():
    with pytest.raises(SpecError, match="x5"):
        UPSAMPLERS.build({"type": "upa"}, channels=8, out_channels=3, scale=5)


def test_upa_without_attention_is_nearest_plus_conv():
    plain = UPSAMPLERS.build({"type": "upa", "up_channels": 6, "attention": False}, channels=8, out_channels=3, scale=4)
    assert not any(type(m).__name__ == "PixelAttention" for m in plain.modules())
    assert plain(torch.rand(1, 8, 5, 5)).shape == (1, 3, 20, 20)


# ---------------------------------------------------------------- lattice block, BFM, MeanShift


def test_lattice_block_official_size_and_butterfly():
    assert _params(BLOCKS.build({"type": "lattice"}, channels=64)) == 165_280  # official LatticeBlock(64, 16)
    block = _randomize(BLOCKS.build({"type": "lattice", "mid": 5, "cc_channels": 2}, channels=8))
    assert block.conv_block0[0].out_channels == 5 and block.fea_ca1.conv_mean[0].out_channels == 2
    assert _count(block, nn.LeakyReLU) == 6 and _count(block, nn.ReLU) == 8
    x = torch.randn(2, 8, 4, 5)

    def cc(unit, t):
        std = t.flatten(2).std(dim=2)[..., None, None]
        return (unit.conv_mean(t.mean(dim=(2, 3), keepdim=True)) + unit.conv_std(std)) / 2

    with torch.inference_mode():
        short = block.conv_block0(x)
        p1, q1 = x + cc(block.fea_ca1, short) * short, short + cc(block.x_ca1, x) * x
        long = block.conv_block1(p1)
        p3, q3 = long + cc(block.fea_ca2, q1) * q1, q1 + cc(block.x_ca2, long) * long
        torch.testing.assert_close(block(x), block.compress(torch.cat([p3, q3], 1)))
    with pytest.raises(SpecError, match="cc_channels"):
        BLOCKS.build({"type": "lattice", "cc_channels": 0}, channels=8)


@pytest.mark.parametrize("width", [6, 7])
def test_bfm_fuses_backwards(width):
    fusion = _randomize(FUSIONS.build({"type": "bfm"}, channels=width, num_blocks=3))
    assert len(fusion.t_tdm) == len(fusion.l_tdm) == 2
    outs = [torch.randn(1, width, 3, 3) for _ in range(3)]
    with torch.inference_mode():
        step1 = torch.cat([fusion.t_tdm[0](outs[2]), fusion.l_tdm[0](outs[1])], 1)
        expected = torch.cat([fusion.t_tdm[1](step1), fusion.l_tdm[1](outs[0])], 1)
        got = fusion(torch.zeros(1), outs, [()] * 3)
    assert got.shape[1] == width
    torch.testing.assert_close(got, expected)
    single = FUSIONS.build({"type": "bfm"}, channels=width, num_blocks=1)
    assert single(torch.zeros(1), outs[:1], [()]) is outs[0]


def test_meanshift_head_and_tail():
    sub, add = MeanShift(255, DIV2K_MEAN, sign=-1), MeanShift(255, DIV2K_MEAN, sign=1)
    assert _params(sub) + _params(add) == 24 and isinstance(sub, nn.Conv2d)
    x = torch.rand(1, 3, 4, 4) * 255
    mean = torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        torch.testing.assert_close(sub(x), x - mean)
        torch.testing.assert_close(add(sub(x)), x)
    head = HEADS.build({"type": "lattice"}, in_channels=3, channels=8)
    assert [n for n, _ in head.named_children()] == ["sub_mean", "conv1", "conv2"]
    tail = UPSAMPLERS.build({"type": "lattice_tail"}, channels=8, out_channels=3, scale=3)
    assert tail(torch.randn(1, 8, 2, 2)).shape == (1, 3, 6, 6)
    with pytest.raises(SpecError, match="rgb_mean"):
        HEADS.build({"type": "lattice", "rgb_mean": [0.5]}, in_channels=3, channels=8)


def test_latticenet_mismatched_checkpoint_is_reported(reference, tmp_path):
    state = read_state_dict(reference / "checkpoints" / "latticenet_x4.pt")
    del state["add_mean.bias"]
    state["T_tdm2.0.weight"] = torch.zeros(16, 64, 1, 1)
    state["body_unit5.compress.bias"] = torch.zeros(64)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        import_weights(build(zoo_spec("latticenet")), "latticenet", tmp_path / "bad.pt")
    message = str(info.value)
    assert "upsampler.add_mean.bias" in message and "missing" in message
    assert "body.4.compress.bias" in message and "unexpected" in message
    assert "fusion.t_tdm.1.0.weight: checkpoint (16, 64, 1, 1) vs model (32, 64, 1, 1)" in message


# ---------------------------------------------------------------- SPAB, SPAN head and fusion


def test_spab_attention_and_extras():
    block = _randomize(BLOCKS.build({"type": "spab", "mid_channels": 5}, channels=6))
    assert block.c1_r.out_channels == 5 and block.c3_r.in_channels == 5
    assert _count(block, ACTS) == 0  # SiLU and the attention sigmoid are free under both FLOP conventions
    x = torch.randn(1, 6, 4, 4)
    with torch.inference_mode():
        out, act1, att = block(x)
        out1 = F.silu(block.c1_r(x))
        out3 = block.c3_r(F.silu(block.c2_r(out1)))
        torch.testing.assert_close(act1, out1)
        torch.testing.assert_close(att, torch.sigmoid(out3) - 0.5)
        torch.testing.assert_close(out, (out3 + x) * att)


def test_span_head_normalises_inside():
    head = _randomize(HEADS.build({"type": "span"}, in_channels=3, channels=4))
    assert list(head.state_dict()) == ["conv.weight", "conv.bias"]  # the mean is not a checkpoint tensor
    x = torch.rand(1, 3, 5, 5)
    mean = torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(head(x), head.conv((x - mean) * 255))


def test_span_fusion_selection_and_errors():
    fusion = FUSIONS.build({"type": "span_cat", "outputs": [0, 1], "extras": [-1]}, channels=4, num_blocks=3)
    assert fusion.conv_cat.in_channels == 4 * 5
    outs = [torch.randn(1, 4, 2, 2) for _ in range(3)]
    extras = [(torch.randn(1, 4, 2, 2),) for _ in range(3)]
    assert fusion(outs[0], outs, extras).shape == (1, 4, 2, 2)
    with pytest.raises(SpecError, match="extra"):
        fusion(outs[0], outs, [()] * 3)
    with pytest.raises(SpecError, match="outputs index 3"):
        FUSIONS.build({"type": "span_cat", "outputs": [3]}, channels=4, num_blocks=3)


def _official_span_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """SPAN30's forward (team38_SPAN.py, deployed eval_conv), written out on an official state dict."""

    def c(name, t, pad=1):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=pad)

    x = (x - torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1)) * 255.0
    feat = c("conv_1.eval_conv", x)
    out, outs, last_out1 = feat, [], None
    for i in range(1, 7):
        last_out1 = F.silu(c(f"block_{i}.c1_r.eval_conv", out))  # in-place SiLU in the official block
        out3 = c(f"block_{i}.c3_r.eval_conv", F.silu(c(f"block_{i}.c2_r.eval_conv", last_out1)))
        out = (out3 + out) * (torch.sigmoid(out3) - 0.5)
        outs.append(out)
    cat = torch.cat([feat, c("conv_2.eval_conv", outs[-1]), outs[0], last_out1], 1)
    return F.pixel_shuffle(c("upsampler.0", c("conv_cat", cat, pad=0)), 4)


def test_span_imports_official_names_and_matches_official_forward(tmp_path):
    """Runs without the reference kit: official-named random weights through our importer."""
    source = _randomize(build(zoo_spec("span")), seed=1)
    rename = {
        "head.conv.": "conv_1.eval_conv.",
        "fusion.conv_2.": "conv_2.eval_conv.",
        "fusion.conv_cat.": "conv_cat.",
        "upsampler.conv.": "upsampler.0.",
    }
    official = {}
    for key, value in source.state_dict().items():
        for ours, theirs in rename.items():
            key = key.replace(ours, theirs) if key.startswith(ours) else key
        if key.startswith("body."):
            _, i, rest = key.split(".", 2)
            key = f"block_{int(i) + 1}.{rest.replace('.', '.eval_conv.', 1)}"
        official[key] = value.clone() * 0.1
    torch.save(official, tmp_path / "span.pth")
    model = build(zoo_spec("span"))
    import_weights(model, "span", tmp_path / "span.pth")
    x = torch.rand(1, 3, 6, 5)
    with torch.inference_mode():
        torch.testing.assert_close(model.eval()(x), _official_span_forward(official, x), rtol=1e-4, atol=1e-4)


# ================================================================ residual families, MSRResNet upsampler


def test_residual_default_is_msrresnet_block():
    block = BLOCKS.build({"type": "residual"}, channels=8)
    assert _params(block) == 2 * (8 * 8 * 9 + 8)
    assert _count(block, ACTS) == 0  # functional ReLU, as in ResidualBlock_noBN
    assert _count(block, nn.BatchNorm2d) == 0
    x = torch.randn(1, 8, 6, 5)
    expected = x + block.conv2(F.relu(block.conv1(x)))
    torch.testing.assert_close(block(x), expected)


def test_residual_bn_variants_match_nasnetbn_layout():
    bn = BLOCKS.build({"type": "residual", "norm": "bn"}, channels=32)
    leaky = BLOCKS.build({"type": "residual", "norm": "bn", "act": "lrelu", "functional": False}, channels=32)
    for block in (bn, leaky):
        assert _params(block) == 18_624  # official per-block count at nf=32
        assert {k.split(".")[0] for k in block.state_dict()} == {"conv1", "bn1", "conv2", "bn2"}
    assert _count(bn, ACTS) == 0
    assert _count(leaky, nn.LeakyReLU) == 1 and leaky.act.negative_slope == 0.2
    leaky.eval()
    x = torch.randn(2, 32, 5, 5)
    expected = x + leaky.bn2(leaky.conv2(F.leaky_relu(leaky.bn1(leaky.conv1(x)), 0.2)))
    torch.testing.assert_close(leaky(x), expected)


def test_residual_pruned_width_and_bad_options():
    block = BLOCKS.build({"type": "residual", "mid_channels": 3}, channels=8)
    assert block.conv1.out_channels == 3 and block.conv2.in_channels == 3
    assert block(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)
    with pytest.raises(SpecError, match="norm"):
        BLOCKS.build({"type": "residual", "norm": "layer"}, channels=8)
    with pytest.raises(SpecError, match="functional"):
        BLOCKS.build({"type": "residual", "act": "prelu"}, channels=8)
    prelu = BLOCKS.build({"type": "residual", "act": "prelu", "functional": False}, channels=8)
    assert _count(prelu, nn.PReLU) == 1


@pytest.mark.parametrize(("ratio", "hidden", "params"), [(3, 96, 7_456), (6, 192, 14_848)])
def test_inverted_residual_bn_matches_nasnetbn(ratio, hidden, params):
    block = BLOCKS.build({"type": "inverted_residual", "expand_ratio": ratio}, channels=32)
    assert block.hidden == hidden
    assert _params(block) == params  # official per-block counts at nf=32
    keys = {k.rsplit(".", 1)[0] for k in block.state_dict()}
    assert keys == {f"conv.{i}" for i in range(8) if i not in (2, 5)}
    assert _count(block, nn.ReLU6) == 2 and _count(block, nn.BatchNorm2d) == 3
    assert all(m.bias is None for m in block.modules() if isinstance(m, nn.Conv2d))
    assert block.conv[3].groups == hidden


def test_inverted_residual_without_bn_and_pruned():
    block = BLOCKS.build(
        {"type": "inverted_residual", "expand_ratio": 4, "hidden": 5, "norm": "none", "act": "lrelu"},
        channels=8,
    )
    assert [type(m) for m in block.conv] == [nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.LeakyReLU, nn.Conv2d]
    assert block.hidden == 5 and all(m.bias is not None for m in block.conv if isinstance(m, nn.Conv2d))
    assert _params(block) == (8 * 5 + 5) + (5 * 9 + 5) + (5 * 8 + 8)
    x = torch.randn(1, 8, 4, 6)
    torch.testing.assert_close(block(x), x + block.conv(x))
    assert BLOCKS.build({"type": "inverted_residual", "expand_ratio": 1.5}, channels=6).hidden == 9


def test_inverted_residual_expand_one_and_errors():
    block = BLOCKS.build({"type": "inverted_residual", "expand_ratio": 1}, channels=8)
    assert [type(m) for m in block.conv][:3] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    assert block.conv[0].groups == 8 and len(block.conv) == 5
    with pytest.raises(SpecError, match="hidden must equal"):
        BLOCKS.build({"type": "inverted_residual", "expand_ratio": 1, "hidden": 4}, channels=8)
    with pytest.raises(SpecError, match="expand_ratio"):
        BLOCKS.build({"type": "inverted_residual", "expand_ratio": "six"}, channels=8)
    with pytest.raises(SpecError, match="hidden"):
        BLOCKS.build({"type": "inverted_residual", "hidden": 0}, channels=8)


@pytest.mark.parametrize(
    ("scale", "factors", "conv_outs"),
    [(2, [2], [32]), (3, [3], [72]), (4, [2, 2], [32, 32]), (8, [2, 2, 2], [32, 32, 32])],
)
def test_pixelshuffle_steps_upsampler(scale, factors, conv_outs):
    assert shuffle_factors(scale) == factors
    up = UPSAMPLERS.build({"type": "pixelshuffle_steps"}, channels=8, out_channels=3, scale=scale)
    assert [s.conv.out_channels for s in up.steps] == conv_outs
    assert _count(up, nn.LeakyReLU) == len(factors) + 1
    assert up(torch.randn(1, 8, 5, 3)).shape == (1, 3, 5 * scale, 3 * scale)


def test_pixelshuffle_steps_pruned_widths_and_errors():
    up = UPSAMPLERS.build(
        {"type": "pixelshuffle_steps", "step_channels": [6, 4], "hr_channels": 5},
        channels=8,
        out_channels=3,
        scale=4,
    )
    assert [(s.conv.in_channels, s.conv.out_channels) for s in up.steps] == [(8, 24), (6, 16)]
    assert (up.hr_conv.in_channels, up.hr_conv.out_channels, up.conv_last.in_channels) == (4, 5, 5)
    assert up(torch.randn(1, 8, 3, 3)).shape == (1, 3, 12, 12)
    with pytest.raises(SpecError, match="step_channels"):
        UPSAMPLERS.build({"type": "pixelshuffle_steps", "step_channels": [6]}, channels=8, out_channels=3, scale=4)
    with pytest.raises(SpecError, match="scale"):
        UPSAMPLERS.build({"type": "pixelshuffle_steps"}, channels=8, out_channels=3, scale=1)


def _official_msrresnet_key(key: str) -> str:
    """Our key -> the official MSRResNet (znsc/MSRResNet, KAIR MSRResNet1) key."""
    key = re.sub(r"^head\.conv\.", "conv_first.", key)
    key = re.sub(r"^body\.", "recon_trunk.", key)
    key = re.sub(r"^upsampler\.steps\.(\d+)\.conv\.", lambda m: f"upconv{int(m.group(1)) + 1}.", key)
    return key.replace("upsampler.hr_conv.", "HRconv.").replace("upsampler.conv_last.", "conv_last.")


def _official_msrresnet_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official MSRResNet x4 forward, written out with functional ops on an official state dict."""

    def c(name, t):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    fea = F.leaky_relu(c("conv_first", x), 0.1)
    out = fea
    for i in range(16):
        out = out + c(f"recon_trunk.{i}.conv2", F.relu(c(f"recon_trunk.{i}.conv1", out)))
    out = F.leaky_relu(F.pixel_shuffle(c("upconv1", out), 2), 0.1)
    out = F.leaky_relu(F.pixel_shuffle(c("upconv2", out), 2), 0.1)
    out = c("conv_last", F.leaky_relu(c("HRconv", out), 0.1))
    return out + F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


def test_msrresnet_imports_official_names_and_matches_official_forward(tmp_path):
    torch.manual_seed(0)
    source = build(zoo_spec("msrresnet"))
    official = {_official_msrresnet_key(k): v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / "MSRResNetx4.pth"
    torch.save(official, path)
    model = build(zoo_spec("msrresnet"))
    import_weights(model, "msrresnet", path)
    x = torch.rand(1, 3, 7, 6)
    with torch.inference_mode():
        torch.testing.assert_close(model.eval()(x), _official_msrresnet_forward(official, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="no official checkpoint"):
        build_zoo_model("msrresnet", official=True)


def test_nasnetbn_strict_import_keeps_batchnorm_statistics(reference, official_models):
    official = read_state_dict(reference / "checkpoints" / "nasnetbn_ntire2022_x4.pth")
    ours = official_models("nasnetbn").state_dict()
    assert len(ours) == len(official) == 266
    assert sum(v.numel() for v in ours.values()) == 321_611  # 315,811 params + BN running statistics
    torch.testing.assert_close(ours["body.1.conv.4.running_var"], official["recon_trunk.1.conv.4.running_var"])
    torch.testing.assert_close(ours["upsampler.steps.1.conv.weight"], official["upconv2.weight"])


def test_nasnetbn_mismatched_checkpoint_is_reported(reference, tmp_path):
    state = read_state_dict(reference / "checkpoints" / "nasnetbn_ntire2022_x4.pth")
    del state["recon_trunk.5.conv.4.running_mean"]
    state["recon_trunk.2.conv1.weight"] = torch.zeros(16, 32, 3, 3)
    state["recon_trunk.16.conv1.weight"] = torch.zeros(32, 32, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    model = build(zoo_spec("nasnetbn"))
    with pytest.raises(CheckpointError) as info:
        import_weights(model, "nasnetbn", tmp_path / "bad.pth")
    message = str(info.value)
    assert "body.5.conv.4.running_mean" in message and "missing" in message
    assert "body.16.conv1.weight" in message and "unexpected" in message
    assert "body.2.conv1.weight: checkpoint (16, 32, 3, 3) vs model (32, 32, 3, 3)" in message
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        import_weights(model, "nasnetbn", tmp_path / "junk.pth")
