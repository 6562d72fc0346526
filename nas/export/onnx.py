"""Export a model to ONNX and check it against PyTorch with ONNX Runtime.

Exporter: ``dynamo`` (the default, as in ``torch.onnx.export`` since PyTorch 2.9: ``torch.export`` then the
onnxscript translation; opset 18+, older opsets are converted down) exports every zoo model — PixelShuffle,
ESA's max_pool/interpolate, SPAN, the lattice blocks, pruned gather/scatter convs — at a fixed size or with
dynamic height and width. ``torchscript`` (the legacy exporter, deprecated by PyTorch, opset 17 by default)
exports them too, about ten times faster; there is no silent fallback from one to the other.

The file is written only when it is complete and matches: :func:`export_checked` exports into a temporary
file beside the target (``nas.io.atomic_path``), runs it with ONNX Runtime on the given inputs, and renames
it onto the target only when the largest absolute difference from PyTorch, on outputs clipped to [0, 1]
(what an SR image is), is within ``atol``. The weights are stored inside the one ``.onnx`` file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.errors import SrnasError
from nas.io import atomic_path

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
DEFAULT_ATOL = 1e-4
TORCHSCRIPT_OPSET = 17  # the legacy exporter's default opset when none is asked for
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
CPU_PROVIDER = "CPUExecutionProvider"
_ATEN_OP = re.compile(r"aten(?:::|\.)[A-Za-z0-9_]+")


class ExportError(SrnasError):
    """A model that cannot be exported, or whose export does not match PyTorch."""


@dataclass(frozen=True)
class OnnxInfo:
    """What an ONNX file declares: opset and input/output shapes (a str is a dynamic axis)."""

    opset: int
    input_shape: list[int | str]
    output_shape: list[int | str]


@dataclass
class ExportReport:
    """One checked export: the file, how it was made and how closely ONNX Runtime matches PyTorch."""

    path: str
    bytes: int
    exporter: str
    dynamic: bool
    opset: int
    input_shape: list[int | str]
    output_shape: list[int | str]
    provider: str
    atol: float
    max_abs_diff: float
    checked_inputs: list[list[int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol


def export_checked(
    model: nn.Module,
    path: str | Path,
    inputs: Sequence[torch.Tensor],
    *,
    dynamic: bool = False,
    opset: int | None = None,
    exporter: str = DEFAULT_EXPORTER,
    atol: float = DEFAULT_ATOL,
    name: str = "model",
) -> ExportReport:
    """Export ``model`` (traced on ``inputs[0]``) to ``path``, check it on every input, commit it if it matches.

    Raises ExportError naming ``name`` (and the unsupported op when there is one) when the export fails, and
    when the difference exceeds ``atol``; ``path`` is then left as it was."""
    if not inputs:
        raise ValueError("export_checked needs at least one input")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a directory; give the .onnx file to write")
    if not path.parent.is_dir():
        raise ExportError(f"folder {path.parent} does not exist")
    net = copy.deepcopy(model).cpu().eval()
    with atomic_path(path) as tmp:
        export_onnx(net, tmp, inputs[0], dynamic=dynamic, opset=opset, exporter=exporter, name=name)
        diff, provider = max_abs_diff(net, tmp, inputs)
        info = onnx_info(tmp)
        if opset is not None and info.opset != opset:
            raise ExportError(f"{name}: opset {opset} was asked, the {exporter} exporter wrote opset {info.opset}")
        report = ExportReport(
            path=str(path),
            bytes=tmp.stat().st_size,
            exporter=exporter,
            dynamic=dynamic,
            opset=info.opset,
            input_shape=info.input_shape,
            output_shape=info.output_shape,
            provider=provider,
            atol=atol,
            max_abs_diff=diff,
            checked_inputs=[list(x.shape) for x in inputs],
        )
        if not report.ok:
            raise ExportError(
                f"{name}: ONNX Runtime output differs from PyTorch by {diff:.3g} > --atol {atol:g}; {path} not written"
            )
    return report


def require_onnx(exporter: str = DEFAULT_EXPORTER) -> None:
    """The packages export needs, or one ExportError naming them (they are the optional ``export`` extra)."""
    import importlib.util

    names = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ExportError(f"srnas export needs {', '.join(missing)}: pip install 'srnas[export]'")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: torch.Tensor,
    *,
    dynamic: bool = False,
    opset: int | None = None,
    exporter: str = DEFAULT_EXPORTER,
    name: str = "model",
) -> None:
    """Write ``model`` (eval mode, CPU) traced on ``example`` as one self-contained ONNX file at ``path``.

    ``dynamic``: height and width are dynamic axes (batch and channels stay fixed)."""
    require_onnx(exporter)
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose {' or '.join(EXPORTERS)}")
    example = example.detach().cpu()
    try:
        with _quiet():
            if exporter == "dynamo":
                _export_dynamo(model, path, example, dynamic, opset)
            else:
                _export_torchscript(model, path, example, dynamic, opset)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one line naming model and op
        raise ExportError(export_failure(name, exporter, exc)) from exc


def _export_dynamo(model: nn.Module, path: str | Path, example: torch.Tensor, dynamic: bool, opset: int | None):
    from torch.export import Dim

    shapes = ({2: Dim.DYNAMIC, 3: Dim.DYNAMIC},) if dynamic else None
    program = torch.onnx.export(
        model,
        (example,),
        None,
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_shapes=shapes,
        verbose=False,
    )
    program.save(str(path), external_data=False)
    if dynamic:
        _name_dynamic_axes(path)


def _export_torchscript(model: nn.Module, path: str | Path, example: torch.Tensor, dynamic: bool, opset: int | None):
    axes = {INPUT_NAME: {2: "height", 3: "width"}, OUTPUT_NAME: {2: "out_height", 3: "out_width"}}
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buffer,
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset or TORCHSCRIPT_OPSET,
        dynamic_axes=axes if dynamic else None,
    )
    Path(path).write_bytes(buffer.getvalue())


def _name_dynamic_axes(path: str | Path) -> None:
    """Readable names (``height``, ``width``, ``out_height``, ``out_width``) for the graph's dynamic axes."""
    import onnx

    proto = onnx.load(str(path))
    for value, prefix in ((proto.graph.input[0], ""), (proto.graph.output[0], "out_")):
        dims = value.type.tensor_type.shape.dim
        for dim, axis in zip(dims[2:4], ("height", "width"), strict=False):
            if dim.dim_param:
                dim.dim_param = prefix + axis
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints (Python and C++ stdout), warnings and log lines; failures still
    raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            os.dup2(sink.fileno(), 1)
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        logger.setLevel(level)


def export_failure(name: str, exporter: str, exc: BaseException) -> str:
    """One line naming the model, the exporter and the op that failed (when the message names one)."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    ops = list(dict.fromkeys(_ATEN_OP.findall(text)))
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = f"unsupported op {', '.join(ops[:3])}" if ops else f"{type(exc).__name__}: {lines[0] if lines else ''}"
    hint = " (try --exporter torchscript)" if exporter == "dynamo" else ""
    return f"cannot export {name} to ONNX with the {exporter} exporter: {detail[:300]}{hint}"


def onnx_info(path: str | Path) -> OnnxInfo:
    """Opset and input/output shapes of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)

    def shape(value) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return OnnxInfo(opset, shape(proto.graph.input[0]), shape(proto.graph.output[0]))


def onnx_session(path: str | Path, provider: str = CPU_PROVIDER):
    """An ONNX Runtime session on ``provider`` with torch's CPU thread count."""
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise ExportError(f"{provider} is not available in onnxruntime {ort.__version__}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[provider])


def max_abs_diff(
    model: nn.Module, path: str | Path, inputs: Sequence[torch.Tensor], provider: str = CPU_PROVIDER
) -> tuple[float, str]:
    """Largest |ORT - PyTorch| over ``inputs`` on outputs clipped to [0, 1], and the provider that ran."""
    session = onnx_session(path, provider)
    worst = 0.0
    for x in inputs:
        x = x.detach().cpu().float()
        with torch.inference_mode():
            expected = model(x).clamp(0, 1).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output shape {list(got.shape)} != PyTorch {list(expected.shape)}")
        worst = max(worst, float(np.abs(np.clip(got, 0.0, 1.0) - expected).max()))
    return worst, session.get_providers()[0]
