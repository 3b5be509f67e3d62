"""QAT structure analysis: which weights feed which neuron population (stage: training).

See :mod:`frontends.training.qat` for the quantization rules."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn

from compiler.errors import FrontendError, UnsupportedOpError
from frontends.native.layers import NEURON_MODULES
from frontends.training.shiftbn import ShiftBN

INPUT_SCALE = 255.0
SOURCE = "QAT"
_PASS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)

# ==============================================================================================
# structure: which weights feed which neuron population
# ==============================================================================================
class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, NEURON_MODULES + (ShiftBN,)) or super().is_leaf_module(m, qualname)


@dataclass
class _Pop:
    name: str                     # 'input' or a neuron module's qualified name


@dataclass
class Branch:
    """One synapse chain: source population -> pre ops -> weight module -> post factors."""

    source: str
    pre: list = field(default_factory=list)   # ('pool', m) | ('scale', c) | ('flatten', (a, b))
    weight: str | None = None
    post: list = field(default_factory=list)   # scale factors after the weight op
    shiftbn: str | None = None

    def copy(self) -> Branch:
        return Branch(self.source, list(self.pre), self.weight, list(self.post), self.shiftbn)


@dataclass
class _Sum:
    branches: list


@dataclass
class QLayer:
    """A neuron population and its branches (names are module qualified names)."""

    name: str
    branches: list
    shape: tuple = ()

    @property
    def ir_name(self) -> str:
        return self.name.replace(".", "_")

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))


def _unsupported(op: str, name: str, hint: str) -> UnsupportedOpError:
    return UnsupportedOpError(op, name, SOURCE, hint)


_CHAIN_HINT = ("exact QAT supports: population -> [AvgPool2d(stride=kernel), Flatten, x*c] -> "
               "one Conv2d/Linear -> [x*c, ShiftBN] -> IF/LIF, and residual sums of such chains")


def _pool_factor(m: nn.AvgPool2d, name: str) -> float:
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
    s = m.stride if m.stride is not None else k
    s = s if isinstance(s, tuple) else (s, s)
    if tuple(s) != tuple(k) or m.ceil_mode or m.divisor_override is not None:
        raise _unsupported("AvgPool2d(stride != kernel)", name,
                           "overlapping pools sum several weights into one synapse; use "
                           "stride == kernel_size (non-overlapping)")
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    if any(pad) and not m.count_include_pad:
        raise _unsupported("AvgPool2d(count_include_pad=False)", name, "use count_include_pad")
    return 1.0 / float(k[0] * k[1])


def analyze(model: nn.Module) -> tuple[list[QLayer], fx.GraphModule]:
    """Trace ``model`` and return its populations (in topological order) and the traced module.

    Raises UnsupportedOpError for structures whose compiled integers are not per-weight.
    """
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many types
        raise FrontendError(f"torch.fx could not trace {type(model).__name__}: {e}",
                            "avoid data-dependent control flow in forward()") from e
    gm = fx.GraphModule(model, graph)
    mods = dict(model.named_modules())
    val: dict[fx.Node, object] = {}
    layers: list[QLayer] = []
    seen_pops: set[str] = set()
    out_pop = None

    def chain_of(a, name):
        v = val.get(a) if isinstance(a, fx.Node) else None
        if isinstance(v, _Pop):
            return Branch(v.name)
        if isinstance(v, Branch):
            return v.copy()
        if isinstance(v, _Sum):
            return v
        raise _unsupported(f"operand {a!r}", name, _CHAIN_HINT)

    for n in graph.nodes:
        if n.op == "placeholder":
            if "input" in seen_pops:
                raise _unsupported("second input", n.name, "one input tensor")
            seen_pops.add("input")
            val[n] = _Pop("input")
        elif n.op == "call_module":
            m = mods[n.target]
            name = str(n.target)
            c = chain_of(n.args[0], name)
            if isinstance(m, _PASS):
                val[n] = val[n.args[0]]
            elif isinstance(m, NEURON_MODULES):
                branches = c.branches if isinstance(c, _Sum) else [c]
                for b in branches:
                    if b.weight is None:
                        raise _unsupported(f"{type(m).__name__} without a synapse layer", name,
                                           "put a Conv2d/Linear in front of every neuron")
                if name in seen_pops:
                    raise _unsupported("neuron module called twice", name,
                                       "use one module instance per population")
                seen_pops.add(name)
                layers.append(QLayer(name, branches))
                val[n] = _Pop(name)
            elif isinstance(c, _Sum):
                raise _unsupported(type(m).__name__ + " after a residual sum", name, _CHAIN_HINT)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if c.weight is not None:
                    raise _unsupported(f"{type(m).__name__} after {c.weight}", name,
                                       "two synapse layers without a neuron in between compose "
                                       "into one matrix; put an IF/LIF between them")
                if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                    raise _unsupported("Conv2d padding_mode", name, "use zero padding")
                c.weight = name
                val[n] = c
            elif type(m) is nn.AvgPool2d:
                if c.weight is not None:
                    raise _unsupported("AvgPool2d after a synapse layer", name,
                                       "pool after the neuron instead (conv -> IF -> pool)")
                _pool_factor(m, name)           # refuses overlapping pools
                c.pre.append(("pool", m))
                val[n] = c
            elif isinstance(m, nn.Flatten):
                if c.weight is None:
                    c.pre.append(("flatten", (m.start_dim, m.end_dim)))
                val[n] = c
            elif isinstance(m, ShiftBN):
                if c.weight is None or c.shiftbn is not None:
                    raise _unsupported("ShiftBN", name, "ShiftBN must follow a Conv2d/Linear")
                c.shiftbn = name
                val[n] = c
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                raise _unsupported(type(m).__name__, name,
                                   "fold it first: model = frontends.training.qat.fold_batchnorm("
                                   "model), or use frontends.training.qat.ShiftBN")
            else:
                raise _unsupported(type(m).__name__, name, _CHAIN_HINT)
        elif n.op in ("call_function", "call_method"):
            val[n] = _function(n, val, chain_of)
        elif n.op == "get_attr":
            raise _unsupported(f"tensor attribute '{n.target}'", n.name, _CHAIN_HINT)
        elif n.op == "output":
            res = val.get(n.args[0])
            if not isinstance(res, _Pop) or res.name == "input":
                raise _unsupported("model output", "output",
                                   "the model must return the spikes of its output IF/LIF")
            out_pop = res.name
    if not layers or out_pop != layers[-1].name:
        raise _unsupported("model output", "output",
                           "the model must return its last IF/LIF (the readout layer)")
    return layers, gm


def _function(n: fx.Node, val, chain_of):
    target, args, name = n.target, list(n.args), n.name
    is_t = lambda a: isinstance(a, fx.Node) and isinstance(val.get(a), (_Pop, Branch, _Sum))  # noqa: E731
    if target in (operator.add, operator.iadd, torch.add) or target in ("add", "add_"):
        if len(args) == 2 and all(is_t(a) for a in args) and not n.kwargs:
            bs = []
            for a in args:
                c = chain_of(a, name)
                bs.extend(c.branches if isinstance(c, _Sum) else [c])
            if any(b.weight is None for b in bs):
                raise _unsupported("residual add of a population without a synapse layer", name,
                                   "add the outputs of Conv2d/Linear layers")
            srcs = [b.source for b in bs]
            if len(set(srcs)) != len(srcs):
                raise _unsupported("residual add of two branches from one source", name,
                                   "the compiler sums them into one matrix before quantizing")
            return _Sum(bs)
        raise _unsupported("add", name, "only tensor + tensor")
    if target in (operator.mul, operator.imul, torch.mul) or target in ("mul", "mul_"):
        t = [a for a in args if is_t(a)]
        c = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(t) == 1 and len(c) == 1 and not n.kwargs:
            ch = chain_of(t[0], name)
            if isinstance(ch, _Sum):
                raise _unsupported("x * c after a residual sum", name, _CHAIN_HINT)
            if ch.weight is None:
                ch.pre.append(("scale", float(c[0])))
            else:
                ch.post.append(float(c[0]))
            return ch
        raise _unsupported("mul", name, "only multiplication by a Python number")
    if target in (torch.flatten, "flatten", "view", "reshape", torch.reshape):
        if is_t(args[0]):
            ch = chain_of(args[0], name)
            if isinstance(ch, Branch) and ch.weight is None:
                ch.pre.append(("call", n))
            return ch
    if target in ("size", getattr, operator.getitem):
        return None
    raise _unsupported(str(getattr(target, "__name__", target)), name, _CHAIN_HINT)


def _set_module(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
