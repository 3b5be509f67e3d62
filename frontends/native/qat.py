"""Quantization-aware training (QAT) to a ChipSpec, bit-exact with the compiler (stage: training).

:class:`Quantizer` quantizes a native model *exactly as* ``compile_model`` will
(``fold-bn -> lower -> quantize -> fold-thresholds``, docs/passes.md), reading the live float
weights. Per neuron population ("layer") the compiler composes the synapse chain in front of it
into one matrix in *event units* and quantizes that; for the chains supported here every composed
entry is one weight times a constant factor:

    entry = W * f,   f = (prod of AvgPool 1/k^2 and x*c factors, in chain order)
                         * (1/255 when the source is the graph input: payload = rint(255 x))
    group max m_g = max |entry| over the group (whole layer, or one output channel with
                    per_channel; clip='pXX' uses the XX-th percentile of the non-zero entries,
                    each weight counted once per synapse it makes)
    s_g = max(m_g / q_max, register floors)           q_max = 2**(bits-1) - 1 (bits=1: {0, 1})
    W_int = clip(rint(W * f / s_g), -q_max, q_max)
    th_pos = max(1, rint(v_threshold / s)), bias = rint(b / s), v_init = rint(v_init / s), ...

(float64, the same operation order as the compiler, so the same roundings). An AvgPool's
1/k^2 therefore lands in the scale, not in the integers: on the chip the pool is a *sum* pool.

Two uses:

* training: ``with quantizer.quantized(): loss = ...; loss.backward()`` swaps the fake-quantized
  values into the model (weights ``W_int * s / f``, biases ``bias_int * s``, thresholds
  ``th_pos * s``, v_init/v_reset likewise, LIF beta as the chip's leak) and restores the float
  master values on exit, so the optimizer steps the full-precision weights with the gradient
  taken at the quantized ones (straight-through): the "quantize, forward, backward, restore,
  step" loop of algorithms.md section 7.2;
* evaluation: :meth:`Quantizer.run_int` runs the integer model (integer weights, sum pools,
  24-bit saturating membranes, the chip's leak and reset) with the same layer-synchronous
  semantics as ``compiler.reference.run_int``; its counts, final membranes and scores equal the
  compiled chip's runtime output bit for bit (tests/frontends/test_qat.py).

Supported structure (anything else raises UnsupportedOpError naming the module): a population
(the graph input or an IF/LIF) -> any of non-overlapping AvgPool2d (stride == kernel), Flatten,
x * constant, Dropout/Identity -> exactly one Conv2d or Linear -> optional x * constant /
:class:`ShiftBN` -> an IF/LIF; residual ``a + b`` of such chains from distinct sources; the
model returns its last IF/LIF. BatchNorm: fold it first with :func:`fold_batchnorm` (or use
:class:`ShiftBN`, IntegerNet-style shift batch-norm, exported by :func:`export_model`).
"""

from __future__ import annotations

import contextlib
import copy
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from compiler.chip import PICORE64, ChipSpec
from compiler.errors import FrontendError, QuantizationError, UnsupportedOpError
from compiler.ir.linear import broadcast
from compiler.reference import score as _score
from frontends.native.layers import LIF, NEURON_MODULES

INPUT_SCALE = 255.0
SOURCE = "QAT"
_PASS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


# ==============================================================================================
# IntegerNet-style shift batch-norm
# ==============================================================================================
def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class ShiftBN(nn.Module):
    """Shift batch-norm (IntegerNet, algorithms.md section 7.1) in front of an IF/LIF.

    On the input current ``z`` [B, C, ...] (or [B, C]), measured in integer units ``u`` (the
    layer's quantization scale while a :class:`Quantizer` is active, else 1):

        bias  = round(mean(z/u) - beta * 2**shift)        (an integer)
        shift = max(0, round(log2(std(z/u))) + offset)     (an integer)
        y     = (z/u - bias) * 2**-shift

    batch statistics in training (running statistics, momentum ``momentum``, in evaluation),
    straight-through rounding. ``beta`` (learnable, per channel) is a bias in normalized units;
    there is no gamma (IntegerNet has no float BN). With the neuron threshold theta in normalized
    units, the integer neuron integrates ``z_int - bias`` against ``th_pos = round(theta *
    2**shift)``: every per-channel scaling is a power of two (``th_pos = 2**shift`` for theta = 1)
    and the bias an integer. :func:`export_model` folds it into the conv bias and the neuron's
    per-channel threshold/v_init/v_reset so the unchanged compiler reproduces those integers.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, offset: int = 0,
                 affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.offset = int(offset)
        self.eps = float(eps)
        self.beta = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("unit", torch.ones(()))

    def _view(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return t.reshape((1, -1) + (1,) * (z.dim() - 2))

    def integer_params(self, unit=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bias, shift) per channel from the running statistics (integers as float tensors)."""
        u = self.unit if unit is None else torch.as_tensor(unit, dtype=self.running_mean.dtype)
        u = u.reshape(-1) if u.numel() > 1 else u
        mean, std = self.running_mean / u, self.running_std / u
        shift = torch.clamp(torch.round(torch.log2(torch.clamp(std, min=self.eps))) + self.offset,
                            min=0)
        beta = self.beta.detach() if self.beta is not None else 0.0
        bias = torch.round(mean - beta * torch.exp2(shift))
        return bias, shift

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, z.dim()))
        u = self.unit.to(z)
        uc = u.reshape(-1) if u.numel() > 1 else u
        if self.training:
            mean = z.mean(dims)
            std = z.std(dims, unbiased=False)
            with torch.no_grad():
                if int(self.num_batches_tracked) == 0:
                    self.running_mean.copy_(mean)
                    self.running_std.copy_(std)
                else:
                    m = self.momentum
                    self.running_mean.mul_(1 - m).add_(m * mean)
                    self.running_std.mul_(1 - m).add_(m * std)
                self.num_batches_tracked += 1
        else:
            mean, std = self.running_mean, self.running_std
        shift = torch.clamp(_round_ste(torch.log2(torch.clamp(std.detach() / uc, min=self.eps)))
                            + self.offset, min=0)
        beta = self.beta if self.beta is not None else torch.zeros_like(mean)
        bias = _round_ste(mean / uc - beta * torch.exp2(shift))
        uu = u if u.numel() == 1 else self._view(u, z)
        return (z / uu - self._view(bias, z)) * self._view(torch.exp2(-shift), z)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, offset={self.offset}"


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
                                   "fold it first: model = frontends.native.qat.fold_batchnorm("
                                   "model), or use frontends.native.qat.ShiftBN")
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


# ==============================================================================================
# the quantizer
# ==============================================================================================
@dataclass
class LayerQuant:
    """The compiler's integers for one population (numpy; per neuron unless noted)."""

    name: str
    scale: np.ndarray                 # float64 [n]: one integer current unit
    group_scale: np.ndarray           # float64 [groups]
    weights: dict                     # weight module name -> integer tensor (float64, like W)
    th_pos: np.ndarray
    th_neg: np.ndarray
    v_init: np.ndarray
    v_reset: np.ndarray
    bias: np.ndarray
    leak_mode: np.ndarray
    leak: np.ndarray
    shift: np.ndarray
    reset: str
    floor: bool
    beta_q: np.ndarray | None = None  # the chip's leak as a float decay (LIF)
    bits: int = 8


@dataclass
class IntResult:
    """Integer run: per-layer spike counts and final membranes [B, n] (int64), output scores."""

    counts: dict
    v_final: dict
    output: str
    scores: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)

    def accuracy(self, y) -> float:
        return float(np.mean(self.predictions == np.asarray(y)))


def payloads(x: torch.Tensor | np.ndarray, input_scale: float = INPUT_SCALE) -> torch.Tensor:
    """Direct-encoding payloads ``clip(rint(255 x), 0, 255)`` (float64, as the runtime does)."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return torch.clamp(torch.round(x.to(torch.float64) * input_scale), 0, 255)


def quantize_input(x: torch.Tensor) -> torch.Tensor:
    """``rint(255 x) / 255`` in x's dtype, straight-through (what direct encoding delivers)."""
    q = (payloads(x.detach()) / INPUT_SCALE).to(x.dtype)
    return x + (q - x).detach()


def _np64(t) -> np.ndarray:
    return np.asarray(torch.as_tensor(t).detach().cpu().numpy(), dtype=np.float64)


class Quantizer:
    """Compiler-exact quantization of a native model (see the module docstring).

    Args:
        model: the native model (trained in float or being trained).
        input_shape: one sample's shape (C, H, W).
        spec: the target ChipSpec.
        bits: weight width (must be in ``spec.weight_widths``; 'auto' is not supported).
        per_channel, clip: as ``compile_model``.
        leak: the compiler's leak option ('auto' or 'shift').
    Compile the trained model with the same options: ``compile_model(model_or_onnx, spec,
    bits=bits, per_channel=per_channel, clip=clip)``.
    """

    def __init__(self, model: nn.Module, input_shape, spec: ChipSpec = PICORE64, bits: int = 8,
                 per_channel: bool = False, clip: str = "max", leak: str = "auto"):
        if bits == "auto" or int(bits) not in spec.weight_widths:
            raise QuantizationError(f"QAT: {bits}-bit weights not supported by chip "
                                    f"'{spec.name}'", f"use one of {list(spec.weight_widths)}")
        if clip != "max" and not (isinstance(clip, str) and clip.startswith("p")):
            raise QuantizationError(f"unknown clipping rule '{clip}'", "use 'max' or 'p99.9'")
        self.model = model
        self.input_shape = tuple(int(s) for s in input_shape)
        self.spec, self.bits, self.per_channel = spec, int(bits), bool(per_channel)
        self.clip, self.leak = clip, leak
        self.qmax = 1 if self.bits == 1 else (1 << (self.bits - 1)) - 1
        self.qmin = 0 if self.bits == 1 else -self.qmax
        self.layers, self.gm = analyze(model)
        self.mods = dict(model.named_modules())
        self._shapes()
        self._mult: dict[str, torch.Tensor] = {}
        self._active = False
        self.tie_offset = True

    # --- structure ----------------------------------------------------------------------------
    def _shapes(self) -> None:
        """Population shapes (a forward on zeros) and source shapes of every branch."""
        shapes: dict[str, tuple] = {"input": self.input_shape}
        hooks = []
        for L in self.layers:
            m = self.mods[L.name]
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, nm=L.name: shapes.__setitem__(nm, tuple(out.shape[1:]))))
        was = self.model.training
        p = next(iter(self.model.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        try:
            self.model.eval()
            with torch.no_grad():
                _reset(self.model)
                self.model(torch.zeros((1,) + self.input_shape, device=dev))
        finally:
            for h in hooks:
                h.remove()
            _reset(self.model)
            self.model.train(was)
        self.shapes = shapes
        for L in self.layers:
            L.shape = shapes[L.name]

    def _multiplicity(self, br: Branch, shape) -> torch.Tensor:
        """Synapses per weight entry (how often the compiler's matrix holds each weight)."""
        key = br.weight + "<-" + br.source
        if key in self._mult:
            return self._mult[key]
        m = self.mods[br.weight]
        x = torch.ones((1,) + tuple(self.shapes[br.source]), dtype=torch.float64)
        for kind, arg in br.pre:
            if kind == "pool":
                k, s, p = arg.kernel_size, arg.stride or arg.kernel_size, arg.padding
                x = F.avg_pool2d(x, k, s, p, False, True, divisor_override=1)
            elif kind == "flatten":
                x = torch.flatten(x, arg[0], arg[1])
            elif kind == "call":
                x = x.reshape(1, -1) if x.dim() > 2 else x
        w = torch.zeros_like(m.weight, dtype=torch.float64, device="cpu", requires_grad=True)
        with torch.enable_grad():
            if isinstance(m, nn.Conv2d):
                y = F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups)
            else:
                y = F.linear(x.reshape(1, -1), w)
            (g,) = torch.autograd.grad(y.sum(), w)
        self._mult[key] = g.detach()
        return self._mult[key]

    # --- the compiler's arithmetic ------------------------------------------------------------
    def _composed(self, br: Branch) -> tuple[torch.Tensor, float]:
        """(composed float64 entries shaped like W, total factor) -- compose() + lower()."""
        m = self.mods[br.weight]
        fp = 1.0
        for kind, arg in br.pre:
            if kind == "pool":
                fp = fp * _pool_factor(arg, br.weight)
            elif kind == "scale":
                fp = fp * arg
        w = m.weight.detach().to(torch.float64)
        v = w * fp if fp != 1.0 else w.clone()
        tot = fp
        for c in br.post:
            v = v * c
            tot = tot * c
        if br.source == "input":
            v = v * (1.0 / INPUT_SCALE)
            tot = tot * (1.0 / INPUT_SCALE)
        return v, tot

    def _neuron_params(self, L: QLayer):
        nrn = self.mods[L.name]
        shp = L.shape
        th = broadcast(_np64(nrn.v_threshold), shp, "v_threshold", L.name)
        vr = broadcast(_np64(nrn.v_reset), shp, "v_reset", L.name)
        vi = broadcast(_np64(nrn.v_init), shp, "v_init", L.name)
        beta = broadcast(_np64(nrn.beta), shp, "beta", L.name) if isinstance(nrn, LIF) else None
        return nrn, th, vr, vi, beta

    def _bias(self, L: QLayer) -> np.ndarray:
        bias = np.zeros(L.n)
        for br in L.branches:
            m = self.mods[br.weight]
            if m.bias is None:
                b = np.zeros(L.n)
            else:
                b = broadcast(_np64(m.bias), L.shape, "bias", br.weight)
            for c in br.post:
                b = b * c
            bias = bias + b
        return bias

    def _groups(self, L: QLayer) -> tuple[np.ndarray, int]:
        if not self.per_channel:
            return np.zeros(L.n, np.int64), 1
        c = L.shape[0] if len(L.shape) >= 2 else L.n
        ch = np.repeat(np.arange(c), L.n // c) if len(L.shape) >= 2 else np.arange(L.n)
        return ch.astype(np.int64), int(c)

    def _group_max(self, L: QLayer, comp: list, ng: int) -> np.ndarray:
        if self.clip == "max":
            mx = torch.zeros(ng, dtype=torch.float64)
            for br, (v, _) in zip(L.branches, comp):
                a = v.abs() * (self._multiplicity(br, L.shape).to(v.device) > 0)
                per = a.reshape(a.shape[0], -1).amax(1).cpu()
                mx = torch.maximum(mx, per if ng > 1 else per.amax().reshape(1))
            return mx.numpy()
        q = float(self.clip[1:])
        segs: list[list[np.ndarray]] = [[] for _ in range(ng)]
        for br, (v, _) in zip(L.branches, comp):
            a = _np64(v.abs())
            mu = _np64(self._multiplicity(br, L.shape)).astype(np.int64)
            for o in range(a.shape[0]):
                ao, mo = a[o].reshape(-1), mu[o].reshape(-1)
                keep = (ao > 0) & (mo > 0)
                segs[o if ng > 1 else 0].append(np.repeat(ao[keep], mo[keep]))
        mx = np.zeros(ng)
        for i in range(ng):
            seg = np.concatenate(segs[i]) if segs[i] else np.empty(0)
            mx[i] = np.percentile(seg, q) if seg.size else 0.0
        return mx

    def layer_quant(self, L: QLayer, comp=None) -> LayerQuant:
        """The compiler's integers of population ``L`` from the current float values."""
        from compiler.passes.fold_thresholds import _leak, _round
        spec = self.spec
        comp = comp if comp is not None else [self._composed(b) for b in L.branches]
        nrn, th, vr, vi, beta = self._neuron_params(L)
        bias = self._bias(L)
        gid, ng = self._groups(L)
        m = self._group_max(L, comp, ng)
        s_g = np.where(m > 0, m / self.qmax, 1.0)
        # register floors (quantize._floors)
        vmax = spec.membrane_range[1]
        thf = np.where(np.isfinite(th), th, 0.0)
        floors = [thf / spec.threshold_max, np.abs(bias) / spec.bias_range[1],
                  np.abs(vi) / vmax, np.abs(vr) / vmax]
        if nrn.neg_floor is not None:
            floors.append(np.full(L.n, abs(nrn.neg_floor) / spec.threshold_max))
        fl = np.max(floors, axis=0)
        fg = np.zeros(ng)
        np.maximum.at(fg, gid, fl)
        s_g = np.maximum(s_g, fg * (1 + 1e-9))
        a = s_g[gid]
        weights = {}
        for br, (v, _) in zip(L.branches, comp):
            so = torch.as_tensor(s_g if ng > 1 else np.repeat(s_g, v.shape[0]),
                                 dtype=torch.float64, device=v.device)
            so = so.reshape((-1,) + (1,) * (v.dim() - 1))
            weights[br.weight] = torch.clamp(torch.round(v / so), self.qmin, self.qmax)
        # fold_thresholds
        name = L.ir_name
        vlo, vhi = spec.membrane_range
        thr = np.where(np.isfinite(th), th / a, spec.threshold_max)
        th_pos = np.maximum(1, _round(name, "th_pos", thr, 0, spec.threshold_max))
        floor = nrn.neg_floor
        th_neg = (_round(name, "th_neg", np.full(L.n, floor) / a, 0, spec.threshold_max)
                  if floor is not None else np.zeros(L.n, np.int64))
        if beta is not None:
            lm, lk, sh, _ = _leak(beta, self.leak, spec)
            beta_q = np.where(lm == 2, 1.0 - np.exp2(-sh.astype(np.float64)),
                              np.where(lm == 3, 1.0 - lk / float(1 << spec.mult_bits), 1.0))
        else:
            lm = lk = sh = np.zeros(L.n, np.int64)
            beta_q = None
        return LayerQuant(
            name=name, scale=a, group_scale=s_g, weights=weights, th_pos=th_pos, th_neg=th_neg,
            v_init=_round(name, "v_init", vi / a, vlo, vhi),
            v_reset=_round(name, "v_reset", vr / a, vlo, vhi),
            bias=_round(name, "bias", bias / a, *spec.bias_range),
            leak_mode=lm, leak=lk, shift=sh, reset=nrn.reset, floor=floor is not None,
            beta_q=beta_q, bits=self.bits)

    def quantize_all(self) -> dict[str, LayerQuant]:
        """Integers of every population, keyed by the IR/chip layer name."""
        self._check_plain()
        return {L.ir_name: self.layer_quant(L) for L in self.layers}

    def _check_plain(self) -> None:
        for L in self.layers:
            for br in L.branches:
                if br.shiftbn is not None:
                    raise QuantizationError(
                        f"layer '{L.name}' has ShiftBN '{br.shiftbn}': the compiler's integers "
                        "are those of the exported model",
                        "use frontends.native.qat.export_model(model, quantizer) and quantize "
                        "that (run_int does this for you)")

    # --- training: swap the fake-quantized values in --------------------------------------------
    @contextlib.contextmanager
    def quantized(self):
        """Inside: the model computes with the chip's values; on exit the float masters return.

        Use around forward *and* backward (gradients w.r.t. the quantized weights go to the
        float masters: straight-through).
        """
        if self._active:
            yield self
            return
        saved_p: list[tuple[torch.Tensor, torch.Tensor]] = []
        saved_b: list[tuple[nn.Module, str, torch.Tensor]] = []
        self._active = True
        try:
            with torch.no_grad():
                for L in self.layers:
                    self._swap_layer(L, saved_p, saved_b)
            yield self
        finally:
            with torch.no_grad():
                for p, d in saved_p:
                    p.data = d
                for m, k, t in saved_b:
                    setattr(m, k, t)
            self._active = False

    def _swap_layer(self, L: QLayer, saved_p, saved_b) -> None:
        comp = [self._composed(b) for b in L.branches]
        sbn = [b.shiftbn for b in L.branches if b.shiftbn is not None]
        lq = self.layer_quant(L, comp)
        dev = self.mods[L.branches[0].weight].weight.device
        for br, (v, tot) in zip(L.branches, comp):
            m = self.mods[br.weight]
            so = torch.as_tensor(lq.group_scale if len(lq.group_scale) > 1
                                 else np.repeat(lq.group_scale, v.shape[0]),
                                 dtype=torch.float64, device=dev)
            so = so.reshape((-1,) + (1,) * (v.dim() - 1))
            wq = (lq.weights[br.weight] * so / tot).to(m.weight.dtype)
            saved_p.append((m.weight, m.weight.data))
            m.weight.data = wq
        # bias: the first branch with a bias carries the quantized total
        carriers = [br for br in L.branches if self.mods[br.weight].bias is not None]
        if carriers:
            first = carriers[0]
            m = self.mods[first.weight]
            bq = torch.as_tensor(lq.bias * lq.scale, dtype=torch.float64, device=dev)
            others = torch.zeros_like(bq)
            for br in carriers[1:]:
                ob = torch.as_tensor(broadcast(_np64(self.mods[br.weight].bias), L.shape,
                                               "bias", br.weight), device=dev)
                for c in br.post:
                    ob = ob * c
                others = others + ob
            b = bq - others
            for c in first.post:
                b = b / c
            per_out = b.reshape(m.bias.shape[0], -1)[:, 0]
            saved_p.append((m.bias, m.bias.data))
            m.bias.data = per_out.to(m.bias.dtype)
        nrn = self.mods[L.name]
        shp = tuple(L.shape)

        def put(key, val):
            old = getattr(nrn, key)
            saved_b.append((nrn, key, old))
            setattr(nrn, key, val.reshape(shp).to(dtype=old.dtype, device=old.device))

        if sbn:
            # thresholds stay in normalized units; ShiftBN divides by the layer's scale
            u = torch.as_tensor(lq.group_scale, dtype=torch.float32, device=dev)
            for name in sbn:
                bn = self.mods[name]
                saved_b.append((bn, "unit", bn.unit))
                bn.unit = u.reshape(-1) if u.numel() > 1 else u.reshape(())
        else:
            th_old = broadcast(_np64(nrn.v_threshold), shp, "v_threshold", L.name)
            th_new = np.where(np.isfinite(th_old), lq.th_pos * lq.scale, th_old)
            put("v_threshold", torch.as_tensor(th_new))
            # half-unit offset for IF (exact: V_int >= th <=> V_int + 1/2 >= th), so float32
            # rounding cannot flip the integer model's many exact ties V == th
            off = 0.5 if (not isinstance(nrn, LIF) and nrn.neg_floor is None
                          and self.tie_offset) else 0.0
            put("v_init", torch.as_tensor((lq.v_init + off) * lq.scale))
            put("v_reset", torch.as_tensor((lq.v_reset + off) * lq.scale))
        if isinstance(nrn, LIF) and lq.beta_q is not None and not isinstance(nrn.beta,
                                                                            nn.Parameter):
            put("beta", torch.as_tensor(lq.beta_q))

    # --- the integer model ----------------------------------------------------------------------
    def run_int(self, x, timesteps: int, batch: int = 512, device=None) -> IntResult:
        """Integer evaluation on images ``x`` [B, C, H, W] in [0, 1] with direct encoding.

        Equals ``runtime.simulator.run(compile_model(model, ...), x, timesteps=T,
        encoding='direct')`` bit for bit (counts, final membranes and scores of every layer).
        """
        if any(br.shiftbn for L in self.layers for br in L.branches):
            plain = export_model(self.model, self)
            q = Quantizer(plain, self.input_shape, self.spec, self.bits, self.per_channel,
                          self.clip, self.leak)
            return q.run_int(x, timesteps, batch, device)
        p = payloads(x)
        return self.run_int_payloads(p.unsqueeze(0).expand((int(timesteps),) + tuple(p.shape)),
                                     batch, device)

    @torch.no_grad()
    def run_int_payloads(self, pay: torch.Tensor, batch: int = 512, device=None) -> IntResult:
        """Integer run on payloads [T, B, C, H, W] (integers 0..255, any encoding)."""
        self._check_plain()
        quant = {L.name: self.layer_quant(L) for L in self.layers}
        dev = torch.device(device) if device is not None else \
            self.mods[self.layers[0].branches[0].weight].weight.device
        pay = torch.as_tensor(pay)
        B = int(pay.shape[1])
        counts = {L.ir_name: [] for L in self.layers}
        vfin = {L.ir_name: [] for L in self.layers}
        for i in range(0, B, batch):
            c, v = self._int_batch(pay[:, i:i + batch].to(dev, torch.float64), quant, dev)
            for k in counts:
                counts[k].append(c[k])
                vfin[k].append(v[k])
        counts = {k: np.concatenate(v) for k, v in counts.items()}
        vfin = {k: np.concatenate(v) for k, v in vfin.items()}
        out = self.layers[-1]
        lq = quant[out.name]
        sc = _score(counts[out.ir_name], vfin[out.ir_name], lq.th_pos, lq.scale)
        return IntResult(counts, vfin, out.ir_name, sc)

    def _int_batch(self, pay: torch.Tensor, quant: dict, dev):
        spec = self.spec
        vlo, vhi = (float(v) for v in spec.membrane_range)
        T, B = pay.shape[:2]
        state, cnt = {}, {}
        regs = {}
        for L in self.layers:
            lq = quant[L.name]
            t = lambda a: torch.as_tensor(np.asarray(a, np.float64), device=dev)  # noqa: E731
            regs[L.name] = dict(th=t(lq.th_pos), thn=t(lq.th_neg), vr=t(lq.v_reset),
                                b=t(lq.bias), lm=lq.leak_mode, lk=t(lq.leak),
                                sh=t(lq.shift), reset=lq.reset, floor=lq.floor)
            state[L.name] = t(lq.v_init).expand(B, L.n).clone()
            cnt[L.name] = torch.zeros(B, L.n, dtype=torch.float64, device=dev)
        weights = {k: w.to(dev) for lq in quant.values() for k, w in lq.weights.items()}
        interp = _IntInterp(self.gm, self.mods, weights, regs, state, cnt, vlo, vhi)
        for t_ in range(T):
            interp.run(pay[t_])
        c = {L.ir_name: cnt[L.name].cpu().numpy().astype(np.int64) for L in self.layers}
        v = {L.ir_name: state[L.name].cpu().numpy().astype(np.int64) for L in self.layers}
        return c, v


def _reset(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, NEURON_MODULES):
            m.reset_state()


class _IntInterp(fx.Interpreter):
    """Runs the traced model with integer weights, sum pools and the chip's integer neuron."""

    def __init__(self, gm, mods, weights, regs, state, cnt, vlo, vhi):
        super().__init__(gm, garbage_collect_values=True)
        self.mods_, self.weights, self.regs = mods, weights, regs
        self.state, self.cnt, self.vlo, self.vhi = state, cnt, vlo, vhi

    def call_module(self, target, args, kwargs):
        m = self.mods_[target]
        x = args[0]
        if target in self.weights:
            w = self.weights[target]
            if isinstance(m, nn.Conv2d):
                return F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups)
            return F.linear(x, w)
        if type(m) is nn.AvgPool2d:
            return F.avg_pool2d(x, m.kernel_size, m.stride or m.kernel_size, m.padding, False,
                                True, divisor_override=1)
        if isinstance(m, NEURON_MODULES):
            return self._neuron(target, x)
        if isinstance(m, _PASS):
            return x
        return m(x)

    def call_function(self, target, args, kwargs):
        if target in (operator.mul, operator.imul, torch.mul):
            return next(a for a in args if isinstance(a, torch.Tensor))
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target in ("mul", "mul_"):
            return args[0]
        return super().call_method(target, args, kwargs)

    def _neuron(self, name, x):
        r = self.regs[name]
        B = x.shape[0]
        cur = x.reshape(B, -1)
        v = self.state[name]
        lm = r["lm"]
        if np.any(lm == 2):
            sel = torch.as_tensor(lm == 2, device=v.device)
            k = torch.exp2(r["sh"])
            v = torch.where(sel, v - torch.floor(v / k), v)
        if np.any(lm == 3):
            sel = torch.as_tensor(lm == 3, device=v.device)
            d = 4096.0 - r["lk"]
            v = torch.where(sel, torch.sign(v) * torch.floor(v.abs() * d / 4096.0), v)
        v = torch.clamp(v + cur + r["b"], self.vlo, self.vhi)
        s = v >= r["th"]
        if r["reset"] == "hard":
            v = torch.where(s, r["vr"].expand_as(v), v)
        elif r["reset"] == "soft":
            v = torch.where(s, v - r["th"], v)
        if r["floor"]:
            v = torch.where(v < -r["thn"], -r["thn"].expand_as(v), v)
        self.state[name] = v
        sf = s.to(torch.float64)
        self.cnt[name] += sf
        return sf.reshape(x.shape)


# ==============================================================================================
# model transforms
# ==============================================================================================
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm that directly follows a Conv2d/Linear folded
    into it (W' = W s, b' = s (b - mean) + beta, s = gamma / sqrt(var + eps), in float64, stored
    in the weights' dtype) and replaced by nn.Identity. Uses the running statistics."""
    _reset(model)
    model = copy.deepcopy(model)
    graph = _Tracer().trace(model)
    mods = dict(model.named_modules())
    for n in graph.nodes:
        if n.op != "call_module" or not isinstance(mods[n.target],
                                                   nn.modules.batchnorm._BatchNorm):
            continue
        src = n.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(mods[src.target], (nn.Conv2d, nn.Linear))
                and len(src.users) == 1):
            raise _unsupported(type(mods[n.target]).__name__, str(n.target),
                               "only BatchNorm directly after a Conv2d/Linear can be folded")
        bn, conv = mods[n.target], mods[src.target]
        with torch.no_grad():
            g = bn.weight.double() if bn.weight is not None else torch.ones(bn.num_features,
                                                                            dtype=torch.float64)
            be = bn.bias.double() if bn.bias is not None else torch.zeros_like(g)
            s = g / torch.sqrt(bn.running_var.double() + bn.eps)
            w = conv.weight.double() * s.reshape((-1,) + (1,) * (conv.weight.dim() - 1))
            b = conv.bias.double() if conv.bias is not None else torch.zeros_like(g)
            b2 = s * (b - bn.running_mean.double()) + be
            conv.weight.data = w.to(conv.weight.dtype)
            if conv.bias is None:
                conv.bias = nn.Parameter(b2.to(conv.weight.dtype))
            else:
                conv.bias.data = b2.to(conv.bias.dtype)
        _set_module(model, str(n.target), nn.Identity())
    return model


def _set_module(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def export_model(model: nn.Module, quantizer: Quantizer | None = None,
                 input_shape=None, **quant_kw) -> nn.Module:
    """A plain copy of ``model`` for the compiler: every :class:`ShiftBN` folded away.

    The conv bias becomes ``(rint(b / s) - bias_sbn) * s`` and the neuron gets per-channel
    ``v_threshold = theta * 2**shift * s`` (v_init, v_reset likewise), with ``s`` the layer's
    quantization scale from ``quantizer`` (or a Quantizer built from ``input_shape`` and
    ``quant_kw``): compiled with the same bits/per_channel/clip, the chip integrates
    ``conv_int + b_int - bias_sbn`` against ``th_pos = rint(theta * 2**shift)``. Models
    without ShiftBN come back as a deep copy.
    """
    if quantizer is None:
        if input_shape is None:
            raise FrontendError("export_model needs a quantizer or input_shape")
        quantizer = Quantizer(model, input_shape, **quant_kw)
    _reset(model)
    out = copy.deepcopy(model)
    qmods = quantizer.mods
    for L in quantizer.layers:
        sb = [br for br in L.branches if br.shiftbn is not None]
        if not sb:
            continue
        if len(L.branches) != 1:
            raise _unsupported("ShiftBN on a residual sum", L.name, "one branch per ShiftBN")
        br = L.branches[0]
        bn: ShiftBN = qmods[br.shiftbn]
        nrn = qmods[L.name]
        if nrn.neg_floor is not None:
            raise _unsupported("neg_floor after ShiftBN", L.name, "remove neg_floor")
        comp = [quantizer._composed(br)]
        lq = quantizer.layer_quant(L, comp)
        s = torch.as_tensor(lq.group_scale, dtype=torch.float64)
        C = bn.num_features
        s_c = s.expand(C) if s.numel() == 1 else s
        bias_sbn, shift = bn.integer_params(unit=s_c)
        bias_sbn, shift = bias_sbn.double(), shift.double()
        conv = out.get_submodule(br.weight)
        with torch.no_grad():
            b_int = torch.round(conv.bias.double() / s_c) if conv.bias is not None else 0.0
            nb = (b_int - bias_sbn) * s_c
            if conv.bias is None:
                conv.bias = nn.Parameter(nb.to(conv.weight.dtype))
            else:
                conv.bias.data = nb.to(conv.bias.dtype)
        onr = out.get_submodule(L.name)
        pc = (C,) + (1,) * (len(L.shape) - 1)
        f = (torch.exp2(shift) * s_c).reshape(pc)

        onr.v_threshold = _per_channel(nrn.v_threshold, f, C, pc, L).float()
        onr.v_init = _per_channel(nrn.v_init, f, C, pc, L).float()
        onr.v_reset = _per_channel(nrn.v_reset, f, C, pc, L).float()
        _set_module(out, br.shiftbn, nn.Identity())
    return out


def _per_channel(t: torch.Tensor, f: torch.Tensor, C: int, pc: tuple, L: QLayer) -> torch.Tensor:
    t = t.detach().double().cpu()
    if t.numel() == 1:
        return t.reshape(()) * f
    if t.numel() == C:
        return t.reshape(pc) * f
    if tuple(t.shape) == tuple(L.shape):
        return t * f
    raise _unsupported("ShiftBN neuron parameters", L.name, "scalar, per channel or per neuron")


def shift_stats(model: nn.Module, quantizer: Quantizer) -> dict:
    """Per ShiftBN layer: shifts and integer biases (what the chip's registers hold)."""
    res = {}
    for L in quantizer.layers:
        for br in L.branches:
            if br.shiftbn is None:
                continue
            lq = quantizer.layer_quant(L, [quantizer._composed(br)])
            bn = quantizer.mods[br.shiftbn]
            s = torch.as_tensor(lq.group_scale, dtype=torch.float64)
            b, sh = bn.integer_params(unit=s.expand(bn.num_features) if s.numel() == 1 else s)
            res[L.ir_name] = {"shift": sh.cpu().numpy().astype(int).tolist(),
                              "bias": b.cpu().numpy().astype(int).tolist()}
    return res


def check_against(quantizer: Quantizer, program) -> dict:
    """Compare the quantizer's scales and registers with a compiled Program (or its folded
    graph): returns {layer: {field: bool}} (all True when the emulation is exact)."""
    g = program.history["fold-thresholds"] if hasattr(program, "history") else program
    mine = quantizer.quantize_all()
    out = {}
    for name, lq in mine.items():
        L = g.node(name)
        r = L.regs
        out[name] = {
            "scale": bool(np.array_equal(L.scale, lq.scale)),
            "th_pos": bool(np.array_equal(r.th_pos, lq.th_pos)),
            "bias": bool(np.array_equal(r.bias, lq.bias)),
            "v_init": bool(np.array_equal(r.v_init, lq.v_init)),
            "v_reset": bool(np.array_equal(r.v_reset, lq.v_reset)),
            "leak": bool(np.array_equal(r.leak_mode, lq.leak_mode)
                         and np.array_equal(r.shift, lq.shift)
                         and np.array_equal(r.leak, lq.leak)),
            "weights": _weights_match(quantizer, name, lq, L),
        }
    return out


def _weights_match(quantizer: Quantizer, name: str, lq: LayerQuant, layer) -> bool:
    """The multiset of (source, integer weight) synapses equals the compiler's matrices."""
    L = next(x for x in quantizer.layers if x.ir_name == name)
    for br in L.branches:
        src = br.source.replace(".", "_")
        m = layer.matrix(src)
        mu = _np64(quantizer._multiplicity(br, L.shape)).astype(np.int64).reshape(-1)
        q = _np64(lq.weights[br.weight]).reshape(-1)
        keep = (q != 0) & (mu > 0)
        mine = np.bincount((q[keep] - quantizer.qmin).astype(np.int64), weights=mu[keep],
                           minlength=quantizer.qmax - quantizer.qmin + 1)
        d = np.asarray(m.data, np.int64)
        d = d[d != 0]
        theirs = np.bincount(d - quantizer.qmin, minlength=quantizer.qmax - quantizer.qmin + 1)
        if not np.array_equal(mine.astype(np.int64), theirs.astype(np.int64)):
            return False
    return True


def qat_summary(quantizer: Quantizer) -> dict:
    """Per layer: bits, scale range, fraction of zero weights, threshold register range."""
    res = {}
    for name, lq in quantizer.quantize_all().items():
        ws = [w for w in lq.weights.values()]
        z = float(np.mean(np.concatenate([(_np64(w) == 0).reshape(-1) for w in ws])))
        res[name] = {"bits": lq.bits, "scale_min": float(lq.scale.min()),
                     "scale_max": float(lq.scale.max()), "zero_weights": z,
                     "th_pos_min": int(lq.th_pos.min()), "th_pos_max": int(lq.th_pos.max())}
    return res


__all__ = ["Quantizer", "ShiftBN", "IntResult", "LayerQuant", "QLayer", "Branch", "analyze",
           "fold_batchnorm", "export_model", "check_against", "payloads", "quantize_input",
           "shift_stats", "qat_summary", "INPUT_SCALE"]
