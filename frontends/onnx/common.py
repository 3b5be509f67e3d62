"""ONNX import machinery shared by the SNN form (snn.py) and the ANN form (ann.py).

File checks (:func:`check_file`: readable, onnx.checker, external data inside the model's folder,
opset), attribute parsing and validation against the op semantics (:class:`Ctx`), the
table-driven import loop (:func:`run_import`) and its registry (:data:`IMPORTERS`,
:func:`register_importer`). The importers themselves live in ops.py (standard ops), snn.py
(ai.snnc ops) and ann.py (ANN activations, pools, softmax).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import Graph, Input, Output
from compiler.ir.linear import out_shape
from compiler.ir.nodes import Node

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



@dataclass(eq=False)
class Activation(Node):
    """ANN activation ``y = clip(x, 0, upper)`` (ReLU: upper = inf). Frontend-only node."""

    upper: float = math.inf
    op: str = "Relu"                         # the ONNX op it came from (Relu or Clip)


# === import machinery ======================================================================
Importer = Callable[["Ctx", object], None]
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


class Ctx:
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
            try:
                a = numpy_helper.to_array(t)
            except Exception as e:
                raise FrontendError(f"{self.source}: initializer '{t.name}' cannot be read "
                                    f"({type(e).__name__}: {e})") from e
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
        """Input ``i`` as a constant: numeric and finite (else a FrontendError naming it)."""
        a = self.const(node.input[i]) if i < len(node.input) else None
        if a is None:
            raise self.unsupported(node, f"{node.op_type} with a computed {what}",
                                   f"{what} must be an initializer (a constant)")
        return self.numeric(node, node.input[i], a, what)

    def numeric(self, node, tname: str, a, what: str) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise FrontendError(f"{self.source}: node '{node.name}' ({node.op_type}): {what} "
                                f"'{tname}' has element type {a.dtype}, expected numbers",
                                "the model file is corrupt or was not written by an exporter")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad = int(np.sum(~np.isfinite(a)))
            raise FrontendError(f"{self.source}: node '{node.name}' ({node.op_type}): {what} "
                                f"'{tname}' holds {bad} NaN/Inf value(s)",
                                "the trained weights diverged or the file is corrupt; retrain "
                                "or re-export")
        return a

    def ints(self, node, a: dict, key: str, default, n: int = 2, lo: int = 1) -> tuple:
        """An integer-list attribute with ``n`` entries, each >= ``lo`` (FrontendError else)."""
        v = a.get(key, default)
        try:
            v = tuple(int(x) for x in v)
        except (TypeError, ValueError):
            v = None
        if v is None or len(v) != n or any(x < lo for x in v):
            raise FrontendError(f"{self.source}: node '{node.name}' ({node.op_type}): attribute "
                                f"{key}={a.get(key, default)!r} is invalid, expected {n} integers "
                                f">= {lo}",
                                "the model file is corrupt or was not written by an exporter")
        return v

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


def check_file(path: Path):
    """Load and check an ONNX file: readable, external data confined, onnx.checker, opsets.

    External data (tensors stored in side files) is read only from files inside the model's
    own folder: a location that is absolute, climbs out with '..' or resolves (symlinks) to
    somewhere else is refused, as is a missing side file.
    """
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise FrontendError(f"model file {path} not found", "check the path")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, OSError, ...
        raise FrontendError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})",
                            "is the file complete? ONNX files come from torch.onnx.export or "
                            "snnc's export_onnx") from e
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise FrontendError(f"{path}: invalid ONNX model: {e}",
                            "re-export the model; onnx.checker must accept it") from e
    _check_opsets(model, path.name)
    return model


def _load_external_data(model, path: Path) -> None:
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_model

    base = path.resolve().parent
    external = [t for t in _all_tensors(model) if t.data_location == TensorProto.EXTERNAL]
    for t in external:
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        target = (base / loc).resolve()
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(base):
            raise FrontendError(f"{path}: tensor '{t.name}' stores its data in '{loc}', outside "
                                f"the model's folder {base}",
                                "snnc reads external data only from files next to the model; "
                                "re-save it with onnx.save(..., save_as_external_data=True) or "
                                "embed the weights")
        if not target.is_file():
            raise FrontendError(f"{path}: tensor '{t.name}': external data file '{loc}' not "
                                "found", "copy the data file next to the model")
    if external:
        try:
            load_external_data_for_model(model, str(base))
        except Exception as e:
            raise FrontendError(f"{path}: cannot read the external data "
                                f"({type(e).__name__}: {e})") from e


def _all_tensors(model):
    yield from model.graph.initializer
    for n in model.graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t


def _check_opsets(model, where: str) -> None:
    from onnx.defs import onnx_opset_version
    newest = onnx_opset_version()
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and not 1 <= op.version <= newest:
            raise FrontendError(f"ONNX file '{where}': default-domain opset {op.version} is "
                                f"not one this snnc knows (1..{newest})",
                                "export with a released opset (torch.onnx.export opset_version=17 "
                                "or 18)")


# the batch dim in folded shape arithmetic (Shape -> Gather -> Concat -> Reshape): a sentinel
# that Reshape reads as "keep the batch dim"
BATCH = -(2 ** 40)
FOLD_OPS = frozenset({"Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice",
                      "Reshape", "Transpose", "Mul", "Div", "Add", "Sub", "Neg", "Sqrt",
                      "ReduceProd", "Range", "Equal", "Where", "Expand", "ConstantOfShape"})


def _fold_constant(ctx: Ctx, node) -> bool:
    """Fold a node computed from constants only (shape arithmetic, Identity on an initializer)
    into a constant; ``Shape`` of a computed tensor gives [BATCH, *its shape]. True if folded."""
    if node.op_type == "Shape" and node.input and node.input[0] in ctx.producer:
        a = ctx.attrs(node)
        full = np.array([BATCH, *ctx.shapes[ctx.producer[node.input[0]]]], np.int64)
        ctx.consts[node.output[0]] = full[a.get("start", 0):a.get("end", len(full))]
        return True
    ins = [t for t in node.input if t]
    if node.op_type not in FOLD_OPS or not ins or any(t not in ctx.consts for t in ins):
        return False
    from onnx import helper
    from onnx.reference import ReferenceEvaluator
    try:
        g = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(
                np.asarray(ctx.consts[t]).dtype), None) for t in dict.fromkeys(ins)],
            [helper.make_tensor_value_info(o, 0, None) for o in node.output if o])
        outs = ReferenceEvaluator(helper.make_model(g)).run(
            None, {t: np.asarray(ctx.consts[t]) for t in dict.fromkeys(ins)})
    except Exception as e:
        raise FrontendError(f"{ctx.source}: node '{node.name}' ({node.op_type}) on constants "
                            f"cannot be evaluated ({type(e).__name__}: {e})") from e
    for o, v in zip([o for o in node.output if o], outs):
        ctx.consts[o] = np.asarray(v)
    return True


def is_snn_model(model) -> bool:
    """True if the ModelProto uses the ai.snnc neuron ops (False: a plain ANN graph)."""
    return any(n.domain == DOMAIN for n in model.graph.node)


def is_ann_model(model) -> bool:
    """True for a standard ANN graph (ReLU-type activations, pooling, softmax; no ai.snnc op)."""
    return not is_snn_model(model) and any(
        n.domain in ("", "ai.onnx") and n.op_type in ANN_MARKERS for n in model.graph.node)


def run_import(model, where: str, input_shape=None, ann: bool = False, maxpool: str = "error"):
    """The table-driven import loop shared by the SNN and the ANN forms; returns the Ctx."""
    from onnx import TensorProto

    for op in model.opset_import:
        if op.domain == DOMAIN and op.version > DOMAIN_VERSION:
            raise FrontendError(f"ONNX file '{where}': domain {DOMAIN} version {op.version} "
                                f"is newer than this snnc reads ({DOMAIN_VERSION})",
                                "upgrade snnc")
    if maxpool not in MAXPOOL_MODES:
        raise FrontendError(f"unknown --maxpool mode '{maxpool}'", f"use one of {MAXPOOL_MODES}")
    ctx = Ctx(model, where, ann=ann, maxpool=maxpool)
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
        if domain == "" and _fold_constant(ctx, n):
            continue
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
    from compiler import training_record
    if training_record.META_KEY in meta:
        ctx.graph.attrs["training"] = training_record.loads(meta[training_record.META_KEY],
                                                            f"ONNX file '{where}'")
    if ctx.leak_hints:
        ctx.graph.attrs["leak_hints"] = dict(ctx.leak_hints)
    if ctx.compare_tensor is None:
        ctx.compare_tensor = outs[0].name
    return ctx



# --- helpers for importers -------------------------------------------------------
def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _pads(ctx: Ctx, node, a: dict, kernel=None, in_hw=None
          ) -> tuple[tuple[int, int], tuple[int, int]]:
    """2-D pads as ((begin_h, begin_w), (end_h, end_w)), each >= 0: explicit, VALID, or
    SAME_UPPER / SAME_LOWER (output = ceil(input / stride); the odd pad at the end / begin)."""
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER") and kernel is not None and in_hw is not None:
        stride = ctx.ints(node, a, "strides", (1, 1))
        dil = ctx.ints(node, a, "dilations", (1, 1))
        begin, end = [], []
        for n, k, s, d in zip(in_hw, kernel, stride, dil):
            total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return tuple(begin), tuple(end)
    if auto == "VALID":
        return (0, 0), (0, 0)
    if auto != "NOTSET":
        raise ctx.unsupported(node, f"{node.op_type}(auto_pad={auto})",
                              "export with explicit pads")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise ctx.unsupported(node, f"{node.op_type} with {len(pads) // 2}-D pads",
                              "only 2-D operators are supported")
    pads = ctx.ints(node, a, "pads", [0, 0, 0, 0], n=4, lo=0)
    return (pads[0], pads[1]), (pads[2], pads[3])


def _pads2d(ctx: Ctx, node, a: dict) -> tuple[int, int]:
    """Symmetric 2-D pads (ph, pw); asymmetric pads raise UnsupportedOpError."""
    (ph, pw), end = _pads(ctx, node, a)
    if (ph, pw) != end:
        raise ctx.unsupported(node, f"{node.op_type} with asymmetric pads {list(a['pads'])}",
                              "use symmetric padding (same before and after)")
    return ph, pw

