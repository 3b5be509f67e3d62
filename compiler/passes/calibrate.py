"""calibrate: run calibration data through the float and the integer reference, per layer.

Graph in/out: folded (adds ``attrs['calibration']``). For every layer it reports the weight SQNR
(from quantize), the clipped fraction, the float and integer firing rates (spikes per neuron per
step) and their ratio. A layer whose integer model is silent while the float model fires is the
classic silent failure of quantized SNNs: it is logged as a loud warning, or raised as a
QuantizationError with ``strict``. The per-neuron integer rates feed ``place``.
"""

from __future__ import annotations

import logging

import numpy as np

from compiler import reference
from compiler.chip import ChipSpec
from compiler.errors import QuantizationError
from compiler.ir.graph import Graph

log = logging.getLogger(__name__)


def direct_payloads(x: np.ndarray, timesteps: int, input_scale: float = 255.0) -> np.ndarray:
    """Direct encoding as integer payloads [T, B, n_in] (same rule as compiler.encoding.direct)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    p = np.clip(np.rint(flat * input_scale), 0, 255).astype(np.int64)
    return np.broadcast_to(p, (timesteps,) + p.shape)


def calibrate(graph: Graph, spec: ChipSpec, calib: np.ndarray | None = None,
              history: dict | None = None, timesteps: int = 8, strict: bool = False,
              batch: int = 256, **_) -> Graph:
    out = graph.copy()
    if calib is None or len(calib) == 0:
        return out
    float_graph = history["lower"]
    x = np.asarray(calib)
    counts_f: dict[str, np.ndarray] = {}
    counts_i: dict[str, np.ndarray] = {}
    for i in range(0, len(x), batch):
        p = direct_payloads(x[i:i + batch], timesteps, graph.attrs.get("input_scale", 255.0))
        rf = reference.run_float(float_graph, p.astype(np.float64))
        ri = reference.run_int(graph, p, membrane_bits=spec.membrane_bits)
        for k in rf.counts:
            counts_f[k] = counts_f.get(k, 0) + rf.counts[k].sum(axis=0)
            counts_i[k] = counts_i.get(k, 0) + ri.counts[k].sum(axis=0)
    n = len(x) * timesteps
    quant = graph.attrs.get("quant", {})
    layers, rates, silent = {}, {}, []
    for k in graph.layers:
        rf, ri = counts_f[k] / n, counts_i[k] / n
        mf, mi = float(rf.mean()), float(ri.mean())
        is_readout = not np.any(np.isfinite(graph.node(k).neuron.v_threshold))
        layers[k] = dict(quant.get(k, {}), rate_float=mf, rate_int=mi,
                         rate_ratio=(mi / mf) if mf > 0 else (1.0 if mi == 0 else float("inf")))
        rates[k] = ri
        if mi == 0 and mf > 0 and not is_readout:
            silent.append(k)
    out.attrs["calibration"] = {"samples": int(len(x)), "timesteps": int(timesteps),
                                "layers": layers, "rates": rates, "silent": silent}
    for k in silent:
        msg = (f"layer '{k}' is SILENT after quantization (float rate "
               f"{layers[k]['rate_float']:.4f}, integer rate 0)")
        if strict:
            raise QuantizationError(msg, "use more weight bits (--bits 8), per-channel scales "
                                         "(--per-channel) or percentile clipping (--clip p99.9)")
        log.warning("%s; try --bits 8, --per-channel or --clip p99.9", msg)
    return out
