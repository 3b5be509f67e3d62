"""partition: split every layer into core tiles that fit the chip's neurons and axons.

Graph in: folded. Graph out: partitioned, with ``attrs['cores']`` (list[Core]).
All neurons of a core share the weight width w (the layer's) and the fan-in extension LCN; a
core holds at most 1024 / (w * 2**LCN) neurons and 1024 * 2**LCN axons (one per distinct source
element its neurons read). Neurons are grouped by identical footprint (for a (C, H, W) layer: all
channels of one pixel) and visited in blocked-raster order, so a tile covers a compact spatial
block and its input footprint (the conv receptive field plus halo) stays small. Tiles are filled
greedily under three limits: neurons, axons, and route entries (each neuron needs one per
consumer core that listens to it; layers are partitioned consumers-first so this is known).
Per layer, every LCN in 0..max_lcn that can hold the widest single neuron is tried and
the one giving the fewest cores wins (ties: smaller LCN).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from compiler.chip import ChipSpec
from compiler.errors import CapacityError
from compiler.ir.graph import Graph
from compiler.ir.mapping import Core
from compiler.ir.nodes import Layer


def stacked(layer: Layer) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """All incoming matrices stacked by source: (CSC [sum n_src, n], src id, element index)."""
    mats = [m for _, m in layer.inputs]
    src_id = np.concatenate([np.full(m.shape[0], i) for i, m in enumerate(mats)])
    elem = np.concatenate([np.arange(m.shape[0]) for m in mats])
    m = mats[0].tocsc() if len(mats) == 1 else sp.vstack(mats, format="csc")
    return m, src_id, elem


def _groups(layer: Layer, cap: int) -> list[np.ndarray]:
    """Neuron groups with one footprint each, in blocked-raster order."""
    shape = layer.shape
    if len(shape) == 3:
        c, h, w = shape
        per = max(1, cap // max(c, 1))
        b = max(1, int(math.isqrt(per)))
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        order = np.lexsort((ww.ravel(), hh.ravel(), ww.ravel() // b, hh.ravel() // b))
        pix = (hh.ravel() * w + ww.ravel())[order]
        return list((np.arange(c)[None, :] * (h * w) + pix[:, None]))
    return list(np.arange(layer.n)[:, None])


def _footprints(pattern: sp.csc_matrix, parts: list[np.ndarray]) -> sp.csc_matrix:
    """Union of the input rows of each part's neurons, all parts at once: column k of the
    result lists (sorted, distinct) the rows that part k reads. One sparse product instead of
    a np.unique per part (the tiling loop's former hot spot)."""
    sizes = np.fromiter((p.size for p in parts), np.int64, len(parts))
    ind = sp.csc_matrix((np.ones(int(sizes.sum()), np.int32), np.concatenate(parts),
                         np.concatenate([[0], np.cumsum(sizes)])),
                        shape=(pattern.shape[1], len(parts)))
    f = (pattern @ ind).tocsc()
    f.sort_indices()
    return f


def _tile(m: sp.csc_matrix, groups: list[np.ndarray], cap_n: int, cap_a: int,
          entries: np.ndarray, cap_r: int):
    """Greedy fill under three limits: neurons, axons (footprint) and route entries (the
    neurons' fan-out). Returns [(neurons, footprint rows)] or None if one neuron cannot fit."""
    parts = [p for g in groups
             for p in ([g] if g.size <= cap_n else
                       [g[i:i + cap_n] for i in range(0, g.size, cap_n)])]
    pattern = sp.csc_matrix((np.ones(m.indices.size, np.int32), m.indices, m.indptr),
                            shape=m.shape)
    fp = _footprints(pattern, parts)
    fptr, frows = fp.indptr, fp.indices
    part_routes = np.fromiter((int(entries[p].sum()) for p in parts), np.int64, len(parts))
    tiles = []
    mark = np.zeros(m.shape[0], bool)
    cur_n: list[np.ndarray] = []
    cur_rows: list[np.ndarray] = []
    n_neur = n_rows = n_routes = 0

    def close():
        nonlocal cur_n, cur_rows, n_neur, n_rows, n_routes
        if cur_n:
            # the 'new' row sets of one tile are disjoint: their union needs no np.unique
            rows = np.sort(np.concatenate(cur_rows)) if cur_rows else np.empty(0, np.int64)
            mark[rows] = False
            tiles.append((np.sort(np.concatenate(cur_n)), rows))
        cur_n, cur_rows, n_neur, n_rows, n_routes = [], [], 0, 0, 0

    def add(part, new, routes):
        nonlocal n_neur, n_rows, n_routes
        mark[new] = True
        cur_rows.append(new)
        n_rows += new.size
        n_routes += routes
        n_neur += part.size
        cur_n.append(part)

    for k, part in enumerate(parts):
        rows = frows[fptr[k]:fptr[k + 1]]
        r_k = int(part_routes[k])
        new = rows[~mark[rows]]
        if n_neur + part.size <= cap_n and n_rows + new.size <= cap_a and n_routes + r_k <= cap_r:
            add(part, new, r_k)
            continue
        close()
        if rows.size <= cap_a and r_k <= cap_r:
            add(part, rows, r_k)
            continue
        # the part alone exceeds a limit: place it neuron by neuron
        for j in part:
            r = m.indices[m.indptr[j]:m.indptr[j + 1]]
            if r.size > cap_a or entries[j] > cap_r:
                return None
            new = r[~mark[r]]
            if (n_neur + 1 > cap_n or n_rows + new.size > cap_a
                    or n_routes + entries[j] > cap_r):
                close()
                new = r
            add(np.array([j]), new, int(entries[j]))
    close()
    return tiles


def _fanout(graph: Graph, cores: list[Core], name: str) -> np.ndarray:
    """Route entries each neuron of ``name`` needs: one per consumer core listening to it."""
    n = graph.node(name).n
    cnt = np.zeros(n, np.int64)
    if name == graph.output_layer:
        cnt += 1                                   # to the host
    for c in cores:
        src = graph.node(c.layer).sources
        for s_i, s in enumerate(src):
            if s == name:
                np.add.at(cnt, c.axon_idx[c.axon_src == s_i], 1)
    return cnt


def _pool_note(graph: Graph, name: str, widest: int) -> tuple[str, str]:
    """(what in the message, what in the hint) about AvgPools composed into ``name``."""
    pools = (graph.attrs.get("composed_pools") or {}).get(name) or []
    if not pools:
        return "", ""
    f = math.prod(p["factor"] for p in pools)
    upto = "up to " if any(p.get("overlapping") for p in pools) else ""
    names = ", ".join(f"'{p['pool']}' ({p['kernel'][0]}x{p['kernel'][1]}, stride "
                      f"{p['stride'][0]})" for p in pools)
    return (f"; AvgPool {names} was composed into this layer's synapses (a pool is linear, so "
            f"it becomes part of the next matrix), multiplying its fan-in by {upto}{f:g} (about "
            f"{int(widest / f)} without it)",
            f"put a spiking layer after {names} (train the model with it) so the pool is not "
            f"composed, or ")


def _fanin_error(graph: Graph, spec: ChipSpec, name: str, fan_in: np.ndarray,
                 lcn_cap: int) -> CapacityError:
    widest = int(fan_in.max())
    j = int(np.argmax(fan_in))
    cap = spec.axons_per_core(lcn_cap)
    what, fix = _pool_note(graph, name, widest)
    return CapacityError(
        f"layer '{name}': neuron {j} has fan-in {widest} > {cap} axons per core (LCN "
        f"{lcn_cap} = {1 << lcn_cap}X{', the chip maximum' if lcn_cap == spec.max_lcn else ''}"
        f", chip '{spec.name}'){what}",
        resource="axons", needed=widest, available=cap,
        hint=f"{fix}reduce what feeds the layer to at most {cap} inputs per neuron (fewer input "
             f"channels, a smaller kernel or spatial size before a Linear layer)")


def estimate(graph: Graph, spec: ChipSpec, max_lcn: int | None = None) -> dict:
    """Cheap per-layer core estimate of a folded graph, before the (expensive) tiling.

    Per layer: widest fan-in -> the smallest LCN that holds it -> neurons per core; route
    entries per neuron from the consumer layers' estimates (a neuron reaching r consumer
    neurons lands on about ceil(r / their neurons-per-core) of their cores); neurons per core
    are capped by route_entries / mean entries. Returns {'layers': {name: {...}}, 'cores',
    'chips'}; a layer whose fan-in exceeds LCN max raises the same CapacityError as partition.
    """
    lcn_cap = spec.max_lcn if max_lcn is None else min(max_lcn, spec.max_lcn)
    info: dict[str, dict] = {}
    for name in reversed(graph.layers):
        layer: Layer = graph.node(name)
        fan_in = sum(np.bincount(m.indices, minlength=layer.n) for _, m in layer.inputs)
        fan_in = np.asarray(fan_in, np.int64)
        widest = int(fan_in.max(initial=0))
        lcn = next((k for k in range(lcn_cap + 1) if widest <= spec.axons_per_core(k)
                    and spec.neurons_per_core(layer.bits, k) >= 1), None)
        if lcn is None:
            raise _fanin_error(graph, spec, name, fan_in, lcn_cap)
        npc = spec.neurons_per_core(layer.bits, lcn)
        entries = np.zeros(layer.n, np.float64)
        if name == graph.output_layer:
            entries += 1
        for cname in graph.consumers(name):
            if cname not in info:
                continue
            ci = info[cname]
            reach = np.diff(graph.node(cname).matrix(name).indptr)
            entries += np.minimum(ci["cores"], np.ceil(reach / ci["neurons_per_core"]))
        mean_e = float(entries.mean()) if entries.size else 0.0
        per_core = npc if mean_e <= 0 else max(1, min(npc, int(spec.route_entries // mean_e)))
        cores = math.ceil(layer.n / per_core)
        info[name] = dict(neurons=layer.n, bits=int(layer.bits), fan_in=widest, lcn=lcn,
                          neurons_per_core=npc, cores=cores,
                          limit="neurons" if per_core == npc else "route entries")
    layers = {n: info[n] for n in graph.layers}
    total = sum(v["cores"] for v in layers.values())
    return {"layers": layers, "cores": total, "chips": math.ceil(total / spec.cores_per_chip)}


def partition(graph: Graph, spec: ChipSpec, max_lcn: int | None = None, **_) -> Graph:
    out = graph.copy()
    per_layer: dict[str, list[Core]] = {}
    report: dict[str, dict] = {}
    lcn_cap = spec.max_lcn if max_lcn is None else min(max_lcn, spec.max_lcn)
    # consumers first, so every layer knows its neurons' fan-out (route entries)
    for name in reversed(graph.layers):
        layer: Layer = graph.node(name)
        entries = _fanout(graph, [c for cs in per_layer.values() for c in cs], name)
        if entries.max(initial=0) > spec.route_entries:
            j = int(np.argmax(entries))
            raise CapacityError(
                f"layer '{name}': neuron {j} feeds {int(entries[j])} cores > "
                f"{spec.route_entries} route entries per core (chip '{spec.name}')",
                resource="route_entries", needed=int(entries[j]), available=spec.route_entries,
                hint="reduce the fan-out of this layer (fewer consumers or smaller kernels)")
        m, src_id, elem = stacked(layer)
        fan_in = np.diff(m.indptr)
        widest = int(fan_in.max()) if fan_in.size else 0
        best = None
        for lcn in range(lcn_cap + 1):
            cap_a = spec.axons_per_core(lcn)
            cap_n = spec.neurons_per_core(layer.bits, lcn)
            if widest > cap_a or cap_n < 1:
                continue
            bound = max(math.ceil(layer.n / cap_n),
                        math.ceil(int(entries.sum()) / spec.route_entries))
            if best is not None and len(best[1]) <= bound:
                break   # more LCN only lowers neurons per core: it cannot beat this tiling
            tiles = _tile(m, _groups(layer, cap_n), cap_n, cap_a, entries, spec.route_entries)
            if tiles is not None and (best is None or len(tiles) < len(best[1])):
                best = (lcn, tiles)
            if best is not None and len(best[1]) <= bound:
                break   # optimal for this LCN's bound: larger LCNs only lower neurons per core
        if best is None:
            raise _fanin_error(graph, spec, name, fan_in, lcn_cap)
        lcn, tiles = best
        npc = spec.neurons_per_core(layer.bits, lcn)
        lower_bound = math.ceil(layer.n / npc)
        route_bound = math.ceil(int(entries.sum()) / spec.route_entries)
        limit = ("neurons" if len(tiles) == lower_bound else
                 "route entries" if route_bound > lower_bound else "axons (input footprint)")
        report[name] = dict(neurons=layer.n, bits=int(layer.bits), fan_in=widest, lcn=lcn,
                            neurons_per_core=npc, cores=len(tiles), cores_lower_bound=lower_bound,
                            route_bound=route_bound, limit=limit)
        per_layer[name] = [Core(layer=name, neurons=neurons.astype(np.int64),
                                axon_src=src_id[rows].astype(np.int64),
                                axon_idx=elem[rows].astype(np.int64), w=layer.bits, lcn=lcn)
                           for neurons, rows in tiles]
        del m
    out.attrs["cores"] = [c for name in graph.layers for c in per_layer[name]]
    out.attrs["partition"] = {n: report[n] for n in graph.layers}
    out.attrs["stage"] = "partitioned"
    return out
