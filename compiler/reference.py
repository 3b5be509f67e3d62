"""Pure-numpy, layer-synchronous evaluation of a lowered graph: the definition the chip matches.

``run_int`` is the integer model of a folded graph (stage >= 'folded', or a graph rebuilt from a
chip image by ``runtime.image.ChipImage.unmap``). Per step t, layers run in topological order and
each integrates the *current* step's spikes of its sources (the chip reproduces this with
delay-balanced pipelining, chip.md 'Time'). Per neuron and step, exactly as chip.md 'Neuron':

    1. leak     NONE: V | ADD: sat(V + leak) | SHIFT: V - (V >> k)
                | MULT: sign(V) * ((|V| * (4096 - d)) >> 12)
    2. integrate V <- sat(V + sum_a payload_a * w_a + bias)          (sum exact in int64)
    3. fire      s = V >= th_pos
    4. reset     HARD: V <- v_reset | SOFT: V <- V - th_pos | NONE
    5. floor     neg_mode SATURATE: V <- max(V, -th_neg)

``run_float`` is the same loop on the float model of a lowered (not yet quantized) graph.
Readout: the output layer's score is ``count * th + V_final`` (for a soft-reset IF this is exactly
v_init + the integrated input), times the per-neuron scale for integer graphs; the prediction is
its argmax (first index on ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.errors import SimulationError
from compiler.ir.graph import Graph
from compiler.ir.nodes import LIF, Layer
from compiler.ir.verify import stage_index


@dataclass
class RefResult:
    """Per-layer spike counts [B, n], final membranes [B, n], optional spike trains [T, B, n]."""

    counts: dict[str, np.ndarray]
    v_final: dict[str, np.ndarray]
    output: str
    scores: np.ndarray
    spikes: dict[str, np.ndarray] | None = None

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)

    def rates(self, timesteps: int) -> dict[str, np.ndarray]:
        """Mean firing rate per neuron (spikes per step) over the batch."""
        return {k: v.mean(axis=0) / timesteps for k, v in self.counts.items()}


def _sat(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(v, lo, hi)


def int_step(v, current, regs, vlo: int, vhi: int):
    """One integer neuron update (in place on ``v``: int64 [B, n]); returns the spike mask."""
    lm = regs.leak_mode
    if np.any(lm == 1):
        v[:, lm == 1] = _sat(v[:, lm == 1] + regs.leak[lm == 1], vlo, vhi)
    if np.any(lm == 2):
        sel = lm == 2
        v[:, sel] = v[:, sel] - (v[:, sel] >> regs.shift[sel])
    if np.any(lm == 3):
        sel = lm == 3
        a = v[:, sel]
        v[:, sel] = np.sign(a) * ((np.abs(a) * (4096 - regs.leak[sel])) >> 12)
    v[:] = _sat(v + current + regs.bias, vlo, vhi)
    s = v >= regs.th_pos
    hard = s & (regs.reset_mode == 0)
    soft = s & (regs.reset_mode == 1)
    v[:] = np.where(hard, regs.v_reset, v)
    v[:] = np.where(soft, v - regs.th_pos, v)
    floor = regs.neg_mode == 1
    if np.any(floor):
        v[:] = np.where(floor & (v < -regs.th_neg), -regs.th_neg, v)
    return s


def float_step(v, current, layer: Layer):
    """One float neuron update of ``layer.neuron`` (per-neuron arrays), in place."""
    nrn = layer.neuron
    if isinstance(nrn, LIF):
        v *= nrn.beta
    v += current + layer.bias
    th = nrn.v_threshold
    s = v >= th
    if nrn.reset_mode == "soft":
        v -= np.where(s, th, 0.0)
    elif nrn.reset_mode == "hard":
        v[:] = np.where(s, nrn.v_reset, v)
    if nrn.neg_floor is not None:
        np.maximum(v, -nrn.neg_floor, out=v)
    return s


def _matvec(m, s: np.ndarray, dtype) -> np.ndarray:
    """s [B, n_src] @ m [n_src, n] for a CSR m, exact for integers."""
    return np.asarray((m.T @ s.T).T, dtype=dtype)


def _check_inputs(graph: Graph, x: np.ndarray) -> int:
    n_in = int(np.prod(graph.node(graph.input_name).input_type))
    if x.ndim != 3 or x.shape[2] != n_in:
        raise SimulationError(f"inputs must have shape [T, B, {n_in}], got {list(x.shape)}")
    return n_in


def score(counts: np.ndarray, v: np.ndarray, th: np.ndarray, scale=None) -> np.ndarray:
    """The readout: count * th + V (times the per-neuron scale), float64 [B, n]."""
    th = np.asarray(th, dtype=np.float64)
    finite = np.isfinite(th)
    s = np.where(finite, counts * np.where(finite, th, 0.0), 0.0) + v
    return s * (1.0 if scale is None else np.asarray(scale, dtype=np.float64))


def run_int(graph: Graph, payloads: np.ndarray, record: bool = False,
            membrane_bits: int = 24) -> RefResult:
    """Integer layer-synchronous run. ``payloads``: int [T, B, n_in] (0..255)."""
    if stage_index(graph.stage) < stage_index("folded"):
        raise SimulationError(f"run_int needs a folded graph, got stage '{graph.stage}'")
    _check_inputs(graph, payloads)
    T, B, _ = payloads.shape
    vlo, vhi = -(1 << (membrane_bits - 1)), (1 << (membrane_bits - 1)) - 1
    layers = [(n, graph.node(n)) for n in graph.layers]
    mats = {n: [(s, m.astype(np.int64)) for s, m in L.inputs] for n, L in layers}
    v = {n: np.broadcast_to(L.regs.v_init, (B, L.n)).astype(np.int64) for n, L in layers}
    counts = {n: np.zeros((B, L.n), np.int64) for n, L in layers}
    spikes = {n: np.zeros((T, B, L.n), np.uint8) for n, L in layers} if record else None
    inp = graph.input_name
    for t in range(T):
        act = {inp: np.asarray(payloads[t], dtype=np.int64)}
        for n, L in layers:
            cur = np.zeros((B, L.n), np.int64)
            for s, m in mats[n]:
                cur += _matvec(m, act[s], np.int64)
            s_ = int_step(v[n], cur, L.regs, vlo, vhi)
            counts[n] += s_
            act[n] = s_.astype(np.int64)
            if record:
                spikes[n][t] = s_
    out = graph.output_layer
    L = graph.node(out)
    sc = score(counts[out], v[out], L.regs.th_pos, L.scale)
    return RefResult(counts, v, out, sc, spikes)


def run_float(graph: Graph, x: np.ndarray, record: bool = False) -> RefResult:
    """Float layer-synchronous run of a lowered float graph. ``x``: [T, B, n_in] in event units
    (payload values, i.e. input * input_scale)."""
    if graph.stage != "lowered":
        raise SimulationError(f"run_float needs a lowered float graph, got stage '{graph.stage}'")
    _check_inputs(graph, x)
    T, B, _ = x.shape
    layers = [(n, graph.node(n)) for n in graph.layers]
    v = {n: np.broadcast_to(L.neuron.v_init, (B, L.n)).astype(np.float64).copy()
         for n, L in layers}
    counts = {n: np.zeros((B, L.n), np.int64) for n, L in layers}
    spikes = {n: np.zeros((T, B, L.n), np.uint8) for n, L in layers} if record else None
    inp = graph.input_name
    for t in range(T):
        act = {inp: np.asarray(x[t], dtype=np.float64)}
        for n, L in layers:
            cur = np.zeros((B, L.n))
            for s, m in L.inputs:
                cur += _matvec(m, act[s], np.float64)
            s_ = float_step(v[n], cur, L)
            counts[n] += s_
            act[n] = s_.astype(np.float64)
            if record:
                spikes[n][t] = s_
    out = graph.output_layer
    L = graph.node(out)
    return RefResult(counts, v, out, score(counts[out], v[out], L.neuron.v_threshold), spikes)
