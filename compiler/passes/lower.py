"""lower: every neuron population with its synapse chain becomes one Layer of sparse matrices.

Graph in: bn_folded (operator nodes). Graph out: lowered (Input -> Layer* -> Output), float.
Convolutions are unrolled (one column per output neuron, one row per input element), AvgPool2d
becomes part of the next synapse matrix (its 1/k^2 lands in the per-channel scale at quantize, so
the integer matrix holds the plain weights and the factor moves into that layer's threshold),
Flatten is a relabelling, residual Add sums the branches. Matrices from the graph input are
rescaled to *event units*: the chip receives payload p = input * input_scale (255 by default).

An Output fed by a synapse chain rather than a neuron gets a non-spiking readout population
(IF, soft reset, infinite threshold; its score is the integrated input).

Design note: lowering runs *before* quantize (the design doc listed it after). Composing first
gives identical integers for plain chains and makes residual branches and pool factors share one
per-channel scale, which per-operator quantization cannot do (docs/passes.md).
"""

from __future__ import annotations

import numpy as np

from compiler.chip import ChipSpec
from compiler.ir.graph import Graph
from compiler.ir.linear import broadcast, chain_structure, channels, compose, infer_shapes
from compiler.ir.nodes import IF, LIF, NEURON_TYPES, AvgPool2d, Input, Layer, Output

INPUT_SCALE = 255.0


def _flat_neuron(node: IF, shape, where: str) -> IF:
    kw = dict(
        v_threshold=broadcast(node.v_threshold, shape, "v_threshold", where),
        v_reset=broadcast(node.v_reset, shape, "v_reset", where),
        v_init=broadcast(node.v_init, shape, "v_init", where),
        reset_mode=node.reset_mode, neg_floor=node.neg_floor, dt=node.dt,
    )
    if isinstance(node, LIF):
        return LIF(beta=broadcast(node.beta, shape, "beta", where), **kw)
    return IF(**kw)


def composed_pools(graph: Graph, target: str) -> list[dict]:
    """AvgPool/SumPool nodes on the synapse chain in front of ``target`` (they become part of
    its matrix), with the factor by which each multiplies the fan-in (its kernel area: every
    pooled input becomes kh*kw inputs; exact for non-overlapping pools, an upper bound for
    overlapping ones): the capacity errors of partition name them."""
    found, stack, seen = [], list(graph.inputs(target)), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        node = graph.node(n)
        if isinstance(node, (Input,) + NEURON_TYPES):
            continue
        if isinstance(node, AvgPool2d):
            kh, kw = node.kernel_size
            sh, sw = node.stride
            found.append({"pool": n, "kernel": [kh, kw], "stride": [sh, sw],
                          "factor": kh * kw, "overlapping": sh < kh or sw < kw})
        stack.extend(graph.inputs(n))
    return found


def lower(graph: Graph, spec: ChipSpec | None = None, input_scale: float = INPUT_SCALE,
          **_) -> Graph:
    shapes = infer_shapes(graph)
    out = graph.derive()
    inp = graph.input_name
    out.add(inp, graph.node(inp))
    out.attrs["input_scale"] = float(input_scale)
    populations = list(graph.of_type(NEURON_TYPES))
    oname = graph.output_name
    (osrc,) = graph.inputs(oname)
    readout = None
    if not isinstance(graph.node(osrc), NEURON_TYPES):
        readout = osrc
    targets = populations + ([oname] if readout else [])
    pools: dict[str, list[dict]] = {}
    structure: dict[str, dict] = {}     # layer -> source -> operator structure (chip.bin ops)
    for name in targets:
        terms, bias = compose(graph, name, shapes)
        structure[readout if name == oname else name] = chain_structure(graph, name, shapes)
        inputs = []
        for src, m in terms:
            if src == inp:
                m = (m / input_scale).tocsr()
            inputs.append((src, m))
        if name == oname:
            shape = shapes[osrc]
            n = int(np.prod(shape))
            neuron = IF(v_threshold=np.full(n, np.inf), v_reset=np.zeros(n), v_init=np.zeros(n),
                        reset_mode="soft")
            lname = readout
        else:
            shape = shapes[name]
            neuron = _flat_neuron(graph.node(name), shape, name)
            lname = name
        layer = Layer(shape=shape, inputs=tuple(inputs), bias=bias, neuron=neuron,
                      channel=channels(shape))
        found = composed_pools(graph, name)
        if found:
            pools[lname] = found
        out.add(lname, layer, [s for s, _ in inputs])
    out.add(oname, Output(output_type=shapes[osrc]), [readout or osrc])
    out.attrs["composed_pools"] = pools
    out.attrs["operators"] = structure
    out.attrs["stage"] = "lowered"
    return out


__all__ = ["lower", "INPUT_SCALE", "Input", "Output"]
