"""place: put every core on a (chip, x, y) slot of the board, minimising rate-weighted cost.

Graph in: partitioned. Graph out: placed (each Core has chip/x/y).
A board of N chips is a grid ceil(sqrt(N)) chips wide; core (chip, x, y) has board coordinates
(cx*mesh_x + x, cy*mesh_y + y). A packet from core i to core j travels |dX| + |dY| hops (XY
routing); the hops that cross a chip boundary are inter-chip hops. The cost is
    sum_ij traffic_ij * (e_hop * on-chip hops + e_interchip * inter-chip hops)
with traffic_ij = sum of calibrated firing rates (spikes/step, graph.attrs['calibration']['rates'])
of the neurons of core i that core j listens to (rate 0.1 per neuron without calibration).
Start: cores in layer order along a serpentine path, chip by chip; then seeded simulated
annealing over moves and swaps (empty slots included). Same seed, same placement.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.chip import ChipSpec
from compiler.errors import CapacityError
from compiler.ir.graph import Graph
from compiler.ir.mapping import Core


def board_grid(chips: int) -> tuple[int, int]:
    cw = int(math.ceil(math.sqrt(chips)))
    return cw, int(math.ceil(chips / cw))


def slot_coords(spec: ChipSpec, chips: int) -> np.ndarray:
    """[chips*64, 5] rows (chip, x, y, X, Y) in serpentine order within each chip."""
    cw, _ = board_grid(chips)
    rows = []
    for c in range(chips):
        cx, cy = c % cw, c // cw
        for y in range(spec.mesh_y):
            xs = range(spec.mesh_x) if y % 2 == 0 else range(spec.mesh_x - 1, -1, -1)
            for x in xs:
                rows.append((c, x, y, cx * spec.mesh_x + x, cy * spec.mesh_y + y))
    return np.array(rows, dtype=np.int64)


def hop_split(spec: ChipSpec, a: np.ndarray, b: np.ndarray):
    """(on-chip hops, inter-chip hops) between board coordinates a [..., 2] and b [..., 2]."""
    total = np.abs(a[..., 0] - b[..., 0]) + np.abs(a[..., 1] - b[..., 1])
    inter = (np.abs(a[..., 0] // spec.mesh_x - b[..., 0] // spec.mesh_x)
             + np.abs(a[..., 1] // spec.mesh_y - b[..., 1] // spec.mesh_y))
    return total - inter, inter


def traffic_matrix(graph: Graph, cores: list[Core]) -> np.ndarray:
    rates = (graph.attrs.get("calibration") or {}).get("rates", {})
    n = len(cores)
    owner: dict[str, np.ndarray] = {}
    for name in graph.layers:
        owner[name] = np.full(graph.node(name).n, -1, np.int64)
    for i, c in enumerate(cores):
        owner[c.layer][c.neurons] = i
    t = np.zeros((n, n))
    for j, c in enumerate(cores):
        layer = graph.node(c.layer)
        for s_i, src in enumerate(layer.sources):
            if src not in owner:
                continue  # graph input: injected by the host
            idx = c.axon_idx[c.axon_src == s_i]
            r = np.asarray(rates.get(src, np.full(graph.node(src).n, 0.1)))[idx]
            np.add.at(t[:, j], owner[src][idx], r)
    return t


def place(graph: Graph, spec: ChipSpec, chips: int | str = 1, seed: int = 0,
          effort: float = 1.0, **_) -> Graph:
    """``chips='auto'``: the smallest board that holds the cores (ceil(cores / 64))."""
    cores: list[Core] = graph.attrs["cores"]
    n = len(cores)
    if chips == "auto":
        chips = min(max(1, math.ceil(n / spec.cores_per_chip)), spec.max_chips)
    chips = int(chips)
    cap = chips * spec.cores_per_chip
    if chips < 1 or chips > spec.max_chips:
        raise CapacityError(f"--chips {chips} outside 1..{spec.max_chips}", "chips", chips,
                            spec.max_chips)
    if n > cap:
        need = math.ceil(n / spec.cores_per_chip)
        per_layer = {}
        for c in cores:
            per_layer[c.layer] = per_layer.get(c.layer, 0) + 1
        big = max(per_layer, key=per_layer.get)
        hint = (f"compile with --chips {need} (largest layer: '{big}', {per_layer[big]} cores)"
                if need <= spec.max_chips else
                f"that exceeds the largest board ({spec.max_chips} chips); shrink layer "
                f"'{big}' ({per_layer[big]} cores) or use fewer weight bits")
        raise CapacityError(
            f"network needs {n} cores but the board has {cap} ({chips} chip(s) x "
            f"{spec.cores_per_chip} cores, chip '{spec.name}'); it needs {need} chip(s)",
            resource="cores", needed=n, available=cap,
            hint=hint)
    slots = slot_coords(spec, chips)
    xy = slots[:, 3:5]
    t = traffic_matrix(graph, cores)
    w = t + t.T
    np.fill_diagonal(w, 0.0)
    on, inter = hop_split(spec, xy[:, None, :], xy[None, :, :])
    dist = spec.e_hop_pj * on + spec.e_interchip_pj * inter      # [slots, slots]
    pos = np.arange(n)                                            # core -> slot
    occ = np.full(len(slots), -1, np.int64)
    occ[:n] = np.arange(n)
    rng = np.random.default_rng(seed)

    def cost_of(i, s):
        return float(w[i] @ dist[s, pos])

    total = float(np.sum(t * dist[pos][:, pos]))
    iters = int(effort * min(200_000, 60 * n + 2000)) if n > 1 else 0
    temp0 = (total / max(n, 1)) * 0.05 + 1e-9
    for k in range(iters):
        temp = temp0 * (1 - k / iters) + 1e-12
        i = int(rng.integers(n))
        s_new = int(rng.integers(len(slots)))
        s_old = int(pos[i])
        if s_new == s_old:
            continue
        j = int(occ[s_new])
        if j < 0:
            delta = cost_of(i, s_new) - cost_of(i, s_old)
        else:
            before = cost_of(i, s_old) + cost_of(j, s_new) - w[i, j] * dist[s_old, s_new]
            pos[i], pos[j] = s_new, s_old
            after = cost_of(i, s_new) + cost_of(j, s_old) - w[i, j] * dist[s_new, s_old]
            pos[i], pos[j] = s_old, s_new
            delta = after - before
        if delta < 0 or rng.random() < math.exp(-delta / temp):
            pos[i] = s_new
            occ[s_old] = j
            occ[s_new] = i
            if j >= 0:
                pos[j] = s_old
            total += delta
    placed = [c.at(*slots[pos[i], :3]) for i, c in enumerate(cores)]
    out = graph.copy()
    out.attrs["cores"] = placed
    out.attrs["chips"] = int(chips)
    out.attrs["placement_cost_pj_per_step"] = float(np.sum(t * dist[pos][:, pos]))
    out.attrs["stage"] = "placed"
    return out
