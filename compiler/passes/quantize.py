"""quantize: symmetric integer weights per layer or per output channel (algorithms.md §7).

Graph in: lowered (float). Graph out: quantized: integer CSR matrices of ``bits`` width and a
positive float ``scale`` per neuron (the float value of one integer current unit).

For each group g (the whole layer, or one output channel with ``per_channel``):
    m_g   = max |W_g|   (clip='max')   or the q-th percentile of |W_g != 0| (clip='p99.9', ...)
    q_max = 2**(bits-1) - 1  (bits > 1, symmetric, -2**(bits-1) unused);  bits = 1: W in {0, 1}
    s_g   = max(m_g / q_max,  register floors)      W_int = clip(round(W / s_g), -q_max, q_max)
The register floors raise s_g so the folded threshold, bias, v_init and v_reset fit the chip's
registers (threshold/(2**23-1), ...): the "rescale on register overflow" rule of Rockpool's Xylo
quantizer. ``bits='auto'`` picks per layer the smallest chip width whose weight SQNR reaches
``auto_sqnr`` dB (default 30 dB).

The pass records per layer (graph.attrs['quant']): bits, weight SQNR in dB, fraction of clipped
weights, fraction of weights that became zero.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from compiler.chip import ChipSpec
from compiler.errors import QuantizationError
from compiler.ir.graph import Graph
from compiler.ir.nodes import Layer

log = logging.getLogger(__name__)


def _groups(layer: Layer, per_channel: bool) -> np.ndarray:
    if per_channel:
        _, g = np.unique(layer.channel, return_inverse=True)
        return g.astype(np.int64)
    return np.zeros(layer.n, np.int64)


def _group_max(layer: Layer, gid: np.ndarray, ng: int, clip: str) -> np.ndarray:
    mats = [m for _, m in layer.inputs]
    if clip == "max" and ng == 1:    # per layer: one max, no gather or scatter
        return np.array([max((float(np.abs(m.data).max(initial=0.0)) for m in mats),
                             default=0.0)])
    if mats:
        cols = np.concatenate([m.indices for m in mats])
        vals = np.abs(np.concatenate([m.data for m in mats]))
    else:
        cols, vals = np.empty(0, int), np.empty(0)
    if clip == "max":
        mx = np.zeros(ng)
        np.maximum.at(mx, gid[cols], vals)
        return mx
    g = gid[cols]
    if not clip.startswith("p"):
        raise QuantizationError(f"unknown clipping rule '{clip}'", "use 'max' or e.g. 'p99.9'")
    try:
        q = float(clip[1:])
    except ValueError as e:
        raise QuantizationError(f"unknown clipping rule '{clip}'",
                                "use 'max' or e.g. 'p99.9'") from e
    mx = np.zeros(ng)
    order = np.argsort(g, kind="stable")
    g_sorted, v_sorted = g[order], vals[order]
    bounds = np.searchsorted(g_sorted, np.arange(ng + 1))
    for i in range(ng):
        seg = v_sorted[bounds[i]:bounds[i + 1]]
        seg = seg[seg > 0]
        mx[i] = np.percentile(seg, q) if seg.size else 0.0
    return mx


def _floors(layer: Layer, spec: ChipSpec) -> np.ndarray:
    """Per-neuron minimum scale so folded registers fit (threshold, bias, v_init, v_reset)."""
    nrn = layer.neuron
    th = np.where(np.isfinite(nrn.v_threshold), nrn.v_threshold, 0.0)
    vmax = spec.membrane_range[1]
    floors = [th / spec.threshold_max,
              np.abs(layer.bias) / spec.bias_range[1],
              np.abs(nrn.v_init) / vmax,
              np.abs(nrn.v_reset) / vmax]
    if nrn.neg_floor is not None:
        floors.append(np.full(layer.n, abs(nrn.neg_floor) / spec.threshold_max))
    return np.max(floors, axis=0)


def quantize_layer(layer: Layer, bits: int, spec: ChipSpec, per_channel: bool, clip: str):
    """Return (integer matrices, per-neuron scale, stats) for one layer at ``bits``."""
    qmax = 1 if bits == 1 else (1 << (bits - 1)) - 1
    qmin = 0 if bits == 1 else -qmax
    gid = _groups(layer, per_channel)
    ng = int(gid.max()) + 1 if gid.size else 1
    m = _group_max(layer, gid, ng, clip)
    s_g = np.where(m > 0, m / qmax, 1.0)
    s = s_g[gid]
    fl = _floors(layer, spec)
    # a neuron's floor raises its whole group's scale (one scale per group)
    fg = np.zeros(ng)
    np.maximum.at(fg, gid, fl)
    s_g = np.maximum(s_g, fg * (1 + 1e-9))
    s = s_g[gid]
    uniform = bool(np.all(s_g == s_g[0])) if s_g.size else True
    mats, sig, err, n_clip, n_zero, nnz = [], 0.0, 0.0, 0, 0, 0
    for src, w in layer.inputs:
        # one scale for the whole layer: divide by a scalar instead of gathering per entry
        sc = s_g[0] if uniform and s_g.size else s[w.indices]
        d = w.data / sc
        n_clip += int(np.count_nonzero(d > qmax + 0.5) + np.count_nonzero(d < qmin - 0.5))
        q = np.rint(d, out=d)
        np.clip(q, qmin, qmax, out=q)
        nz = q != 0
        zeros = int(q.size - np.count_nonzero(nz))
        n_zero += zeros
        nnz += q.size
        sig += float(np.dot(w.data, w.data))
        e = q * sc
        e -= w.data
        err += float(np.dot(e, e))
        del e
        if zeros:
            kept = np.zeros(q.size + 1, np.int64)
            np.cumsum(nz, out=kept[1:])
            indptr = kept[w.indptr].astype(w.indptr.dtype)
            del kept
            qi = sp.csr_matrix((q[nz].astype(np.int8), w.indices[nz], indptr), shape=w.shape)
        else:   # nothing to drop: share the (read-only) index arrays with the float matrix
            qi = sp.csr_matrix((q.astype(np.int8), w.indices, w.indptr), shape=w.shape)
        qi.has_sorted_indices = w.has_sorted_indices
        mats.append((src, qi))
    sqnr = 10 * np.log10(sig / err) if err > 0 else float("inf")
    stats = dict(bits=bits, sqnr_db=float(sqnr), clipped=n_clip / max(nnz, 1),
                 zeroed=n_zero / max(nnz, 1), nnz=nnz)
    return mats, s, stats


def quantize(graph: Graph, spec: ChipSpec, bits: int | str = 8, per_channel: bool = False,
             clip: str = "max", auto_sqnr: float = 30.0, **_) -> Graph:
    out = graph.derive()
    report = {}
    widths = sorted(spec.weight_widths)
    for name in graph.topo_order():
        node = graph.node(name)
        if isinstance(node, Layer):
            if bits == "auto":
                signed = any(np.any(m.data < 0) for _, m in node.inputs)
                cands = [w for w in widths if not (w == 1 and signed)] or widths
                for w in cands:
                    res = quantize_layer(node, w, spec, per_channel, clip)
                    if res[2]["sqnr_db"] >= auto_sqnr:
                        break
            else:
                w = int(bits)
                if w not in spec.weight_widths:
                    raise QuantizationError(
                        f"layer '{name}': {w}-bit weights not supported by chip '{spec.name}'",
                        f"use one of {list(spec.weight_widths)} or 'auto'")
                res = quantize_layer(node, w, spec, per_channel, clip)
            mats, s, stats = res
            if stats["bits"] == 1:
                neg = sum(int(np.sum(m.data < 0)) for _, m in node.inputs)
                tot = sum(int(m.data.size) for _, m in node.inputs)
                stats["negative_dropped"] = neg / max(tot, 1)
                if neg:
                    log.warning("layer '%s': 1-bit weights are unsigned {0,1}; negative weights "
                                "(%.0f%% of the synapses) became 0", name,
                                100 * stats["negative_dropped"])
            report[name] = stats
            node = Layer(shape=node.shape, inputs=tuple(mats), bias=node.bias, neuron=node.neuron,
                         channel=node.channel, bits=stats["bits"], scale=s)
        out.add(name, node, graph.inputs(name))
    out.attrs["quant"] = report
    out.attrs["per_channel"] = bool(per_channel)
    out.attrs["stage"] = "quantized"
    return out
