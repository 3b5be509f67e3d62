"""``verify(graph, stage, spec)``: the invariants each pipeline stage guarantees, cumulatively.

A failure raises IRVerificationError naming the stage, the node and the broken invariant; the pass
manager adds which pass produced the graph.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compiler.chip import PICORE64, ChipSpec
from compiler.errors import IRVerificationError
from compiler.ir.graph import Graph
from compiler.ir.linear import infer_shapes
from compiler.ir.nodes import (
    IF,
    NEURON_TYPES,
    SYNAPSE_TYPES,
    Input,
    Layer,
    Output,
)

STAGES = ("imported", "bn_folded", "lowered", "quantized", "folded", "partitioned", "placed",
          "routed")


def stage_index(stage: str) -> int:
    return STAGES.index(stage)


def verify(graph: Graph, stage: str, spec: ChipSpec = PICORE64) -> None:
    """Check every invariant up to and including ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage}")
    k = stage_index(stage)

    def fail(node: str, why: str, hint: str | None = None):
        raise IRVerificationError(stage, node, why, hint)

    if not graph.is_dag():
        fail("<graph>", "graph has a cycle (recurrent connections are not supported yet)")
    try:
        graph.input_name, graph.output_name  # noqa: B018 - raises when not exactly one
    except ValueError as e:
        fail("<graph>", str(e))
    if len(graph.inputs(graph.output_name)) != 1:
        fail(graph.output_name, "Output must have exactly one input")

    if k < stage_index("lowered"):
        for name, node in graph.items():
            if not isinstance(node, (Input, Output) + NEURON_TYPES + SYNAPSE_TYPES):
                fail(name, f"node type {node.kind} is not allowed before lowering")
            _verify_finite(name, node, fail)
            if isinstance(node, NEURON_TYPES):
                if node.reset_mode not in ("soft", "hard", "none"):
                    fail(name, f"reset_mode '{node.reset_mode}' not in soft/hard/none")
                if np.any(np.asarray(node.v_threshold) <= 0):
                    fail(name, "v_threshold must be > 0")
        infer_shapes(graph)
        return

    for name, node in graph.items():
        if not isinstance(node, (Input, Output, Layer)):
            fail(name, f"only Input/Layer/Output may remain after lowering, found {node.kind}")
    out_src = graph.output_layer
    if not isinstance(graph.node(out_src), Layer):
        fail(graph.output_name, "Output must be fed by a Layer")
    sizes = {n: (int(np.prod(graph.node(n).input_type)) if isinstance(graph.node(n), Input)
                 else graph.node(n).n)
             for n in graph.topo_order() if not isinstance(graph.node(n), Output)}
    for name in graph.layers:
        layer: Layer = graph.node(name)
        if set(graph.inputs(name)) != set(layer.sources):
            fail(name, f"edges {graph.inputs(name)} disagree with synapse sources {layer.sources}")
        if not isinstance(layer.neuron, IF):
            fail(name, "layer has no neuron model")
        for src, m in layer.inputs:
            if m.shape != (sizes[src], layer.n):
                fail(name, f"matrix from '{src}' has shape {m.shape}, expected "
                           f"({sizes[src]}, {layer.n})")
        for arr in ("bias", "channel"):
            if getattr(layer, arr).shape != (layer.n,):
                fail(name, f"{arr} must have one entry per neuron ({layer.n})")
        if k >= stage_index("quantized"):
            if layer.bits not in spec.weight_widths:
                fail(name, f"weight width {layer.bits} not in chip widths {spec.weight_widths}")
            lo, hi = spec.weight_range(layer.bits)
            for src, m in layer.inputs:
                if m.dtype.kind not in "iu":
                    fail(name, f"weights from '{src}' are {m.dtype}, expected integers")
                if m.nnz and (m.data.min() < lo or m.data.max() > hi):
                    fail(name, f"weights from '{src}' span [{m.data.min()}, {m.data.max()}], "
                               f"outside the {layer.bits}-bit range [{lo}, {hi}]")
            if layer.scale is None or layer.scale.shape != (layer.n,) or np.any(layer.scale <= 0):
                fail(name, "quantized layer needs a positive scale per neuron")
        if k >= stage_index("folded"):
            _verify_regs(name, layer, spec, fail)
    if k >= stage_index("partitioned"):
        _verify_cores(graph, spec, fail, placed=k >= stage_index("placed"))
    if k >= stage_index("routed"):
        _verify_routes(graph, spec, fail, sizes)


def _verify_finite(name: str, node, fail) -> None:
    """Every numeric parameter of ``node`` (weights, biases, thresholds, BN statistics, ...)
    is finite (a threshold may be +inf: a readout that never fires). A NaN threshold would
    compile into a layer that never fires, a NaN weight into numpy warnings and an
    out-of-range register far from its cause."""
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, (int, float, np.number)):
            arr = np.asarray(v)
        elif isinstance(v, np.ndarray):
            arr = v
        else:
            continue
        if arr.dtype.kind not in "fc":
            if arr.dtype.kind not in "iub":
                fail(name, f"tensor '{f.name}' has dtype {arr.dtype}, expected numbers")
            continue
        bad = ~np.isfinite(arr)
        if f.name == "v_threshold":  # +inf: a readout that integrates and never fires (NIR LI)
            bad &= ~np.isposinf(arr)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
            fail(name, f"tensor '{f.name}' holds {int(bad.sum())} NaN/Inf value(s) of "
                       f"{arr.size} (first at index {list(at)}: {arr[at] if at else arr[()]})",
                 "the model's parameters must be finite; check the training run or file")


def _verify_regs(name, layer: Layer, spec: ChipSpec, fail) -> None:
    r = layer.regs
    if r is None or r.n != layer.n:
        fail(name, "missing integer neuron registers (fold_thresholds)")
    vlo, vhi = spec.membrane_range
    blo, bhi = spec.bias_range
    checks = [
        ("th_pos", r.th_pos, 1, spec.threshold_max),
        ("th_neg", r.th_neg, 0, spec.threshold_max),
        ("v_reset", r.v_reset, vlo, vhi),
        ("v_init", r.v_init, vlo, vhi),
        ("bias", r.bias, blo, bhi),
        ("shift", r.shift, 0, (1 << spec.shift_bits) - 1),
        ("reset_mode", r.reset_mode, 0, 2),
        ("neg_mode", r.neg_mode, 0, 1),
        ("leak_mode", r.leak_mode, 0, 3),
    ]
    for reg, a, lo, hi in checks:
        if a.size and (a.min() < lo or a.max() > hi):
            bad = int(np.argmax((a < lo) | (a > hi)))
            fail(name, f"register {reg} of neuron {bad} = {int(a[bad])} outside [{lo}, {hi}]")
    add = r.leak_mode == 1
    llo, lhi = spec.leak_range
    if np.any(add & ((r.leak < llo) | (r.leak > lhi))):
        fail(name, f"ADD leak outside [{llo}, {lhi}]")
    mult = r.leak_mode == 3
    if np.any(mult & ((r.leak < 0) | (r.leak >= (1 << spec.mult_bits)))):
        fail(name, f"MULT decay outside [0, {(1 << spec.mult_bits) - 1}]")


def _verify_cores(graph: Graph, spec: ChipSpec, fail, placed: bool) -> None:
    cores = graph.attrs.get("cores")
    if not cores:
        fail("<graph>", "no core allocation (partition)")
    seen: dict[str, np.ndarray] = {n: np.zeros(graph.node(n).n, np.int64) for n in graph.layers}
    coords = set()
    for i, c in enumerate(cores):
        layer = graph.node(c.layer)
        where = f"{c.layer} (core {i})"
        if c.lcn < 0 or c.lcn > spec.max_lcn:
            fail(where, f"LCN {c.lcn} outside 0..{spec.max_lcn}")
        if c.w != layer.bits:
            fail(where, f"core weight width {c.w} != layer width {layer.bits}")
        if c.n_neurons > spec.neurons_per_core(c.w, c.lcn):
            fail(where, f"{c.n_neurons} neurons > limit {spec.neurons_per_core(c.w, c.lcn)} "
                        f"(w={c.w}, LCN={c.lcn})")
        if c.n_axons > spec.axons_per_core(c.lcn):
            fail(where, f"{c.n_axons} axons > limit {spec.axons_per_core(c.lcn)} (LCN={c.lcn})")
        seen[c.layer][c.neurons] += 1
        if placed:
            if not (0 <= c.chip < spec.max_chips and 0 <= c.x < spec.mesh_x
                    and 0 <= c.y < spec.mesh_y):
                fail(where, f"placed at chip {c.chip} ({c.x}, {c.y}), outside the board")
            if (c.chip, c.x, c.y) in coords:
                fail(where, f"two cores placed at chip {c.chip} ({c.x}, {c.y})")
            coords.add((c.chip, c.x, c.y))
    for n, cnt in seen.items():
        if np.any(cnt != 1):
            fail(n, f"{int(np.sum(cnt != 1))} neurons are not on exactly one core")


def _verify_routes(graph: Graph, spec: ChipSpec, fail, sizes) -> None:
    routes = graph.attrs.get("routes")
    if routes is None:
        fail("<graph>", "no routes (route)")
    cores = graph.attrs["cores"]
    per_core = np.zeros(len(cores), np.int64)
    owner = {n: np.zeros(graph.node(n).n, np.int64) for n in graph.layers}
    for ci, c in enumerate(cores):
        owner[c.layer][c.neurons] = ci
    for pop, pr in routes.pops.items():
        if pr.indptr.size != sizes[pop] + 1:
            fail(pop, "route table does not cover every element")
        if pr.n_entries and (pr.delay.min() < 1 or pr.delay.max() > spec.max_delay):
            fail(pop, f"route delay outside 1..{spec.max_delay}")
        if pop == graph.input_name:
            continue
        np.add.at(per_core, owner[pop], np.diff(pr.indptr))
    for ci in np.nonzero(per_core > spec.route_entries)[0]:
        fail(f"{cores[ci].layer} (core {ci})",
             f"{per_core[ci]} route entries > limit {spec.route_entries}")
    # every axon is fed by the route of its source element (vectorised key match)
    amax = max(1 << 16, max((c.n_axons for c in cores), default=0) + 1)
    ncore = len(cores) + 1
    have = {}
    for pop, pr in routes.pops.items():
        elem = np.repeat(np.arange(pr.indptr.size - 1), np.diff(pr.indptr))
        have[pop] = np.unique((elem * ncore + (pr.core + 1)) * amax + pr.axon)
    for ci, core in enumerate(cores):
        layer = graph.node(core.layer)
        for s_i, src in enumerate(layer.sources):
            sel = np.nonzero(core.axon_src == s_i)[0]
            want = (core.axon_idx[sel].astype(np.int64) * ncore + (ci + 1)) * amax + sel
            ref = have.get(src, np.empty(0, np.int64))
            pos = np.minimum(np.searchsorted(ref, want), max(ref.size - 1, 0))
            missing = (ref[pos] != want) if ref.size else np.ones(want.size, bool)
            if missing.any():
                a = int(sel[np.argmax(missing)])
                fail(core.layer, f"core {ci} axon {a} has no route from "
                                 f"{src}[{int(core.axon_idx[a])}]")
