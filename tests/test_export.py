"""ONNX export (nas.export, `srnas export`): every zoo model, dynamic sizes, pruned and searched models, the CLI.

The quick tier exports with the fast legacy (TorchScript) exporter, and with the default dynamo exporter a pruned
model and the CLI end to end; the slow tier runs dynamo with dynamic sizes on the whole zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e .[test])")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install -e .[test])")

from nas.cli.main import main  # noqa: E402
from nas.export import ExportError, export_checked, max_abs_diff, onnx_info, sample_input  # noqa: E402
from nas.export.onnx import onnx_session  # noqa: E402
from nas.models.network import build  # noqa: E402
from nas.models.pruned import PrunedConv2d  # noqa: E402
from nas.paths import builtin_spaces  # noqa: E402
from nas.search.space import load_space  # noqa: E402
from nas.zoo import build_zoo_model, list_zoo  # noqa: E402
from nas.zoo.resolve import save_model  # noqa: E402
from pruning import GatedModel, shrink  # noqa: E402

SIZE = (20, 24)  # LR input H, W (not square, so a swapped axis shows; ESA needs >= 15)
ATOL = 1e-4


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return sample_input(SIZE)[1]


def _check_not_saturated(model: nn.Module, x: torch.Tensor) -> None:
    """A parity check on an output clipped to all-0 or all-1 would compare constants: make sure it is not."""
    with torch.inference_mode():
        y = model.eval()(x)
    inside = ((y > 0) & (y < 1)).float().mean().item()
    assert inside > 0.05, f"only {inside:.1%} of the output lies inside (0, 1)"


def _export(model, path, inputs, **kw):
    """Export + check; also compares the raw (unclipped) outputs, which random-init models may saturate."""
    report = export_checked(model, path, inputs, **kw)
    assert path.is_file() and report.bytes == path.stat().st_size
    assert report.max_abs_diff <= ATOL and report.ok
    assert report.provider == "CPUExecutionProvider"
    session = onnx_session(path)
    for x in inputs:
        with torch.inference_mode():
            expected = model.eval()(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        assert np.abs(got - expected).max() <= ATOL * max(1.0, float(np.abs(expected).max()))
    return report


@pytest.mark.parametrize("name", list_zoo())
def test_zoo_model_exports_and_matches_onnxruntime(name, image, tmp_path):
    torch.manual_seed(0)
    model = build_zoo_model(name).eval()
    opset = 18 if name == "span" else None  # one model at a non-default opset
    report = _export(model, tmp_path / f"{name}.onnx", [image], exporter="torchscript", opset=opset)
    scale = model.spec["scale"]
    assert report.opset == (opset or 17)
    assert report.input_shape == [1, 3, *SIZE]
    assert report.output_shape == [1, 3, SIZE[0] * scale, SIZE[1] * scale]


@pytest.mark.slow
@pytest.mark.parametrize("name", list_zoo())
def test_zoo_model_exports_with_dynamo(name, image, tmp_path):
    """Dynamic sizes only: the fixed-size dynamo export is the same path with one shape fewer (the CLI test
    exports RFDN at a fixed size with dynamo)."""
    torch.manual_seed(0)
    inputs = [image, sample_input((31, 17))[1]]
    report = _export(build_zoo_model(name), tmp_path / f"{name}.onnx", inputs, dynamic=True)
    assert report.exporter == "dynamo" and report.opset >= 18
    assert report.input_shape == [1, 3, "height", "width"]


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_dynamic_model_runs_on_two_sizes(exporter, image, tmp_path):
    torch.manual_seed(0)
    # an RFDB (ESA: strided conv, max_pool, interpolate back to the input size) + PixelShuffle; the whole zoo
    # exports with dynamic sizes too (slow tier below)
    model = build({"width": 8, "blocks": [{"type": "rfdb"}], "scale": 4}).eval()
    other = sample_input((31, 17))[1]
    report = _export(model, tmp_path / "rfdn.onnx", [image, other], dynamic=True, exporter=exporter)
    assert report.input_shape == [1, 3, "height", "width"]
    assert report.output_shape[2:] == ["out_height", "out_width"]  # torchscript leaves the batch axis symbolic
    session = onnx_session(tmp_path / "rfdn.onnx")
    for x in (image, other):
        out = session.run(None, {"lr": x.numpy()})[0]
        assert out.shape == (1, 3, x.shape[2] * 4, x.shape[3] * 4)
    diff, _ = max_abs_diff(model, tmp_path / "rfdn.onnx", [other])
    assert diff <= ATOL


def test_fixed_model_refuses_another_size(image, tmp_path):
    model = build({"width": 8, "blocks": [{"type": "residual"}], "scale": 2})
    _export(model, tmp_path / "fixed.onnx", [image], exporter="torchscript")
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        onnx_session(tmp_path / "fixed.onnx").run(None, {"lr": sample_input((16, 16))[1].numpy()})


def _pruned(mode: str) -> tuple[nn.Module, dict]:
    """A tiny residual SRNet with half of every gate's channels pruned, shrunk as `srnas prune` does."""
    torch.manual_seed(0)
    spec = {"width": 8, "blocks": [{"type": "residual"}] * 2, "upsampler": {"type": "pixelshuffle_steps"}}
    gated = GatedModel(build({**spec, "global_skip": "bilinear"}).eval(), mode)
    for name, gate in gated.gates.items():
        keep = torch.ones(gate.size, dtype=torch.bool)
        keep[: gate.size // 2] = False
        gated.set_mask(name, keep)
    small, pruned_spec = shrink(gated)
    gated.remove()
    assert pruned_spec["pruned"]["mode"] == mode
    # fine mode: convs gather / scatter the channels they keep (index ops in the graph); coupled: plain convs
    assert any(isinstance(m, PrunedConv2d) for m in small.modules()) == (mode == "fine")
    return small.eval(), pruned_spec


def test_pruned_models_export(image, tmp_path, capsys):
    fine, spec = _pruned("fine")
    _check_not_saturated(fine, image)
    _export(fine, tmp_path / "fine.onnx", [image])
    _export(_pruned("coupled")[0], tmp_path / "coupled.onnx", [image], exporter="torchscript")
    folder = save_model(tmp_path / "pruned", fine, spec)  # what `srnas prune` writes: a MODEL
    out = tmp_path / "cli.onnx"
    assert main(["export", str(folder), "--onnx", str(out), "--size", "20", "24", "--exporter", "torchscript"]) == 0
    text = capsys.readouterr().out
    for key in ("file", "size", "model", "exporter", "input", "parity", "checked on", "runtime"):
        assert any(line.startswith(key) for line in text.splitlines()), key
    assert "opset 17" in text and "1x3x20x24 (fixed)" in text and "CPUExecutionProvider" in text
    assert out.is_file()


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_search_space_subnet_exports(exporter, image, tmp_path):
    space = load_space(builtin_spaces()["quick"])
    choice = {"width": 16, "depth": 2, "layers": ["spab", "lattice"]}
    choice.update(fusion="concat", upsampler="upa", global_skip="bilinear")
    torch.manual_seed(0)
    model = build(space.to_spec(choice)).eval()
    _check_not_saturated(model, image)
    _export(model, tmp_path / "subnet.onnx", [image], exporter=exporter)


class TracingDiffers(nn.Module):
    """Adds 0.01 only while being exported: ONNX Runtime then differs from PyTorch by 0.01."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + (0.01 if torch.jit.is_tracing() else 0.0)


def test_parity_failure_leaves_no_file(image, tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0\.01 > --atol 0\.0001; .* not written"):
        export_checked(TracingDiffers(), out, [image], exporter="torchscript", name="toy")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    report = export_checked(TracingDiffers(), out, [image], exporter="torchscript", atol=0.02)
    assert report.max_abs_diff == pytest.approx(0.01, abs=1e-6) and out.is_file()


class Unsupported(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.linalg.eigvals(x[0, 0, :4, :4]).real.sum()


@pytest.mark.parametrize(
    "exporter,op",
    [("torchscript", "aten::linalg_eigvals"), pytest.param("dynamo", "aten.linalg_eig", marks=pytest.mark.slow)],
)
def test_unsupported_op_is_one_line_naming_model_and_op(exporter, op, image, tmp_path, capfd):
    with pytest.raises(ExportError) as info:
        export_checked(Unsupported(), tmp_path / "u.onnx", [image], exporter=exporter, name="toy")
    message = str(info.value)
    assert message.startswith(f"cannot export toy to ONNX with the {exporter} exporter") and op in message
    assert "\n" not in message and list(tmp_path.iterdir()) == []
    assert "graph(" not in capfd.readouterr().out  # the exporter's IR dump is not printed


def test_cli_exports_official_weights(reference, tmp_path, capsys):
    out = tmp_path / "span.onnx"
    assert main(["export", "span", "--onnx", str(out), "--size", "32", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"].endswith("span_ntire2024_x4.pth") and report["image"] == "Set5/babyx4.png"
    assert report["exporter"] == "dynamo" and report["opset"] == 20 and report["input_shape"] == [1, 3, 32, 40]
    assert report["max_abs_diff"] <= ATOL and out.stat().st_size == report["bytes"]
    assert onnx_info(out).output_shape == [1, 3, 128, 160]


def test_sample_image_without_kit_is_an_embedded_photo(monkeypatch, tmp_path):
    monkeypatch.setenv("SRNAS_REFERENCE_DIR", str(tmp_path / "absent"))
    label, x = sample_input((40, 50))
    assert label.startswith("embedded/") and x.shape == (1, 3, 40, 50)
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05  # a photo, not a constant
    _, big = sample_input((300, 500))  # larger than the photo: resized up, then cropped
    assert big.shape == (1, 3, 300, 500)


@pytest.mark.parametrize(
    "args,message",
    [
        (["no_such_model", "--onnx", "{tmp}/m.onnx"], "is not a zoo model"),
        (["rfdn", "--onnx", "{tmp}/missing/m.onnx"], "does not exist"),
        (["rfdn", "--onnx", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_one_error_line(args, message, tmp_path, capsys):
    assert main(["export", *[a.format(tmp=tmp_path) for a in args]]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("srnas export: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not np.any([p.suffix == ".onnx" for p in tmp_path.rglob("*")])


def test_missing_onnx_packages_are_one_clear_error(monkeypatch):
    import importlib.util

    from nas.export.onnx import ExportError, require_onnx

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n, *a))
    require_onnx("torchscript")  # the legacy exporter does not need onnxscript
    with pytest.raises(ExportError, match=r"needs onnxscript: pip install 'srnas\[export\]'"):
        require_onnx("dynamo")
