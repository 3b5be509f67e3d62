"""Stable text dump of a graph (``--dump-after``, golden tests).

Arrays print as ``dtype[shape]{min..max #hash}`` where the hash is the first 8 hex digits of the
SHA-1 of the array bytes, so a dump changes exactly when the content changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields

import numpy as np
import scipy.sparse as sp

from compiler.ir.graph import Graph
from compiler.ir.nodes import Layer, Node


def _arr(a) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha1(a.tobytes()).hexdigest()[:8]
    shape = "x".join(map(str, a.shape)) or "scalar"
    if a.size == 0:
        return f"{a.dtype}[{shape}]{{}}"
    if a.size == 1:
        return f"{a.dtype}[{shape}]{{{a.reshape(-1)[0]:.6g}}}"
    return f"{a.dtype}[{shape}]{{{a.min():.6g}..{a.max():.6g} #{h}}}"


def _csr(m: sp.csr_matrix) -> str:
    m = m.tocsr()
    h = hashlib.sha1(m.indptr.tobytes() + m.indices.tobytes() + m.data.tobytes()).hexdigest()[:8]
    rng = f"{m.data.min():.6g}..{m.data.max():.6g}" if m.nnz else "empty"
    return f"csr<{m.shape[0]}x{m.shape[1]} {m.dtype} nnz={m.nnz}>{{{rng} #{h}}}"


def _val(v) -> str:
    if isinstance(v, np.ndarray):
        return _arr(v)
    if sp.issparse(v):
        return _csr(v)
    if isinstance(v, Node):
        return f"{v.kind}({', '.join(f'{f.name}={_val(getattr(v, f.name))}' for f in fields(v))})"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, tuple) and v and isinstance(v[0], tuple):
        return "[" + ", ".join(f"{s}: {_val(m)}" for s, m in v) + "]"
    return repr(v)


def dump(graph: Graph) -> str:
    lines = [f"// stage: {graph.stage}"]
    for k in sorted(graph.attrs):
        if k in ("cores", "routes", "calibration", "stage"):
            continue
        lines.append(f"// {k} = {graph.attrs[k]!r}")
    for name in graph.topo_order():
        node = graph.node(name)
        ins = ", ".join(f"%{i}" for i in graph.inputs(name))
        lines.append(f"%{name} = {node.kind}({ins})")
        for f in fields(node):
            if isinstance(node, Layer) and f.name == "neuron":
                lines.append(f"    neuron: {_val(node.neuron)}")
                continue
            lines.append(f"    {f.name}: {_val(getattr(node, f.name))}")
    cores = graph.attrs.get("cores")
    if cores:
        lines.append(f"// cores: {len(cores)}")
        for i, c in enumerate(cores):
            lines.append(f"core {i}: layer={c.layer} neurons={c.n_neurons} axons={c.n_axons} "
                         f"w={c.w} lcn={c.lcn} at=chip{c.chip}({c.x},{c.y}) "
                         f"first={int(c.neurons[0]) if c.n_neurons else -1}")
    routes = graph.attrs.get("routes")
    if routes is not None:
        lines.append(f"// routes: latency L={routes.latency} depth={routes.depth}")
        for pop, pr in routes.pops.items():
            lines.append(f"routes {pop}: entries={pr.n_entries} delays={_arr(pr.delay)} "
                         f"cores={_arr(pr.core)} axons={_arr(pr.axon)}")
    return "\n".join(lines) + "\n"
