"""ONNX frontend, split by stage.

- ``common.py``: file checks (readable, onnx.checker, external data, opset), attribute parsing
  and validation, the table-driven import loop and its registry;
- ``ops.py``: importers of the standard ONNX operators (both forms);
- ``snn.py``: the project's ai.snnc SNN dialect (format specification) and its import;
- ``ann.py``: standard ANN graphs (torch.onnx.export & co.): import + ANN -> SNN conversion;
- ``export.py``: ONNX export of native models / operator graphs in the ai.snnc form.

:func:`load_onnx` dispatches a file on its content (SNN or ANN).
"""

from __future__ import annotations

from pathlib import Path

from frontends.onnx.ann import (
    Activation,
    AnnModel,
    Conversion,
    activation_thresholds,
    ann_shapes,
    calibrate_v_init,
    check_onnxruntime,
    convert,
    import_ann,
    lower_snn,
    report,
    run_ann,
    run_snn_float,
    snn_payloads,
    to_snn,
)
from frontends.onnx.common import (
    DOMAIN,
    DOMAIN_VERSION,
    IMPORTERS,
    MAXPOOL_MODES,
    OPSET,
    check_file,
    is_ann_model,
    is_snn_model,
    register_importer,
)
from frontends.onnx.export import export_onnx, to_onnx_model
from frontends.onnx.snn import from_onnx_model, import_onnx


def load_onnx(path, input_shape=None, calib=None, maxpool: str = "error", **conversion):
    """Import any .onnx file, dispatching on its content.

    An SNN in the ai.snnc form is imported as is (:func:`import_onnx`); a standard ANN is read
    with :func:`import_ann` and converted with :func:`convert` (``calib`` images and the
    ``conversion`` options: threshold, per_channel, v_init, calibrate_vinit, timesteps, check).
    Returns the SNN operator Graph (stage 'imported').
    """
    path = Path(path)
    model = check_file(path)
    if not is_ann_model(model):
        return from_onnx_model(model, where=path.name, input_shape=input_shape)
    ann = import_ann(model, input_shape=input_shape, maxpool=maxpool, where=path.name)
    return convert(ann, calib, **conversion).graph


__all__ = ["Activation", "AnnModel", "Conversion", "DOMAIN", "DOMAIN_VERSION", "IMPORTERS",
           "MAXPOOL_MODES", "OPSET", "activation_thresholds", "ann_shapes", "calibrate_v_init",
           "check_file", "check_onnxruntime", "convert", "export_onnx", "from_onnx_model",
           "import_ann", "import_onnx", "is_ann_model", "is_snn_model", "load_onnx", "lower_snn",
           "register_importer", "report", "run_ann", "run_snn_float", "snn_payloads",
           "to_onnx_model", "to_snn"]
