"""ONNX <-> graph IR (stage: imported). The SNN form below is this module's format specification.

SNN models are written with ``onnx.helper`` straight from the IR (never torch.onnx.export, which
cannot express a stateful neuron). One IR node becomes one ONNX node with the *same name*, whose
output tensor also carries that name. Default-domain opset ``OPSET`` (17), ``IR_VERSION`` 8.

Graph input: the IR Input's name (``input``), shape [batch, C, H, W] (dynamic batch dim 'batch'),
element type FLOAT (or DOUBLE when some synapse weight is not exactly a float32; neuron
parameters are always DOUBLE). Graph output: an ``Identity`` node named after the IR Output
(``output``), shape [batch, *output_type].

Standard operators (default domain)::

    IR Conv2d      Conv(X, <n>.weight, <n>.bias)  kernel_shape, strides, pads=[ph,pw,ph,pw],
                                                  dilations, group
    IR Affine      Gemm(X, <n>.weight [out,in], <n>.bias)  transB=1 (alpha = beta = 1)
    IR Linear      Gemm(X, <n>.weight)  transB=1
                   (an Affine/Linear on a non-flat input gets a Flatten(axis=1) node named
                   '<n>.flatten' with doc_string 'snnc:implicit-flatten' in front of its Gemm)
    IR AvgPool2d   AveragePool  kernel_shape, strides, pads, count_include_pad=1
    IR Flatten     Flatten(axis=1) for start_dim=0, end_dim=-1; otherwise
                   Reshape(X, <n>.shape) with doc_string 'snnc:flatten start_dim=A end_dim=B'
    IR BatchNorm   BatchNormalization(X, <n>.gamma, <n>.beta, <n>.mean, <n>.var)  epsilon
    IR Add         Add(A, B) for two inputs, Sum(...) for more
    IR Scale       Mul(X, <n>.scale)  (the scale broadcast with a leading batch dim)

Custom operators, domain ``DOMAIN`` = "ai.snnc", version 1 (semantics: compiler/ir/nodes.py)::

    IF(X, v_threshold, v_reset, v_init) -> spikes
    LIF(X, v_threshold, v_reset, v_init, beta) -> spikes
        inputs 2..5: DOUBLE initializers '<n>.v_threshold', '<n>.v_reset', '<n>.v_init',
                     '<n>.beta' of the IR's own shape (scalar, per channel or per neuron);
                     on import a missing/empty input may instead be a float attribute of the
                     same name (defaults: v_reset = v_init = 0; v_threshold and beta required)
        attributes:  reset: string 'soft' | 'hard' | 'none'   (default 'soft')
                     dt: float                                 (default 1.0)
                     neg_floor: float >= 0                     (absent: no floor)
                     leak: string 'shift' | 'mult'             (LIF, optional compiler hint)
    SumPool2d(X)  kernel_shape, strides, pads          (AvgPool2d without the 1/k^2)

Any initializer whose ONNX shape differs from the IR array's shape (Scale, BatchNorm) records the
IR shape in its doc_string as 'snnc.shape=[d0, d1, ...]'. ONNX float attributes are float32; when
one cannot hold the IR's float64 value exactly (epsilon, dt, neg_floor), the node's doc_string
carries the exact values as 'snnc.exact {"name": value, ...}' (JSON), which import prefers.
Model metadata: 'snnc.format' = '1' and 'snnc.dt' (graph attrs['dt']). Round trip graph -> ONNX
-> graph reproduces names, structure, every array and every scalar exactly (arrays come back as
float64).

Import (:func:`import_onnx`) reads that form and is table-driven: :data:`IMPORTERS` maps
(domain, op_type) to a function; :func:`register_importer` is the extension point. Ops known to
be ANN activations raise UnsupportedOpError with a conversion hint; anything else raises
UnsupportedOpError with the node name and op. Besides the form above, import accepts what other
exporters write for the same operators: Constant nodes, Gemm with alpha/beta/transB=0, MatMul by
a constant (-> Linear), a constant Add right after Conv/Gemm/MatMul (folded into the bias),
Reshape that flattens consecutive dims (also with a static batch dim written out),
GlobalAveragePool (-> AvgPool2d over the whole map), Mul by a broadcast constant,
Identity/Dropout (bypassed), a trailing Softmax/LogSoftmax (dropped: the argmax is unchanged),
and Add/Sum with a repeated operand (x + x -> Scale 2, since a graph edge cannot repeat).

Standard ANNs (CNNs from torch.onnx.export & co.) are the second form. A file with no ai.snnc op
that uses Relu, Clip, MaxPool, Softmax, ... is an ANN (:func:`is_ann_model`); :func:`import_ann`
reads it with the same loop in *ANN mode*, where ``Relu`` and ``Clip(0, max)`` become
frontend-only ``Activation`` nodes (frontends/convert_ann.py, which converts them to IF neurons
with calibration data). ``MaxPool``/``GlobalMaxPool`` raise UnsupportedOpError naming the node
and the alternatives (retrain with AveragePool, or ``maxpool='avg'``: the lossy replacement by
an AveragePool of the same window). Other activations (LeakyRelu, Sigmoid, ...) are refused:
IF rates are >= 0. :func:`load_onnx` dispatches on the content.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import (
    IF,
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
from compiler.ir.linear import infer_shapes, out_shape
from compiler.ir.nodes import NEURON_TYPES, RESET_MODES, SYNAPSE_TYPES
from frontends.convert_ann import Activation, AnnModel, ann_shapes

DOMAIN = "ai.snnc"
DOMAIN_VERSION = 1
OPSET = 17
IR_VERSION = 8
FORMAT = "1"
SHAPE_DOC = "snnc.shape="
EXACT_DOC = "snnc.exact "
IMPLICIT_FLATTEN = "snnc:implicit-flatten"
FLATTEN_DOC = re.compile(r"snnc:flatten start_dim=(-?\d+) end_dim=(-?\d+)")
ANN_OPS = frozenset({"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                     "HardSwish", "Elu", "Selu", "Gelu", "Softmax", "LogSoftmax", "MaxPool",
                     "GlobalAveragePool", "GlobalMaxPool"})
ANN_HINT = ("ANN->SNN conversion: use snnc compile MODEL.onnx --calib digits|FILE.npz "
            "(converting ANN activations such as '{op}' needs calibration data)")
# an ONNX file without ai.snnc ops that uses one of these is a standard ANN (CNN) to convert
ANN_MARKERS = ANN_OPS - {"GlobalAveragePool"}
MAXPOOL_MODES = ("error", "avg")
MAXPOOL_HINT = ("spiking neurons have no max: retrain the network with AveragePool "
                "(nn.AvgPool2d), or accept a lossy approximation with --maxpool avg (MaxPool "
                "replaced by AveragePool of the same window; check the accuracy with "
                "snnc convert-report)")
ANN_UNSUPPORTED_HINT = ("ANN->SNN conversion maps ReLU-type activations (Relu, Clip(0, max)) to "
                        "IF neurons, whose rates are >= 0: retrain with ReLU or ReLU6/Clip")


def _onnx():
    import onnx
    return onnx


# === export ==================================================================================
def export_onnx(graph_or_module, path, input_shape=None, dtype=None) -> None:
    """Write an SNN graph (or a native nn.Module) as an ONNX model (atomically).

    Args:
        graph_or_module: an imported/bn_folded-stage Graph, or an nn.Module (then
            ``input_shape`` (C, H, W) is required and :func:`frontends.native.convert.to_graph`
            converts it first).
        path: destination file (written to a temporary file, then renamed).
        input_shape: one sample's shape for modules; ignored for graphs.
        dtype: element type of the standard ops, 'float32' or 'float64'; default: float32
            unless some synapse array is not exactly representable in float32.
    Raises:
        FrontendError: the graph is lowered/quantized or cannot be expressed in ONNX.
    """
    graph = graph_or_module
    if not isinstance(graph, Graph):
        from frontends.native.convert import to_graph
        graph = to_graph(graph_or_module, input_shape)
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
        doc_string="snnc spiking network: neuron ops in domain ai.snnc (see frontends/onnx_io.py)")
    meta = {"snnc.format": FORMAT}
    if "dt" in graph.attrs:
        meta["snnc.dt"] = repr(float(graph.attrs["dt"]))
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # our bug, but say where
        raise FrontendError(f"export_onnx: the generated model fails onnx.checker: {e}") from e
    return model


# === import ==================================================================================
Importer = Callable[["_Ctx", object], None]
IMPORTERS: dict[tuple[str, str], Importer] = {}


def register_importer(op_type: str, domain: str = "") -> Callable[[Importer], Importer]:
    """Decorator: ``fn(ctx, node)`` imports ONNX nodes of ``(domain, op_type)``.

    The function reads inputs with ``ctx.tensor(name)`` (IR node producing a tensor) or
    ``ctx.const(name)`` (initializer/Constant as a numpy array), attributes with
    ``ctx.attrs(node)``, and emits IR nodes with ``ctx.add(node, ir_node, inputs)`` or passes a
    tensor through with ``ctx.alias(node.output[0], ir_name)``.
    """
    def deco(fn: Importer) -> Importer:
        IMPORTERS[(domain, op_type)] = fn
        return fn
    return deco


def _sanitize(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_")
    return s or "node"


class _Ctx:
    """Import state: the graph being built, tensor -> IR node map, initializers, shapes."""

    def __init__(self, model, where: str, ann: bool = False, maxpool: str = "error"):
        from onnx import numpy_helper
        self.where = where
        self.source = f"ONNX file '{where}'"
        self.graph = Graph({"dt": 1.0})
        self.ann = ann                          # ANN mode: Relu/Clip/MaxPool/... importers on
        self.maxpool = maxpool                  # 'error' | 'avg' (lossy approximation)
        self.notes: list[str] = []              # what ANN import changed (dropped, approximated)
        self.lossy = False
        self.fused: set[str] = set()            # outputs of Add nodes folded into a bias
        self.compare_tensor: str | None = None  # the logits tensor when a Softmax is dropped
        self.batch: int | None = None           # static batch dim of the graph input, if any
        self.outputs = {o.name for o in model.graph.output}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.producer: dict[str, str] = {}      # tensor name -> IR node name
        self.used: set[str] = set()
        self.consts: dict[str, np.ndarray] = {}
        self.leak_hints: dict[str, str] = {}
        self.consumers: dict[str, list] = {}
        self.restored: set[str] = set()          # initializers reshaped from 'snnc.shape='
        for t in model.graph.initializer:
            a = numpy_helper.to_array(t)
            self.consts[t.name] = self._restore(a, t.doc_string)
            if t.doc_string.startswith(SHAPE_DOC):
                self.restored.add(t.name)
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    @staticmethod
    def _restore(a: np.ndarray, doc: str) -> np.ndarray:
        if doc.startswith(SHAPE_DOC):
            try:
                shape = tuple(int(d) for d in doc[len(SHAPE_DOC):].strip("[]() ").split(",")
                              if d.strip())
                return a.reshape(shape)
            except ValueError:
                pass
        return a

    # --- helpers for importers ---------------------------------------------------------------
    def name_of(self, node, index: int) -> str:
        base = _sanitize(node.name) if node.name else f"{node.op_type.lower()}_{index}"
        n, i = base, 1
        while n in self.used:
            n, i = f"{base}_{i}", i + 1
        return n

    def unsupported(self, node, op: str | None = None, hint: str | None = None):
        return UnsupportedOpError(op or node.op_type, node.name or node.output[0], self.source,
                                  hint)

    def tensor(self, tname: str, node) -> str:
        if tname in self.producer:
            return self.producer[tname]
        if tname in self.consts:
            raise self.unsupported(node, f"{node.op_type} on a constant '{tname}'",
                                   "this operand must be computed from the input")
        raise FrontendError(f"{self.source}: node '{node.name}' reads tensor '{tname}' that no "
                            "node produces", "the model is not topologically sorted or broken")

    def const(self, tname: str) -> np.ndarray | None:
        return self.consts.get(tname) if tname else None

    def need_const(self, node, i: int, what: str) -> np.ndarray:
        a = self.const(node.input[i]) if i < len(node.input) else None
        if a is None:
            raise self.unsupported(node, f"{node.op_type} with a computed {what}",
                                   f"{what} must be an initializer (a constant)")
        return a

    def attrs(self, node) -> dict:
        """Attribute values (strings decoded; exact floats from an 'snnc.exact' doc_string)."""
        from onnx import helper
        out = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        if node.doc_string.startswith(EXACT_DOC):
            try:
                exact = json.loads(node.doc_string[len(EXACT_DOC):])
            except ValueError as e:
                raise FrontendError(f"{self.source}: node '{node.name}' has a malformed "
                                    f"doc_string {node.doc_string!r}") from e
            out.update({k: float(v) for k, v in exact.items() if k in out})
        return out

    def add(self, node, ir_node, inputs: list[str]) -> str:
        name = self.name_of(node, len(self.used))
        try:
            shape = _shape(name, ir_node, [self.shapes[i] for i in inputs])
        except Exception as e:
            raise FrontendError(f"{self.source}: node '{name}' ({node.op_type}): {e}") from e
        self.used.add(name)
        self.graph.add(name, ir_node, inputs)
        self.shapes[name] = shape
        self.producer[node.output[0]] = name
        return name

    def add_internal(self, base: str, ir_node, inputs: list[str]) -> str:
        """Add a helper IR node that no ONNX tensor names (e.g. a Scale for x + x)."""
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        self.graph.add(name, ir_node, inputs)
        self.shapes[name] = _shape(name, ir_node, [self.shapes[i] for i in inputs])
        return name

    def alias(self, tname: str, ir_name: str) -> None:
        self.producer[tname] = ir_name

    def trailing(self, tname: str) -> bool:
        """True if ``tname`` only reaches graph outputs (possibly through Identity nodes)."""
        cons = self.consumers.get(tname, [])
        if not cons:
            return tname in self.outputs
        return all(c.op_type in ("Identity", "Dropout") and self.trailing(c.output[0])
                   for c in cons)

    def fuse_bias(self, node, out_shape_: tuple[int, ...]) -> tuple[np.ndarray, object] | None:
        """A constant Add right after ``node`` (the only consumer of its output), as a bias.

        Returns (bias per output channel / feature, the Add node) or None when there is no such
        Add or its constant does not broadcast per channel.
        """
        out = node.output[0]
        cons = self.consumers.get(out, [])
        if out in self.outputs or len(cons) != 1 or cons[0].op_type != "Add":
            return None
        add = cons[0]
        other = [t for t in add.input if t != out]
        if len(other) != 1 or len(add.input) != 2 or other[0] not in self.consts:
            return None
        c = _f64(self.consts[other[0]])
        n = out_shape_[0]
        if c.size == 1:
            return np.full(n, float(c.reshape(-1)[0])), add
        if c.size != n:
            return None
        full = (1, *out_shape_)
        if c.ndim > len(full) or any(d not in (1, full[len(full) - c.ndim + i]) for i, d
                                     in enumerate(c.shape)):
            return None
        # the n values must sit on the channel axis (axis 1 of the batched tensor)
        axis = len(full) - c.ndim + int(np.argmax(c.shape))
        if axis != 1:
            return None
        return c.reshape(-1), add

    def fused_into(self, add, ir_name: str) -> None:
        self.fused.add(add.output[0])
        self.alias(add.output[0], ir_name)


def _shape(name: str, ir_node, in_shapes):
    """out_shape, plus the shape-preserving ANN Activation (frontend-only node)."""
    if isinstance(ir_node, Activation):
        if len(in_shapes) != 1:
            raise FrontendError(f"node '{name}': an activation takes one input")
        return in_shapes[0]
    return out_shape(name, ir_node, in_shapes)


def _check_file(path: Path):
    onnx = _onnx()
    if not path.is_file():
        raise FrontendError(f"model file {path} not found", "check the path")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, OSError, ...
        raise FrontendError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})",
                            "is the file complete? ONNX files come from torch.onnx.export or "
                            "snnc's export_onnx") from e
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise FrontendError(f"{path}: invalid ONNX model: {e}",
                            "re-export the model; onnx.checker must accept it") from e
    return model


def import_onnx(path, input_shape=None) -> Graph:
    """Read an ONNX file into an imported-stage graph.

    Args:
        path: the .onnx file.
        input_shape: one sample's shape (C, H, W), needed only when the file leaves
            non-batch input dims symbolic.
    Returns:
        The Graph (verified at stage 'imported'), ``attrs['dt']`` from the metadata (1.0).
    Raises:
        FrontendError: missing, corrupt or invalid file (names the file).
        UnsupportedOpError: an op without an importer (names node and op, with a hint).
    """
    path = Path(path)
    return from_onnx_model(_check_file(path), where=path.name, input_shape=input_shape)


def is_snn_model(model) -> bool:
    """True if the ModelProto uses the ai.snnc neuron ops (False: a plain ANN graph)."""
    return any(n.domain == DOMAIN for n in model.graph.node)


def from_onnx_model(model, where: str = "<model>", input_shape=None) -> Graph:
    """Import a loaded ONNX ModelProto in the SNN form (see :func:`import_onnx`)."""
    ctx = _import(model, where, input_shape)
    verify(ctx.graph, "imported")
    return ctx.graph


def _import(model, where: str, input_shape=None, ann: bool = False, maxpool: str = "error"):
    """The table-driven import loop shared by the SNN and the ANN forms; returns the _Ctx."""
    from onnx import TensorProto

    for op in model.opset_import:
        if op.domain == DOMAIN and op.version > DOMAIN_VERSION:
            raise FrontendError(f"ONNX file '{where}': domain {DOMAIN} version {op.version} "
                                f"is newer than this snnc reads ({DOMAIN_VERSION})",
                                "upgrade snnc")
    if maxpool not in MAXPOOL_MODES:
        raise FrontendError(f"unknown --maxpool mode '{maxpool}'", f"use one of {MAXPOOL_MODES}")
    ctx = _Ctx(model, where, ann=ann, maxpool=maxpool)
    for n in model.graph.node:   # Constant nodes are initializers in disguise
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            from onnx import numpy_helper
            v = n.attribute[0] if n.attribute else None
            if v is None or v.name != "value":
                raise ctx.unsupported(n, "Constant (non-tensor)")
            ctx.consts[n.output[0]] = numpy_helper.to_array(v.t)
    inputs = [i for i in model.graph.input if i.name not in ctx.consts]
    if len(inputs) != 1:
        raise FrontendError(f"ONNX file '{where}': {len(inputs)} graph inputs "
                            f"({[i.name for i in inputs]}), expected exactly one",
                            "models take one image tensor [batch, C, H, W]")
    vi = inputs[0]
    tt = vi.type.tensor_type
    if tt.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise FrontendError(f"ONNX file '{where}': input '{vi.name}' has element type "
                            f"{TensorProto.DataType.Name(tt.elem_type)}, expected a float type")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if dims and len(dims) - 1 != len(shape):
            raise FrontendError(f"ONNX file '{where}': input '{vi.name}' has rank {len(dims)} "
                                f"(with batch), input_shape {shape} has rank {len(shape)}")
    else:
        if len(dims) < 2 or any(d is None or d <= 0 for d in dims[1:]):
            raise FrontendError(f"ONNX file '{where}': input '{vi.name}' has shape {dims}; "
                                "need [batch, ...] with static non-batch dims",
                                "pass input_shape=(C, H, W)")
        shape = tuple(int(d) for d in dims[1:])
    if dims and dims[0] is not None and dims[0] > 0:
        ctx.batch = int(dims[0])
    iname = _sanitize(vi.name)
    ctx.graph.add(iname, Input(shape))
    ctx.used.add(iname)
    ctx.shapes[iname] = shape
    ctx.alias(vi.name, iname)

    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            continue
        if n.output and n.output[0] in ctx.fused:   # an Add already folded into a bias
            continue
        domain = "" if n.domain in ("", "ai.onnx") else n.domain
        fn = IMPORTERS.get((domain, n.op_type))
        if fn is None:
            if domain == "" and n.op_type in ANN_OPS:
                raise ctx.unsupported(n, hint=(ANN_UNSUPPORTED_HINT if ctx.ann
                                               else ANN_HINT.format(op=n.op_type)))
            ops = ", ".join(sorted(op if not d else f"{d}::{op}" for d, op in IMPORTERS))
            raise ctx.unsupported(n, n.op_type if not domain else f"{domain}::{n.op_type}",
                                  f"supported ONNX ops: {ops}")
        fn(ctx, n)

    outs = list(model.graph.output)
    if len(outs) != 1:
        raise FrontendError(f"ONNX file '{where}': {len(outs)} graph outputs, expected one",
                            "keep only the class scores as the output")
    src = ctx.producer.get(outs[0].name)
    if src is None or src == iname:
        raise FrontendError(f"ONNX file '{where}': output '{outs[0].name}' is not computed by "
                            "any supported node")
    oname = _sanitize(outs[0].name)
    k = 1
    while oname in ctx.used:
        oname, k = f"{_sanitize(outs[0].name)}_{k}", k + 1
    ctx.graph.add(oname, Output(ctx.shapes[src]), [src])
    meta = {p.key: p.value for p in model.metadata_props}
    if "snnc.dt" in meta:
        try:
            ctx.graph.attrs["dt"] = float(meta["snnc.dt"])
        except ValueError as e:
            raise FrontendError(f"ONNX file '{where}': metadata snnc.dt = "
                                f"{meta['snnc.dt']!r} is not a number") from e
    if ctx.leak_hints:
        ctx.graph.attrs["leak_hints"] = dict(ctx.leak_hints)
    if ctx.compare_tensor is None:
        ctx.compare_tensor = outs[0].name
    return ctx


# --- SNN-form importers (standard ops) -------------------------------------------------------
def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _pads2d(ctx: _Ctx, node, a: dict) -> tuple[int, int]:
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.unsupported(node, f"{node.op_type}(auto_pad={a['auto_pad']})",
                              "export with explicit pads")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise ctx.unsupported(node, f"{node.op_type} with {len(pads) // 2}-D pads",
                              "only 2-D operators are supported")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise ctx.unsupported(node, f"{node.op_type} with asymmetric pads {pads}",
                              "use symmetric padding (same before and after)")
    return pads[0], pads[1]


@register_importer("Conv")
def _conv(ctx: _Ctx, node) -> None:
    a = ctx.attrs(node)
    x = ctx.tensor(node.input[0], node)
    w = _f64(ctx.need_const(node, 1, "weight"))
    if w.ndim != 4:
        raise ctx.unsupported(node, f"Conv{w.ndim - 2}d", "only 2-D convolutions are supported")
    b = ctx.const(node.input[2]) if len(node.input) > 2 else None
    b = np.zeros(w.shape[0]) if b is None else _f64(b).reshape(-1)
    kw = dict(stride=tuple(a.get("strides", (1, 1))), padding=_pads2d(ctx, node, a),
              dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)))
    conv = Conv2d(w, b, **kw)
    _add_with_bias(ctx, node, conv, x, lambda fb: Conv2d(w, b + fb, **kw))


def _add_with_bias(ctx: _Ctx, node, ir_node, x: str, with_bias) -> str:
    """Add ``ir_node``; a constant Add right after it is folded in (``with_bias(extra)``)."""
    try:
        shape = out_shape(node.name, ir_node, [ctx.shapes[x]])
    except Exception:
        shape = None
    fused = ctx.fuse_bias(node, shape) if shape else None
    if fused is None:
        return ctx.add(node, ir_node, [x])
    extra, add = fused
    name = ctx.add(node, with_bias(extra), [x])
    ctx.fused_into(add, name)
    return name


@register_importer("Gemm")
def _gemm(ctx: _Ctx, node) -> None:
    a = ctx.attrs(node)
    if a.get("transA", 0):
        raise ctx.unsupported(node, "Gemm(transA=1)", "the data input must not be transposed")
    x = ctx.tensor(node.input[0], node)
    w = _f64(ctx.need_const(node, 1, "weight"))
    w = w if a.get("transB", 0) else w.T
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if alpha != 1.0:
        w = alpha * w
    c = ctx.const(node.input[2]) if len(node.input) > 2 else None
    if len(node.input) > 2 and node.input[2] and c is None:
        raise ctx.unsupported(node, "Gemm with a computed C", "the bias must be an initializer")
    if c is None:
        _add_with_bias(ctx, node, Linear(w), x, lambda fb: Affine(w, fb))
    else:
        b = np.broadcast_to(_f64(c).reshape(-1) if np.size(c) > 1 else _f64(c).reshape(()),
                            (w.shape[0],))
        b = beta * b if beta != 1.0 else np.array(b)
        _add_with_bias(ctx, node, Affine(w, b), x, lambda fb: Affine(w, b + fb))


@register_importer("MatMul")
def _matmul(ctx: _Ctx, node) -> None:
    x = ctx.tensor(node.input[0], node)
    w = _f64(ctx.need_const(node, 1, "weight matrix"))
    if w.ndim != 2:
        raise ctx.unsupported(node, f"MatMul with a {w.ndim}-D constant")
    _add_with_bias(ctx, node, Linear(w.T), x, lambda fb: Affine(w.T, fb))


def _pool_args(ctx: _Ctx, node) -> dict:
    a = ctx.attrs(node)
    if a.get("ceil_mode", 0):
        raise ctx.unsupported(node, f"{node.op_type}(ceil_mode=1)", "use floor mode")
    k = list(a.get("kernel_shape", ()))
    if len(k) != 2:
        raise ctx.unsupported(node, f"{node.op_type} with kernel {k}", "only 2-D pooling")
    if any(d != 1 for d in a.get("dilations", (1, 1))):
        raise ctx.unsupported(node, f"{node.op_type} with dilations", "remove the dilation")
    pad = _pads2d(ctx, node, a)
    if node.op_type == "AveragePool" and any(pad) and not a.get("count_include_pad", 0):
        raise ctx.unsupported(node, "AveragePool(count_include_pad=0) with padding",
                              "the chip divides by k*k: use count_include_pad=1")
    return dict(kernel_size=tuple(k), stride=tuple(a.get("strides", (1, 1))), padding=pad)


@register_importer("AveragePool")
def _avgpool(ctx: _Ctx, node) -> None:
    ctx.add(node, AvgPool2d(**_pool_args(ctx, node)), [ctx.tensor(node.input[0], node)])


@register_importer("SumPool2d", DOMAIN)
def _sumpool(ctx: _Ctx, node) -> None:
    ctx.add(node, SumPool2d(**_pool_args(ctx, node)), [ctx.tensor(node.input[0], node)])


@register_importer("Flatten")
def _flatten(ctx: _Ctx, node) -> None:
    x = ctx.tensor(node.input[0], node)
    axis = int(ctx.attrs(node).get("axis", 1))
    rank = len(ctx.shapes[x]) + 1
    if axis % rank != 1:
        raise ctx.unsupported(node, f"Flatten(axis={axis})",
                              "only Flatten(axis=1) (keep the batch dim) is supported")
    if node.doc_string == IMPLICIT_FLATTEN and all(
            c.op_type == "Gemm" and c.input[0] == node.output[0]
            for c in ctx.consumers.get(node.output[0], [])):
        ctx.alias(node.output[0], x)  # written in front of a Gemm on a non-flat input
        return
    ctx.add(node, Flatten(), [x])


@register_importer("Reshape")
def _reshape(ctx: _Ctx, node) -> None:
    x = ctx.tensor(node.input[0], node)
    m = FLATTEN_DOC.fullmatch(node.doc_string or "")
    if m:
        ctx.add(node, Flatten(int(m.group(1)), int(m.group(2))), [x])
        return
    s = ctx.shapes[x]
    tgt = [int(d) for d in ctx.need_const(node, 1, "shape").reshape(-1)]
    if tgt and ctx.batch is not None and tgt[0] == ctx.batch:
        tgt[0] = 0          # exporters with a static batch dim write it out (e.g. [1, 64])
    if not tgt or tgt[0] not in (0, -1):
        raise ctx.unsupported(node, f"Reshape to {tgt}", "the batch dim must be kept (0 or -1)")
    full = [None, *s]
    dims = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(tgt)][1:]
    if tgt[0] == -1 and -1 in dims:
        raise ctx.unsupported(node, f"Reshape to {tgt}", "give the non-batch dims explicitly")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(s)) // max(known, 1)
    dims = tuple(int(d) for d in dims)
    if dims == s:
        ctx.alias(node.output[0], x)
        return
    for a in range(len(s)):
        for b in range(a, len(s)):
            if tuple(s[:a]) + (int(np.prod(s[a:b + 1])),) + tuple(s[b + 1:]) == dims:
                ctx.add(node, Flatten(a, -1 if b == len(s) - 1 else b), [x])
                return
    raise ctx.unsupported(node, f"Reshape {list(s)} -> {list(dims)}",
                          "only reshapes that flatten consecutive dims are supported")


@register_importer("BatchNormalization")
def _batchnorm(ctx: _Ctx, node) -> None:
    a = ctx.attrs(node)
    if a.get("training_mode", 0):
        raise ctx.unsupported(node, "BatchNormalization(training_mode=1)",
                              "export the model in eval mode")
    x = ctx.tensor(node.input[0], node)
    arrs = [_f64(ctx.need_const(node, i, w)) for i, w in
            ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var"))]
    ctx.add(node, BatchNorm(*arrs, eps=float(a.get("epsilon", 1e-5))), [x])


def _add_like(ctx: _Ctx, node) -> None:
    ins = [t for t in node.input if t]
    for t in ins:
        if t in ctx.consts:
            raise ctx.unsupported(node, f"{node.op_type} with a constant",
                                  "constant offsets (biases) belong in the preceding "
                                  "Conv/Gemm; only tensor + tensor residual adds are supported")
    srcs = [ctx.tensor(t, node) for t in ins]
    uniq = list(dict.fromkeys(srcs))
    if len(uniq) == 1:   # x + x (+ ...): a graph edge cannot repeat, so scale instead
        if len(srcs) == 1:
            ctx.alias(node.output[0], uniq[0])
        else:
            ctx.add(node, Scale(np.asarray(float(len(srcs)))), uniq)
        return
    terms = []
    for src in uniq:
        k = srcs.count(src)
        terms.append(src if k == 1 else ctx.add_internal(f"{src}_x{k}",
                                                         Scale(np.asarray(float(k))), [src]))
    ctx.add(node, Add(), terms)


register_importer("Add")(_add_like)
register_importer("Sum")(_add_like)


@register_importer("Mul")
def _mul(ctx: _Ctx, node) -> None:
    consts = [t for t in node.input if t in ctx.consts]
    if len(consts) != 1 or len(node.input) != 2:
        raise ctx.unsupported(node, "Mul of two computed tensors",
                              "only multiplication by a constant (Scale) is supported")
    (t,) = [t for t in node.input if t not in ctx.consts]
    x = ctx.tensor(t, node)
    s = _f64(ctx.consts[consts[0]])
    shp = ctx.shapes[x]
    if consts[0] not in ctx.restored:  # a foreign file: undo the ONNX broadcasting layout
        if s.ndim == len(shp) + 1 and s.shape[0] == 1:
            s = s[0]
        if s.size == 1:
            s = s.reshape(())
        elif s.size == int(np.prod(shp)):
            s = s.reshape(shp)
        elif len(shp) >= 2 and s.size == shp[0]:
            s = s.reshape(shp[0])
        else:
            raise ctx.unsupported(node, f"Mul by a constant of shape {s.shape}",
                                  f"the constant must be a scalar, per-channel or of shape {shp}")
    ctx.add(node, Scale(s), [x])


def _passthrough(ctx: _Ctx, node) -> None:
    ctx.alias(node.output[0], ctx.tensor(node.input[0], node))


register_importer("Identity")(_passthrough)
register_importer("Dropout")(_passthrough)


# --- SNN-form importers (custom domain) ------------------------------------------------------
def _neuron(ctx: _Ctx, node) -> None:
    a = ctx.attrs(node)
    x = ctx.tensor(node.input[0], node)
    names = ["v_threshold", "v_reset", "v_init"] + (["beta"] if node.op_type == "LIF" else [])
    vals = {}
    for i, p in enumerate(names, start=1):
        tname = node.input[i] if i < len(node.input) else ""
        if tname:
            c = ctx.const(tname)
            if c is None:
                raise ctx.unsupported(node, f"{node.op_type} with a computed {p}",
                                      f"{p} must be an initializer")
            vals[p] = _f64(c)
        elif p in a:
            vals[p] = _f64(a[p])
        elif p in ("v_threshold", "beta"):
            raise FrontendError(f"{ctx.source}: {node.op_type} node '{node.name}' has no {p} "
                                f"(input {i} or attribute '{p}')",
                                "see the ai.snnc op convention in frontends/onnx_io.py")
    reset = a.get("reset", "soft")
    if reset not in RESET_MODES:
        raise FrontendError(f"{ctx.source}: {node.op_type} node '{node.name}' has reset "
                            f"'{reset}', expected one of {RESET_MODES}")
    floor = a.get("neg_floor")
    kw = dict(reset_mode=reset, neg_floor=None if floor is None else float(floor),
              dt=float(a.get("dt", 1.0)), **vals)
    name = ctx.add(node, LIF(**kw) if node.op_type == "LIF" else IF(**kw), [x])
    if node.op_type == "LIF" and "leak" in a:
        ctx.leak_hints[name] = str(a["leak"])


register_importer("IF", DOMAIN)(_neuron)
register_importer("LIF", DOMAIN)(_neuron)


# --- ANN-form importers (standard CNNs; active in ANN mode, see import_ann) -----------------
def _need_ann(ctx: _Ctx, node) -> None:
    if not ctx.ann:
        raise ctx.unsupported(node, hint=ANN_HINT.format(op=node.op_type))


@register_importer("Relu")
def _relu(ctx: _Ctx, node) -> None:
    _need_ann(ctx, node)
    ctx.add(node, Activation(op="Relu"), [ctx.tensor(node.input[0], node)])


@register_importer("Clip")
def _clip(ctx: _Ctx, node) -> None:
    _need_ann(ctx, node)
    a = ctx.attrs(node)
    lo, hi = a.get("min"), a.get("max")                 # opset < 11: attributes
    for i, key in ((1, "min"), (2, "max")):             # opset >= 11: optional inputs
        if len(node.input) > i and node.input[i]:
            c = ctx.const(node.input[i])
            if c is None:
                raise ctx.unsupported(node, f"Clip with a computed {key}",
                                      f"{key} must be a constant")
            if key == "min":
                lo = float(np.asarray(c).reshape(-1)[0])
            else:
                hi = float(np.asarray(c).reshape(-1)[0])
    if lo is None or float(lo) != 0.0:
        raise ctx.unsupported(node, f"Clip(min={lo})", "only Clip(0, max) (ReLU, ReLU6) maps to "
                              "IF neurons; " + ANN_UNSUPPORTED_HINT)
    hi = math.inf if hi is None else float(hi)
    if not hi > 0:
        raise ctx.unsupported(node, f"Clip(0, {hi})", "the upper bound must be > 0")
    ctx.add(node, Activation(upper=hi, op="Clip"), [ctx.tensor(node.input[0], node)])


def _maxpool_common(ctx: _Ctx, node, args: dict) -> None:
    ctx.notes.append(f"{node.op_type} '{node.name}' replaced by AveragePool (--maxpool avg, lossy)")
    ctx.lossy = True
    ctx.add(node, AvgPool2d(**args), [ctx.tensor(node.input[0], node)])


@register_importer("MaxPool")
def _maxpool(ctx: _Ctx, node) -> None:
    _need_ann(ctx, node)
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported(node, "MaxPool with indices", MAXPOOL_HINT)
    a = ctx.attrs(node)
    if ctx.maxpool != "avg":
        raise ctx.unsupported(node, hint=MAXPOOL_HINT)
    if a.get("ceil_mode", 0):
        raise ctx.unsupported(node, "MaxPool(ceil_mode=1)", "use floor mode")
    k = list(a.get("kernel_shape", ()))
    if len(k) != 2 or any(d != 1 for d in a.get("dilations", (1, 1))):
        raise ctx.unsupported(node, f"MaxPool with kernel {k}", "only 2-D, undilated pooling")
    _maxpool_common(ctx, node, dict(kernel_size=tuple(k), stride=tuple(a.get("strides", (1, 1))),
                                    padding=_pads2d(ctx, node, a)))


def _global_window(ctx: _Ctx, node) -> dict:
    s = ctx.shapes[ctx.tensor(node.input[0], node)]
    if len(s) != 3:
        raise ctx.unsupported(node, f"{node.op_type} on a {len(s)}-D input",
                              "only (C, H, W) feature maps")
    return dict(kernel_size=s[1:], stride=s[1:])


@register_importer("GlobalAveragePool")
def _global_avgpool(ctx: _Ctx, node) -> None:
    ctx.add(node, AvgPool2d(**_global_window(ctx, node)), [ctx.tensor(node.input[0], node)])


@register_importer("GlobalMaxPool")
def _global_maxpool(ctx: _Ctx, node) -> None:
    _need_ann(ctx, node)
    if ctx.maxpool != "avg":
        raise ctx.unsupported(node, hint=MAXPOOL_HINT)
    _maxpool_common(ctx, node, _global_window(ctx, node))


def _softmax(ctx: _Ctx, node) -> None:
    if not ctx.trailing(node.output[0]):
        raise ctx.unsupported(node, f"{node.op_type} inside the network",
                              "only a trailing Softmax/LogSoftmax (dropped: the chip reads the "
                              "argmax of the logits) is supported")
    ctx.notes.append(f"trailing {node.op_type} '{node.name}' dropped (argmax unchanged)")
    ctx.compare_tensor = node.input[0]
    ctx.alias(node.output[0], ctx.tensor(node.input[0], node))


register_importer("Softmax")(_softmax)
register_importer("LogSoftmax")(_softmax)


def is_ann_model(model) -> bool:
    """True for a standard ANN graph (ReLU-type activations, pooling, softmax; no ai.snnc op)."""
    return not is_snn_model(model) and any(
        n.domain in ("", "ai.onnx") and n.op_type in ANN_MARKERS for n in model.graph.node)


def import_ann(path_or_model, input_shape=None, maxpool: str = "error",
               where: str | None = None) -> AnnModel:
    """Read a standard ONNX CNN (Conv/Gemm/MatMul, Relu/Clip, pools, BN, Add, ...) as an ANN.

    Args:
        path_or_model: a .onnx path or a loaded ModelProto.
        input_shape: one sample's shape (C, H, W) when the file leaves it symbolic.
        maxpool: 'error' (default: MaxPool raises UnsupportedOpError with the alternatives) or
            'avg' (replaced by AveragePool of the same window: lossy, recorded in notes).
    Returns:
        An :class:`frontends.convert_ann.AnnModel` (convert it with
        :func:`frontends.convert_ann.convert`).
    Raises:
        FrontendError / UnsupportedOpError (node name, op and a suggestion).
    """
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        model, where = _check_file(path), where or path.name
    else:
        model, where = path_or_model, where or "<model>"
    if is_snn_model(model):
        raise FrontendError(f"ONNX file '{where}' is an SNN (ai.snnc neuron ops), not an ANN",
                            "load it with import_onnx / frontends.load_model")
    ctx = _import(model, where, input_shape, ann=True, maxpool=maxpool)
    try:
        ann_shapes(ctx.graph)
    except Exception as e:  # pragma: no cover - ctx.add already checked every shape
        raise FrontendError(f"ONNX file '{where}': {e}") from e
    return AnnModel(graph=ctx.graph, source=where, model=model,
                    compare_tensor=ctx.compare_tensor, notes=list(ctx.notes), lossy=ctx.lossy)


def load_onnx(path, input_shape=None, calib=None, maxpool: str = "error", **conversion):
    """Import any .onnx file, dispatching on its content.

    An SNN in the ai.snnc form is imported as is (:func:`import_onnx`); a standard ANN is read
    with :func:`import_ann` and converted with :func:`frontends.convert_ann.convert`
    (``calib`` images and the ``conversion`` options: threshold, per_channel, v_init,
    calibrate_vinit, timesteps, check).
    Returns the SNN operator Graph (stage 'imported').
    """
    from frontends.convert_ann import convert
    path = Path(path)
    model = _check_file(path)
    if not is_ann_model(model):
        return from_onnx_model(model, where=path.name, input_shape=input_shape)
    ann = import_ann(model, input_shape=input_shape, maxpool=maxpool, where=path.name)
    return convert(ann, calib, **conversion).graph
