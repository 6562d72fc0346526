"""The srnas command: help for every subcommand, sr/eval on model folders and zoo checkpoints, clear errors."""

import json

import numpy as np
import pytest
import torch

from nas.cli.main import COMMAND_MODULES, build_parser, main
from nas.measure.images import read_image, write_image
from nas.models.network import build
from nas.zoo import list_zoo, reference_profile
from nas.zoo.resolve import load_model, save_model

SPEC = {"width": 8, "blocks": [{"type": "residual"}], "scale": 2, "global_skip": "bilinear"}


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name in out
    for name in COMMAND_MODULES:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
    assert build_parser().prog == "srnas"


@pytest.fixture()
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = build(SPEC)
    return save_model(tmp_path / "model", model, model.spec)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    hr = tmp_path / "hr"
    for name, size in (("a", (20, 18)), ("b", (17, 23))):  # odd sizes: modcrop to x2
        write_image(hr / f"{name}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return hr


def test_model_folder_round_trip(model_dir):
    loaded = load_model(model_dir)
    assert loaded.spec["width"] == 8 and loaded.weights.endswith("weights.safetensors")
    torch.manual_seed(0)
    saved = build(SPEC).state_dict()  # the weights the fixture saved (same seed)
    torch.manual_seed(1)
    fresh = build(SPEC).state_dict()  # what a load that did nothing would leave
    got = loaded.model.state_dict()
    assert set(got) == set(saved)
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)


def test_eval_generates_lr_and_sr_writes_pngs(model_dir, images, tmp_path, capsys):
    assert main(["downscale", "--input", str(images), "--output", str(tmp_path / "lr"), "--scale", "2"]) == 0
    capsys.readouterr()
    assert main(["eval", str(model_dir), "--hr", str(images), "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in generated["images"]] == ["a", "b"]
    assert set(generated["mean"]) == {"psnr_y", "psnr_rgb", "ssim_y", "ssim_rgb"}
    assert main(["eval", str(model_dir), "--hr", str(images), "--lr", str(tmp_path / "lr"), "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["mean"]["psnr_y"] == pytest.approx(generated["mean"]["psnr_y"], abs=1e-9)
    assert main(["sr", str(model_dir), "--input", str(tmp_path / "lr"), "--output", str(tmp_path / "sr")]) == 0
    out = read_image(tmp_path / "sr" / "ax2.png")
    assert out.shape == (20, 18, 3)


def test_errors_are_one_line(model_dir, images, tmp_path, capsys):
    assert main(["eval", "no_such_model", "--hr", str(images)]) == 1
    err = capsys.readouterr().err
    assert "is not a zoo model" in err and "Traceback" not in err
    assert main(["eval", str(model_dir), "--hr", str(tmp_path / "missing")]) == 1
    assert "image folder not found" in capsys.readouterr().err
    bad_lr = tmp_path / "badlr"
    write_image(bad_lr / "ax2.png", np.zeros((5, 5, 3), np.uint8))
    write_image(bad_lr / "bx2.png", np.zeros((8, 11, 3), np.uint8))
    assert main(["eval", str(model_dir), "--hr", str(images), "--lr", str(bad_lr)]) == 1
    assert "does not match HR" in capsys.readouterr().err
    assert (
        main(
            [
                "sr",
                "rfdn",
                "--weights",
                str(tmp_path / "nope.pth"),
                "--input",
                str(bad_lr),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "checkpoint not found" in capsys.readouterr().err
    missing_gpu = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: cuda:0 on a CPU-only machine
    assert main(["eval", str(model_dir), "--hr", str(images), "--device", missing_gpu]) == 1
    assert "cuda" in capsys.readouterr().err


def test_zoo_command_lists_every_model(capsys):
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_zoo()
    assert {"msrresnet", "rfdn", "pan", "imdn", "imdn_aim2019", "latticenet", "rlfn", "span", "nasnetbn"} <= set(
        list_zoo()
    )


def test_eval_official_rfdn_via_cli(reference, capsys):
    set5 = reference / "images" / "Set5"
    ckpt = reference / "checkpoints" / "rfdn_aim2020_x4.pth"
    args = [
        "eval",
        "rfdn",
        "--weights",
        str(ckpt),
        "--hr",
        str(set5),
        "--lr",
        str(set5 / "LR_bicubic_X4"),
        "--no-ssim",
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean"]["psnr_y"] == pytest.approx(reference_profile("rfdn")["set5_psnr_y"], abs=0.001)
