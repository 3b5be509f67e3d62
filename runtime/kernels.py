"""Every Numba kernel of the runtime lives here (cache=True, no fastmath: integer bit-exactness).

The tick loop of one sample (chip.md 'Time' and 'Neuron'):
  tick tau: (a) the host injects input step tau (event payloads) into the axon slots
            (tau - 1 + delay) mod 16; (b) every event waiting in slot tau mod 16 is integrated:
            acc[j] += payload * w_aj over the crossbar row of axon a (event-driven: only active
            axons are touched); (c) every core whose window [tick_start, tick_start + T)
            contains tau updates its neurons: leak, integrate (saturating), fire, reset, floor;
            a spike sends one packet per route entry into slot (tau + delay) mod 16 of the
            destination core, or to the host (output counts).
Weights are stored as one dense row per axon over its core's neurons (int8, SIMD-friendly:
crossbar rows of unrolled conv tiles are ~60 % dense); logical SOPs count only nonzero weights.
Axon buffers are kept as per-slot event lists (axon, payload): each route entry delivers at
most once into a slot between two reads of it, so a list of (route entries + input entries)
capacity per slot never overflows.

Accounting per sample: logical SOPs (events x nonzero weights), one-bit SOPs (events x set
weight bits, x payload_bits for graded host events), packets, on-chip and inter-chip hops,
per-core busy cycles, per-tick latency cycles (slowest core + NoC drain, the drain being the
longest packet path or the most loaded link, whichever is larger), per-link flit counts.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import njit, prange

# stats columns of the per-sample counters
ST_SOPS, ST_SOPS1, ST_PACKETS, ST_HOPS, ST_XHOPS, ST_CYCLES, ST_IN_EVENTS, ST_SPIKES = range(8)
N_STATS = 8


@njit(cache=True, nogil=True)
def _sat(v, lo, hi):
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


@njit(cache=True, nogil=True)
def _leak(v, mode, leak, shift, lo, hi):
    if mode == 1:
        return _sat(v + leak, lo, hi)
    if mode == 2:
        return v - (v >> shift)
    if mode == 3:
        if v >= 0:
            return (v * (4096 - leak)) >> 12
        return -(((-v) * (4096 - leak)) >> 12)
    return v


@njit(cache=True, nogil=True)
def _run_sample(b, payloads, T, L, in_ptr, in_gax, in_delay,
                core_nb, core_ts, core_ev_cyc, core_fire_cyc,
                ax_off, ax_nnz, wrow, ax_sops1, ax_core, ax_graded,
                th_pos, th_neg, v_reset, v_init, bias, leak, shift, rmode, nmode, lmode,
                neu_layer, rt_ptr, rt_gax, rt_delay, rt_hops, rt_xhops, rt_lptr, rt_links,
                vlo, vhi, graded_bits, hop_cyc, xhop_cyc, slots,
                act_ax, act_p, act_n, V, acc, core_ev, core_pk, link_tick, touched,
                out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                tick_cycles, cnt_all, v_all, record):
    n_in = in_ptr.size - 1
    C = core_ts.size
    N = V.size
    sops = 0
    sops1 = 0
    packets = 0
    hops_all = 0
    xhops_all = 0
    cycles = 0
    in_events = 0
    spikes = 0
    for n in range(N):
        V[n] = v_init[n]
        acc[n] = 0
    for s in range(slots):
        act_n[s] = 0
    for tau in range(T + L):
        s = tau % slots
        if tau < T:
            for i in range(n_in):
                p = payloads[b, tau, i]
                if p != 0:
                    for e in range(in_ptr[i], in_ptr[i + 1]):
                        sl = (tau - 1 + in_delay[e]) % slots
                        k = act_n[sl]
                        act_ax[sl, k] = in_gax[e]
                        act_p[sl, k] = p
                        act_n[sl] = k + 1
                        in_events += 1
        for k in range(act_n[s]):
            a = act_ax[s, k]
            p = np.int32(act_p[s, k])
            core_ev[ax_core[a]] += 1
            c = ax_core[a]
            sops += ax_nnz[a]
            if ax_graded[a]:
                sops1 += ax_sops1[a] * graded_bits
            else:
                sops1 += ax_sops1[a]
            base = core_nb[c]
            n_row = core_nb[c + 1] - base
            off = ax_off[a]
            dst = acc[base:base + n_row]
            row = wrow[off:off + n_row]
            for j in range(n_row):          # same-width int32 ops: LLVM vectorizes this
                dst[j] += p * np.int32(row[j])
        act_n[s] = 0
        busiest = 0
        drain = 0
        n_touched = 0
        for c in range(C):
            t0 = core_ts[c]
            if tau < t0 or tau >= t0 + T:
                continue
            pk = 0
            for n in range(core_nb[c], core_nb[c + 1]):
                v = _leak(V[n], lmode[n], leak[n], shift[n], vlo, vhi)
                v = _sat(v + np.int64(acc[n]) + bias[n], vlo, vhi)
                acc[n] = 0
                if v >= th_pos[n]:
                    if rmode[n] == 0:
                        v = v_reset[n]
                    elif rmode[n] == 1:
                        v = v - th_pos[n]
                    layer_spk[b, neu_layer[n]] += 1
                    spikes += 1
                    if record:
                        cnt_all[b, n] += 1
                    for e in range(rt_ptr[n], rt_ptr[n + 1]):
                        g = rt_gax[e]
                        if g < 0:
                            out_counts[b, -1 - g] += 1
                            continue
                        sl = (tau + rt_delay[e]) % slots
                        k = act_n[sl]
                        act_ax[sl, k] = g
                        act_p[sl, k] = 1
                        act_n[sl] = k + 1
                        pk += 1
                        h = rt_hops[e]
                        xh = rt_xhops[e]
                        hops_all += h
                        xhops_all += xh
                        path = h * hop_cyc + xh * xhop_cyc
                        if path > drain:
                            drain = path
                        for q in range(rt_lptr[e], rt_lptr[e + 1]):
                            li = rt_links[q]
                            if link_tick[li] == 0:
                                touched[n_touched] = li
                                n_touched += 1
                            link_tick[li] += 1
                            link_total[b, li] += 1
                if nmode[n] == 1 and v < -th_neg[n]:
                    v = -th_neg[n]
                V[n] = v
            cyc = core_ev[c] * core_ev_cyc[c] + core_fire_cyc[c] + pk
            core_ev[c] = 0
            core_busy[b, c] += cyc
            packets += pk
            if cyc > busiest:
                busiest = cyc
        worst_link = 0
        for q in range(n_touched):
            li = touched[q]
            if link_tick[li] > worst_link:
                worst_link = link_tick[li]
            link_tick[li] = 0
        if worst_link > drain:
            drain = worst_link
        tick_cycles[b, tau] = busiest + drain
        cycles += busiest + drain
    for s in range(slots):
        act_n[s] = 0
    stats[b, ST_SOPS] += sops
    stats[b, ST_SOPS1] += sops1
    stats[b, ST_PACKETS] += packets
    stats[b, ST_HOPS] += hops_all
    stats[b, ST_XHOPS] += xhops_all
    stats[b, ST_CYCLES] += cycles
    stats[b, ST_IN_EVENTS] += in_events
    stats[b, ST_SPIKES] += spikes
    for o in range(out_glob.size):
        v_out[b, o] = V[out_glob[o]]
    if record:
        for n in range(N):
            v_all[b, n] = V[n]


@njit(cache=True, nogil=True, parallel=True)
def run_batch(payloads, T, L, workers, in_ptr, in_gax, in_delay,
              core_nb, core_ts, core_ev_cyc, core_fire_cyc,
              ax_off, ax_nnz, wrow, ax_sops1, ax_core, ax_graded,
              th_pos, th_neg, v_reset, v_init, bias, leak, shift, rmode, nmode, lmode,
              neu_layer, rt_ptr, rt_gax, rt_delay, rt_hops, rt_xhops, rt_lptr, rt_links,
              vlo, vhi, graded_bits, hop_cyc, xhop_cyc, slots, cap, n_links,
              out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
              tick_cycles, cnt_all, v_all, record):
    """Run every sample of ``payloads`` [B, T, n_in]; samples are split over ``workers``."""
    B = payloads.shape[0]
    N = th_pos.size
    C = core_ts.size
    for w in prange(workers):
        act_ax = np.empty((slots, cap), np.int64)
        act_p = np.empty((slots, cap), np.uint8)
        act_n = np.zeros(slots, np.int64)
        V = np.empty(N, np.int64)
        acc = np.zeros(N, np.int32)
        core_ev = np.zeros(C, np.int64)
        core_pk = np.zeros(C, np.int64)
        link_tick = np.zeros(max(n_links, 1), np.int64)
        touched = np.empty(max(n_links, 1), np.int64)
        for b in range(w, B, workers):
            _run_sample(b, payloads, T, L, in_ptr, in_gax, in_delay,
                        core_nb, core_ts, core_ev_cyc, core_fire_cyc,
                        ax_off, ax_nnz, wrow, ax_sops1, ax_core, ax_graded,
                        th_pos, th_neg, v_reset, v_init, bias, leak, shift, rmode, nmode, lmode,
                        neu_layer, rt_ptr, rt_gax, rt_delay, rt_hops, rt_xhops, rt_lptr,
                        rt_links, vlo, vhi, graded_bits, hop_cyc, xhop_cyc, slots,
                        act_ax, act_p, act_n, V, acc, core_ev, core_pk, link_tick, touched,
                        out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                        tick_cycles, cnt_all, v_all, record)


__all__ = ["run_batch", "run_batch_float", "N_STATS", "nb"]


# --- float path (analog chip instances, runtime/noise.py) ------------------------------------
# Same tick loop and accounting as the integer kernel above; V, the accumulators, the weights and
# the registers are float64 and nothing is rounded: the sum of weights is exact real arithmetic,
# saturation clamps to the membrane range, the leaks are ADD v + leak, SHIFT/MULT v - v * decay
# (decay = 2**-k resp. d / 4096, precomputed per neuron by the wrapper).


@njit(cache=True, nogil=True)
def _sat_f(v, lo, hi):
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


@njit(cache=True, nogil=True)
def _leak_f(v, mode, leak, decay, lo, hi):
    if mode == 1:
        return _sat_f(v + leak, lo, hi)
    if mode == 2 or mode == 3:
        return v - v * decay
    return v


@njit(cache=True, nogil=True)
def _run_sample_float(b, payloads, T, L, in_ptr, in_gax, in_delay,
                      core_nb, core_ts, core_ev_cyc, core_fire_cyc,
                      ax_off, ax_nnz, wrow, ax_sops1, ax_core, ax_graded,
                      th_pos, th_neg, v_reset, v_init, bias, leak, decay, rmode, nmode, lmode,
                      neu_layer, rt_ptr, rt_gax, rt_delay, rt_hops, rt_xhops, rt_lptr, rt_links,
                      vlo, vhi, graded_bits, hop_cyc, xhop_cyc, slots,
                      act_ax, act_p, act_n, V, acc, core_ev, link_tick, touched,
                      out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                      tick_cycles, cnt_all, v_all, record):
    n_in = in_ptr.size - 1
    C = core_ts.size
    N = V.size
    sops = 0
    sops1 = 0
    packets = 0
    hops_all = 0
    xhops_all = 0
    cycles = 0
    in_events = 0
    spikes = 0
    for n in range(N):
        V[n] = v_init[n]
        acc[n] = 0.0
    for s in range(slots):
        act_n[s] = 0
    for tau in range(T + L):
        s = tau % slots
        if tau < T:
            for i in range(n_in):
                p = payloads[b, tau, i]
                if p != 0:
                    for e in range(in_ptr[i], in_ptr[i + 1]):
                        sl = (tau - 1 + in_delay[e]) % slots
                        k = act_n[sl]
                        act_ax[sl, k] = in_gax[e]
                        act_p[sl, k] = p
                        act_n[sl] = k + 1
                        in_events += 1
        for k in range(act_n[s]):
            a = act_ax[s, k]
            p = np.float64(act_p[s, k])
            core_ev[ax_core[a]] += 1
            c = ax_core[a]
            sops += ax_nnz[a]
            if ax_graded[a]:
                sops1 += ax_sops1[a] * graded_bits
            else:
                sops1 += ax_sops1[a]
            base = core_nb[c]
            n_row = core_nb[c + 1] - base
            off = ax_off[a]
            dst = acc[base:base + n_row]
            row = wrow[off:off + n_row]
            for j in range(n_row):
                dst[j] += p * row[j]
        act_n[s] = 0
        busiest = 0
        drain = 0
        n_touched = 0
        for c in range(C):
            t0 = core_ts[c]
            if tau < t0 or tau >= t0 + T:
                continue
            pk = 0
            for n in range(core_nb[c], core_nb[c + 1]):
                v = _leak_f(V[n], lmode[n], leak[n], decay[n], vlo, vhi)
                v = _sat_f(v + acc[n] + bias[n], vlo, vhi)
                acc[n] = 0.0
                if v >= th_pos[n]:
                    if rmode[n] == 0:
                        v = v_reset[n]
                    elif rmode[n] == 1:
                        v = v - th_pos[n]
                    layer_spk[b, neu_layer[n]] += 1
                    spikes += 1
                    if record:
                        cnt_all[b, n] += 1
                    for e in range(rt_ptr[n], rt_ptr[n + 1]):
                        g = rt_gax[e]
                        if g < 0:
                            out_counts[b, -1 - g] += 1
                            continue
                        sl = (tau + rt_delay[e]) % slots
                        k = act_n[sl]
                        act_ax[sl, k] = g
                        act_p[sl, k] = 1
                        act_n[sl] = k + 1
                        pk += 1
                        h = rt_hops[e]
                        xh = rt_xhops[e]
                        hops_all += h
                        xhops_all += xh
                        path = h * hop_cyc + xh * xhop_cyc
                        if path > drain:
                            drain = path
                        for q in range(rt_lptr[e], rt_lptr[e + 1]):
                            li = rt_links[q]
                            if link_tick[li] == 0:
                                touched[n_touched] = li
                                n_touched += 1
                            link_tick[li] += 1
                            link_total[b, li] += 1
                if nmode[n] == 1 and v < -th_neg[n]:
                    v = -th_neg[n]
                V[n] = v
            cyc = core_ev[c] * core_ev_cyc[c] + core_fire_cyc[c] + pk
            core_ev[c] = 0
            core_busy[b, c] += cyc
            packets += pk
            if cyc > busiest:
                busiest = cyc
        worst_link = 0
        for q in range(n_touched):
            li = touched[q]
            if link_tick[li] > worst_link:
                worst_link = link_tick[li]
            link_tick[li] = 0
        if worst_link > drain:
            drain = worst_link
        tick_cycles[b, tau] = busiest + drain
        cycles += busiest + drain
    for s in range(slots):
        act_n[s] = 0
    stats[b, ST_SOPS] += sops
    stats[b, ST_SOPS1] += sops1
    stats[b, ST_PACKETS] += packets
    stats[b, ST_HOPS] += hops_all
    stats[b, ST_XHOPS] += xhops_all
    stats[b, ST_CYCLES] += cycles
    stats[b, ST_IN_EVENTS] += in_events
    stats[b, ST_SPIKES] += spikes
    for o in range(out_glob.size):
        v_out[b, o] = V[out_glob[o]]
    if record:
        for n in range(N):
            v_all[b, n] = V[n]


@njit(cache=True, nogil=True, parallel=True)
def run_batch_float(payloads, T, L, workers, in_ptr, in_gax, in_delay,
                    core_nb, core_ts, core_ev_cyc, core_fire_cyc,
                    ax_off, ax_nnz, wrow, ax_sops1, ax_core, ax_graded,
                    th_pos, th_neg, v_reset, v_init, bias, leak, decay, rmode, nmode, lmode,
                    neu_layer, rt_ptr, rt_gax, rt_delay, rt_hops, rt_xhops, rt_lptr, rt_links,
                    vlo, vhi, graded_bits, hop_cyc, xhop_cyc, slots, cap, n_links,
                    out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                    tick_cycles, cnt_all, v_all, record):
    """Float twin of :func:`run_batch` (float64 weights [wrow], registers, V; decay per neuron)."""
    B = payloads.shape[0]
    N = th_pos.size
    C = core_ts.size
    for w in prange(workers):
        act_ax = np.empty((slots, cap), np.int64)
        act_p = np.empty((slots, cap), np.uint8)
        act_n = np.zeros(slots, np.int64)
        V = np.empty(N, np.float64)
        acc = np.zeros(N, np.float64)
        core_ev = np.zeros(C, np.int64)
        link_tick = np.zeros(max(n_links, 1), np.int64)
        touched = np.empty(max(n_links, 1), np.int64)
        for b in range(w, B, workers):
            _run_sample_float(b, payloads, T, L, in_ptr, in_gax, in_delay,
                              core_nb, core_ts, core_ev_cyc, core_fire_cyc,
                              ax_off, ax_nnz, wrow, ax_sops1, ax_core, ax_graded,
                              th_pos, th_neg, v_reset, v_init, bias, leak, decay, rmode, nmode,
                              lmode, neu_layer, rt_ptr, rt_gax, rt_delay, rt_hops, rt_xhops,
                              rt_lptr, rt_links, vlo, vhi, graded_bits, hop_cyc, xhop_cyc, slots,
                              act_ax, act_p, act_n, V, acc, core_ev, link_tick, touched,
                              out_counts, v_out, out_glob, layer_spk, stats, core_busy,
                              link_total, tick_cycles, cnt_all, v_all, record)


@njit(cache=True, nogil=True)
def xy_links(sx, sy, dx, dy, width, mesh_x, mesh_y):
    """XY routes on the board mesh: (link ptr [R+1], link ids, on-chip hops, inter-chip hops).

    Link id = ((Y * width + X) * 4 + dir), dir 0:+X 1:-X 2:+Y 3:-Y, for the link leaving (X, Y).
    """
    R = sx.size
    ptr = np.zeros(R + 1, np.int64)
    for e in range(R):
        ptr[e + 1] = ptr[e] + abs(dx[e] - sx[e]) + abs(dy[e] - sy[e])
    links = np.empty(ptr[R], np.int64)
    hops = np.zeros(R, np.int64)
    xhops = np.zeros(R, np.int64)
    for e in range(R):
        x = sx[e]
        y = sy[e]
        q = ptr[e]
        while x != dx[e]:
            d = 0 if dx[e] > x else 1
            nx = x + 1 if d == 0 else x - 1
            links[q] = (y * width + x) * 4 + d
            q += 1
            if nx // mesh_x != x // mesh_x:
                xhops[e] += 1
            else:
                hops[e] += 1
            x = nx
        while y != dy[e]:
            d = 2 if dy[e] > y else 3
            ny = y + 1 if d == 2 else y - 1
            links[q] = (y * width + x) * 4 + d
            q += 1
            if ny // mesh_y != y // mesh_y:
                xhops[e] += 1
            else:
                hops[e] += 1
            y = ny
    return ptr, links, hops, xhops
