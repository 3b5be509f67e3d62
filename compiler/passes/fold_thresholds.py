"""fold_thresholds: float neuron parameters -> integer registers in each layer's weight units.

Graph in: quantized. Graph out: folded (every Layer has ``regs``). With a = scale per neuron
(algorithms.md §7.3; dividing the neuron equation by a > 0 leaves the spike train unchanged):
    th_pos = max(1, round(v_threshold / a))      (infinite threshold -> the register maximum)
    bias   = round(b / a)       v_init = round(v_init / a)     v_reset = round(v_reset / a)
    th_neg = round(neg_floor / a) with neg_mode SATURATE, else neg_mode NONE
    leak: IF -> NONE; LIF with beta = 1 - 2**-k (k = 1..15) -> SHIFT k (exact);
          other beta -> MULT d = round(4096 * (1 - beta)) (|error| <= 2**-13), or SHIFT with the
          nearest k when ``leak='shift'``. The leak error is recorded on the layer.
Values outside a register raise QuantizationError naming the layer, register and limit.
"""

from __future__ import annotations

import numpy as np

from compiler.chip import ChipSpec
from compiler.errors import QuantizationError
from compiler.ir.graph import Graph
from compiler.ir.nodes import LIF, RESET_CODE, Layer, NeuronRegs


def leak_registers(beta: np.ndarray, mode: str, spec: ChipSpec):
    """The chip's leak registers for per-neuron decays ``beta`` (the compiler's rule, shared with
    QAT): returns (leak_mode, leak, shift, beta_q) as int64/float arrays; see docs/passes.md."""
    n = beta.size
    lm, leak, shift = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    beta_q = np.ones(n)
    kmax = (1 << spec.shift_bits) - 1
    dmax = 1 << spec.mult_bits
    with np.errstate(divide="ignore"):
        k_exact = -np.log2(1.0 - beta)
    for i in range(n):
        b = float(beta[i])
        if b >= 1.0:
            continue
        if b < 0:
            raise QuantizationError(f"LIF beta {b} < 0 cannot be realised")
        k = k_exact[i]
        is_pow = np.isfinite(k) and abs(k - round(k)) < 1e-12 and 1 <= round(k) <= kmax
        if is_pow or mode == "shift":
            kk = int(np.clip(round(k) if np.isfinite(k) else kmax, 1, kmax))
            lm[i], shift[i], beta_q[i] = 2, kk, 1.0 - 2.0 ** -kk
        else:
            d = int(np.clip(round(dmax * (1.0 - b)), 0, dmax - 1))
            lm[i], leak[i], beta_q[i] = 3, d, 1.0 - d / dmax
    err = float(np.max(np.abs(beta_q - beta))) if n else 0.0
    return lm, leak, shift, err


def round_register(name: str, reg: str, v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``rint(v)`` as int64, refused with a QuantizationError naming layer ``name`` and register
    ``reg`` when outside [lo, hi] (the compiler's rounding rule, shared with QAT)."""
    r = np.rint(v)
    bad = (r < lo) | (r > hi)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise QuantizationError(
            f"layer '{name}': register {reg} of neuron {i} needs {r[i]:.0f}, outside [{lo}, {hi}]",
            "use more weight bits, clip weights by percentile (--clip p99.9), or rescale the "
            "model's thresholds")
    return r.astype(np.int64)


def fold_thresholds(graph: Graph, spec: ChipSpec, leak: str = "auto", **_) -> Graph:
    out = graph.derive()
    for name in graph.topo_order():
        node = graph.node(name)
        if isinstance(node, Layer):
            a = node.scale
            nrn = node.neuron
            vlo, vhi = spec.membrane_range
            th = np.where(np.isfinite(nrn.v_threshold), nrn.v_threshold / a, spec.threshold_max)
            th_pos = np.maximum(1, round_register(name, "th_pos", th, 0, spec.threshold_max))
            floor = nrn.neg_floor
            th_neg = (round_register(name, "th_neg", np.full(node.n, floor) / a, 0,
                                     spec.threshold_max)
                      if floor is not None else np.zeros(node.n, np.int64))
            if isinstance(nrn, LIF):
                lm, lk, sh, err = leak_registers(nrn.beta, leak, spec)
            else:
                lm = lk = sh = np.zeros(node.n, np.int64)
                err = 0.0
            regs = NeuronRegs(
                th_pos=th_pos, th_neg=th_neg,
                v_reset=round_register(name, "v_reset", nrn.v_reset / a, vlo, vhi),
                v_init=round_register(name, "v_init", nrn.v_init / a, vlo, vhi),
                bias=round_register(name, "bias", node.bias / a, *spec.bias_range),
                leak=lk, shift=sh,
                reset_mode=np.full(node.n, RESET_CODE[nrn.reset_mode]),
                neg_mode=np.full(node.n, 1 if floor is not None else 0),
                leak_mode=lm,
            )
            node = Layer(shape=node.shape, inputs=node.inputs, bias=node.bias, neuron=nrn,
                         channel=node.channel, bits=node.bits, scale=node.scale, regs=regs,
                         leak_error=err)
        out.add(name, node, graph.inputs(name))
    out.attrs["stage"] = "folded"
    return out
