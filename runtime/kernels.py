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
def _cell_weight(packed, wb, lcn, xrows, xcols, a, j):
    """Decoded weight of logical cell (axon a, neuron j) of one core's packed rows (chip.md
    crossbar layout: LCN block a // xrows, columns j*w .. j*w+w-1, little bit order)."""
    row = a % xrows
    col = (a // xrows) * (xcols >> lcn) + j * wb
    u = 0
    for b in range(wb):
        c = col + b
        u |= ((np.int64(packed[row, c >> 3]) >> (c & 7)) & 1) << b
    if wb == 1:
        return u
    return u - (((u >> (wb - 1)) & 1) << wb)


@njit(cache=True, nogil=True)
def core_cells(mode, packed, wb, lcn, xrows, xcols, ax_k, ax_c, ax_py, ax_px, ax_q, ax_e,
               ops, n_y, n_x, n_g, n_w, nidx, op_index, op_weights, out):
    """Cells of one core against its layer's descriptors.

    Per axon: ``ax_k`` local op (-1: no op), channel ``ax_c`` and pooled coordinates
    ``ax_py``/``ax_px`` (-1: outside the pooled grid), pooled flat index ``ax_q`` (dense) and
    source element ``ax_e`` (sparse). Per local op k and neuron j (precomputed, no divisions in
    the cell loop): ``n_y``/``n_x`` = oy*stride - pad, ``n_g`` = first input channel of j's
    group, ``n_w`` = w_off + o * (c_in/groups) * kh * kw; ``nidx`` = j's index in the layer.
    mode 0: return the number of cells whose stored weight differs from the descriptors';
    mode 1: write each cell's parameter id (or -1) to ``out`` [axons, neurons]."""
    bad = 0
    A = ax_k.size
    N = nidx.size
    for a in range(A):
        k = ax_k[a]
        for j in range(N):
            p = -1
            if k >= 0:
                kind = ops[k, OP_KIND]
                if kind == 1:
                    if ax_py[a] >= 0:
                        ic = ax_c[a] - n_g[k, j]
                        cig = ops[k, OP_C_IN] // ops[k, OP_GROUPS]
                        ry = ax_py[a] - n_y[k, j]
                        rx = ax_px[a] - n_x[k, j]
                        dh = ops[k, OP_DIL_H]
                        dw = ops[k, OP_DIL_W]
                        if (ic >= 0 and ic < cig and ry >= 0 and rx >= 0
                                and (dh == 1 or ry % dh == 0) and (dw == 1 or rx % dw == 0)):
                            dy = ry if dh == 1 else ry // dh
                            dx = rx if dw == 1 else rx // dw
                            kh = ops[k, OP_KH]
                            kw = ops[k, OP_KW]
                            if dy < kh and dx < kw:
                                p = n_w[k, j] + (ic * kh + dy) * kw + dx
                elif kind == 2:
                    if ax_q[a] >= 0:
                        p = (ops[k, OP_W_OFF] + ax_q[a] * (ops[k, OP_C_OUT] * ops[k, OP_H_OUT]
                                                           * ops[k, OP_W_OUT]) + nidx[j])
                else:
                    i0 = ops[k, OP_IDX_OFF]
                    n_src = ops[k, OP_C_IN] * ops[k, OP_H_IN] * ops[k, OP_W_IN]
                    e = ax_e[a]
                    lo = op_index[i0 + e]
                    hi = op_index[i0 + e + 1]
                    end = hi
                    ind0 = i0 + n_src + 1
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if op_index[ind0 + mid] < nidx[j]:
                            lo = mid + 1
                        else:
                            hi = mid
                    if lo < end and op_index[ind0 + lo] == nidx[j]:
                        p = ops[k, OP_W_OFF] + lo
            if mode == 1:
                out[a, j] = p
            else:
                want = 0 if p < 0 else op_weights[p]
                if _cell_weight(packed, wb, lcn, xrows, xcols, a, j) != want:
                    bad += 1
    return bad


def as_state(x, like):
    """``x`` in the membrane type of ``like``: int64 on integer chips, float64 on analog ones."""
    return np.float64(x) if isinstance(like, (float, np.floating)) else np.int64(x)


@overload(as_state, jit_options={"nogil": True})
def _as_state_impl(x, like):
    if isinstance(like, types.Integer):
        def to_i64(x, like):
            return np.int64(x)
        return to_i64
    if isinstance(like, types.Float):
        def to_f64(x, like):
            return np.float64(x)
        return to_f64
    return None


@njit(cache=True, nogil=True)
def neuron_scan(cur, th_pos, th_neg, v_reset, v_init, bias, lk, shift, rmode, nmode, lmode,
                vlo, vhi, spikes, counts, v_out):
    """The neuron update of one layer over all T steps (chip.md 'Neuron', compiler/reference.py
    int_step): ``cur`` [T, B, n] synaptic input, ``spikes`` [T, B, n] u8 out, ``counts`` [B, n]
    int64 out, ``v_out`` [B, n] out, whose dtype sets the membrane type (the leak rule follows it,
    as in the tick kernel): int64 for the chip (``cur`` integer-valued: exact float32/float64 or
    int32), float64 for analog noise instances (``shift`` then holds the per-neuron decay).
    Serial and GIL-free: the layer engine runs one chunk of samples per thread."""
    T, B, n = cur.shape
    for j in range(n):
        for b in range(B):
            v = as_state(v_init[j], v_out[b, j])
            cnt = 0
            for t in range(T):
                v = leak(v, lmode[j], lk[j], shift[j], vlo, vhi)
                v = _sat(v + as_state(cur[t, b, j], v) + bias[j], vlo, vhi)
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


@njit(cache=True, nogil=True)
def sum_pool(x, ph, pw, out):
    """Non-overlapping sum pooling of u8 activations x [N, C, H, W] -> out [N, C, H//ph, W//pw]
    (u8; callers guarantee ph * pw * max(x) <= 255)."""
    N, Cc, Ho, Wo = out.shape
    for nc in range(N * Cc):
        n_ = nc // Cc
        c = nc % Cc
        for y in range(Ho):
            for x_ in range(Wo):
                s = 0
                for a in range(ph):
                    for b in range(pw):
                        s += x[n_, c, y * ph + a, x_ * pw + b]
                out[n_, c, y, x_] = s





@njit(cache=True, nogil=True)
def axon_row_counts(packed, wb, lcn, xrows, xcols, n_ax, n_n, nnz, bits):
    """Per axon of one core: nonzero weights and set weight bits of its logical row (the
    per-event SOP and one-bit-SOP costs the tick kernel charges), straight from packed rows."""
    for a in range(n_ax):
        z = 0
        s = 0
        row = a % xrows
        col0 = (a // xrows) * (xcols >> lcn)
        for j in range(n_n):
            u = 0
            for b in range(wb):
                c = col0 + j * wb + b
                u += (np.int64(packed[row, c >> 3]) >> (c & 7)) & 1
            if u:
                z += 1
            s += u
        nnz[a] = z
        bits[a] = s


__all__ = ["run_batch", "run_batch_serial", "xy_links", "leak", "wcast", "N_STATS", "core_cells",
           "neuron_scan", "as_state", "sum_pool", "axon_row_counts"]
