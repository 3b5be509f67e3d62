"""nn.Module -> graph IR via torch.fx (stage: imported).

``to_graph(module, input_shape)`` traces ``module`` symbolically (IF/LIF are leaf modules, so
their Python state logic is never traced) and maps every fx node to an IR operator node:

    nn.Conv2d            -> Conv2d (any stride/padding/dilation/groups; no bias -> zero bias)
    nn.Linear            -> Affine (Linear when bias=False)
    nn.BatchNorm1d/2d    -> BatchNorm (running statistics; eval-mode semantics)
    nn.AvgPool2d         -> AvgPool2d (count_include_pad, no ceil_mode)
    nn.Flatten, torch.flatten, x.flatten(1), x.view(x.size(0), -1) -> Flatten
    nn.Dropout*, nn.Identity -> bypassed
    IF / LIF             -> IF / LIF (same parameters; ``dt`` = 1)
    a + b, torch.add     -> Add;   x * c (a Python number) -> Scale

Node names are the fx targets with '.' replaced by '_' (``features.0`` -> ``features_0``) for
modules and the fx node names (``add``, ``add_1``, ``flatten``) for functions; the graph input is
``input`` and the output ``output``. Anything else raises UnsupportedOpError naming the node.
"""

from __future__ import annotations

import logging
import operator

import numpy as np
import torch
from torch import fx, nn

import frontends.native.layers as layers
from compiler.errors import FrontendError, IRVerificationError, UnsupportedOpError
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
    verify,
)
from compiler.ir.linear import out_shape

logger = logging.getLogger(__name__)
SOURCE = "torch module"
SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d, AvgPool2d, Flatten, Dropout, Identity, IF, LIF, "
             "residual +, x * constant")
_HINTS = {
    "ReLU": "ReLU is an ANN activation: replace it with frontends.native.IF/LIF, or export the "
            "ANN to ONNX for ANN->SNN conversion (snnc compile model.onnx --calib ...)",
    "MaxPool2d": "max pooling has no spiking equivalent on the chip: use nn.AvgPool2d",
    "AdaptiveAvgPool2d": "use nn.AvgPool2d with an explicit kernel_size (the chip needs static "
                         "shapes)",
    "Conv1d": "only 2-D convolutions are supported: reshape the input to (C, 1, L) and use "
              "nn.Conv2d with kernel (1, k)",
}
_HINTS.update({"relu": _HINTS["ReLU"], "max_pool2d": _HINTS["MaxPool2d"],
               "adaptive_avg_pool2d": _HINTS["AdaptiveAvgPool2d"]})


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, layers.NEURON_MODULES) or super().is_leaf_module(m, qualname)


def _np(t) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float64)


def _unsupported(op: str, name: str, extra: str | None = None) -> UnsupportedOpError:
    hint = _HINTS.get(op) or extra or f"supported: {SUPPORTED}"
    return UnsupportedOpError(op, name, SOURCE, hint)


def _neuron(m: layers.IF) -> IF:
    kw = dict(v_threshold=_np(m.v_threshold), v_reset=_np(m.v_reset), v_init=_np(m.v_init),
              reset_mode=m.reset, neg_floor=m.neg_floor, dt=1.0)
    if isinstance(m, layers.LIF):
        return LIF(beta=_np(m.beta), **kw)
    return IF(**kw)


def _conv(m: nn.Conv2d, name: str) -> Conv2d:
    if m.padding_mode != "zeros":
        raise _unsupported(f"Conv2d(padding_mode='{m.padding_mode}')", name,
                           "only zero padding is supported")
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # 'same' with stride 1: symmetric only when the total padding is even
            tot = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
            if any(t % 2 for t in tot):
                raise _unsupported("Conv2d(padding='same')", name,
                                   "use an odd kernel or explicit symmetric padding")
            pad = tuple(t // 2 for t in tot)
    b = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
    return Conv2d(_np(m.weight), b, stride=m.stride, padding=pad, dilation=m.dilation,
                  groups=m.groups)


def _pool(m: nn.AvgPool2d, name: str) -> AvgPool2d:
    if m.ceil_mode:
        raise _unsupported("AvgPool2d(ceil_mode=True)", name, "use ceil_mode=False")
    if m.divisor_override is not None:
        raise _unsupported("AvgPool2d(divisor_override)", name, "remove divisor_override")
    stride = m.stride if m.stride is not None else m.kernel_size
    pad = m.padding
    has_pad = any(p != 0 for p in (pad if isinstance(pad, tuple) else (pad,)))
    if has_pad and not m.count_include_pad:
        raise _unsupported("AvgPool2d(count_include_pad=False)", name,
                           "the chip divides by k*k: use count_include_pad=True or no padding")
    return AvgPool2d(m.kernel_size, stride, pad)


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, name: str) -> BatchNorm:
    if m.running_mean is None or m.running_var is None:
        raise _unsupported(f"{type(m).__name__}(track_running_stats=False)", name,
                           "train with track_running_stats=True so the statistics can be folded")
    c = m.num_features
    gamma = _np(m.weight) if m.weight is not None else np.ones(c)
    beta = _np(m.bias) if m.bias is not None else np.zeros(c)
    return BatchNorm(gamma, beta, _np(m.running_mean), _np(m.running_var), float(m.eps))


def _flatten(start: int, end: int, name: str, ndim: int) -> Flatten:
    """torch dims (with batch) -> IR dims (without batch)."""
    nd = ndim + 1
    s, e = start % nd, end % nd
    if s == 0:
        raise _unsupported("flatten(start_dim=0)", name,
                           "flatten from dim 1 (the batch dim must be kept)")
    return Flatten(start_dim=s - 1, end_dim=-1 if e == nd - 1 else e - 1)


def to_graph(module: nn.Module, input_shape) -> Graph:
    """Convert a native SNN (or plain synapse network) to an imported-stage graph.

    Args:
        module: an nn.Module built from the supported layers (see the module docstring).
        input_shape: one sample's shape without batch and time, e.g. (1, 8, 8).
    Returns:
        A Graph with ``attrs['dt'] = 1.0`` that passes ``verify(g, 'imported')``; LIF leak hints
        are in ``attrs['leak_hints']`` ({node: 'shift'|'mult'}).
    Raises:
        UnsupportedOpError: a module/function with no IR equivalent (names the node).
        FrontendError: the module cannot be traced or input_shape is missing.
    """
    if input_shape is None:
        raise FrontendError("converting an nn.Module needs input_shape (one sample, without "
                            "batch), e.g. (1, 8, 8)", "pass input_shape=(C, H, W)")
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as e:
        raise FrontendError(f"input_shape must be a tuple of ints, got {input_shape!r}") from e
    try:
        traced = _Tracer().trace(module)  # an fx.Graph
    except Exception as e:  # fx raises many types for untraceable code
        raise FrontendError(f"torch.fx could not trace {type(module).__name__}: {e}",
                            "avoid data-dependent control flow in forward(), or export the "
                            "model to ONNX") from e
    mods = dict(module.named_modules())
    if any(m.training for m in mods.values() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        logger.warning("%s has BatchNorm layers in training mode; the graph uses their running "
                       "statistics (eval-mode semantics). Call model.eval() first.",
                       type(module).__name__)
    g = Graph({"dt": 1.0})
    ir: dict[fx.Node, object] = {}        # fx node -> IR node name | ('batch',) | python value
    used: set[str] = set()
    leak_hints: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    batch = ("batch",)

    def unique(base: str) -> str:
        n, i = base, 1
        while n in used or n in ("input", "output"):
            n, i = f"{base}_{i}", i + 1
        used.add(n)
        return n

    def add(base: str, node, inputs: list[str]) -> str:
        name = unique(base)
        g.add(name, node, inputs)
        try:
            shapes[name] = out_shape(name, node, [shapes[i] for i in inputs])
        except IRVerificationError as e:
            raise FrontendError(
                f"{SOURCE}: node '{name}' ({node.kind}) on input shape "
                f"{[shapes[i] for i in inputs]}: {e.invariant}",
                "the IR's Affine/Linear act on the whole flattened sample: put nn.Flatten() "
                "before nn.Linear, and check input_shape") from e
        return name

    def tensor_arg(a, name: str) -> str:
        v = ir.get(a) if isinstance(a, fx.Node) else None
        if not isinstance(v, str):
            raise _unsupported(f"non-tensor operand {a!r}", name,
                               "only tensors produced by supported layers can be combined")
        return v

    out_src = None
    for n in traced.nodes:
        if n.op == "placeholder":
            if "input" in g:
                raise _unsupported("second forward() argument", n.name,
                                   "the model must take exactly one input tensor")
            used.add("input")
            g.add("input", Input(input_shape))
            shapes["input"] = input_shape
            ir[n] = "input"
        elif n.op == "call_module":
            m = mods[n.target]
            name = str(n.target).replace(".", "_")
            src = tensor_arg(n.args[0], name) if n.args else None
            if src is None or len(n.args) != 1 or n.kwargs:
                raise _unsupported(f"{type(m).__name__} with {len(n.args)} arguments", name)
            if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
                              nn.Identity)):
                ir[n] = src
                continue
            if isinstance(m, layers.NEURON_MODULES):
                node = _neuron(m)
                if isinstance(m, layers.LIF):
                    leak_hints[name] = m.leak
            elif isinstance(m, nn.Conv2d):
                node = _conv(m, name)
            elif isinstance(m, nn.Linear):
                node = (Affine(_np(m.weight), _np(m.bias)) if m.bias is not None
                        else Linear(_np(m.weight)))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                node = _batchnorm(m, name)
            elif type(m) is nn.AvgPool2d:
                node = _pool(m, name)
            elif isinstance(m, nn.Flatten):
                node = _flatten(m.start_dim, m.end_dim, name, len(shapes[src]))
            else:
                raise _unsupported(type(m).__name__, name)
            ir[n] = add(name, node, [src])
        elif n.op in ("call_function", "call_method"):
            ir[n] = _function(n, ir, shapes, add, tensor_arg, batch)
        elif n.op == "get_attr":
            raise _unsupported(f"tensor attribute '{n.target}'", n.name,
                               "wrap parameters in a supported layer")
        elif n.op == "output":
            res = n.args[0]
            if not isinstance(res, fx.Node):
                raise _unsupported(f"output of type {type(res).__name__}", "output",
                                   "forward() must return a single tensor")
            out_src = tensor_arg(res, "output")
    if out_src is None:
        raise FrontendError(f"{type(module).__name__}: traced graph has no output")
    g.add("output", Output(shapes[out_src]), [out_src])
    if leak_hints:
        g.attrs["leak_hints"] = leak_hints
    verify(g, "imported")
    return g


def _function(n: fx.Node, ir, shapes, add, tensor_arg, batch):
    """call_function / call_method nodes: add, mul by a constant, flatten, size(0), view."""
    name = n.name
    target = n.target
    op = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    args = list(n.args)

    def is_tensor(a) -> bool:
        return isinstance(a, fx.Node) and isinstance(ir.get(a), str)

    if target in (operator.add, operator.iadd, torch.add) or target in ("add", "add_"):
        if len(args) == 2 and all(is_tensor(a) for a in args) and not n.kwargs:
            a, b = (tensor_arg(x, name) for x in args)
            if a == b:   # x + x: a graph edge cannot repeat, so it is a Scale by 2
                return add(name, Scale(np.asarray(2.0)), [a])
            return add(name, Add(), [a, b])
        raise _unsupported(f"{op} (with a constant or alpha)", name,
                           "only tensor + tensor (residual) additions are supported")
    if target in (operator.mul, operator.imul, torch.mul) or target in ("mul", "mul_"):
        if len(args) == 2 and not n.kwargs:
            t = [a for a in args if is_tensor(a)]
            c = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if len(t) == 1 and len(c) == 1:
                return add(name, Scale(np.asarray(float(c[0]))), [tensor_arg(t[0], name)])
        raise _unsupported(f"{op}", name, "only multiplication by a Python number is supported")
    if target in (torch.flatten, "flatten"):
        src = tensor_arg(args[0], name)
        start = args[1] if len(args) > 1 else n.kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else n.kwargs.get("end_dim", -1)
        return add(name, _flatten(int(start), int(end), name, len(shapes[src])), [src])
    if target == "size" and len(args) == 2 and args[1] == 0 or (
            target is getattr and len(args) == 2 and args[1] == "shape"):
        return batch if target == "size" else ("shape",)
    if target is operator.getitem and len(args) == 2 and ir.get(args[0]) == ("shape",) \
            and args[1] == 0:
        return batch
    if target in ("view", "reshape", torch.reshape):
        src = tensor_arg(args[0], name)
        dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        dims = list(dims)
        if len(dims) == 2 and (dims[0] == -1 or (isinstance(dims[0], fx.Node)
                                                 and ir.get(dims[0]) == batch)) \
                and dims[1] in (-1, int(np.prod(shapes[src]))):
            return add(name, Flatten(), [src])
        raise _unsupported(f"{op}{tuple(dims)}", name,
                           "only flattening reshapes (x.view(x.size(0), -1)) are supported")
    raise _unsupported(op, name, _HINTS.get(op) or ("torch.nn.functional calls and tensor "
                                                   f"methods other than add/mul/flatten are not "
                                                   f"supported; supported: {SUPPORTED}"))
