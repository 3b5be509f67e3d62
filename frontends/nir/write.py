"""IR graph -> NIR (operator graphs node for node; folded integer graphs per layer)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError
from compiler.ir import (
    IF,
    LIF,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Graph,
    Input,
    Layer,
    Linear,
    Output,
    Scale,
    SumPool2d,
    verify,
)
from compiler.ir.linear import broadcast, infer_shapes
from frontends.nir._common import FORMAT, PRODUCER, _a, _nir

log = logging.getLogger(__name__)


def _full(a, shape, what: str, where: str) -> np.ndarray:
    return broadcast(a, shape, what, where).reshape(shape)


def _neuron_md(node: IF, shape, where: str) -> tuple[dict, list[str]]:
    md: dict = {"snnc.reset": node.reset_mode}
    warn = []
    v0 = broadcast(node.v_init, shape, "v_init", where)
    if np.any(v0 != 0):
        md["snnc.v_init"] = float(v0[0]) if np.all(v0 == v0[0]) else v0.reshape(shape)
        warn.append(f"'{where}': initial membrane v_init != 0 is only in snnc metadata (NIR has "
                    "no initial state)")
    if node.neg_floor is not None:
        md["snnc.neg_floor"] = float(node.neg_floor)
        warn.append(f"'{where}': membrane floor at -{node.neg_floor:g} is only in snnc metadata")
    if node.reset_mode == "soft":
        warn.append(f"'{where}': subtractive (soft) reset is only in snnc metadata; NIR readers "
                    "that ignore it reset to v_reset (NIR #137/#138)")
    elif node.reset_mode == "none":
        warn.append(f"'{where}': 'no reset' is only in snnc metadata")
    return md, warn


def _nir_neuron(node: IF, shape, dt: float, where: str):
    """One IR IF/LIF (operator or layer model) -> (NIR node, warnings)."""
    nir = _nir()
    th = _full(node.v_threshold, shape, "v_threshold", where)
    vr = _full(node.v_reset, shape, "v_reset", where)
    md, warn = _neuron_md(node, shape, where)
    ones = np.ones(shape)
    readout = not np.any(np.isfinite(th))
    if readout and node.reset_mode != "none":
        md["snnc.reset"] = "none"   # never fires: the reset mode is irrelevant
        warn = [w for w in warn if "reset" not in w]
    if isinstance(node, LIF) and np.any(_full(node.beta, shape, "beta", where) < 1):
        beta = _full(node.beta, shape, "beta", where)
        if np.any(beta >= 1):
            raise FrontendError(f"export_nir: LIF '{where}' mixes beta = 1 and beta < 1 neurons",
                                "split the population")
        tau = dt / (1.0 - beta)
        r = tau / dt
        if readout:
            return nir.LI(tau=tau, r=r, v_leak=np.zeros(shape), metadata=md), []
        return nir.LIF(tau=tau, r=r, v_leak=np.zeros(shape), v_threshold=th, v_reset=vr,
                       metadata=md), warn
    if readout:
        return nir.I(r=ones / dt, metadata=md), []
    return nir.IF(r=ones / dt, v_threshold=th, v_reset=vr, metadata=md), warn


def to_nir(graph: Graph, dt: float | None = None):
    """The ``nir.NIRGraph`` of an IR graph and the list of lossy-translation warnings.

    Operator graphs (stage imported/bn_folded) map node for node; folded integer graphs (e.g.
    ``runtime.image.load(path).unmap()``) export their layers' integer matrices and registers.
    """
    from compiler.ir.verify import stage_index
    dt = float(dt if dt is not None else graph.attrs.get("dt", 1.0))
    if graph.of_type(Layer):
        if stage_index(graph.stage) < stage_index("folded"):
            raise FrontendError("export_nir: a lowered float graph has no NIR form",
                                "export the model (operator graph) or a compiled chip image")
        return _layers_to_nir(graph, dt)
    return _ops_to_nir(graph, dt)


def _graph_meta(dt: float, resets: set[str], extra: dict | None = None) -> dict:
    reset = {"soft": "subtract", "hard": "to_value", "none": "none"}
    r = [reset[x] for x in sorted(resets)]
    md = {"producer": PRODUCER, "snnc.format": FORMAT, "dt": float(dt), "discretization": "euler",
          "spike_predicate": ">=", "reset": r[0] if len(r) == 1 else ("mixed" if r else "none"),
          "convention": "snnc"}
    md.update(extra or {})
    return md


def _make_graph(nodes: dict, edges: list, meta: dict):
    nir = _nir()
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except Exception as e:  # the file is still valid NIR without the optional type annotations
        log.debug("NIR type inference failed (%s); writing without it", e)
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _ops_to_nir(graph: Graph, dt: float):
    from compiler.passes import fold_bn
    nir = _nir()
    verify(graph, "imported")
    g = fold_bn(graph)
    shapes = infer_shapes(g)
    nodes: dict = {}
    edges: list = []
    warnings: list[str] = []
    resets: set[str] = set()
    for name, node in g.items():
        ins = g.inputs(name)
        s = shapes[name]
        src = ins[0] if ins else None
        if isinstance(node, Input):
            nodes[name] = nir.Input(input_type={"input": np.array(s)})
            continue
        if isinstance(node, Output):
            nodes[name] = nir.Output(output_type={"output": np.array(s)})
        elif isinstance(node, (Affine, Linear)):
            if len(shapes[src]) != 1:
                fl = f"{name}.flatten"
                nodes[fl] = nir.Flatten(input_type={"input": np.array(shapes[src])}, start_dim=0,
                                        end_dim=-1, metadata={"snnc.implicit": "flatten"})
                edges.append((src, fl))
                src = fl
            w = np.array(node.weight, np.float64)
            nodes[name] = (nir.Affine(w, np.array(node.bias, np.float64))
                           if isinstance(node, Affine) else nir.Linear(w))
        elif isinstance(node, Conv2d):
            nodes[name] = nir.Conv2d(
                input_shape=tuple(shapes[src][1:]), weight=np.array(node.weight, np.float64),
                stride=node.stride, padding=node.padding, dilation=node.dilation,
                groups=node.groups, bias=np.array(node.bias, np.float64))
        elif isinstance(node, AvgPool2d):
            cls = nir.SumPool2d if isinstance(node, SumPool2d) else nir.AvgPool2d
            nodes[name] = cls(kernel_size=np.array(node.kernel_size),
                              stride=np.array(node.stride), padding=np.array(node.padding))
        elif isinstance(node, Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.array(shapes[src])},
                                      start_dim=node.start_dim, end_dim=node.end_dim)
        elif isinstance(node, Scale):
            nodes[name] = nir.Scale(scale=_full(node.scale, s, "scale", name))
        elif isinstance(node, BatchNorm):
            sc = _a(node.gamma) / np.sqrt(_a(node.var) + node.eps)
            sh = _a(node.beta) - _a(node.mean) * sc
            if len(s) == 3 and np.size(sc) in (1, s[0]):
                c = s[0]
                nodes[name] = nir.Conv2d(
                    input_shape=tuple(s[1:]),
                    weight=np.broadcast_to(sc.reshape(-1), (c,)).reshape(c, 1, 1, 1).copy(),
                    stride=1, padding=0, dilation=1, groups=c,
                    bias=np.broadcast_to(sh.reshape(-1), (c,)).copy(),
                    metadata={"snnc.op": "BatchNorm"})
            else:
                if len(s) != 1:
                    raise FrontendError(f"export_nir: BatchNorm '{name}' on shape {s} after a "
                                        "non-linear node has no NIR form")
                nodes[name] = nir.Affine(np.diag(broadcast(sc, s)), broadcast(sh, s),
                                         metadata={"snnc.op": "BatchNorm"})
        elif isinstance(node, Add):
            nodes[name] = nir.Scale(scale=np.ones(s), metadata={"snnc.op": "Add"})
            edges += [(i, name) for i in ins]
            continue
        elif isinstance(node, (IF, LIF)):
            nodes[name], w = _nir_neuron(node, s, dt, name)
            warnings += w
            if np.any(np.isfinite(_a(node.v_threshold))):
                resets.add(node.reset_mode)
        else:  # pragma: no cover - verify() admits no other type
            raise FrontendError(f"export_nir: no NIR form for {node.kind} '{name}'")
        edges.append((src, name))
    return _make_graph(nodes, edges, _graph_meta(dt, resets)), warnings


def _layers_to_nir(graph: Graph, dt: float):
    """A folded (integer) layer graph -> NIR, one flat population per layer."""
    nir = _nir()
    nodes: dict = {}
    edges: list = []
    resets: set[str] = set()
    inp = graph.input_name
    ishape = graph.node(inp).input_type
    nodes[inp] = nir.Input(input_type={"input": np.array(ishape)})
    src_name = {inp: inp}
    if len(ishape) != 1:
        nodes[f"{inp}.flatten"] = nir.Flatten(input_type={"input": np.array(ishape)},
                                              start_dim=0, end_dim=-1)
        edges.append((inp, f"{inp}.flatten"))
        src_name[inp] = f"{inp}.flatten"
    warnings = [f"input is the chip payload p = round(x * {graph.attrs.get('input_scale', 255)})"
                " (integers 0..255), not the image"]
    code_reset = {0: "hard", 1: "soft", 2: "none"}
    out_layer = graph.output_layer
    for name in graph.layers:
        L: Layer = graph.node(name)
        regs = L.regs
        n = L.n
        for i, (src, m) in enumerate(L.inputs):
            wname = f"{name}.w_{src}"
            w = np.asarray(m.T.toarray(), np.float64)
            if i == 0 and np.any(regs.bias != 0):
                nodes[wname] = nir.Affine(w, regs.bias.astype(np.float64))
            else:
                nodes[wname] = nir.Linear(w)
            edges += [(src_name[src], wname), (wname, name)]
        if not L.inputs and np.any(regs.bias != 0):
            raise FrontendError(f"export_nir: layer '{name}' has a bias but no input")
        modes = {code_reset[int(c)] for c in np.unique(regs.reset_mode)}
        if len(modes) != 1:
            raise FrontendError(f"export_nir: layer '{name}' mixes reset modes {sorted(modes)}")
        (mode,) = modes
        lm = np.unique(regs.leak_mode)
        if len(lm) != 1 or int(lm[0]) == 1:
            raise FrontendError(f"export_nir: layer '{name}' uses leak modes {lm.tolist()}",
                                "only none, shift or multiply leaks have a NIR form")
        th = regs.th_pos.astype(np.float64)
        tmax = graph.attrs.get("threshold_max")
        is_readout = name == out_layer and (
            not np.any(np.isfinite(L.neuron.v_threshold))
            or (tmax is not None and np.all(regs.th_pos == int(tmax))))
        if is_readout:
            th = np.full(n, np.inf)
        kw = dict(v_threshold=th, v_reset=regs.v_reset.astype(np.float64),
                  v_init=regs.v_init.astype(np.float64), reset_mode=mode,
                  neg_floor=float(regs.th_neg.max()) if np.any(regs.neg_mode == 1) else None)
        if int(lm[0]) == 0:
            model = IF(**kw)
        else:
            beta = (1.0 - 2.0 ** -regs.shift.astype(np.float64) if int(lm[0]) == 2
                    else 1.0 - regs.leak.astype(np.float64) / 4096.0)
            model = LIF(beta=beta, **kw)
            how = "shift" if int(lm[0]) == 2 else "multiply"
            warnings.append(f"'{name}': the chip's integer leak ({how}: floor arithmetic) "
                            "exported as an exact decay beta")
        nodes[name], w = _nir_neuron(model, (n,), dt, name)
        nodes[name].metadata["snnc.shape"] = np.array(L.shape)
        if L.scale is not None:
            nodes[name].metadata["snnc.scale"] = np.asarray(L.scale, np.float64)
        warnings += w
        if not is_readout:
            resets.add(mode)
        src_name[name] = name
    on = graph.output_name
    nodes[on] = nir.Output(output_type={"output": np.array((graph.node(out_layer).n,))})
    edges.append((out_layer, on))
    extra = {"snnc.stage": "folded", "input_scale": float(graph.attrs.get("input_scale", 255.0)),
             "readout": "count * v_threshold + v (output layer), times snnc.scale"}
    return _make_graph(nodes, edges, _graph_meta(dt, resets, extra)), warnings


def export_nir(graph: Graph, path, dt: float | None = None) -> list[str]:
    """Write ``graph`` as a .nir file (atomically); returns (and logs) the lossy warnings."""
    nir = _nir()
    ng, warnings = to_nir(graph, dt)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        nir.write(str(tmp), ng)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    for w in warnings:
        log.warning("export_nir: %s", w)
    return warnings
