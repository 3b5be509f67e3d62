"""Model transforms around QAT: BN folding, export with the quantizer's integers, summaries
(stage: training)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import fx, nn

from frontends.training.qat.analysis import (  # noqa: F401
    _PASS,
    INPUT_SCALE,
    SOURCE,
    _set_module,
    _Tracer,
    _unsupported,
)
from frontends.training.qat.interpreter import _reset
from frontends.training.qat.quantiser import LayerQuant, Quantizer, _np64


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


