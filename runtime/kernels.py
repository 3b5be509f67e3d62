"""Every Numba kernel of the runtime lives here (cache=True, no fastmath: integer bit-exactness).

The tick loop of one sample (chip.md 'Time' and 'Neuron'):
  tick tau: (a) the host injects input step tau (event payloads) into slot (tau - 1 + delay)
            mod 16 of each destination core; (b) core by core: every event waiting in the
            core's current slot is integrated, acc[j] += payload * w_aj over the crossbar row of
            axon a (event-driven: only active axons are touched), then, if tau lies in the
            core's window [tick_start, tick_start + T), its neurons update (leak, integrate
            with saturation, fire, reset, floor) and every spike sends one packet per route
            entry into slot (tau + delay) mod 16 of the destination core, or to the host.
Spikes always land in a later slot (1 <= delay <= 15 < 16), so the order of cores in a tick
does not matter. Events are kept in per-(slot, core) lists whose capacity is the core's axon
count: an axon has one source and receives at most once per slot between two reads of it.
Weights are one dense row per axon over its core's neurons (int8, or float64 on analog
instances); a core's rows are contiguous, so a core's events stream through one block.

Accounting per sample: logical SOPs (events x nonzero weights), one-bit SOPs (events x set
weight bits, x payload_bits for graded host events), packets, on-chip and inter-chip hops,
per-core busy cycles, per-tick latency (busiest core + NoC drain: the longest packet path or
the most loaded link, whichever is larger), per-link flits. Packets between the same pair of
cores in a tick share one XY path, so link loads are accumulated per (source, destination)
pair, not per packet.

One generic loop serves both number systems: the integer path (int64 membranes, int32
accumulators, arithmetic-shift and 12-bit multiplicative leaks) and the float path of analog
noise instances (float64 everywhere, leak v - v * decay). The leak rule and the weight cast are
``overload``s resolved by type at compile time (jitted functions passed as arguments would break
Numba's on-disk cache), so Numba compiles a specialised loop for each.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

# One coarse parallel region per call (samples split over workers) needs no spinning OpenMP
# pool; numba's OpenMP layer and torch's bundled OpenMP both spin-wait and, on a 2-core
# machine, starved each other whenever the twin/attacks or a torch baseline ran next to the
# runtime (measured: torch batch-1 VGG9 dropped from 5.5 to 0.6 samples/s). NUMBA_THREADING_LAYER
# still wins when set.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# stats columns of the per-sample counters
ST_SOPS, ST_SOPS1, ST_PACKETS, ST_HOPS, ST_XHOPS, ST_CYCLES, ST_IN_EVENTS, ST_SPIKES = range(8)
N_STATS = 8
# columns of the per-axon table ax_info: dense-row offset, nonzero weights, one-bit SOPs per
# event (graded host events already x payload_bits), core
AX_OFF, AX_NNZ, AX_SOPS1, AX_CORE = range(4)
# columns of the route tables rt_info / in_info: destination axon (global; -1-k = host output
# k), delay, destination core, on-chip hops, inter-chip hops, core pair
RT_AXON, RT_DELAY, RT_CORE, RT_HOPS, RT_XHOPS, RT_PAIR = range(6)


@njit(cache=True, nogil=True)
def _sat(v, lo, hi):
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def leak(v, mode, lk, shift, lo, hi):
    """The leak rule, resolved at compile time by the membrane type (see the overload)."""
    if isinstance(v, (float, np.floating)):
        if mode == 1:
            return min(max(v + lk, lo), hi)
        return v - v * shift if mode in (2, 3) else v
    if mode == 1:
        return min(max(v + lk, lo), hi)
    if mode == 2:
        return v - (v >> shift)
    if mode == 3:
        return (v * (4096 - lk)) >> 12 if v >= 0 else -(((-v) * (4096 - lk)) >> 12)
    return v


@overload(leak, jit_options={"nogil": True})
def _leak_impl(v, mode, lk, shift, lo, hi):
    if isinstance(v, types.Integer):
        def int_leak(v, mode, lk, shift, lo, hi):
            """chip.md: ADD saturating, SHIFT v - (v >> k), MULT sign(v)*((|v|*(4096-d)) >> 12)."""
            if mode == 1:
                return _sat(v + lk, lo, hi)
            if mode == 2:
                return v - (v >> shift)
            if mode == 3:
                if v >= 0:
                    return (v * (4096 - lk)) >> 12
                return -(((-v) * (4096 - lk)) >> 12)
            return v
        return int_leak
    if isinstance(v, types.Float):
        def float_leak(v, mode, lk, shift, lo, hi):
            """Analog: ADD v + leak (saturating), SHIFT/MULT v - v * decay (``shift`` holds the
            per-neuron decay 2**-k or d/4096 on analog tables)."""
            if mode == 1:
                return _sat(v + lk, lo, hi)
            if mode == 2 or mode == 3:
                return v - v * shift
            return v
        return float_leak
    return None


def wcast(w):
    """Weight/payload operand of the accumulate: int32 for integers, unchanged floats."""
    return w if isinstance(w, (float, np.floating)) else np.int32(w)


@overload(wcast, jit_options={"nogil": True})
def _wcast_impl(w):
    if isinstance(w, types.Integer):
        def to_i32(w):
            return np.int32(w)      # same-width int32 multiply-add: LLVM vectorizes the row loop
        return to_i32
    if isinstance(w, types.Float):
        def keep(w):
            return w
        return keep
    return None


@njit(cache=True, nogil=True)
def _deliver(sl, g, c, p, core_ab, ev_ax, ev_p, ev_n):
    k = ev_n[sl, c]
    ev_ax[sl, core_ab[c] + k] = g
    ev_p[sl, core_ab[c] + k] = p
    ev_n[sl, c] = k + 1


@njit(cache=True, nogil=True)
def _sample(b, payloads, T, L, in_ptr, in_info, core_nb, core_ab, core_ts, core_ev_cyc,
            core_fire_cyc, ax_info, wrow, th_pos, th_neg, v_reset, v_init, bias, lk_reg, shift,
            rmode, nmode, lmode, neu_layer, rt_ptr, rt_info, pair_lptr, pair_links, pair_cyc,
            vlo, vhi, slots,
            ev_ax, ev_p, ev_n, V, acc, pair_cnt, pair_touched, link_tick, link_touched,
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
    ev_n[:, :] = 0
    for tau in range(T + L):
        s = tau % slots
        if tau < T:
            for i in range(n_in):
                p = payloads[b, tau, i]
                if p != 0:
                    for e in range(in_ptr[i], in_ptr[i + 1]):
                        _deliver((tau - 1 + in_info[e, RT_DELAY]) % slots, in_info[e, RT_AXON],
                                 in_info[e, RT_CORE], p, core_ab, ev_ax, ev_p, ev_n)
                        in_events += 1
        busiest = 0
        n_pairs = 0
        for c in range(C):
            n_ev = ev_n[s, c]
            base = core_nb[c]
            n_row = core_nb[c + 1] - base
            dst = acc[base:base + n_row]
            a0 = core_ab[c]
            for k in range(n_ev):
                a = ev_ax[s, a0 + k]
                p = wcast(ev_p[s, a0 + k])
                off = ax_info[a, AX_OFF]
                sops += ax_info[a, AX_NNZ]
                sops1 += ax_info[a, AX_SOPS1]
                row = wrow[off:off + n_row]
                for j in range(n_row):
                    dst[j] += p * wcast(row[j])
            ev_n[s, c] = 0
            t0 = core_ts[c]
            if tau < t0 or tau >= t0 + T:
                continue
            pk = 0
            for n in range(base, base + n_row):
                v = leak(V[n], lmode[n], lk_reg[n], shift[n], vlo, vhi)
                v = _sat(v + acc[n] + bias[n], vlo, vhi)
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
                        g = rt_info[e, RT_AXON]
                        if g < 0:
                            out_counts[b, -1 - g] += 1
                            continue
                        _deliver((tau + rt_info[e, RT_DELAY]) % slots, g, rt_info[e, RT_CORE],
                                 1, core_ab, ev_ax, ev_p, ev_n)
                        pk += 1
                        hops_all += rt_info[e, RT_HOPS]
                        xhops_all += rt_info[e, RT_XHOPS]
                        q = rt_info[e, RT_PAIR]
                        if pair_cnt[q] == 0:
                            pair_touched[n_pairs] = q
                            n_pairs += 1
                        pair_cnt[q] += 1
                if nmode[n] == 1 and v < -th_neg[n]:
                    v = -th_neg[n]
                V[n] = v
            cyc = n_ev * core_ev_cyc[c] + core_fire_cyc[c] + pk
            core_busy[b, c] += cyc
            packets += pk
            if cyc > busiest:
                busiest = cyc
        # NoC: the packets of one (source core, destination core) pair share one XY path
        drain = 0
        n_links = 0
        for i in range(n_pairs):
            q = pair_touched[i]
            cnt = pair_cnt[q]
            pair_cnt[q] = 0
            if pair_cyc[q] > drain:
                drain = pair_cyc[q]
            for li in range(pair_lptr[q], pair_lptr[q + 1]):
                lk = pair_links[li]
                if link_tick[lk] == 0:
                    link_touched[n_links] = lk
                    n_links += 1
                link_tick[lk] += cnt
        worst = 0
        for i in range(n_links):
            lk = link_touched[i]
            if link_tick[lk] > worst:
                worst = link_tick[lk]
            link_total[b, lk] += link_tick[lk]
            link_tick[lk] = 0
        if worst > drain:
            drain = worst
        tick_cycles[b, tau] = busiest + drain
        cycles += busiest + drain
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
def run_batch(payloads, T, L, workers, in_ptr, in_info, core_nb, core_ab, core_ts, core_ev_cyc,
              core_fire_cyc, ax_info, wrow, th_pos, th_neg, v_reset, v_init, bias, leak, shift,
              rmode, nmode, lmode, neu_layer, rt_ptr, rt_info, pair_lptr, pair_links, pair_cyc,
              vlo, vhi, slots,
              ws_ev_ax, ws_ev_p, ws_ev_n, ws_V, ws_acc, ws_pair_cnt, ws_pair_touched,
              ws_link_tick, ws_link_touched,
              out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
              tick_cycles, cnt_all, v_all, record):
    """Run every sample of ``payloads`` [B, T, n_in], split over ``workers`` threads; worker w
    uses workspace row w of every ``ws_*`` array (allocated once per image and reused)."""
    B = payloads.shape[0]
    for w in prange(workers):
        for b in range(w, B, workers):
            _sample(b, payloads, T, L, in_ptr, in_info, core_nb, core_ab, core_ts, core_ev_cyc,
                    core_fire_cyc, ax_info, wrow, th_pos, th_neg, v_reset, v_init, bias, leak,
                    shift, rmode, nmode, lmode, neu_layer, rt_ptr, rt_info, pair_lptr,
                    pair_links, pair_cyc, vlo, vhi, slots,
                    ws_ev_ax[w], ws_ev_p[w], ws_ev_n[w], ws_V[w], ws_acc[w], ws_pair_cnt[w],
                    ws_pair_touched[w], ws_link_tick[w], ws_link_touched[w],
                    out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                    tick_cycles, cnt_all, v_all, record)


@njit(cache=True, nogil=True)
def run_batch_serial(payloads, T, L, workers, in_ptr, in_info, core_nb, core_ab, core_ts,
                     core_ev_cyc, core_fire_cyc, ax_info, wrow, th_pos, th_neg, v_reset, v_init,
                     bias, leak, shift, rmode, nmode, lmode, neu_layer, rt_ptr, rt_info,
                     pair_lptr, pair_links, pair_cyc, vlo, vhi, slots,
                     ws_ev_ax, ws_ev_p, ws_ev_n, ws_V, ws_acc, ws_pair_cnt, ws_pair_touched,
                     ws_link_tick, ws_link_touched,
                     out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                     tick_cycles, cnt_all, v_all, record):
    """:func:`run_batch` without threads, for the bounds-checked debug mode
    (``NUMBA_BOUNDSCHECK=1``): an IndexError raised in a parallel region does not reach the
    caller intact, in a serial loop it does. Same arguments, same results."""
    B = payloads.shape[0]
    for w in range(workers):
        for b in range(w, B, workers):
            _sample(b, payloads, T, L, in_ptr, in_info, core_nb, core_ab, core_ts, core_ev_cyc,
                    core_fire_cyc, ax_info, wrow, th_pos, th_neg, v_reset, v_init, bias, leak,
                    shift, rmode, nmode, lmode, neu_layer, rt_ptr, rt_info, pair_lptr,
                    pair_links, pair_cyc, vlo, vhi, slots,
                    ws_ev_ax[w], ws_ev_p[w], ws_ev_n[w], ws_V[w], ws_acc[w], ws_pair_cnt[w],
                    ws_pair_touched[w], ws_link_tick[w], ws_link_touched[w],
                    out_counts, v_out, out_glob, layer_spk, stats, core_busy, link_total,
                    tick_cycles, cnt_all, v_all, record)


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


# --- logical-layer descriptors and the layer engine ------------------------------------------
# columns of an op_table row (compiler/backend/layerdesc.COLS; a test checks they agree)
(OP_LAYER, OP_SOURCE, OP_KIND, OP_W_OFF, OP_W_LEN, OP_C_IN, OP_H_IN, OP_W_IN, OP_POOL_H,
 OP_POOL_W, OP_C_OUT, OP_H_OUT, OP_W_OUT, OP_KH, OP_KW, OP_STRIDE_H, OP_STRIDE_W, OP_PAD_H,
 OP_PAD_W, OP_DIL_H, OP_DIL_W, OP_GROUPS, OP_IDX_OFF, OP_IDX_LEN) = range(24)


@njit(cache=True, nogil=True)
def _op_param(r, op_index, e, j):
    """Parameter id (index into op_weights) that op row ``r`` puts at (source element e,
    neuron j), or -1 where the op has no synapse."""
    kind = r[OP_KIND]
    cin, hin, win = r[OP_C_IN], r[OP_H_IN], r[OP_W_IN]
    if kind == 3:                                   # sparse CSR: binary search in row e
        n_src = cin * hin * win
        i0 = r[OP_IDX_OFF]
        lo = op_index[i0 + e]
        hi = op_index[i0 + e + 1]
        ind0 = i0 + n_src + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if op_index[ind0 + mid] < j:
                lo = mid + 1
            else:
                hi = mid
        if lo < op_index[i0 + e + 1] and op_index[ind0 + lo] == j:
            return r[OP_W_OFF] + lo
        return -1
    ph, pw = r[OP_POOL_H], r[OP_POOL_W]
    c = e // (hin * win)
    y = (e // win) % hin
    x = e % win
    hp, wp = hin // ph, win // pw
    py, px = y // ph, x // pw
    if py >= hp or px >= wp:
        return -1
    if kind == 2:                                   # dense [n_pooled, n_out]
        q = (c * hp + py) * wp + px
        return r[OP_W_OFF] + q * (r[OP_C_OUT] * r[OP_H_OUT] * r[OP_W_OUT]) + j
    ho, wo = r[OP_H_OUT], r[OP_W_OUT]
    o = j // (ho * wo)
    oy = (j // wo) % ho
    ox = j % wo
    g = r[OP_GROUPS]
    cig = cin // g
    cog = r[OP_C_OUT] // g
    ic = c - (o // cog) * cig
    if ic < 0 or ic >= cig:
        return -1
    ry = py - (oy * r[OP_STRIDE_H] - r[OP_PAD_H])
    rx = px - (ox * r[OP_STRIDE_W] - r[OP_PAD_W])
    if ry < 0 or rx < 0 or ry % r[OP_DIL_H] != 0 or rx % r[OP_DIL_W] != 0:
        return -1
    dy = ry // r[OP_DIL_H]
    dx = rx // r[OP_DIL_W]
    kh, kw = r[OP_KH], r[OP_KW]
    if dy >= kh or dx >= kw:
        return -1
    return r[OP_W_OFF] + ((o * cig + ic) * kh + dy) * kw + dx


@njit(cache=True, nogil=True)
def op_cell_params(op_rows, op_index, axon_op, axon_elem, neuron_idx, out):
    """out[a, j] = parameter id of core cell (axon a, neuron j), -1 where no op connects it
    (``axon_op[a]`` = row of the axon's op in ``op_rows``, -1 if its source has none)."""
    for a in range(axon_op.size):
        k = axon_op[a]
        for j in range(neuron_idx.size):
            out[a, j] = -1 if k < 0 else _op_param(op_rows[k], op_index, axon_elem[a],
                                                   neuron_idx[j])


@njit(cache=True, nogil=True)
def op_cells_mismatch(op_rows, op_index, op_weights, axon_op, axon_elem, neuron_idx, w):
    """Number of cells of one core whose decoded weight ``w`` [axons, neurons] differs from
    what the ops say (op_weights at the cell's parameter, 0 where no op connects it)."""
    bad = 0
    for a in range(axon_op.size):
        k = axon_op[a]
        for j in range(neuron_idx.size):
            p = -1 if k < 0 else _op_param(op_rows[k], op_index, axon_elem[a], neuron_idx[j])
            want = 0 if p < 0 else op_weights[p]
            if w[a, j] != want:
                bad += 1
    return bad


@njit(cache=True, nogil=True, parallel=True)
def neuron_scan(cur, th_pos, th_neg, v_reset, v_init, bias, lk, shift, rmode, nmode, lmode,
                vlo, vhi, spikes, counts, v_out):
    """The neuron update of one layer over all T steps (chip.md 'Neuron', compiler/reference.py
    int_step): ``cur`` [T, B, n] integer-valued synaptic input (float32/float64 exact integers,
    or int32), ``spikes`` [T, B, n] u8 out, ``counts`` [B, n] and ``v_out`` [B, n] int64 out.
    Parallel over neurons; each neuron's T steps run in order."""
    T, B, n = cur.shape
    for j in prange(n):
        for b in range(B):
            v = np.int64(v_init[j])
            cnt = 0
            for t in range(T):
                v = leak(v, lmode[j], lk[j], shift[j], vlo, vhi)
                v = _sat(v + np.int64(cur[t, b, j]) + bias[j], vlo, vhi)
                s = v >= th_pos[j]
                if s:
                    cnt += 1
                    if rmode[j] == 0:
                        v = v_reset[j]
                    elif rmode[j] == 1:
                        v = v - th_pos[j]
                if nmode[j] == 1 and v < -th_neg[j]:
                    v = -th_neg[j]
                spikes[t, b, j] = 1 if s else 0
            counts[b, j] = cnt
            v_out[b, j] = v


@njit(cache=True, nogil=True, parallel=True)
def neuron_scan_float(cur, th_pos, th_neg, v_reset, v_init, bias, lk, decay, rmode, nmode,
                      lmode, vlo, vhi, spikes, counts, v_out):
    """The analog (float64) neuron update of noise instances, as the tick kernel's float path:
    ADD saturating, SHIFT/MULT v - v * decay."""
    T, B, n = cur.shape
    for j in prange(n):
        for b in range(B):
            v = np.float64(v_init[j])
            cnt = 0
            for t in range(T):
                v = leak(v, lmode[j], lk[j], decay[j], vlo, vhi)
                v = _sat(v + cur[t, b, j] + bias[j], vlo, vhi)
                s = v >= th_pos[j]
                if s:
                    cnt += 1
                    if rmode[j] == 0:
                        v = v_reset[j]
                    elif rmode[j] == 1:
                        v = v - th_pos[j]
                if nmode[j] == 1 and v < -th_neg[j]:
                    v = -th_neg[j]
                spikes[t, b, j] = 1 if s else 0
            counts[b, j] = cnt
            v_out[b, j] = v


@njit(cache=True, nogil=True, parallel=True)
def sum_pool(x, ph, pw, out):
    """Non-overlapping sum pooling of u8 activations x [N, C, H, W] -> out [N, C, H//ph, W//pw]
    (u8; callers guarantee ph * pw * max(x) <= 255)."""
    N, Cc, Ho, Wo = out.shape
    for nc in prange(N * Cc):
        n_ = nc // Cc
        c = nc % Cc
        for y in range(Ho):
            for x_ in range(Wo):
                s = 0
                for a in range(ph):
                    for b in range(pw):
                        s += x[n_, c, y * ph + a, x_ * pw + b]
                out[n_, c, y, x_] = s


__all__ = ["run_batch", "run_batch_serial", "xy_links", "leak", "wcast", "N_STATS",
           "op_cell_params", "op_cells_mismatch", "neuron_scan", "neuron_scan_float", "sum_pool"]
