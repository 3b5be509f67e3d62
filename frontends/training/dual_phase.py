"""Dual-phase ANN -> SNN conversion, phase II on the chip's own arithmetic (algorithms.md §6.2).

Stage: training. Wang, Lian, ..., Tang (arXiv 2205.07473) split the conversion error into
*clipping* (activations above the threshold theta are lost), *quantization* (T steps represent
only T+1 rates) and *residual membrane* error (the charge left in V after T steps is not
emitted, and differs per neuron). Phase I (QCFS / QCS-trained ANN, Clip bound -> threshold,
v_init = theta/2: :mod:`frontends.onnx.ann`) removes most of the first two; phase II removes
what is left, per neuron, on the SNN itself:

    (a) calibrate   for each hidden layer l in order (the chip's integer model of the current
                    network, ``compiler.reference.run_int``, on the calibration images):
                        v_init_l += (mean_batch ANN_l - mean_batch theta_l * count_l / T) * T
                    ANN_l = the ANN activation clipped at theta_l; in chip units the correction
                    is rint(delta / s_l) (s_l = the layer's quantization scale) and it lands in
                    the neuron's ``v_init`` register (the native model's v_init is set to
                    v_int * s_l, which the compiler quantizes back to exactly v_int).
    (b) fine-tune   layer by layer (hidden layers, then the readout), the synapse weights/bias
                    and v_init of layer l with the earlier layers frozen, against the ANN:
                        KL( softmax(ANN_l) || softmax(theta_l * count_l / T) )   per sample,
                    over the layer's neurons (the paper's surrogate; the readout uses the ANN
                    logits and V/T). The forward runs through the compiler-exact QAT quantizer
                    (``frontends.training.qat.Quantizer.quantized``: integer weights, rounded
                    thresholds and v_init, straight-through to the float masters; v_init is a
                    straight-through parameter too), so the chip runs what was tuned.
    (c) calibrate   (a) again.

Every checkpoint (phase I, a, b, c) is compiled and evaluated on the calibration set with the
integer reference (bit-exact with the chip runtime); the best by calibration accuracy is kept
(ties go to the later checkpoint), so phase II never lowers calibration accuracy.

The SNN is built as a native model (:func:`build_snn`): each ANN activation becomes an IF
(soft reset, threshold theta, v_init per neuron) emitting spikes of value 1, and theta is
folded into the next synapse layer's weights; the final Gemm/Conv gets a non-spiking readout
IF (infinite threshold, no reset: its membrane is the integrated input). Chain (VGG-style)
networks only: residual Adds raise FrontendError.

Deviations from the paper's code (documented in docs/conversion.md): IF neurons with the
project's atan surrogate instead of the tanh NoisySpike; fixed epochs with cosine LR (no early
stopping); the checkpoint choice is by calibration-set accuracy (labels when the calibration
data has them, otherwise agreement with the ANN's predictions).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compiler.chip import PICORE64, ChipSpec
from compiler.errors import FrontendError
from compiler.ir import (
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Input,
    Linear,
    Output,
    SumPool2d,
)
from compiler.ir.linear import broadcast
from frontends.native.functional import reset as reset_model
from frontends.native.layers import IF
from frontends.onnx.ann import (
    Activation,
    AnnModel,
    activation_thresholds,
    ann_shapes,
    run_ann,
    to_snn,
)

log = logging.getLogger(__name__)

STAGES = ("phase-1", "calibrated", "fine-tuned", "recalibrated")
LOSSES = ("kl", "mse")
READOUT = "readout"


# ==============================================================================================
# the native SNN of a converted ANN
# ==============================================================================================
@dataclass
class SnnLayer:
    """One population of the native SNN: its IF module, synapse module and ANN activation."""

    module: str                      # IF module name in the Sequential
    synapse: str                     # the Conv2d/Linear feeding it
    activation: str | None           # the ANN Activation node (None: the readout)
    index: int                       # position of the IF module in the Sequential
    theta: np.ndarray | None         # threshold (scalar or per channel/neuron); None: readout
    shape: tuple = ()


def _safe(name: str, used: set) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "m"
    if base[0].isdigit():
        base = "m_" + base
    out, k = base, 1
    while out in used:
        out, k = f"{base}_{k}", k + 1
    used.add(out)
    return out


def _full(a, shape: tuple, what: str, where: str) -> np.ndarray:
    """``a`` (scalar, per channel, per neuron) as a per-element array shaped ``shape``."""
    return broadcast(np.asarray(a, np.float64), shape, what, where).reshape(shape)


def _channel_values(full: np.ndarray, where: str) -> np.ndarray:
    """Per-channel values of a per-element array shaped [C, ...] that is constant per channel."""
    c = full.reshape(full.shape[0], -1)
    if not np.all(c == c[:, :1]):
        raise FrontendError(f"dual-phase: node '{where}' receives spikes whose threshold "
                                 "varies within a channel",
                                 "use per-layer or per-channel thresholds")
    return c[:, 0]


def build_snn(ann: AnnModel, thresholds: dict[str, np.ndarray],
              v_inits: dict[str, np.ndarray] | None = None, surrogate: str = "atan"
              ) -> tuple[nn.Sequential, list[SnnLayer]]:
    """The native IF model of a chain ANN (see the module docstring) and its populations.

    BatchNorm is folded into the synapse layer in front of it; AvgPool must be
    non-overlapping (the QAT path refuses others). Raises FrontendError otherwise.
    """
    g = ann.graph
    shapes = ann_shapes(g)
    order = g.topo_order()
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    pops: list[SnnLayer] = []
    used: set = {READOUT}
    pending = None                   # theta per element of the current tensor (spike value)
    last_syn: str | None = None
    syn_open = False                 # a synapse module waits for its neuron
    for name in order:
        node = g.node(name)
        ins = g.inputs(name)
        if len(ins) > 1:
            raise FrontendError(f"dual-phase: node '{name}' ({node.kind}) has "
                                     f"{len(ins)} inputs",
                                     "phase II fine-tuning supports chain (VGG-style) networks; "
                                     "use --convert qcfs/relu for residual networks")
        if isinstance(node, Input):
            continue
        if isinstance(node, Output):
            if not syn_open:
                raise FrontendError(f"dual-phase: the ANN output '{name}' is not fed by "
                                         "a Conv/Gemm", "end the ANN with a Linear layer "
                                         "(logits)")
            m = IF(v_threshold=1.0, reset="none", v_init=0.0, surrogate=surrogate)
            m.v_threshold = torch.tensor(math.inf)
            mods[READOUT] = m
            pops.append(SnnLayer(READOUT, last_syn, None, len(mods) - 1, None,
                                 tuple(shapes[ins[0]])))
            syn_open = False
            continue
        if isinstance(node, Conv2d):
            w = np.array(node.weight, np.float64)
            if pending is not None:
                per_in = _channel_values(pending, name)          # [C_in]
                O, Ig = w.shape[:2]
                grp = node.groups
                idx = (np.arange(O)[:, None] // (O // grp)) * Ig + np.arange(Ig)[None, :]
                w = w * per_in[idx][:, :, None, None]
            m = nn.Conv2d(w.shape[1] * node.groups, w.shape[0], tuple(w.shape[2:]),
                          node.stride, node.padding, node.dilation, node.groups, bias=True)
            b = np.array(node.bias, np.float64) if node.bias is not None else np.zeros(len(w))
        elif isinstance(node, (Affine, Linear)):
            w = np.array(node.weight, np.float64)
            if pending is not None:
                w = w * pending.reshape(-1)[None, :]
            m = nn.Linear(w.shape[1], w.shape[0], bias=True)
            b = (np.array(node.bias, np.float64) if isinstance(node, Affine)
                 else np.zeros(len(w)))
        elif isinstance(node, BatchNorm):
            if not syn_open:
                raise FrontendError(f"dual-phase: BatchNorm '{name}' does not follow a "
                                         "Conv/Gemm", "fold it into the ANN before export")
            syn = mods[last_syn]
            s = np.asarray(node.gamma, np.float64) / np.sqrt(np.asarray(node.var, np.float64)
                                                             + node.eps)
            sh = np.asarray(node.beta, np.float64) - np.asarray(node.mean, np.float64) * s
            c = syn.weight.shape[0]
            s, sh = broadcast(s, (c,), "scale", name), broadcast(sh, (c,), "shift", name)
            with torch.no_grad():
                ws = torch.as_tensor(s, dtype=syn.weight.dtype)
                syn.weight.mul_(ws.reshape((-1,) + (1,) * (syn.weight.dim() - 1)))
                syn.bias.mul_(ws).add_(torch.as_tensor(sh, dtype=syn.bias.dtype))
            continue
        elif isinstance(node, Activation):
            if not syn_open:
                raise FrontendError(f"dual-phase: activation '{name}' does not follow a "
                                         "Conv/Gemm", "put a Conv/Gemm in front of every ReLU")
            th = np.asarray(thresholds[name], np.float64)
            shp = tuple(shapes[name])
            full = _full(th, shp, "threshold", name)
            v0 = (v_inits or {}).get(name)
            v0 = full / 2.0 if v0 is None else _full(v0, shp, "v_init", name)
            th_mod = th.reshape((-1,) + (1,) * (len(shp) - 1)) if th.ndim and len(shp) > 1 \
                else th
            m = IF(v_threshold=torch.as_tensor(th_mod), reset="soft",
                   v_init=torch.as_tensor(v0), surrogate=surrogate)
            key = _safe("if_" + name, used)
            mods[key] = m
            pops.append(SnnLayer(key, last_syn, name, len(mods) - 1, th, shp))
            pending = full
            syn_open = False
            continue
        elif isinstance(node, AvgPool2d) and not isinstance(node, SumPool2d):
            if syn_open:
                raise FrontendError(f"dual-phase: AvgPool '{name}' between a Conv and its "
                                         "activation", "pool after the activation")
            mods[_safe(name, used)] = nn.AvgPool2d(node.kernel_size, node.stride, node.padding)
            if pending is not None:
                per = _channel_values(pending, name)
                pending = _full(per.reshape((-1,) + (1,) * (len(shapes[name]) - 1)),
                                tuple(shapes[name]), "threshold", name)
            continue
        elif isinstance(node, Flatten):
            if syn_open:
                raise FrontendError(f"dual-phase: Flatten '{name}' between a synapse layer "
                                         "and its activation", "flatten after the activation")
            mods[_safe(name, used)] = nn.Flatten(1)
            if pending is not None:
                pending = pending.reshape(-1)
            continue
        else:
            raise FrontendError(f"dual-phase: ANN node '{name}' ({node.kind}) is not "
                                     "supported by phase II fine-tuning",
                                     "supported: Conv, Gemm/MatMul, BatchNorm, ReLU/Clip, "
                                     "non-overlapping AvgPool, Flatten (chain networks)")
        # a synapse layer (Conv2d / Linear)
        if syn_open:
            raise FrontendError(f"dual-phase: two synapse layers in a row at '{name}'",
                                     "put an activation between them")
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(w, dtype=m.weight.dtype))
            m.bias.copy_(torch.as_tensor(b, dtype=m.bias.dtype))
        key = _safe(name, used)
        mods[key] = m
        last_syn, syn_open, pending = key, True, None
    if not pops or pops[-1].module != READOUT:
        raise FrontendError("dual-phase: the ANN has no Conv/Gemm readout",
                                 "end the ANN with a Linear layer producing the logits")
    return nn.Sequential(mods), pops


# ==============================================================================================
# evaluation on the chip's arithmetic
# ==============================================================================================
@dataclass
class Options:
    """Quantization options shared by tuning and the final compile (they must agree)."""

    spec: ChipSpec = PICORE64
    bits: int = 8
    per_channel: bool = False
    clip: str = "max"


def compile_snn(model: nn.Sequential, input_shape, timesteps: int, opts: Options,
                stop_after: str | None = "fold-thresholds"):
    """to_graph + compile_model (up to the integer registers by default)."""
    from compiler import compile_model
    from frontends.native.convert import to_graph
    graph = to_graph(model, input_shape)
    return compile_model(graph, opts.spec, bits=opts.bits, per_channel=opts.per_channel,
                         clip=opts.clip, timesteps=timesteps, stop_after=stop_after)


def run_chip_int(prog, x: np.ndarray, timesteps: int, batch: int = 256):
    """The integer reference (== chip runtime) on images x: (counts per layer, scores)."""
    from compiler import reference
    from compiler.passes.calibrate import direct_payloads
    counts: dict[str, list] = {}
    scores = []
    scale = prog.graph.attrs.get("input_scale", 255.0)
    for i in range(0, len(x), batch):
        p = direct_payloads(x[i:i + batch], timesteps, scale).astype(np.int64)
        r = reference.run_int(prog.graph, p, membrane_bits=prog.spec.membrane_bits)
        for k, v in r.counts.items():
            counts.setdefault(k, []).append(v)
        scores.append(r.scores)
    return {k: np.concatenate(v) for k, v in counts.items()}, np.concatenate(scores)


def _ir(name: str) -> str:
    return name.replace(".", "_")


# ==============================================================================================
# phase II
# ==============================================================================================
def calibrate(model: nn.Sequential, pops: list[SnnLayer], targets: dict[str, np.ndarray],
              x: np.ndarray, input_shape, timesteps: int, opts: Options) -> dict:
    """Phase II (a): per-neuron v_init calibration on the integer model, layer by layer.

    For each hidden population in order: compile, run the integer reference on ``x``,
    ``delta = (mean_batch target - mean_batch theta * count / T) * T`` (float units),
    ``v_init_int += rint(delta / s)``; the native v_init becomes ``v_init_int * s``.
    Returns per layer the integer correction (int64 per neuron) and the mean |rate error|
    before the correction.
    """
    T = int(timesteps)
    out = {}
    mods = dict(model.named_modules())
    for p in pops:
        if p.activation is None:
            continue
        prog = compile_snn(model, input_shape, T, opts)
        counts, _ = run_chip_int(prog, x, T)
        L = prog.graph.node(_ir(p.module))
        th = broadcast(np.asarray(p.theta, np.float64), p.shape, "threshold", p.module)
        th = th.reshape(-1)
        rate = counts[_ir(p.module)].mean(axis=0) * th / T
        ann_mean = targets[p.activation].reshape(len(x), -1).mean(axis=0)
        delta = (ann_mean - rate) * T
        scale = np.asarray(L.scale, np.float64)
        d_int = np.rint(delta / scale).astype(np.int64)
        vlo, vhi = opts.spec.membrane_range
        v_new = np.clip(np.asarray(L.regs.v_init, np.int64) + d_int, vlo, vhi)
        nrn = mods[p.module]
        nrn.v_init = torch.as_tensor((v_new * scale).reshape(p.shape), dtype=torch.float64
                                     ).to(nrn.v_init.dtype)
        out[p.module] = {"delta_int": d_int, "v_init_int": v_new,
                         "rate_error": float(np.mean(np.abs(ann_mean - rate)))}
    return out


class _VinitSTE:
    """v_init as a trainable float master with a straight-through quantized forward."""

    def __init__(self, nrn: IF):
        self.nrn = nrn
        self.p = nn.Parameter(nrn.v_init.detach().clone().to(torch.float32))

    def before(self) -> None:               # outside quantized(): the master value
        self.nrn.v_init = self.p.detach().clone()

    def inside(self) -> None:               # inside quantized(): quantized value, master grad
        q = self.nrn.v_init.detach()
        self.nrn.v_init = q + (self.p - self.p.detach())

    def finish(self) -> None:
        self.nrn.v_init = self.p.detach().clone()


def _loss(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    o, t = out.reshape(len(out), -1), target.reshape(len(target), -1)
    if kind == "kl":
        return F.kl_div(F.log_softmax(o, 1), F.softmax(t, 1), reduction="batchmean")
    return F.mse_loss(o, t)


def finetune(model: nn.Sequential, pops: list[SnnLayer], targets: dict[str, np.ndarray],
             logits: np.ndarray, x: np.ndarray, input_shape, timesteps: int, opts: Options,
             epochs: int = 2, batch: int = 64, lr: float = 1e-3, lr_vinit: float = 1e-2,
             loss: str = "kl", seed: int = 0) -> dict:
    """Phase II (b): layer-by-layer fine-tuning through the compiler-exact QAT quantizer.

    Returns per layer the mean loss of the first and the last epoch.
    """
    from frontends.training.qat import Quantizer, quantize_input
    if loss not in LOSSES:
        raise FrontendError(f"unknown phase II loss '{loss}'", f"use one of {LOSSES}")
    T = int(timesteps)
    q = Quantizer(model, input_shape, opts.spec, opts.bits, opts.per_channel, opts.clip)
    mods = dict(model.named_modules())
    gen = torch.Generator().manual_seed(int(seed))
    xt = torch.as_tensor(np.asarray(x, np.float32))
    hist = {}
    for p in pops:
        syn, nrn = mods[p.synapse], mods[p.module]
        ste = _VinitSTE(nrn)
        params = [{"params": [syn.weight, syn.bias], "lr": lr},
                  {"params": [ste.p], "lr": lr_vinit}]
        opt = torch.optim.Adam(params)
        steps = max(1, epochs * math.ceil(len(x) / batch))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        sub = model[:p.index + 1]
        if p.activation is None:
            tgt_all = torch.as_tensor(logits.reshape(len(x), -1), dtype=torch.float32)
            theta = None
        else:
            tgt_all = torch.as_tensor(targets[p.activation], dtype=torch.float32)
            theta = nrn.v_threshold.detach().clone()
        for m in model.parameters():
            m.requires_grad_(False)
        syn.weight.requires_grad_(True)
        syn.bias.requires_grad_(True)
        losses = []
        for _ep in range(int(epochs)):
            perm = torch.randperm(len(x), generator=gen)
            tot, nb = 0.0, 0
            for i in range(0, len(x), batch):
                idx = perm[i:i + batch]
                xb = quantize_input(xt[idx])
                ste.before()
                opt.zero_grad()
                with q.quantized():
                    ste.inside()
                    reset_model(model)
                    acc = 0.0
                    for _ in range(T):
                        acc = acc + sub(xb)
                    if theta is None:
                        out = nrn.v / T
                    else:
                        out = acc * theta.to(acc) / T
                    lo = _loss(out, tgt_all[idx], loss)
                    lo.backward()
                opt.step()
                sched.step()
                tot, nb = tot + float(lo.detach()), nb + 1
            losses.append(tot / max(nb, 1))
        ste.finish()
        reset_model(model)
        for m in model.parameters():
            m.requires_grad_(True)
        hist[p.module] = {"loss_first": losses[0] if losses else None,
                          "loss_last": losses[-1] if losses else None}
    return hist


@dataclass
class DualPhaseResult:
    """What :func:`dual_phase` did: the chosen native model, its graph and every checkpoint."""

    model: nn.Sequential
    layers: list[SnnLayer]
    thresholds: dict[str, np.ndarray]
    timesteps: int
    options: Options
    input_shape: tuple
    history: list[dict] = field(default_factory=list)
    best: str = "phase-1"
    label_source: str = "labels"

    @property
    def graph(self):
        """The chosen SNN as an IR graph (stage 'imported'); compile it with ``options``."""
        from frontends.native.convert import to_graph
        g = to_graph(self.model, self.input_shape)
        g.attrs["conversion"] = {"method": "dual-phase", "timesteps": self.timesteps,
                                 "phase2_best": self.best,
                                 "bits": self.options.bits,
                                 "per_channel": self.options.per_channel,
                                 "clip": self.options.clip}
        return g

    def summary(self) -> dict:
        return {"timesteps": self.timesteps, "best": self.best, "label_source": self.label_source,
                "checkpoints": [{k: v for k, v in h.items() if k != "state"}
                                for h in self.history]}


def dual_phase(ann: AnnModel, calib: np.ndarray, labels: np.ndarray | None = None, *,
               timesteps: int = 4, epochs: int = 2, threshold: str = "p99.9",
               per_channel_threshold: bool = False, spec: ChipSpec = PICORE64,
               bits: int | str = 8, per_channel: bool = False, clip: str = "max",
               batch: int = 64, lr: float = 1e-3, lr_vinit: float = 1e-2, loss: str = "kl",
               seed: int = 0, progress=None) -> DualPhaseResult:
    """Dual-phase conversion of an imported ANN for the chip at ``timesteps`` steps.

    Args:
        calib: calibration images [N, C, H, W] in [0, 1] (thresholds, targets, tuning, choice).
        labels: their labels; without them the checkpoint choice uses agreement with the ANN.
        epochs: fine-tuning epochs per layer (0: calibration only).
        threshold, per_channel_threshold: as :func:`frontends.onnx.ann.convert` (Clip bounds,
            i.e. QCFS lambdas, win).
        bits, per_channel, clip, spec: the compile options; compile the result's graph with the
            same ones (the CLI does) so the chip gets exactly the tuned integers.
    Raises:
        FrontendError with what and how to fix.
    """
    if calib is None or len(calib) == 0:
        raise FrontendError("dual-phase conversion needs calibration images",
                            "pass --calib digits|FILE.npz")
    if bits == "auto" or int(bits) not in spec.weight_widths:
        raise FrontendError(f"dual-phase: bits={bits!r} is not a weight width of chip "
                            f"'{spec.name}'",
                            f"phase II tunes one fixed width: use --bits one of "
                            f"{list(spec.weight_widths)}")
    if int(timesteps) < 1 or int(epochs) < 0:
        raise FrontendError(f"dual-phase: need timesteps >= 1 and epochs >= 0, got "
                            f"{timesteps}, {epochs}")
    say = progress or (lambda s: log.info(s))
    torch.manual_seed(int(seed))
    x = np.asarray(calib, np.float32)
    T = int(timesteps)
    opts = Options(spec, int(bits), bool(per_channel), clip)
    shape = tuple(int(s) for s in ann.input_shape)
    th = activation_thresholds(ann, x, threshold, per_channel_threshold)
    logits, acts = run_ann(ann.graph, x, record=True)
    logits = logits.reshape(len(x), -1)
    _, targets = run_ann(ann.graph, x, clip=th, record=True)
    ann_pred = np.argmax(logits, 1)
    y = np.asarray(labels) if labels is not None else ann_pred
    label_source = "labels" if labels is not None else "ann-predictions"
    with torch.no_grad():
        model, pops = build_snn(ann, th)
    model = model.to(torch.float32)
    history: list[dict] = []

    def checkpoint(stage: str, extra: dict | None = None) -> None:
        prog = compile_snn(model, shape, T, opts)
        _, sc = run_chip_int(prog, x, T)
        pred = np.argmax(sc, 1)
        h = {"stage": stage, "calib_accuracy": float(np.mean(pred == y)),
             "ann_agreement": float(np.mean(pred == ann_pred)),
             "state": copy.deepcopy(model.state_dict())}
        h.update(extra or {})
        history.append(h)
        say(f"dual-phase T={T}: {stage}: calibration accuracy {100 * h['calib_accuracy']:.2f}%")

    def rate_errors(cal: dict) -> dict:
        return {k: v["rate_error"] for k, v in cal.items()}

    checkpoint("phase-1")
    cal = calibrate(model, pops, targets, x, shape, T, opts)
    checkpoint("calibrated", {"rate_error_before": rate_errors(cal)})
    if epochs > 0:
        ft = finetune(model, pops, targets, logits, x, shape, T, opts, epochs=epochs,
                      batch=batch, lr=lr, lr_vinit=lr_vinit, loss=loss, seed=seed)
        checkpoint("fine-tuned", {"loss": ft})
        cal = calibrate(model, pops, targets, x, shape, T, opts)
        checkpoint("recalibrated", {"rate_error_before": rate_errors(cal)})
    best = max(range(len(history)), key=lambda i: (history[i]["calib_accuracy"], i))
    model.load_state_dict(history[best]["state"])
    reset_model(model)
    return DualPhaseResult(model, pops, th, T, opts, shape, history, history[best]["stage"],
                           label_source)


# ==============================================================================================
# conversion methods and the per-method report
# ==============================================================================================
METHODS = ("relu", "qcfs", "dual-phase")


def convert_method(ann: AnnModel, calib: np.ndarray, method: str, timesteps: int,
                   labels: np.ndarray | None = None, *, threshold: str = "p99.9",
                   per_channel_threshold: bool = False, spec: ChipSpec = PICORE64,
                   bits: int | str = 8, per_channel: bool = False, clip: str = "max",
                   epochs: int = 2, seed: int = 0, progress=None, **tune):
    """One conversion method -> (SNN graph at stage 'imported', info dict).

    relu        classic rate conversion: theta = the ``threshold`` percentile of the
                calibration activations (Clip bounds ignored), v_init = 0, soft reset
    qcfs        phase I: theta = the Clip bound (QCFS lambda; the percentile where the ANN
                has plain ReLU), v_init = theta/2, soft reset
    dual-phase  qcfs + phase II (:func:`dual_phase`) at ``timesteps`` for the given compile
                options (compile the graph with the same spec/bits/per_channel/clip)
    """
    if method not in METHODS:
        raise FrontendError(f"unknown conversion method '{method}'",
                            f"use one of {', '.join(METHODS)}")
    if calib is None or len(calib) == 0:
        raise FrontendError(f"conversion method '{method}' needs calibration images",
                            "pass --calib digits|FILE.npz")
    x = np.asarray(calib, np.float32)
    if method == "dual-phase":
        r = dual_phase(ann, x, labels, timesteps=timesteps, epochs=epochs, threshold=threshold,
                       per_channel_threshold=per_channel_threshold, spec=spec, bits=bits,
                       per_channel=per_channel, clip=clip, seed=seed, progress=progress, **tune)
        return r.graph, dict(r.summary(), method=method)
    relu = method == "relu"
    th = activation_thresholds(ann, x, threshold, per_channel_threshold, use_clip=not relu)
    g = to_snn(ann, th, "zero" if relu else "half")
    g.attrs["conversion"] = {"method": method, "threshold": "percentile " + threshold if relu
                             else "clip bound or " + threshold, "notes": list(ann.notes)}
    return g, {"method": method,
               "thresholds": {k: np.asarray(v).tolist() for k, v in th.items()}}


def methods_report(ann: AnnModel, calib: np.ndarray, x: np.ndarray, y: np.ndarray,
                   methods=METHODS, timesteps=(1, 2, 4, 8, 16, 32, 64), *,
                   calib_labels: np.ndarray | None = None, spec: ChipSpec = PICORE64,
                   bits: int | str = 8, per_channel: bool = False, clip: str = "max",
                   threshold: str = "p99.9", per_channel_threshold: bool = False,
                   epochs: int = 2, seed: int = 0, run_chip=None, progress=None) -> dict:
    """Test accuracy of the ANN and of each conversion method at each T on the chip.

    Every (method, T) is converted (dual-phase: phase II at that T), compiled and run with the
    integer reference (``compiler.reference.run_int``, the chip's arithmetic). With
    ``run_chip(program, payloads [T, N, n_in] uint8) -> predictions`` (the CLI passes the
    cycle-level runtime; frontends never import it) the program is compiled completely and
    also run on the chip; ``runtime_bit_exact`` says whether its predictions equal the
    reference's.
    """
    from compiler import compile_model
    from compiler.passes.calibrate import direct_payloads
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise FrontendError(f"unknown conversion method '{m}'",
                                f"use a comma-separated subset of {','.join(METHODS)}")
    logits = run_ann(ann.graph, x).reshape(len(x), -1)
    ann_acc = float(np.mean(np.argmax(logits, 1) == y))
    rows = []
    for m in methods:
        for T in timesteps:
            T = int(T)
            g, info = convert_method(ann, calib, m, T, calib_labels, threshold=threshold,
                                     per_channel_threshold=per_channel_threshold, spec=spec,
                                     bits=bits, per_channel=per_channel, clip=clip,
                                     epochs=epochs, seed=seed, progress=progress)
            prog = compile_model(g, spec, bits=bits, per_channel=per_channel, clip=clip,
                                 timesteps=T,
                                 stop_after=None if run_chip else "fold-thresholds")
            _, sc = run_chip_int(prog, x, T)
            pred = np.argmax(sc, 1)
            row = {"method": m, "timesteps": T, "accuracy": float(np.mean(pred == y))}
            if m == "dual-phase":
                row["phase2"] = {k: info[k] for k in ("best", "label_source", "checkpoints")}
            if run_chip is not None:
                p = direct_payloads(x, T, prog.graph.attrs.get("input_scale", 255.0))
                rp = np.asarray(run_chip(prog, p.astype(np.uint8)))
                row["runtime_accuracy"] = float(np.mean(rp == y))
                row["runtime_bit_exact"] = bool(np.array_equal(rp, pred))
            rows.append(row)
            if progress:
                progress(f"{m} T={T}: {100 * row['accuracy']:.2f}%")
    return {"model": ann.source, "ann_accuracy": ann_acc, "n": int(len(y)), "bits": bits,
            "methods": methods, "timesteps": [int(t) for t in timesteps], "epochs": int(epochs),
            "rows": rows, "notes": list(ann.notes)}


def plot_methods(res: dict, path) -> None:
    """Accuracy vs T per method (dotted: the ANN) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    Ts = res["timesteps"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m in res["methods"]:
        acc = [next(r["accuracy"] for r in res["rows"] if r["method"] == m
                    and r["timesteps"] == T) for T in Ts]
        ax.plot(Ts, [100 * a for a in acc], marker="o", label=m)
    ax.axhline(100 * res["ann_accuracy"], color="k", ls=":", lw=1, label="ANN")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(t) for t in Ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy on the chip (%)")
    ax.set_title(f"{res['model']}: conversion methods")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ==============================================================================================
# error decomposition (clipping, quantization, residual membrane)
# ==============================================================================================
@torch.no_grad()
def rate_model_accuracy(model: nn.Sequential, pops: list[SnnLayer], x: np.ndarray,
                        y: np.ndarray, levels: int | None = None, batch: int = 256) -> float:
    """Accuracy of the native model run as an ANN: each IF replaced by its rate function.

    levels None: the clipped ANN, clip(z / theta, 0, 1) (spike units). levels L: the quantized
    clipped ANN, clip(floor(z L / theta + 1/2), 0, L) / L -- what an SNN with v_init = theta/2
    emits for constant input at T = L, i.e. without residual membrane error.
    """
    acts = {p.index: p for p in pops if p.activation is not None}
    m64 = copy.deepcopy(model).double()
    preds = []
    xt = torch.as_tensor(np.asarray(x, np.float64))
    for i in range(0, len(x), batch):
        h = xt[i:i + batch]
        for j, m in enumerate(m64):
            if isinstance(m, IF):
                if j not in acts:
                    break                    # the readout: h holds the logits
                z = h / m.v_threshold
                h = torch.clamp(z, 0, 1) if levels is None else \
                    torch.clamp(torch.floor(z * levels + 0.5), 0, levels) / levels
            else:
                h = m(h)
        preds.append(torch.argmax(h.reshape(len(h), -1), 1).numpy())
    return float(np.mean(np.concatenate(preds) == np.asarray(y)))


@torch.no_grad()
def float_snn_accuracy(model: nn.Sequential, x: np.ndarray, y: np.ndarray, timesteps: int,
                       batch: int = 256) -> float:
    """Accuracy of the native SNN in float64 (no weight quantization) at T steps."""
    from frontends.training.qat import quantize_input
    m = copy.deepcopy(model).double()
    readout = [k for k in m if isinstance(k, IF)][-1]
    preds = []
    xt = torch.as_tensor(np.asarray(x, np.float64))
    for i in range(0, len(x), batch):
        xb = quantize_input(xt[i:i + batch])
        reset_model(m)
        for _ in range(int(timesteps)):
            m(xb)
        preds.append(torch.argmax(readout.v.reshape(len(xb), -1), 1).numpy())
    return float(np.mean(np.concatenate(preds) == np.asarray(y)))


__all__ = ["METHODS", "DualPhaseResult", "Options", "SnnLayer", "build_snn", "calibrate",
           "compile_snn", "convert_method", "dual_phase", "finetune", "float_snn_accuracy",
           "methods_report", "plot_methods", "rate_model_accuracy", "run_chip_int"]
