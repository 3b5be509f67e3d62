"""Standard ONNX ANNs: import (ANN activations as Activation nodes) and ANN -> SNN conversion.

Import (:func:`import_ann`): a file with no ai.snnc op that uses Relu, Clip, MaxPool, Softmax,
... is an ANN (:func:`is_ann_model`); it is read with the shared import loop in *ANN mode*, where
``Relu`` and ``Clip(0, max)`` become frontend-only ``Activation`` nodes. ``MaxPool`` /
``GlobalMaxPool`` raise UnsupportedOpError naming the node and the alternatives (retrain with
AveragePool, or ``maxpool='avg'``: the lossy replacement by an AveragePool of the same window).
Other activations (LeakyRelu, Sigmoid, ...) are refused: IF rates are >= 0.

Conversion (algorithms.md §6): an imported ONNX CNN becomes an IF-neuron graph.

Stage: frontend. In: an :class:`AnnModel` (:func:`import_ann`): an IR operator
graph whose activations are frontend-only :class:`Activation` nodes (ReLU / Clip); the compiler
never sees them. Out: an SNN operator graph at stage 'imported' (IF nodes, spikes carry 1).

The ANN float semantics (:func:`run_ann`, float64 PyTorch ops) is what the import is checked
against onnxruntime with (:func:`check_onnxruntime`). Conversion (:func:`convert`):

    each Activation a with threshold theta_a (per layer, or per channel):
        a(x) = clip(x, 0, upper)  ->  IF(v_threshold=theta_a, reset soft, v_init=theta_a/2)
                                      followed by Scale(theta_a)
    theta_a = the Clip upper bound when the ANN has one (QCFS lambda), else the p-th percentile
              of the activation's *positive* values on the calibration images ('p99.9',
              'max' = the largest value), per layer or per channel.

The Scale after each IF is the spike value theta folded into the NEXT layer's weights: the IR
keeps spikes at 1 and ``lower`` composes Scale into the following synapse matrix. With soft
reset and v0 = theta/2, T steps of constant input z give count*theta/T =
theta*clip(floor(z*T/theta + 1/2), 0, T)/T: the QCFS quantized activation with L = T (phi = 1/2).
The final Gemm/Conv (no activation) becomes the non-spiking readout that ``lower`` builds, whose
score is the integrated input: T * (W r + b) for rates r, so its argmax estimates the ANN's.
Residual Adds are linear and stay; ``route`` balances the branch delays on the chip.

Phase II (:func:`calibrate_v_init`, dual-phase conversion without retraining): layer by layer
in topological order, run the float SNN for T steps on the calibration images and set
    v_init += (mean_batch ANN_out - mean_batch theta * count / T) * T         (per neuron)
where ANN_out is the ANN activation clipped at theta. The correction is for one T (the one it
was computed at).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError
from compiler.ir import (
    IF,
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
)
from compiler.ir.linear import broadcast, out_shape
from frontends.onnx import ops as _ops  # noqa: F401  (registers the standard-op importers)
from frontends.onnx.common import (
    ANN_HINT,
    ANN_UNSUPPORTED_HINT,
    MAXPOOL_HINT,
    Activation,
    Ctx,
    _pads2d,
    check_file,
    is_ann_model,
    is_snn_model,
    register_importer,
    run_import,
)
from frontends.onnx.ops import global_window

log = logging.getLogger(__name__)

V_INIT_MODES = ("half", "zero")
DEFAULT_THRESHOLD = "p99.9"
ONNXRUNTIME_TOL = 1e-5


@dataclass
class AnnModel:
    """An imported ANN: the operator graph with Activation nodes and where it came from.

    ``model`` is the ONNX ModelProto (for the onnxruntime check), ``compare_tensor`` the ONNX
    tensor whose values equal the graph's Output (the logits: a trailing Softmax is dropped),
    ``notes`` lists what the import changed (dropped Softmax, lossy MaxPool -> AvgPool).
    """

    graph: Graph
    source: str = "<model>"
    model: object = None
    compare_tensor: str | None = None
    notes: list[str] = field(default_factory=list)
    lossy: bool = False                      # True when an approximation changed the function

    @property
    def activations(self) -> list[str]:
        return self.graph.of_type(Activation)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.node(self.graph.input_name).input_type


# === import =================================================================================
# --- ANN-form importers (standard CNNs; active in ANN mode, see import_ann) -----------------
def _need_ann(ctx: Ctx, node) -> None:
    if not ctx.ann:
        raise ctx.unsupported(node, hint=ANN_HINT.format(op=node.op_type))


@register_importer("Relu")
def _relu(ctx: Ctx, node) -> None:
    _need_ann(ctx, node)
    ctx.add(node, Activation(op="Relu"), [ctx.tensor(node.input[0], node)])


@register_importer("Clip")
def _clip(ctx: Ctx, node) -> None:
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


def _maxpool_common(ctx: Ctx, node, args: dict) -> None:
    ctx.notes.append(f"{node.op_type} '{node.name}' replaced by AveragePool (--maxpool avg, lossy)")
    ctx.lossy = True
    ctx.add(node, AvgPool2d(**args), [ctx.tensor(node.input[0], node)])


@register_importer("MaxPool")
def _maxpool(ctx: Ctx, node) -> None:
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


@register_importer("GlobalMaxPool")
def _global_maxpool(ctx: Ctx, node) -> None:
    _need_ann(ctx, node)
    if ctx.maxpool != "avg":
        raise ctx.unsupported(node, hint=MAXPOOL_HINT)
    _maxpool_common(ctx, node, global_window(ctx, node))


def _softmax(ctx: Ctx, node) -> None:
    if not ctx.trailing(node.output[0]):
        raise ctx.unsupported(node, f"{node.op_type} inside the network",
                              "only a trailing Softmax/LogSoftmax (dropped: the chip reads the "
                              "argmax of the logits) is supported")
    ctx.notes.append(f"trailing {node.op_type} '{node.name}' dropped (argmax unchanged)")
    ctx.compare_tensor = node.input[0]
    ctx.alias(node.output[0], ctx.tensor(node.input[0], node))


register_importer("Softmax")(_softmax)
register_importer("LogSoftmax")(_softmax)


def import_ann(path_or_model, input_shape=None, maxpool: str = "error",
               where: str | None = None) -> AnnModel:
    """Read a standard ONNX CNN (Conv/Gemm/MatMul, Relu/Clip, pools, BN, Add, ...) as an ANN.

    Args:
        path_or_model: a .onnx path or a loaded ModelProto.
        input_shape: one sample's shape (C, H, W) when the file leaves it symbolic.
        maxpool: 'error' (default: MaxPool raises UnsupportedOpError with the alternatives) or
            'avg' (replaced by AveragePool of the same window: lossy, recorded in notes).
    Returns:
        An :class:`AnnModel` (convert it with :func:`convert`).
    Raises:
        FrontendError / UnsupportedOpError (node name, op and a suggestion).
    """
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        model, where = check_file(path), where or path.name
    else:
        model, where = path_or_model, where or "<model>"
    if is_snn_model(model):
        raise FrontendError(f"ONNX file '{where}' is an SNN (ai.snnc neuron ops), not an ANN",
                            "load it with import_onnx / frontends.load_model")
    ctx = run_import(model, where, input_shape, ann=True, maxpool=maxpool)
    try:
        ann_shapes(ctx.graph)
    except Exception as e:  # pragma: no cover - ctx.add already checked every shape
        raise FrontendError(f"ONNX file '{where}': {e}") from e
    return AnnModel(graph=ctx.graph, source=where, model=model,
                    compare_tensor=ctx.compare_tensor, notes=list(ctx.notes), lossy=ctx.lossy)


# === the ANN's float semantics ================================================================
def ann_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Output shape of every node (Activation keeps its input's shape)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in graph.topo_order():
        node = graph.node(name)
        ins = [shapes[i] for i in graph.inputs(name)]
        shapes[name] = ins[0] if isinstance(node, Activation) else out_shape(name, node, ins)
    return shapes


def _param(a, shape, what: str, where: str):
    import torch
    return torch.from_numpy(broadcast(a, shape, what, where).reshape(shape))


def _t(a):
    """A float64 torch tensor copy of an (often read-only) IR array."""
    import torch
    return torch.from_numpy(np.array(a, dtype=np.float64))


def run_ann(graph: Graph, x: np.ndarray, clip: dict[str, np.ndarray] | None = None,
            record: bool = False, batch: int = 512):
    """Float64 forward pass of an ANN operator graph on images ``x`` [N, *input_shape].

    Args:
        clip: optional per-Activation upper bounds (scalar, per channel or per neuron) used
            instead of the node's own (the clipped ANN that a converted SNN approximates).
        record: also return every Activation's output.
    Returns:
        ``out`` [N, *output_shape] (float64), and with ``record`` a dict name -> [N, *shape].
    """
    import torch
    import torch.nn.functional as F

    shapes = ann_shapes(graph)
    clip = clip or {}
    x = np.asarray(x, dtype=np.float64).reshape((len(x),) + shapes[graph.input_name])
    outs, acts = [], {n: [] for n in graph.of_type(Activation)} if record else {}
    order = [(n, graph.node(n), graph.inputs(n)) for n in graph.topo_order()]
    with torch.no_grad():
        for i in range(0, len(x), batch):
            val: dict[str, torch.Tensor] = {}
            for name, node, ins in order:
                a = [val[s] for s in ins]
                if isinstance(node, Input):
                    y = torch.from_numpy(x[i:i + batch])
                elif isinstance(node, Output):
                    outs.append(a[0].numpy())
                    continue
                elif isinstance(node, Activation):
                    y = torch.clamp(a[0], min=0.0)
                    hi = clip.get(name)
                    if hi is not None:
                        y = torch.minimum(y, _param(hi, shapes[name], "clip", name))
                    elif math.isfinite(node.upper):
                        y = torch.clamp(y, max=node.upper)
                    if record:
                        acts[name].append(y.numpy())
                elif isinstance(node, Conv2d):
                    y = F.conv2d(a[0], _t(node.weight), _t(node.bias), node.stride,
                                 node.padding, node.dilation, node.groups)
                elif isinstance(node, (Affine, Linear)):
                    b = _t(node.bias) if isinstance(node, Affine) else None
                    y = F.linear(a[0].reshape(len(a[0]), -1), _t(node.weight), b)
                elif isinstance(node, AvgPool2d):   # SumPool2d too
                    y = F.avg_pool2d(a[0], node.kernel_size, node.stride, node.padding,
                                     count_include_pad=True)
                    if isinstance(node, SumPool2d):
                        y = y * float(node.kernel_size[0] * node.kernel_size[1])
                elif isinstance(node, Flatten):
                    y = a[0].reshape((len(a[0]),) + shapes[name])
                elif isinstance(node, BatchNorm):
                    s = np.asarray(node.gamma, np.float64) / np.sqrt(
                        np.asarray(node.var, np.float64) + node.eps)
                    sh = np.asarray(node.beta, np.float64) - np.asarray(node.mean, np.float64) * s
                    y = a[0] * _param(s, shapes[name], "scale", name) + _param(
                        sh, shapes[name], "shift", name)
                elif isinstance(node, Scale):
                    y = a[0] * _param(node.scale, shapes[name], "scale", name)
                elif isinstance(node, Add):
                    y = a[0]
                    for t in a[1:]:
                        y = y + t
                else:  # pragma: no cover - import_ann only builds the types above
                    raise FrontendError(f"ANN node '{name}': no float semantics for {node.kind}")
                val[name] = y
    out = np.concatenate(outs) if outs else np.zeros((0,))
    if record:
        return out, {k: np.concatenate(v) for k, v in acts.items()}
    return out


def check_onnxruntime(ann: AnnModel, x: np.ndarray, tol: float = ONNXRUNTIME_TOL) -> dict:
    """Run the original ONNX file with onnxruntime and compare with :func:`run_ann`.

    The comparison is on ``ann.compare_tensor`` (the logits before a dropped Softmax). Passes
    when max |ort - ours| <= tol * max(1, max |ort|) (float32 vs float64 arithmetic).
    Returns a dict with ``max_abs_diff``, ``scale``, ``ok``, ``samples`` and ``tensor``.
    Raises FrontendError when onnxruntime is missing or the model does not run.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise FrontendError("onnxruntime is needed to check the imported ANN",
                            "pip install onnxruntime (or pass check=False)") from e
    from onnx import TensorProto, helper

    model = ann.model
    m = type(model)()
    m.CopyFrom(model)
    name = ann.compare_tensor or m.graph.output[0].name
    if name not in [o.name for o in m.graph.output]:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    init = {t.name for t in m.graph.initializer}
    (inp,) = [i for i in m.graph.input if i.name not in init]
    dims = inp.type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    dtype = np.float64 if inp.type.tensor_type.elem_type == TensorProto.DOUBLE else np.float32
    try:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise FrontendError(f"{ann.source}: onnxruntime cannot load the model: {e}") from e
    xs = np.asarray(x, dtype=dtype).reshape((len(x),) + ann.input_shape)
    step = fixed if fixed > 0 else 256
    ref = []
    for i in range(0, len(xs), step):
        xb = xs[i:i + step]
        if fixed > 0 and len(xb) != fixed:
            break
        ref.append(np.asarray(sess.run([name], {inp.name: xb})[0], np.float64))
    ref = np.concatenate(ref).reshape(sum(len(r) for r in ref), -1)
    ours = run_ann(ann.graph, xs[:len(ref)].astype(np.float64)).reshape(len(ref), -1)
    if ref.shape != ours.shape:
        raise FrontendError(f"{ann.source}: onnxruntime gives '{name}' of shape {ref.shape}, "
                            f"the imported graph {ours.shape}")
    diff = float(np.max(np.abs(ref - ours))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    return {"tensor": name, "samples": int(len(ref)), "max_abs_diff": diff, "scale": scale,
            "tol": tol * scale, "ok": bool(diff <= tol * scale)}


# === thresholds =============================================================================
def _percentile_rule(rule: str) -> float | None:
    """'max' -> None, 'pNN.N' -> NN.N; raises FrontendError otherwise."""
    if rule == "max":
        return None
    if rule.startswith("p"):
        try:
            q = float(rule[1:])
        except ValueError:
            q = -1.0
        if 0 < q <= 100:
            return q
    raise FrontendError(f"unknown threshold rule '{rule}'",
                        "use 'max' or a percentile of the calibration activations, e.g. p99.9")


def _robust_max(v: np.ndarray, q: float | None) -> float:
    v = v[v > 0]
    if v.size == 0:
        return 0.0
    return float(v.max() if q is None else np.percentile(v, q))


def activation_thresholds(ann: AnnModel, calib: np.ndarray | None,
                          rule: str = DEFAULT_THRESHOLD, per_channel: bool = False,
                          use_clip: bool = True) -> dict[str, np.ndarray]:
    """theta per Activation: scalar (per layer) or [C] (per channel; per neuron for 1-D).

    Clip upper bounds are used as they are when ``use_clip``; every other activation needs
    calibration images. A layer or channel that never fires on them gets the layer's value
    (or 1.0 for a silent layer, with a warning).
    """
    q = _percentile_rule(rule)
    names = ann.activations
    need = [n for n in names if not (use_clip and math.isfinite(ann.graph.node(n).upper))]
    acts: dict[str, np.ndarray] = {}
    if need:
        if calib is None or len(calib) == 0:
            first = need[0]
            raise FrontendError(
                f"{ann.source}: activation '{first}' ({ann.graph.node(first).op}) has no upper "
                "bound; converting it needs calibration data",
                "pass --calib digits|FILE.npz (or train the ANN with Clip/ReLU6 bounds)")
        _, acts = run_ann(ann.graph, calib, record=True)
    out: dict[str, np.ndarray] = {}
    for n in names:
        node = ann.graph.node(n)
        if n not in need:
            out[n] = np.asarray(float(node.upper))
            continue
        a = acts[n]
        layer = _robust_max(a.reshape(-1), q)
        if layer <= 0:
            log.warning("activation '%s' is never positive on the calibration data; "
                        "threshold set to 1.0", n)
            layer = 1.0
        if not per_channel:
            out[n] = np.asarray(layer)
            continue
        c = a.shape[1]
        per = a.reshape(len(a), c, -1).transpose(1, 0, 2).reshape(c, -1)
        th = np.array([_robust_max(per[k], q) for k in range(c)])
        out[n] = np.where(th > 0, th, layer)
    return out


# === conversion =============================================================================
def to_snn(ann: AnnModel, thresholds: dict[str, np.ndarray], v_init: str = "half",
           v_inits: dict[str, np.ndarray] | None = None) -> Graph:
    """The SNN operator graph for given thresholds (and optional per-neuron v_init arrays)."""
    if v_init not in V_INIT_MODES:
        raise FrontendError(f"unknown v_init mode '{v_init}'", f"use one of {V_INIT_MODES}")
    g = ann.graph
    out = Graph({"dt": 1.0, "converted_from": ann.source})
    rename: dict[str, str] = {}
    used = set(g.topo_order())
    for name in g.topo_order():
        node = g.node(name)
        ins = [rename.get(i, i) for i in g.inputs(name)]
        if not isinstance(node, Activation):
            out.add(name, node, ins)
            continue
        th = np.asarray(thresholds[name], np.float64)
        if np.any(th <= 0) or not np.all(np.isfinite(th)):
            raise FrontendError(f"activation '{name}': threshold must be finite and > 0, got "
                                f"{th.min():g}..{th.max():g}")
        v0 = (v_inits or {}).get(name)
        if v0 is None:
            v0 = th / 2.0 if v_init == "half" else np.zeros_like(th)
        out.add(name, IF(v_threshold=th, v_init=np.asarray(v0, np.float64), reset_mode="soft"),
                ins)
        sname, k = f"{name}_theta", 1
        while sname in used:
            sname, k = f"{name}_theta{k}", k + 1
        used.add(sname)
        out.add(sname, Scale(th), [name])
        rename[name] = sname
    return out


def snn_payloads(x: np.ndarray, timesteps: int, input_scale: float = 255.0) -> np.ndarray:
    """Direct-encoding payloads [T, B, n_in] as float event units (what run_float takes)."""
    from compiler.passes.calibrate import direct_payloads
    return direct_payloads(x, timesteps, input_scale).astype(np.float64)


def lower_snn(snn: Graph) -> Graph:
    """fold-bn + lower: the float layer graph that compiler.reference.run_float runs."""
    from compiler.passes import fold_bn, lower
    return lower(fold_bn(snn))


def run_snn_float(lowered: Graph, x: np.ndarray, timesteps: int, batch: int = 256):
    """Per-layer spike counts (summed over ``batch`` chunks) and the readout scores."""
    from compiler import reference
    counts: dict[str, list[np.ndarray]] = {}
    scores = []
    for i in range(0, len(x), batch):
        r = reference.run_float(lowered, snn_payloads(x[i:i + batch], timesteps,
                                                      lowered.attrs.get("input_scale", 255.0)))
        for k, v in r.counts.items():
            counts.setdefault(k, []).append(v)
        scores.append(r.scores)
    return {k: np.concatenate(v) for k, v in counts.items()}, np.concatenate(scores)


def calibrate_v_init(ann: AnnModel, thresholds: dict[str, np.ndarray], calib: np.ndarray,
                     timesteps: int, v_init: str = "half", iterations: int = 1) -> dict:
    """Phase II per-neuron v_init calibration (see the module docstring). Returns name -> v0."""
    if calib is None or len(calib) == 0:
        raise FrontendError("v_init calibration needs calibration data", "pass --calib")
    shapes = ann_shapes(ann.graph)
    _, target = run_ann(ann.graph, calib, clip=thresholds, record=True)
    v_inits: dict[str, np.ndarray] = {}
    for n in ann.activations:
        th = broadcast(thresholds[n], shapes[n], "threshold", n)
        v_inits[n] = th / 2.0 if v_init == "half" else np.zeros_like(th)
    for _ in range(int(iterations)):
        for n in ann.activations:
            snn = to_snn(ann, thresholds, v_init, v_inits)
            counts, _ = run_snn_float(lower_snn(snn), calib, timesteps)
            th = broadcast(thresholds[n], shapes[n], "threshold", n)
            rate = counts[n].mean(axis=0) * th / timesteps
            ann_mean = target[n].reshape(len(calib), -1).mean(axis=0)
            v_inits[n] = v_inits[n] + (ann_mean - rate) * timesteps
    return v_inits


@dataclass
class Conversion:
    """What :func:`convert` did: the SNN graph plus the numbers behind it."""

    graph: Graph
    thresholds: dict[str, np.ndarray]
    v_inits: dict[str, np.ndarray] | None
    options: dict
    ort_check: dict | None = None


def convert(ann: AnnModel, calib: np.ndarray | None = None, *, threshold: str = DEFAULT_THRESHOLD,
            per_channel: bool = False, v_init: str = "half", calibrate_vinit: bool = False,
            timesteps: int = 8, check: bool = True) -> Conversion:
    """Convert an imported ANN to an SNN operator graph (stage 'imported').

    Args:
        calib: calibration images [N, C, H, W] in [0, 1] (thresholds, onnxruntime check,
            v_init calibration). Optional only when every activation is Clip-bounded.
        threshold: 'p99.9' (percentile of positive activations), 'max', ... (Clip bounds win).
        per_channel: one threshold per output channel instead of per layer.
        v_init: 'half' (theta/2, QCFS / dual-phase) or 'zero'.
        calibrate_vinit: Phase II per-neuron v_init calibration at ``timesteps``.
        check: compare the imported ANN with onnxruntime on the calibration data
            (skipped when the import was lossy, e.g. --maxpool avg).
    Raises:
        FrontendError: no calibration data where needed, onnxruntime disagreement.
    """
    x = None if calib is None else np.asarray(calib)
    ort = None
    if check and x is not None and len(x) and ann.model is not None:
        if ann.lossy:
            log.warning("%s: onnxruntime check skipped: %s", ann.source, "; ".join(ann.notes))
        else:
            ort = check_onnxruntime(ann, x)
            if not ort["ok"]:
                raise FrontendError(
                    f"{ann.source}: the imported ANN disagrees with onnxruntime on "
                    f"'{ort['tensor']}': max |diff| = {ort['max_abs_diff']:.3g} > "
                    f"{ort['tol']:.3g} over {ort['samples']} calibration samples",
                    "an operator is imported with the wrong semantics; please report it with "
                    "the model (run with --debug)")
    th = activation_thresholds(ann, x, threshold, per_channel)
    v0 = calibrate_v_init(ann, th, x, timesteps, v_init) if calibrate_vinit else None
    graph = to_snn(ann, th, v_init, v0)
    opts = dict(threshold=threshold, per_channel=per_channel, v_init=v_init,
                calibrate_vinit=calibrate_vinit, timesteps=timesteps)
    graph.attrs["conversion"] = dict(opts, notes=list(ann.notes))
    return Conversion(graph, th, v0, opts, ort)


# === accuracy report ========================================================================
def report(ann: AnnModel, calib: np.ndarray, x: np.ndarray, y: np.ndarray,
           timesteps=(4, 8, 16, 32, 64), *, bits: int | str = 8, weight_per_channel: bool = False,
           clip: str = "max", spec=None, run_chip=None, **conv) -> dict:
    """ANN accuracy vs converted SNN accuracy (float reference and integer reference) per T.

    ``conv`` are :func:`convert` options. With ``calibrate_vinit`` the v_init correction is
    recomputed for each T. With ``run_chip`` each T is also compiled to a chip image and run
    on the chip: ``run_chip(program, payloads) -> predictions`` (payloads [T, N, n_in] uint8),
    given by the caller (the snnc CLI passes the cycle-level runtime; frontends never import
    runtime). Its predictions equal the integer reference's by construction.
    """
    from compiler import PICORE64, compile_model, reference

    spec = spec or PICORE64
    logits = run_ann(ann.graph, x).reshape(len(x), -1)
    ann_acc = float(np.mean(np.argmax(logits, axis=1) == y))
    rows = []
    base = None
    ort = None
    from compiler.progress import bar
    pb = bar(len(timesteps), "convert-report", unit="T")
    for T in timesteps:
        T = int(T)
        pb.set_postfix_str(f"T={T}")
        if base is None or conv.get("calibrate_vinit"):
            c = convert(ann, calib, timesteps=T, check=ort is None, **conv)
            ort = ort or c.ort_check
            base = c
        snn = base.graph
        lowered = lower_snn(snn)
        _, sf = run_snn_float(lowered, x, T)
        prog = compile_model(snn, spec, bits=bits, per_channel=weight_per_channel, clip=clip,
                             timesteps=T, stop_after=None if run_chip else "fold-thresholds",
                             progress=False)
        p = snn_payloads(x, T).astype(np.int64)
        si = reference.run_int(prog.graph, p, membrane_bits=spec.membrane_bits).scores
        row = {"timesteps": T, "ann_accuracy": ann_acc,
               "snn_float_accuracy": float(np.mean(np.argmax(sf, 1) == y)),
               "snn_int_accuracy": float(np.mean(np.argmax(si, 1) == y)),
               "float_int_agreement": float(np.mean(np.argmax(sf, 1) == np.argmax(si, 1)))}
        if run_chip is not None:
            pred = np.asarray(run_chip(prog, p.astype(np.uint8)))
            row["runtime_accuracy"] = float(np.mean(pred == y))
            row["runtime_bit_exact"] = bool(np.array_equal(pred, np.argmax(si, 1)))
        rows.append(row)
        pb.update(1)
    pb.close()
    return {"model": ann.source, "ann_accuracy": ann_acc, "n": int(len(y)), "bits": bits,
            "options": dict(base.options if base else {}, notes=list(ann.notes)),
            "onnxruntime_check": ort, "rows": rows}


__all__ = ["Activation", "AnnModel", "Conversion", "activation_thresholds", "ann_shapes",
           "calibrate_v_init", "check_onnxruntime", "convert", "import_ann", "is_ann_model",
           "lower_snn", "report", "run_snn_float", "run_ann", "snn_payloads", "to_snn"]
