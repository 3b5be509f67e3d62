"""route: per-element route entries with delays balanced so every path has latency L.

Graph in: placed. Graph out: routed, with ``attrs['routes']`` (mapping.Routes).
Depth: the graph input has depth 0, a layer 1 + the largest depth of its sources. A layer of
depth d integrates input step t at tick t + d - 1 (its cores' ``tick_start`` is d - 1 and they
are active for T ticks), so an entry from a source of depth d_s into a layer of depth d carries
delay d - d_s; the host injects input step t "at tick t - 1" with delay d. The output layer's
neurons send to the host with delay 1. L = depth(output) - 1 and T steps run for T + L ticks.
Each source element gets one entry per destination core whose footprint holds it (multicast by
entries, one packet each). Checked: delays within 1..max_delay, route entries per core within
the route table.
"""

from __future__ import annotations

import numpy as np

from compiler.chip import ChipSpec
from compiler.errors import CapacityError
from compiler.ir.graph import Graph
from compiler.ir.mapping import PopRoutes, Routes


def depths(graph: Graph) -> dict[str, int]:
    d = {graph.input_name: 0}
    for name in graph.layers:
        d[name] = 1 + max(d[s] for s in graph.node(name).sources)
    return d


def route(graph: Graph, spec: ChipSpec, **_) -> Graph:
    cores = graph.attrs["cores"]
    dep = depths(graph)
    inp = graph.input_name
    sizes = {inp: int(np.prod(graph.node(inp).input_type))}
    sizes.update({n: graph.node(n).n for n in graph.layers})
    per: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {
        p: [] for p in sizes}
    for ci, c in enumerate(cores):
        layer = graph.node(c.layer)
        for s_i, src in enumerate(layer.sources):
            sel = np.nonzero(c.axon_src == s_i)[0]
            delay = dep[c.layer] - dep[src] if src != inp else dep[c.layer]
            if delay > spec.max_delay:
                raise CapacityError(
                    f"connection '{src}' -> '{c.layer}' spans {delay} pipeline stages > "
                    f"max delay {spec.max_delay} (chip '{spec.name}')",
                    resource="delay", needed=delay, available=spec.max_delay,
                    hint="shorten the skip connection or insert relay layers")
            per[src].append((c.axon_idx[sel], np.full(sel.size, ci), sel,
                             np.full(sel.size, delay)))
    out_layer = graph.output_layer
    n_out = sizes[out_layer]
    # host entries first: with the cores' entries appended in (core, axon) order, a stable
    # sort by element gives the (element, core, axon) order without a 3-key lexsort
    per[out_layer].insert(0, (np.arange(n_out), np.full(n_out, -1), np.arange(n_out),
                              np.ones(n_out, np.int64)))
    pops = {}
    for p, parts in per.items():
        if parts:
            elem = np.concatenate([x[0] for x in parts])
            core = np.concatenate([x[1] for x in parts])
            axon = np.concatenate([x[2] for x in parts])
            dly = np.concatenate([x[3] for x in parts])
        else:
            elem = core = axon = dly = np.empty(0, np.int64)
        order = np.argsort(elem, kind="stable")
        counts = np.bincount(elem, minlength=sizes[p])
        pops[p] = PopRoutes(indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                            core=core[order].astype(np.int64), axon=axon[order].astype(np.int64),
                            delay=dly[order].astype(np.int64))
    # route-table capacity per source core
    used = np.zeros(len(cores), np.int64)
    for ci, c in enumerate(cores):
        pr = pops[c.layer]
        used[ci] = int(np.sum(pr.indptr[c.neurons + 1] - pr.indptr[c.neurons]))
    if used.size and used.max() > spec.route_entries:
        ci = int(np.argmax(used))
        raise CapacityError(
            f"core {ci} (layer '{cores[ci].layer}') needs {used[ci]} route entries > "
            f"{spec.route_entries} (chip '{spec.name}')", resource="route_entries",
            needed=int(used[ci]), available=spec.route_entries,
            hint="the layer's neurons fan out to too many cores; reduce its fan-out")
    out = graph.copy()
    out.attrs["routes"] = Routes(depth=dep, latency=dep[out_layer] - 1, pops=pops)
    out.attrs["route_entries_per_core"] = used.tolist()
    out.attrs["stage"] = "routed"
    return out
