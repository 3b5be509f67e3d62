"""Export of operator graphs (native SNNs) to ONNX in the ai.snnc form (see snn.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError
from compiler.ir import (
    LIF,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Graph,
    Input,
    Linear,
    Output,
    Scale,
    SumPool2d,
    verify,
)
from compiler.ir.linear import infer_shapes
from compiler.ir.nodes import NEURON_TYPES, SYNAPSE_TYPES
from frontends.onnx.common import (
    DOMAIN,
    DOMAIN_VERSION,
    EXACT_DOC,
    FORMAT,
    IMPLICIT_FLATTEN,
    IR_VERSION,
    OPSET,
    SHAPE_DOC,
    _onnx,
)


# === export ==================================================================================
def export_onnx(graph_or_module, path, input_shape=None, dtype=None,
                training: dict | None = None) -> None:
    """Write an SNN graph (or a native nn.Module) as an ONNX model (atomically).

    Args:
        graph_or_module: an imported/bn_folded-stage Graph, or an nn.Module (then
            ``input_shape`` (C, H, W) is required and :func:`frontends.native.convert.to_graph`
            converts it first).
        path: destination file (written to a temporary file, then renamed).
        input_shape: one sample's shape for modules; ignored for graphs.
        dtype: element type of the standard ops, 'float32' or 'float64'; default: float32
            unless some synapse array is not exactly representable in float32.
        training: the training record (compiler/training_record.py: bits, per_channel, clip,
            encoding, timesteps, qat) written to the metadata as ``snnc.training``;
            ``snnc compile`` uses it as defaults and refuses conflicting options. Default: the
            graph's ``attrs['training']``, if any.
    Raises:
        FrontendError: the graph is lowered/quantized or cannot be expressed in ONNX.
    """
    graph = graph_or_module
    if not isinstance(graph, Graph):
        from frontends.native.convert import to_graph
        graph = to_graph(graph_or_module, input_shape)
    if training is not None:
        graph = graph.copy()
        graph.attrs["training"] = dict(training)
    model = to_onnx_model(graph, dtype=dtype)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pick_dtype(graph: Graph, dtype) -> np.dtype:
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise FrontendError(f"export_onnx: dtype must be float32 or float64, got {dt}")
        return dt
    for _, node in graph.items():
        if isinstance(node, SYNAPSE_TYPES):
            for v in vars(node).values():
                if isinstance(v, np.ndarray):
                    a = np.asarray(v, np.float64)
                    if not np.array_equal(a.astype(np.float32).astype(np.float64), a):
                        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _float_attrs(**values: float) -> dict:
    """ONNX float attributes plus, when float32 rounds one of them, the exact-value doc_string."""
    attrs: dict = {k: float(v) for k, v in values.items()}
    inexact = {k: float(v) for k, v in values.items() if float(np.float32(v)) != float(v)}
    if inexact:
        attrs["doc_string"] = EXACT_DOC + json.dumps(inexact, sort_keys=True)
    return attrs


def to_onnx_model(graph: Graph, dtype=None):
    """The ONNX ModelProto of an operator graph (see the module docstring); checked by onnx."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    for name, node in graph.items():
        if not isinstance(node, (Input, Output) + NEURON_TYPES + SYNAPSE_TYPES):
            raise FrontendError(f"export_onnx: node '{name}' is a {node.kind}; only operator "
                                f"graphs (stage imported/bn_folded) can be exported",
                                "export the model before compiling it")
    verify(graph, "imported")
    dt = _pick_dtype(graph, dtype)
    elem = TensorProto.FLOAT if dt == np.float32 else TensorProto.DOUBLE
    shapes = infer_shapes(graph)
    nodes, inits, value_info = [], [], []
    hints = graph.attrs.get("leak_hints") or {}

    def init(tname: str, arr, adt=None, onnx_shape=None) -> str:
        a = np.asarray(arr, dtype=adt or dt)
        t = numpy_helper.from_array(a if onnx_shape is None else a.reshape(onnx_shape), tname)
        if onnx_shape is not None and tuple(onnx_shape) != a.shape:
            t.doc_string = SHAPE_DOC + repr(list(a.shape))
        inits.append(t)
        return tname

    def vinfo(tname: str, shape) -> None:
        value_info.append(helper.make_tensor_value_info(tname, elem, ["batch", *shape]))

    inp = graph.input_name
    for name, node in graph.items():
        ins = graph.inputs(name)
        x = ins[0] if ins else None
        if isinstance(node, Input):
            continue
        if isinstance(node, Output):
            nodes.append(helper.make_node("Identity", [x], [name], name=name))
            continue
        if isinstance(node, Conv2d):
            kh, kw = node.weight.shape[2:]
            nodes.append(helper.make_node(
                "Conv", [x, init(f"{name}.weight", node.weight), init(f"{name}.bias", node.bias)],
                [name], name=name, kernel_shape=[kh, kw], strides=list(node.stride),
                pads=list(node.padding) * 2, dilations=list(node.dilation), group=node.groups))
        elif isinstance(node, (Affine, Linear)):
            if len(shapes[x]) != 1:
                fl = f"{name}.flatten"
                nodes.append(helper.make_node("Flatten", [x], [fl], name=fl, axis=1,
                                              doc_string=IMPLICIT_FLATTEN))
                vinfo(fl, [int(np.prod(shapes[x]))])
                x = fl
            args = [x, init(f"{name}.weight", node.weight)]
            if isinstance(node, Affine):
                args.append(init(f"{name}.bias", node.bias))
            nodes.append(helper.make_node("Gemm", args, [name], name=name, transB=1))
        elif isinstance(node, AvgPool2d):  # SumPool2d too
            kw = dict(kernel_shape=list(node.kernel_size), strides=list(node.stride),
                      pads=list(node.padding) * 2)
            if isinstance(node, SumPool2d):
                nodes.append(helper.make_node("SumPool2d", [x], [name], name=name,
                                              domain=DOMAIN, **kw))
            else:
                nodes.append(helper.make_node("AveragePool", [x], [name], name=name,
                                              count_include_pad=1, **kw))
        elif isinstance(node, Flatten):
            if node.start_dim == 0 and node.end_dim == -1:
                nodes.append(helper.make_node("Flatten", [x], [name], name=name, axis=1))
            else:
                shp = init(f"{name}.shape", [0, *shapes[name]], np.int64)
                nodes.append(helper.make_node(
                    "Reshape", [x, shp], [name], name=name,
                    doc_string=f"snnc:flatten start_dim={node.start_dim} end_dim={node.end_dim}"))
        elif isinstance(node, BatchNorm):
            c = shapes[x][0]
            args = [x]
            for field in ("gamma", "beta", "mean", "var"):
                a = np.asarray(getattr(node, field))
                if a.size != c:
                    raise FrontendError(f"export_onnx: BatchNorm '{name}' {field} has "
                                        f"{a.size} values, ONNX needs one per channel ({c})")
                args.append(init(f"{name}.{field}", a, onnx_shape=(c,)))
            nodes.append(helper.make_node("BatchNormalization", args, [name], name=name,
                                          **_float_attrs(epsilon=node.eps)))
        elif isinstance(node, Scale):
            s = np.asarray(node.scale)
            shp = shapes[x]
            n = int(np.prod(shp))
            if s.size == 1:
                oshape = ()
            elif s.size == n:
                oshape = (1, *shp)
            elif len(shp) >= 2 and s.size == shp[0]:
                oshape = (1, shp[0]) + (1,) * (len(shp) - 1)
            else:
                raise FrontendError(f"export_onnx: Scale '{name}' of shape {s.shape} does not "
                                    f"broadcast to {shp}")
            nodes.append(helper.make_node(
                "Mul", [x, init(f"{name}.scale", s, onnx_shape=oshape)], [name], name=name))
        elif isinstance(node, Add):
            op = "Add" if len(ins) == 2 else "Sum"
            nodes.append(helper.make_node(op, ins, [name], name=name))
        elif isinstance(node, NEURON_TYPES):
            params = ["v_threshold", "v_reset", "v_init"] + (["beta"] if isinstance(node, LIF)
                                                               else [])
            args = [x] + [init(f"{name}.{p}", getattr(node, p), np.float64) for p in params]
            floats = dict(dt=node.dt)
            if node.neg_floor is not None:
                floats["neg_floor"] = node.neg_floor
            attrs = dict(reset=node.reset_mode, **_float_attrs(**floats))
            if isinstance(node, LIF) and name in hints:
                attrs["leak"] = str(hints[name])
            nodes.append(helper.make_node("LIF" if isinstance(node, LIF) else "IF", args,
                                          [name], name=name, domain=DOMAIN, **attrs))
        else:  # pragma: no cover - verify() admits no other type
            raise FrontendError(f"export_onnx: no ONNX form for {node.kind} '{name}'")
        if not isinstance(node, Output):
            vinfo(name, shapes[name])

    out = graph.output_name
    g = helper.make_graph(
        nodes, "snnc", [helper.make_tensor_value_info(inp, elem, ["batch", *shapes[inp]])],
        [helper.make_tensor_value_info(out, elem, ["batch", *shapes[out]])], inits,
        value_info=value_info)
    model = helper.make_model(
        g, producer_name="snnc", producer_version=FORMAT, ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        doc_string="snnc spiking network: neuron ops in domain ai.snnc (see frontends/onnx/snn.py)")
    meta = {"snnc.format": FORMAT}
    if "dt" in graph.attrs:
        meta["snnc.dt"] = repr(float(graph.attrs["dt"]))
    if graph.attrs.get("training"):
        from compiler import training_record
        meta[training_record.META_KEY] = training_record.dumps(graph.attrs["training"])
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # our bug, but say where
        raise FrontendError(f"export_onnx: the generated model fails onnx.checker: {e}") from e
    return model

