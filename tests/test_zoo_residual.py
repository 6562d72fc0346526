"""Residual / inverted-residual families, the MSRResNet upsampler, the msrresnet and nasnetbn zoo entries."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import CheckpointError, SpecError
from nas.measure.profiler import profile_model
from nas.models.blocks.upsample_msrresnet import shuffle_factors
from nas.models.checkpoint import read_state_dict
from nas.models.network import build
from nas.models.registry import BLOCKS, UPSAMPLERS
from nas.models.spec import load_spec, save_spec
from nas.zoo import build_zoo_model, import_weights, reference_profile, zoo_spec

MODELS = ["msrresnet", "nasnetbn"]
ACTS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.ReLU6)


def _count(model: nn.Module, kind: type | tuple) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- blocks


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


@pytest.fixture(scope="module")
def nasnetbn(reference):
    return build_zoo_model("nasnetbn", official=True).eval()


def test_nasnetbn_strict_import(nasnetbn, reference):
    official = read_state_dict(reference / "checkpoints" / "nasnetbn_ntire2022_x4.pth")
    ours = nasnetbn.state_dict()
    assert len(ours) == len(official) == 266
    assert sum(v.numel() for v in ours.values()) == 321_611
    torch.testing.assert_close(ours["body.1.conv.4.running_var"], official["recon_trunk.1.conv.4.running_var"])
    torch.testing.assert_close(ours["upsampler.steps.1.conv.weight"], official["upconv2.weight"])


def test_nasnetbn_set5_psnr(nasnetbn, reference):
    from nas.measure.evaluate import evaluate_folder

    set5 = reference / "images" / "Set5"
    result = evaluate_folder(nasnetbn, set5, lr_dir=set5 / "LR_bicubic_X4", scale=4, ssim=False, progress=False)
    assert len(result["images"]) == 5
    assert result["mean"]["psnr_y"] == pytest.approx(reference_profile("nasnetbn")["set5_psnr_y"], abs=0.005)


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


@pytest.mark.parametrize("name", MODELS)
def test_zoo_profile_matches_reference(name):
    prof = profile_model(build(zoo_spec(name)).eval())
    ref = reference_profile(name)
    got = {k: getattr(prof, k) for k in ("params", "flops", "flops_fvcore", "activations", "num_conv")}
    assert got == {k: ref[k] for k in got}
