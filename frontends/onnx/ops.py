"""Importers of the standard ONNX operators, shared by the SNN and the ANN forms.

Each function is registered for one (domain, op_type) in common.IMPORTERS; see
frontends/onnx/snn.py for the accepted forms of each op.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import FrontendError
from compiler.ir import (
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Linear,
    Scale,
    SumPool2d,
)
from compiler.ir.linear import out_shape
from frontends.onnx.common import (
    BATCH,
    DOMAIN,
    FLATTEN_DOC,
    IMPLICIT_FLATTEN,
    Ctx,
    _f64,
    _pads,
    register_importer,
)


@register_importer("Conv")
def _conv(ctx: Ctx, node) -> None:
    a = ctx.attrs(node)
    x = ctx.tensor(node.input[0], node)
    w = _f64(ctx.need_const(node, 1, "weight"))
    if w.ndim != 4:
        raise ctx.unsupported(node, f"Conv{w.ndim - 2}d", "only 2-D convolutions are supported")
    where = f"{ctx.source}: Conv node '{node.name}'"
    if "kernel_shape" in a and tuple(ctx.ints(node, a, "kernel_shape", ())) != w.shape[2:]:
        raise FrontendError(f"{where}: kernel_shape={list(a['kernel_shape'])} disagrees with its "
                            f"weight '{node.input[1]}' of shape {list(w.shape)}",
                            "the model file is corrupt or was not written by an exporter")
    stride = ctx.ints(node, a, "strides", (1, 1))
    dilation = ctx.ints(node, a, "dilations", (1, 1))
    groups = int(a.get("group", 1))
    cin = ctx.shapes[x][0] if ctx.shapes[x] else 0
    if groups < 1 or w.shape[0] % groups or w.shape[1] * groups != cin:
        raise FrontendError(f"{where}: group={groups} with weight '{node.input[1]}' of shape "
                            f"{list(w.shape)} does not fit {cin} input channels",
                            "weight [out, in/group, kh, kw] with out and in divisible by group")
    b = ctx.need_const(node, 2, "bias") if len(node.input) > 2 and node.input[2] else None
    b = np.zeros(w.shape[0]) if b is None else _f64(b).reshape(-1)
    if b.shape != (w.shape[0],):
        raise FrontendError(f"{where}: bias '{node.input[2]}' has {b.size} values, the weight "
                            f"has {w.shape[0]} output channels")
    pb, pe = _pads(ctx, node, a, w.shape[2:], ctx.shapes[x][1:])
    if pb != pe and any(d != 1 for d in dilation):
        raise ctx.unsupported(node, "Conv with asymmetric pads and dilation",
                              "use symmetric padding")
    if pb != pe:   # asymmetric: symmetric padding max(pb, pe) and zero taps on the short side
        p = tuple(max(u, v) for u, v in zip(pb, pe))
        k = w.shape[2:]
        grown = np.zeros(w.shape[:2] + tuple(
            (k[i] - 1) * dilation[i] + 1 + 2 * p[i] - pb[i] - pe[i] for i in range(2)))
        off = tuple(p[i] - pb[i] for i in range(2))
        grown[:, :, off[0]:off[0] + (k[0] - 1) * dilation[0] + 1:dilation[0],
              off[1]:off[1] + (k[1] - 1) * dilation[1] + 1:dilation[1]] = w
        ctx.notes.append(f"Conv '{node.name}': asymmetric pads {list(pb) + list(pe)} as a "
                         f"zero-padded {grown.shape[2]}x{grown.shape[3]} kernel (exact)")
        w, pb = grown, p
    kw = dict(stride=stride, padding=pb, dilation=dilation, groups=groups)
    conv = Conv2d(w, b, **kw)
    _add_with_bias(ctx, node, conv, x, lambda fb: Conv2d(w, b + fb, **kw))


def _add_with_bias(ctx: Ctx, node, ir_node, x: str, with_bias) -> str:
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
def _gemm(ctx: Ctx, node) -> None:
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
def _matmul(ctx: Ctx, node) -> None:
    x = ctx.tensor(node.input[0], node)
    w = _f64(ctx.need_const(node, 1, "weight matrix"))
    if w.ndim != 2:
        raise ctx.unsupported(node, f"MatMul with a {w.ndim}-D constant")
    _add_with_bias(ctx, node, Linear(w.T), x, lambda fb: Affine(w.T, fb))


def _pool_args(ctx: Ctx, node, in_hw=None) -> dict:
    """Window, stride, pads (begin, end) and modes of AveragePool/MaxPool/SumPool2d, checked."""
    a = ctx.attrs(node)
    k = a.get("kernel_shape", ())
    if len(k) != 2:
        raise ctx.unsupported(node, f"{node.op_type} with kernel {list(k)}", "only 2-D pooling")
    k = ctx.ints(node, a, "kernel_shape", ())
    if any(d != 1 for d in ctx.ints(node, a, "dilations", (1, 1))):
        raise ctx.unsupported(node, f"{node.op_type} with dilations", "remove the dilation")
    stride = ctx.ints(node, a, "strides", (1, 1))
    pb, pe = _pads(ctx, node, a, k, in_hw)
    if any(p >= kk for p, kk in zip(pb + pe, k + k)):
        raise FrontendError(f"{ctx.source}: {node.op_type} node '{node.name}': pads "
                            f"{list(a.get('pads'))} not smaller than the kernel {list(k)}",
                            "a window entirely in the padding has no defined average")
    return dict(kernel=k, stride=stride, pb=pb, pe=pe, ceil=bool(a.get("ceil_mode", 0)),
                include_pad=bool(a.get("count_include_pad", 0)))


def _axis_plan(n: int, k: int, s: int, pb: int, pe: int, ceil: bool, include_pad: bool):
    """One axis of a pooling window: output count and each output's divisor.

    ONNX/PyTorch semantics: output o averages positions [o*s - pb, o*s - pb + k) clipped to
    [-pb, n + pe) (count_include_pad=1: the padding counts) or to [0, n) (count_include_pad=0).
    ceil_mode rounds the output count up, dropping a last window that would start in the end
    padding; that window then averages over the positions it covers (fewer than k).
    """
    span = n + pb + pe - k
    m = (-(-span // s) if ceil else span // s) + 1
    if ceil and (m - 1) * s >= n + pb:
        m -= 1
    st = np.arange(m) * s - pb
    if include_pad:
        div = np.minimum(st + k, n + pe) - st
    else:
        div = np.minimum(st + k, n) - np.maximum(st, 0)
    return m, div


def _pool(ctx: Ctx, node, x: str, sum_pool: bool = False) -> str:
    """AveragePool (SumPool2d) -> AvgPool2d when the chip's k*k divisor is exact, otherwise an
    exact composition: a depthwise Conv2d of ones (zero taps where the padding is one-sided)
    and a per-position Scale of 1/count, which ``lower`` composes into one synapse matrix."""
    args = _pool_args(ctx, node, ctx.shapes[x][1:])
    k, s, pb, pe = args["kernel"], args["stride"], args["pb"], args["pe"]
    shp = ctx.shapes[x]
    if len(shp) != 3:
        raise ctx.unsupported(node, f"{node.op_type} on a {len(shp)}-D input",
                              "only (C, H, W) feature maps")
    plans = [_axis_plan(shp[1 + i], k[i], s[i], pb[i], pe[i], args["ceil"],
                        args["include_pad"] or sum_pool) for i in range(2)]
    (mh, dh), (mw, dw) = plans
    uniform = all(np.all(d == kk) for (_, d), kk in zip(plans, k))
    if pb == pe and not args["ceil"] and (uniform or sum_pool):
        cls = SumPool2d if sum_pool else AvgPool2d
        return ctx.add(node, cls(kernel_size=k, stride=s, padding=pb), [x])
    if sum_pool:
        raise ctx.unsupported(node, "SumPool2d with ceil_mode or asymmetric pads",
                              "write the SumPool2d in floor mode with symmetric pads")
    c = shp[0]
    # conv form: symmetric padding P, window of K taps whose ones sit at offset P - pb
    P = tuple(max(pb[i], (plans[i][0] - 1) * s[i] - pb[i] + k[i] - shp[1 + i]) for i in range(2))
    K = tuple(shp[1 + i] + 2 * P[i] - (plans[i][0] - 1) * s[i] for i in range(2))
    w = np.zeros((c, 1) + K)
    off = tuple(P[i] - pb[i] for i in range(2))
    w[:, :, off[0]:off[0] + k[0], off[1]:off[1] + k[1]] = 1.0
    conv = ctx.add_internal(f"{_base(node)}_sum", Conv2d(w, np.zeros(c), stride=s, padding=P,
                                                          groups=c), [x])
    assert ctx.shapes[conv] == (c, mh, mw)
    scale = np.broadcast_to(1.0 / np.outer(dh, dw), (c, mh, mw)).astype(np.float64)
    ctx.notes.append(f"{node.op_type} '{node.name}' (ceil_mode={int(args['ceil'])}, "
                     f"count_include_pad={int(args['include_pad'])}, pads "
                     f"{list(pb) + list(pe)}): exact as a window sum and a per-position 1/count")
    return ctx.add(node, Scale(np.array(scale)), [conv])


def _base(node) -> str:
    import re
    return re.sub(r"[^0-9A-Za-z_]", "_", node.name or node.output[0]).strip("_") or "pool"


@register_importer("AveragePool")
def _avgpool(ctx: Ctx, node) -> None:
    _pool(ctx, node, ctx.tensor(node.input[0], node))


@register_importer("SumPool2d", DOMAIN)
def _sumpool(ctx: Ctx, node) -> None:
    _pool(ctx, node, ctx.tensor(node.input[0], node), sum_pool=True)


@register_importer("ReduceMean")
def _reduce_mean(ctx: Ctx, node) -> None:
    """ReduceMean over spatial axes of a (C, H, W) map = average pooling (opset 13 and 18)."""
    a = ctx.attrs(node)
    x = ctx.tensor(node.input[0], node)
    shp = ctx.shapes[x]
    if len(node.input) > 1 and node.input[1]:      # opset 18: axes as an input
        axes = [int(v) for v in ctx.need_const(node, 1, "axes").reshape(-1)]
    else:
        axes = [int(v) for v in a.get("axes", [])]
    rank = len(shp) + 1
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            ctx.alias(node.output[0], x)
            return
        axes = list(range(rank))
    if any(not -rank <= v < rank for v in axes):
        raise FrontendError(f"{ctx.source}: ReduceMean node '{node.name}': axes {axes} out of "
                            f"range for a rank-{rank} tensor")
    ax = sorted({v % rank for v in axes})
    if len(shp) != 3 or not set(ax) <= {2, 3}:
        raise ctx.unsupported(node, f"ReduceMean over axes {ax} of a {list(shp)} tensor",
                              "only the mean over spatial axes (2, 3) of a [N, C, H, W] map is "
                              "supported (global/partial average pooling)")
    kh = shp[1] if 2 in ax else 1
    kw = shp[2] if 3 in ax else 1
    keep = bool(a.get("keepdims", 1))
    pool = AvgPool2d(kernel_size=(kh, kw), stride=(kh, kw))
    if keep:
        ctx.add(node, pool, [x])
        return
    p = ctx.add_internal(f"{_base(node)}_pool", pool, [x])
    if ax == [2, 3]:
        ctx.add(node, Flatten(), [p])               # (C, 1, 1) -> (C,)
    else:                                         # (C, 1, W) -> (C, W); (C, H, 1) -> (C, H)
        ctx.add(node, Flatten(1, 2), [p])


@register_importer("Flatten")
def _flatten(ctx: Ctx, node) -> None:
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
def _reshape(ctx: Ctx, node) -> None:
    x = ctx.tensor(node.input[0], node)
    m = FLATTEN_DOC.fullmatch(node.doc_string or "")
    if m:
        ctx.add(node, Flatten(int(m.group(1)), int(m.group(2))), [x])
        return
    s = ctx.shapes[x]
    tgt = [int(d) for d in ctx.need_const(node, 1, "shape").reshape(-1)]
    if tgt and tgt[0] == BATCH:
        tgt[0] = 0          # x.view(x.size(0), -1): the batch dim from folded Shape arithmetic
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
def _batchnorm(ctx: Ctx, node) -> None:
    a = ctx.attrs(node)
    if a.get("training_mode", 0):
        raise ctx.unsupported(node, "BatchNormalization(training_mode=1)",
                              "export the model in eval mode")
    x = ctx.tensor(node.input[0], node)
    arrs = [_f64(ctx.need_const(node, i, w)) for i, w in
            ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var"))]
    ctx.add(node, BatchNorm(*arrs, eps=float(a.get("epsilon", 1e-5))), [x])


def _add_like(ctx: Ctx, node) -> None:
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
def _mul(ctx: Ctx, node) -> None:
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


def _passthrough(ctx: Ctx, node) -> None:
    """Identity / Dropout (inference): bypassed; on a constant, folded (the output is that
    constant: the TorchScript exporter puts an Identity on a shared initializer)."""
    if node.input[0] in ctx.consts:
        ctx.consts[node.output[0]] = ctx.consts[node.input[0]]
        return
    ctx.alias(node.output[0], ctx.tensor(node.input[0], node))


register_importer("Identity")(_passthrough)
register_importer("Dropout")(_passthrough)


def global_window(ctx: Ctx, node) -> dict:
    s = ctx.shapes[ctx.tensor(node.input[0], node)]
    if len(s) != 3:
        raise ctx.unsupported(node, f"{node.op_type} on a {len(s)}-D input",
                              "only (C, H, W) feature maps")
    return dict(kernel_size=s[1:], stride=s[1:])


@register_importer("GlobalAveragePool")
def _global_avgpool(ctx: Ctx, node) -> None:
    ctx.add(node, AvgPool2d(**global_window(ctx, node)), [ctx.tensor(node.input[0], node)])
