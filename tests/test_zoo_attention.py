"""Attention families (SC-PA + U-PA, lattice + BFM + MeanShift, SPAB + SPAN fusion) and the pan, latticenet and
span zoo entries."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import CheckpointError, SpecError
from nas.measure.profiler import profile_model
from nas.models.blocks.lattice import DIV2K_MEAN, MeanShift
from nas.models.blocks.upsample_pa import stage_factors
from nas.models.checkpoint import read_state_dict
from nas.models.network import build
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.models.spec import load_spec, save_spec
from nas.zoo import build_zoo_model, checkpoint_path, import_weights, reference_profile, zoo_spec

MODELS = ["pan", "latticenet", "span"]
ACTS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.ReLU6)


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


# ---------------------------------------------------------------- SC-PA and U-PA


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


# ---------------------------------------------------------------- zoo models


@pytest.mark.parametrize("name", MODELS)
def test_zoo_params_shape_and_spec_roundtrip(name, tmp_path):
    model = build(zoo_spec(name))
    assert _params(model) == reference_profile(name)["params"]
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 6, 5)).shape == (1, 3, 24, 20)
    save_spec(model.spec, tmp_path / "spec.yaml")
    again = build(load_spec(tmp_path / "spec.yaml"))
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scale", [2, 3])
def test_zoo_families_at_tiny_width_and_other_scales(name, scale):
    spec = copy.deepcopy(zoo_spec(name))
    spec.update(width=6, scale=scale)
    spec["blocks"] = [{"type": b["type"]} for b in spec["blocks"][:2]]  # widths derived from width 6
    model = build(spec).eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 5, 4)).shape == (1, 3, 5 * scale, 4 * scale)


@pytest.mark.parametrize("name", MODELS)
def test_zoo_profile_matches_reference(name):
    prof = profile_model(build(zoo_spec(name)).eval())
    ref = reference_profile(name)
    got = {k: getattr(prof, k) for k in ("params", "flops", "flops_fvcore", "activations", "num_conv")}
    assert got == {k: ref[k] for k in got}


@pytest.mark.parametrize("name", MODELS)
def test_zoo_strict_import_and_set5_psnr(name, reference):
    from nas.measure.evaluate import evaluate_folder

    model = build_zoo_model(name, official=True).eval()
    official = read_state_dict(checkpoint_path(name))
    assert len(model.state_dict()) == len(official)
    assert sum(v.numel() for v in model.state_dict().values()) == sum(v.numel() for v in official.values())
    set5 = reference / "images" / "Set5"
    result = evaluate_folder(model, set5, lr_dir=set5 / "LR_bicubic_X4", scale=4, ssim=False, progress=False)
    assert len(result["images"]) == 5
    assert result["mean"]["psnr_y"] == pytest.approx(reference_profile(name)["set5_psnr_y"], abs=0.005)


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


def test_upa_without_attention_is_nearest_plus_conv():
    import torch

    from nas.models.registry import UPSAMPLERS

    plain = UPSAMPLERS.build({"type": "upa", "up_channels": 6, "attention": False}, channels=8, out_channels=3, scale=4)
    assert not any(type(m).__name__ == "PixelAttention" for m in plain.modules())
    assert plain(torch.rand(1, 8, 5, 5)).shape == (1, 3, 20, 20)
