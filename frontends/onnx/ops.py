"""Importers of the standard ONNX operators, shared by the SNN and the ANN forms.

Each function is registered for one (domain, op_type) in common.IMPORTERS; see
frontends/onnx/snn.py for the accepted forms of each op.
"""

from __future__ import annotations

import numpy as np

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
    DOMAIN,
    FLATTEN_DOC,
    IMPLICIT_FLATTEN,
    Ctx,
    _f64,
    _pads2d,
    register_importer,
)


@register_importer("Conv")
def _conv(ctx: Ctx, node) -> None:
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


def _pool_args(ctx: Ctx, node) -> dict:
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
def _avgpool(ctx: Ctx, node) -> None:
    ctx.add(node, AvgPool2d(**_pool_args(ctx, node)), [ctx.tensor(node.input[0], node)])


@register_importer("SumPool2d", DOMAIN)
def _sumpool(ctx: Ctx, node) -> None:
    ctx.add(node, SumPool2d(**_pool_args(ctx, node)), [ctx.tensor(node.input[0], node)])


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


@register_importer("GlobalAveragePool")
def _global_avgpool(ctx: Ctx, node) -> None:
    ctx.add(node, AvgPool2d(**global_window(ctx, node)), [ctx.tensor(node.input[0], node)])
