"""Distillation families (RFDB, RLFB, IMDB + ESA) and their zoo models: RFDN, pruned RFDN, RLFN, IMDN, AIM2019 IMDN.

Each zoo model must match its official parameter count and complexity numbers exactly, import its official
checkpoint strictly and reproduce the reference Set5 x4 Y-PSNR within 0.005 dB.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.errors import CheckpointError, DataError, SpecError
from nas.measure.images import modcrop, read_image, to_tensor, to_uint8
from nas.measure.metrics import psnr
from nas.measure.profiler import count_complexity
from nas.models.checkpoint import read_state_dict
from nas.models.network import build
from nas.models.registry import BLOCKS
from nas.models.spec import load_spec, save_spec
from nas.zoo import build_zoo_model, import_weights, reference_profile, zoo_spec

MODELS = ["rfdn", "rfdn_pruned", "rlfn", "imdn", "imdn_aim2019"]
PSNR_TOL = 0.005


def _tiny_spec(block: dict, width: int = 8, scale: int = 2, fusion: dict | None = None) -> dict:
    return {
        "scale": scale,
        "width": width,
        "blocks": [dict(block), dict(block)],
        "fusion": fusion,
        "body_conv": True,
        "body_skip": True,
    }


@pytest.mark.parametrize("name", MODELS)
def test_params_shape_and_spec_round_trip(name, tmp_path):
    model = build(zoo_spec(name))
    assert sum(p.numel() for p in model.parameters()) == reference_profile(name)["params"]
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 16, 16))  # the ESA needs >= 15x15 feature maps
    assert out.shape == (1, 3, 64, 64)
    save_spec(model.spec, tmp_path / "spec.yaml")
    again = build(load_spec(tmp_path / "spec.yaml"))
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", MODELS)
def test_complexity_equals_official(name):
    counts = count_complexity(build(zoo_spec(name)), (3, 256, 256))
    ref = reference_profile(name)
    got = {k: getattr(counts, k) for k in ("params", "flops", "flops_fvcore", "activations", "num_conv")}
    assert got == {k: ref[k] for k in got}


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
def test_blocks_work_at_other_widths_and_scales(block, fusion, scale):
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


@pytest.mark.parametrize("name", MODELS)
def test_official_checkpoint_imports_strictly(name, reference):
    model = build_zoo_model(name, official=True)
    assert sum(p.numel() for p in model.parameters()) == reference_profile(name)["params"]


def test_rlfn_accepts_the_ntire2024_renamed_file(reference):
    renamed = reference / "checkpoints" / "rlfn_ntire2024baseline_x4.pth"
    a = build_zoo_model("rlfn", official=True)
    b = build_zoo_model("rlfn", weights=renamed)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _set5_psnr_y(model, reference) -> float:
    root = reference / "images" / "Set5"
    values = []
    with torch.inference_mode():
        for hr_path in sorted(root.glob("*.png")):
            lr = read_image(root / "LR_bicubic_X4" / f"{hr_path.stem}x4.png")
            sr = to_uint8(model(to_tensor(lr)))
            values.append(psnr(sr, modcrop(read_image(hr_path), 4), crop_border=4, test_y_channel=True))
    return float(np.mean(values))


@pytest.mark.parametrize("name", MODELS)
def test_set5_psnr_matches_reference(name, reference):
    model = build_zoo_model(name, official=True).eval()
    assert _set5_psnr_y(model, reference) == pytest.approx(reference_profile(name)["set5_psnr_y"], abs=PSNR_TOL)


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
