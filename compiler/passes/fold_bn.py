"""fold_bn: BatchNorm after Conv2d/Affine/Linear folded into their weights and bias.

    s = gamma / sqrt(var + eps);  W' = W * s (per output channel);  b' = s * (b - mean) + beta

Graph in: imported. Graph out: bn_folded, with each foldable BatchNorm removed. A BatchNorm that
follows anything else (pooling, a neuron, or a producer with several consumers) stays; ``lower``
composes it as a per-channel affine map, which is exact too.
"""

from __future__ import annotations

import numpy as np

from compiler.chip import ChipSpec
from compiler.ir.graph import Graph
from compiler.ir.nodes import Affine, BatchNorm, Conv2d, Linear


def _foldable(graph: Graph, name: str) -> str | None:
    ins = graph.inputs(name)
    if len(ins) != 1:
        return None
    src = ins[0]
    if isinstance(graph.node(src), (Conv2d, Affine, Linear)) and graph.consumers(src) == [name]:
        return src
    return None


def fold_bn(graph: Graph, spec: ChipSpec | None = None, **_) -> Graph:
    """Return a new graph with foldable BatchNorm nodes merged into their producer."""
    out = graph.derive()
    folded: dict[str, str] = {}      # bn name -> producer name
    replaced: dict[str, object] = {}
    for name, node in graph.items():
        if isinstance(node, BatchNorm) and (src := _foldable(graph, name)):
            prod = graph.node(src)
            var = np.asarray(node.var, np.float64)
            s = np.asarray(node.gamma, np.float64) / np.sqrt(var + node.eps)
            w = np.asarray(prod.weight, np.float64)
            b = np.asarray(getattr(prod, "bias", np.zeros(w.shape[0])), np.float64)
            w2 = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
            b2 = s * (b - np.asarray(node.mean, np.float64)) + np.asarray(node.beta, np.float64)
            if isinstance(prod, Conv2d):
                replaced[src] = Conv2d(w2, b2, prod.stride, prod.padding, prod.dilation,
                                       prod.groups)
            else:
                replaced[src] = Affine(w2, b2)
            folded[name] = src
    for name in graph.topo_order():
        if name in folded:
            continue
        ins = [folded.get(i, i) for i in graph.inputs(name)]
        out.add(name, replaced.get(name, graph.node(name)), ins)
    out.attrs["stage"] = "bn_folded"
    return out
