"""The compiler-exact QAT quantizer (stage: training); see :mod:`frontends.training.qat`."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compiler.chip import PICORE64, ChipSpec
from compiler.errors import FrontendError, QuantizationError
from compiler.ir.linear import broadcast
from compiler.reference import score as _score
from frontends.native.layers import LIF
from frontends.training.qat.analysis import (  # noqa: F401
    _PASS,
    INPUT_SCALE,
    SOURCE,
    Branch,
    QLayer,
    _pool_factor,
    _set_module,
    _unsupported,
    analyze,
)
from frontends.training.qat.interpreter import _IntInterp, _reset
from frontends.training.shiftbn import ShiftBN


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
        from compiler.passes.fold_thresholds import leak_registers, round_register
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
        th_pos = np.maximum(1, round_register(name, "th_pos", thr, 0, spec.threshold_max))
        floor = nrn.neg_floor
        th_neg = (round_register(name, "th_neg", np.full(L.n, floor) / a, 0, spec.threshold_max)
                  if floor is not None else np.zeros(L.n, np.int64))
        if beta is not None:
            lm, lk, sh, _ = leak_registers(beta, self.leak, spec)
            beta_q = np.where(lm == 2, 1.0 - np.exp2(-sh.astype(np.float64)),
                              np.where(lm == 3, 1.0 - lk / float(1 << spec.mult_bits), 1.0))
        else:
            lm = lk = sh = np.zeros(L.n, np.int64)
            beta_q = None
        return LayerQuant(
            name=name, scale=a, group_scale=s_g, weights=weights, th_pos=th_pos, th_neg=th_neg,
            v_init=round_register(name, "v_init", vi / a, vlo, vhi),
            v_reset=round_register(name, "v_reset", vr / a, vlo, vhi),
            bias=round_register(name, "bias", bias / a, *spec.bias_range),
            leak_mode=lm, leak=lk, shift=sh, reset=nrn.reset, floor=floor is not None,
            beta_q=beta_q, bits=self.bits)

    def quantize_all(self) -> dict[str, LayerQuant]:
        """Integers of every population, keyed by the IR/chip layer name."""
        self._check_plain()
        return {L.ir_name: self.layer_quant(L) for L in self.layers}

    # --- QAT -> chip in one call ----------------------------------------------------------------
    def training_record(self, encoding: str = "direct", timesteps: int = 8) -> dict:
        """What this QAT run trained for (compiler/training_record.py): written into the exported
        model's metadata and the chip image's META; ``snnc compile`` takes it as defaults."""
        return {"qat": True, "bits": self.bits, "per_channel": self.per_channel,
                "clip": self.clip, "encoding": str(encoding), "timesteps": int(timesteps),
                "chip": self.spec.name}

    def export_onnx(self, path, *, encoding: str = "direct", timesteps: int = 8) -> None:
        """Write the trained model (ShiftBN folded, :func:`export_model`) as ONNX with its
        training record: ``snnc compile model.onnx -o chip.bin`` then needs no options."""
        from frontends.onnx import export_onnx
        export_onnx(export_model(self.model, self), path, input_shape=self.input_shape,
                    training=self.training_record(encoding, timesteps))

    def compile(self, output=None, *, encoding: str = "direct", timesteps: int = 8,
                calib=None, **options):
        """Compile the trained model for the chip with the QAT settings: a runnable
        :class:`compiler.Program` (``snnc.run(prog, x)``, ``prog.write('chip.bin')``; written to
        ``output`` when given). ``options``: further ``compile_model`` options (chips, seed,
        ...); bits/per_channel/clip/encoding/timesteps that contradict the QAT run raise."""
        from compiler import compile_model, training_record
        from frontends.native.convert import to_graph

        rec = self.training_record(encoding, timesteps)
        graph = to_graph(export_model(self.model, self), self.input_shape)
        graph.attrs["training"] = rec
        opts = training_record.resolve(rec, options, set(options), where="this QAT model")
        prog = compile_model(graph, self.spec, calib=calib,
                             source={"path": f"<{type(self.model).__name__} (QAT)>"}, **opts)
        if output is not None:
            prog.write(output)
        return prog

    def _check_plain(self) -> None:
        for L in self.layers:
            for br in L.branches:
                if br.shiftbn is not None:
                    raise QuantizationError(
                        f"layer '{L.name}' has ShiftBN '{br.shiftbn}': the compiler's integers "
                        "are those of the exported model",
                        "use frontends.training.qat.export_model(model, quantizer) and quantize "
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

        Equals ``runtime.engines.tick.run(compile_model(model, ...), x, timesteps=T,
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
