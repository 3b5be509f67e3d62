"""emit: a routed graph -> the named arrays of chip.bin (binfmt owns their byte layout).

Global order: cores in ``attrs['cores']`` order; neurons core by core (logical neuron j of core c
is global neuron core_neuron_base[c] + j); axons likewise. Crossbar bits per core (chip.md):
logical weight w_aj of axon a and neuron j occupies logical columns j*w .. j*w+w-1 (bit b at
column j*w+b, two's complement for w > 1, the value itself for w = 1); with fan-in extension LCN
the logical (axon a, column c) sits at physical row a mod 1024, column
(a div 1024) * (1024 >> LCN) + c. Rows are stored as packed bytes (little bit order), only the
physical rows in use.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from compiler.backend.layerdesc import build_ops, to_sections
from compiler.chip import HOST_CHIP, ChipSpec
from compiler.cliutil import jsonable
from compiler.ir.graph import Graph
from compiler.ir.nodes import Layer
from compiler.passes.partition import stacked
from compiler.passes.place import board_grid

COMPILER_VERSION = "0.2.0"  # the package version (snnc/_version.py)


def pack_crossbar(wmat: np.ndarray, w: int, lcn: int, spec: ChipSpec) -> np.ndarray:
    """Logical int weights [axons, neurons] -> packed physical rows [rows, xbar_cols/8] u8."""
    n_ax, n_n = wmat.shape
    if w == 1:
        bits = (wmat != 0).astype(np.uint8)
    else:
        u = (wmat.astype(np.int64) & ((1 << w) - 1)).astype(np.uint8)
        bits = ((u[:, :, None] >> np.arange(w, dtype=np.uint8)) & 1).reshape(n_ax, n_n * w)
    rows = min(n_ax, spec.xbar_rows)
    cols = spec.xbar_cols >> lcn
    phys = np.zeros((rows, spec.xbar_cols), np.uint8)
    for blk in range(1 << lcn):
        a0 = blk * spec.xbar_rows
        if a0 >= n_ax:
            break
        a1 = min(n_ax, a0 + spec.xbar_rows)
        phys[: a1 - a0, blk * cols: blk * cols + bits.shape[1]] = bits[a0:a1]
    return np.packbits(phys, axis=1, bitorder="little")


def unpack_crossbar(packed: np.ndarray, n_ax: int, n_n: int, w: int, lcn: int,
                    spec: ChipSpec) -> np.ndarray:
    """Inverse of :func:`pack_crossbar`: int64 weights [axons, neurons]."""
    phys = np.unpackbits(packed, axis=1, bitorder="little", count=spec.xbar_cols)
    cols = spec.xbar_cols >> lcn
    bits = np.zeros((n_ax, n_n * w), np.int64)
    for blk in range(1 << lcn):
        a0 = blk * spec.xbar_rows
        if a0 >= n_ax:
            break
        a1 = min(n_ax, a0 + spec.xbar_rows)
        bits[a0:a1] = phys[: a1 - a0, blk * cols: blk * cols + n_n * w]
    if w == 1:
        return bits
    bits = bits.reshape(n_ax, n_n, w)
    u = np.sum(bits << np.arange(w), axis=2)
    return u - ((u >> (w - 1)) & 1) * (1 << w)


def emit(graph: Graph, spec: ChipSpec, source: dict | None = None,
         options: dict | None = None) -> dict:
    """Build the sections dict (name -> array, 'meta' -> dict) of a routed graph."""
    cores = graph.attrs["cores"]
    routes = graph.attrs["routes"]
    inp = graph.input_name
    n_c = len(cores)
    sec: dict = {}
    sec["core_chip"] = np.array([c.chip for c in cores], np.uint16)
    sec["core_x"] = np.array([c.x for c in cores], np.uint8)
    sec["core_y"] = np.array([c.y for c in cores], np.uint8)
    sec["core_w"] = np.array([c.w for c in cores], np.uint8)
    sec["core_lcn"] = np.array([c.lcn for c in cores], np.uint8)
    layer_names = graph.layers
    lidx = {n: i for i, n in enumerate(layer_names)}
    sec["core_layer"] = np.array([lidx[c.layer] for c in cores], np.uint16)
    sec["core_tick_start"] = np.array([routes.depth[c.layer] - 1 for c in cores], np.uint16)
    nb = np.concatenate([[0], np.cumsum([c.n_neurons for c in cores])])
    ab = np.concatenate([[0], np.cumsum([c.n_axons for c in cores])])
    sec["core_neuron_base"] = nb.astype(np.uint32)
    sec["core_axon_base"] = ab.astype(np.uint32)

    # global neuron ids and registers
    glob = {n: np.full(graph.node(n).n, -1, np.int64) for n in layer_names}
    for ci, c in enumerate(cores):
        glob[c.layer][c.neurons] = nb[ci] + np.arange(c.n_neurons)
    regs = {k: [] for k in ("th_pos", "th_neg", "v_reset", "v_init", "bias", "leak", "shift",
                            "mode")}
    neu_index = []
    xbar, xbar_base, xbar_rows = [], [0], []
    stack_of: tuple[str, sp.csc_matrix] | None = None   # one layer's CSC at a time
    pos = None
    for c in cores:
        layer: Layer = graph.node(c.layer)
        r = layer.regs.take(c.neurons)
        for k in ("th_pos", "th_neg", "v_reset", "v_init", "bias", "leak", "shift"):
            regs[k].append(getattr(r, k))
        regs["mode"].append(r.reset_mode | (r.neg_mode << 2) | (r.leak_mode << 3))
        neu_index.append(c.neurons)
        if stack_of is None or stack_of[0] != c.layer:
            stack_of = (c.layer, stacked(layer)[0])
            pos = np.full(stack_of[1].shape[0], -1, np.int64)
        m = stack_of[1]
        offs = np.concatenate([[0], np.cumsum([mm.shape[0] for _, mm in layer.inputs])])
        rows = offs[c.axon_src] + c.axon_idx
        # the core's columns of the layer's CSC, scattered straight into a dense tile
        wmat = np.zeros((c.n_axons, c.n_neurons), np.int64)
        if c.n_axons:
            sub = m[:, c.neurons]
            pos[rows] = np.arange(rows.size)
            col = np.repeat(np.arange(c.n_neurons), np.diff(sub.indptr))
            wmat[pos[sub.indices], col] = sub.data
            pos[rows] = -1
        packed = pack_crossbar(wmat, c.w, c.lcn, spec)
        xbar.append(packed.reshape(-1))
        xbar_rows.append(packed.shape[0])
        xbar_base.append(xbar_base[-1] + packed.size)
    def cat(parts, dt):
        return np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)
    sec["neu_th_pos"] = cat(regs["th_pos"], np.uint32)
    sec["neu_th_neg"] = cat(regs["th_neg"], np.uint32)
    sec["neu_v_reset"] = cat(regs["v_reset"], np.int32)
    sec["neu_v_init"] = cat(regs["v_init"], np.int32)
    sec["neu_bias"] = cat(regs["bias"], np.int32)
    sec["neu_leak"] = cat(regs["leak"], np.int16)
    sec["neu_shift"] = cat(regs["shift"], np.uint8)
    sec["neu_mode"] = cat(regs["mode"], np.uint8)
    sec["neu_index"] = cat(neu_index, np.uint32)
    sec["core_xbar_base"] = np.array(xbar_base, np.uint64)
    sec["core_xbar_rows"] = np.array(xbar_rows, np.uint16)
    sec["xbar"] = cat(xbar, np.uint8)

    def entries(pr, order):
        """Route entries of population elements listed in ``order`` -> (base, arrays)."""
        cnt = pr.indptr[order + 1] - pr.indptr[order]
        base = np.concatenate([[0], np.cumsum(cnt)]).astype(np.uint32)
        idx = (np.concatenate([np.arange(pr.indptr[e], pr.indptr[e + 1]) for e in order])
               if order.size else np.zeros(0, np.int64)).astype(np.int64)
        core = pr.core[idx]
        host = core < 0
        cc = np.where(host, 0, core)
        chip = np.where(host, HOST_CHIP, sec["core_chip"][cc] if n_c else 0)
        x = np.where(host, 0, sec["core_x"][cc] if n_c else 0)
        y = np.where(host, 0, sec["core_y"][cc] if n_c else 0)
        return base, (chip.astype(np.uint16), x.astype(np.uint8), y.astype(np.uint8),
                      pr.axon[idx].astype(np.uint16), pr.delay[idx].astype(np.uint8))

    parts = {k: [] for k in ("chip", "x", "y", "axon", "delay")}
    bases = [0]
    for c in cores:
        base, arrs = entries(routes.pops[c.layer], c.neurons)
        bases.extend((base[1:] + bases[-1]).tolist())
        for k, a in zip(parts, arrs):
            parts[k].append(a)
    sec["neu_route_base"] = np.array(bases, np.uint32)
    sec["rt_chip"] = cat(parts["chip"], np.uint16)
    sec["rt_x"] = cat(parts["x"], np.uint8)
    sec["rt_y"] = cat(parts["y"], np.uint8)
    sec["rt_axon"] = cat(parts["axon"], np.uint16)
    sec["rt_delay"] = cat(parts["delay"], np.uint8)
    n_in = int(np.prod(graph.node(inp).input_type))
    base, (ch, x, y, ax, dl) = entries(routes.pops[inp], np.arange(n_in))
    sec["in_route_base"] = base
    sec["in_rt_chip"], sec["in_rt_x"], sec["in_rt_y"] = ch, x, y
    sec["in_rt_axon"], sec["in_rt_delay"] = ax, dl

    out_layer = graph.output_layer
    ol: Layer = graph.node(out_layer)
    layers_meta = []
    for n in layer_names:
        L: Layer = graph.node(n)
        layers_meta.append({
            "name": n, "shape": list(L.shape), "neurons": L.n, "bits": int(L.bits),
            "depth": int(routes.depth[n]), "sources": list(L.sources),
            "cores": [i for i, c in enumerate(cores) if c.layer == n],
            "leak_error": float(L.leak_error),
        })
    calib = graph.attrs.get("calibration") or {}
    cw, ch = board_grid(int(graph.attrs.get("chips", 1)))
    meta = {
        "format": "snnc chip image",
        "compiler_version": COMPILER_VERSION,
        "spec": spec.to_dict(),
        "board": {"chips": int(graph.attrs.get("chips", 1)), "grid": [cw, ch]},
        "input": {"name": inp, "shape": list(graph.node(inp).input_type), "size": n_in,
                  "scale": float(graph.attrs.get("input_scale", 255.0))},
        "timesteps": int(graph.attrs.get("timesteps", 8)),
        "encoding": str(graph.attrs.get("encoding", "direct")),
        "latency": int(routes.latency),
        "layers": layers_meta,
        "output": {"layer": out_layer, "neurons": ol.n, "decode": "score",
                   "global": glob[out_layer].tolist(), "scale": [float(s) for s in ol.scale]},
        "quant": graph.attrs.get("quant", {}),
        "calibration": {"layers": calib.get("layers", {}), "samples": calib.get("samples", 0),
                        "silent": calib.get("silent", [])},
        "source": dict(source or {}),
        "training": dict(graph.attrs.get("training") or {}),
        "options": {k: v for k, v in (options or {}).items()
                    if isinstance(v, (int, float, str, bool)) or v is None},
    }
    sec["meta"] = jsonable(meta)
    sec.update(layer_descriptors(graph))
    return sec


def layer_descriptors(graph: Graph) -> dict:
    """The logical-layer descriptor sections (op_*; compiler/backend/layerdesc.py)."""
    layers = [(li, n, graph.node(n).shape, list(graph.node(n).inputs))
              for li, n in enumerate(graph.layers)]
    inp = graph.input_name
    ops = build_ops(layers, inp, graph.node(inp).input_type, graph.attrs.get("operators") or {})
    return to_sections(ops)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
