"""Frontends: models in (nn.Module, .onnx, .nir) -> the graph IR at stage 'imported'.

``load_model`` is the one entry point the compiler and the CLIs use; it dispatches on the type
of its argument, the file extension, and for .onnx on the content: an SNN in the ai.snnc form
(frontends/onnx/snn.py) or a standard ANN/CNN, converted to IF neurons with calibration data
(frontends/onnx/ann.py). ``.nir`` files go through frontends/nir/. Pickled PyTorch files
are never loaded (unpickling runs arbitrary code): export them to ONNX first.

``compile_model`` loads and compiles in one call (``compiler.compile_model`` takes a Graph: the
compiler never imports the frontends).
"""

from __future__ import annotations

from pathlib import Path

from compiler.errors import FrontendError
from compiler.ir.graph import Graph

MODEL_SUFFIXES = (".onnx", ".nir")


def load_model(path_or_module, input_shape=None, *, calib=None, dt: float | None = None,
               nir_convention: str | None = None, **options) -> Graph:
    """Import a model as a float operator graph (stage 'imported').

    Args:
        path_or_module: an ``nn.Module`` (native SNN), an existing ``Graph`` (returned as is), or
            a path to a ``.onnx`` (SNN or CNN, told apart by content) or ``.nir`` file.
        input_shape: one sample's shape (C, H, W); required for modules, optional for ONNX
            files that leave input dims symbolic.
        calib: calibration images [N, C, H, W] in [0, 1]; needed to convert an ONNX CNN whose
            activations are not all Clip-bounded.
        dt, nir_convention: NIR import: the time step and the producer's conventions
            (frontends/nir/); read from the file's metadata when absent.
        options: ANN conversion options (maxpool, threshold, per_channel, v_init,
            calibrate_vinit, timesteps, check; frontends.onnx.load_onnx) or NIR options
            (cubalif).
    Returns:
        The imported Graph.
    Raises:
        FrontendError: missing file, unknown or refused format (e.g. pickled .pt files).
        UnsupportedOpError: an operator with no IR equivalent (names the node).
    """
    if isinstance(path_or_module, Graph):
        return path_or_module
    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a dependency
        nn = None
    if nn is not None and isinstance(path_or_module, nn.Module):
        from frontends.native.convert import to_graph
        return to_graph(path_or_module, input_shape)
    if not isinstance(path_or_module, (str, Path)):
        raise FrontendError(f"cannot load a model from a {type(path_or_module).__name__}",
                            "pass an nn.Module, a Graph or a path to a .onnx or .nir file")
    path = Path(path_or_module)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".ckpt", ".pkl"):
        raise FrontendError(f"{path}: pickled PyTorch files are not loaded (unpickling can run "
                            "arbitrary code)",
                            "load the module in your own code and pass it to load_model, or "
                            "export it: frontends.onnx.export_onnx(model, 'model.onnx', "
                            "input_shape=(C, H, W))")
    if suffix not in MODEL_SUFFIXES:
        raise FrontendError(f"{path}: unknown model format '{suffix or '(no extension)'}'",
                            f"supported files: {', '.join(MODEL_SUFFIXES)}")
    if not path.is_file():
        raise FrontendError(f"model file {path} not found", "check the path")
    if suffix == ".onnx":
        from frontends.onnx import load_onnx
        return load_onnx(path, input_shape=input_shape, calib=calib, **options)
    from frontends.nir import import_nir
    return import_nir(path, dt=dt, convention=nir_convention, **options)


def is_ann_file(path) -> bool:
    """True if ``path`` is an ONNX file holding a standard ANN (to convert), not an SNN."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    from frontends.onnx import check_file, is_ann_model
    return is_ann_model(check_file(path))


def compile_model(model, spec=None, *, input_shape=None, **options):
    """Load ``model`` (nn.Module, Graph, .onnx or .nir path) and compile it: a ``Program``.

    ``input_shape`` is passed to :func:`load_model`; ``options`` to
    :func:`compiler.compile_model` (bits, per_channel, clip, chips, calib, timesteps, ...).
    A file's name and SHA-256 are recorded in the image (META source). A model with a training
    record (compiler/training_record.py) supplies bits/per_channel/clip/encoding/timesteps; a
    contradicting option raises.
    """
    from compiler import PICORE64
    from compiler import compile_model as _compile
    from compiler.backend.emit import file_sha256

    graph = load_model(model, input_shape=input_shape)
    if graph.attrs.get("training"):      # a training export: its settings are the defaults
        from compiler import training_record
        options = training_record.resolve(graph.attrs["training"], options,
                                          set(options) - {"source"})
    source = options.pop("source", None)
    if source is None and isinstance(model, (str, Path)):
        source = {"path": Path(model).name, "sha256": file_sha256(model)}
    return _compile(graph, spec or PICORE64, source=source, **options)


__all__ = ["load_model", "compile_model", "is_ann_file", "MODEL_SUFFIXES"]
