"""Export to deployment formats: ONNX files checked against PyTorch with ONNX Runtime (``srnas export``).

``nas.export.onnx`` exports and checks; ``nas.export.sample`` gives the real image the check runs on.
"""

from nas.export.onnx import (
    DEFAULT_ATOL,
    DEFAULT_EXPORTER,
    EXPORTERS,
    ExportError,
    ExportReport,
    export_checked,
    export_onnx,
    max_abs_diff,
    onnx_info,
)
from nas.export.sample import sample_image, sample_input

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_EXPORTER",
    "EXPORTERS",
    "ExportError",
    "ExportReport",
    "export_checked",
    "export_onnx",
    "max_abs_diff",
    "onnx_info",
    "sample_image",
    "sample_input",
]
