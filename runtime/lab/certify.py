"""Certified robustness to weight mismatch: interval bound propagation (IBP) through time.

In: a ChipImage, payloads [T, B, n_in], labels, a relative level zeta. Out: per sample, lower and
upper bounds on every output score that hold for EVERY chip whose weights lie in the box
``[w - zeta|w|, w + zeta|w|]`` (and, with 'threshold' among ``params``, whose th_pos lies in
``[th - zeta th, th + zeta th]`` clipped to [1, th_max], as ``runtime.lab.noise.Mismatch`` clips;
with 'bias', whose bias lies in ``[b - zeta|b|, b + zeta|b|]`` clipped to the bias register);
one box covers both mismatch granularities (a per-parameter chip is a per-cell chip whose cells
of one parameter happen to agree);
a sample is *certified* when ``lower(score_y) > max_{k != y} upper(score_k)``: then every such
chip classifies it correctly (design note algorithms.md 3.7, derived here for the chip's neuron).

Which chips: ``arithmetic='float'`` covers analog instances (real weights in the box, the float
kernel); ``'digital'`` covers digital instances whose weights are the box re-quantized
(integers in [rint(w - zeta|w|), rint(w + zeta|w|)] saturated to the layer's width: every value
``Mismatch(domain='digital')`` can give with |N| zeta <= zeta) and runs exact integer rules
(exact: at zeta = 0 the bounds are the integer run); ``'both'`` (default) covers the union.

The bounds run on the layer-synchronous model of ``image.unmap()`` (which the chip equals tick for
tick, runtime/engines/tick.py). Per layer, step and neuron, with intervals [lo, hi]:

    inputs     x in [x_lo, x_hi] >= 0 (input payloads exact; spikes of a source layer in
               {s_lo, s_hi}); I_hi = x_hi @ max(Wu, 0) + x_lo @ min(Wu, 0),
               I_lo = x_lo @ max(Wl, 0) + x_hi @ min(Wl, 0)     (Wl, Wu = the box edges)
    leak       ADD: sat(v + leak) (monotone). Float: SHIFT v(1 - 2^-k), MULT v(1 - d/4096).
               Digital: the exact integer rules v - (v >> k) and sign(v)((|v|(4096-d)) >> 12),
               both monotone on all of Z (negative membranes included), applied to both ends.
               Both: v - (v >> k) lies in [v(1-2^-k), v(1-2^-k) + 1 - 2^-k] and the truncating
               MULT within 1 of beta*v, so [lo(1-2^-k), hi(1-2^-k) + 1 - 2^-k] and
               [beta lo - 1, beta hi + 1].
    integrate  u = sat(v + I + bias): [sat(lo + I_lo + b), sat(hi + I_hi + b)] (sat monotone)
    fire       certain spike if u_lo >= th_hi, certainly none if u_hi < th_lo, else uncertain
    reset      SOFT: spike -> u - th in [max(0, u_lo - th_hi), u_hi - th_lo]; none -> u;
                     uncertain -> [min(u_lo, 0), max(u_hi - th_lo, min(u_hi, th_hi))]
               HARD: spike -> v_reset; none -> [u_lo, min(u_hi, th_hi)]; uncertain -> the hull
               NONE: u
    floor      max(v, -th_neg) on both ends (monotone)
    counts     c_lo += certain spikes, c_hi += possible spikes

Readout: score = (count * th + V) * scale with the deployed th (the host's decode, as in
``run_payloads``): generically [c_lo th + V_lo, c_hi th + V_hi]. For output neurons with soft
reset, no leak, and neither saturation nor the floor possibly active, the identity
count * th_act + V = v_init + sum_t (I_t + bias) gives the much tighter
[v_init + sum(I_lo + b), v_init + sum(I_hi + b)] (+ count * (th - th_act) when thresholds vary);
the two bounds are intersected. For float chips a tolerance of n * 2.3e-16 * sum|terms| covers
the float64 rounding of the kernel's sums and leaks (digital bounds are exact integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from compiler.errors import SimulationError

_EPS = 2.3e-16        # a bit over float64's unit roundoff


@dataclass
class Bounds:
    """Score bounds of one zeta: ``lower``/``upper`` [B, n_out], spike-count bounds of the
    output layer, and the prediction interval of the readout."""

    zeta: float
    lower: np.ndarray
    upper: np.ndarray
    count_lo: np.ndarray
    count_hi: np.ndarray
    uncertain_spikes: int      # (sample, neuron, step) triples whose spike was undecided

    def certified(self, labels: np.ndarray) -> np.ndarray:
        """Per sample: does every chip in the box classify it as ``labels``?"""
        y = np.asarray(labels, np.int64)
        B = y.size
        lo_y = self.lower[np.arange(B), y]
        up = self.upper.copy()
        up[np.arange(B), y] = -np.inf
        return lo_y > up.max(axis=1)


def _split(m: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    pos = m.maximum(0).tocsr()
    neg = m.minimum(0).tocsr()
    return pos, neg


def _box(lo: np.ndarray, hi: np.ndarray, arithmetic: str, qlo: float, qhi: float):
    """Edges of the box a chip of ``arithmetic`` sees: the real box, the re-quantized one
    (round to nearest, saturated: what ``Mismatch(domain='digital')`` can produce), or both."""
    if arithmetic == "float":
        return lo, hi
    rlo, rhi = np.clip(np.rint(lo), qlo, qhi), np.clip(np.rint(hi), qlo, qhi)
    if arithmetic == "digital":
        return rlo, rhi
    return np.minimum(lo, rlo), np.maximum(hi, rhi)


class _LayerBox:
    """The box of one layer: per source (name, Wl+, Wl-, Wu+, Wu-, |W|max); registers."""

    def __init__(self, L, zeta: float, th_zeta: float, spec, arithmetic: str,
                 b_zeta: float = 0.0):
        self.n = L.n
        self.srcs = []
        qlo, qhi = spec.weight_range(int(L.bits))
        for s, m in L.inputs:
            w = sp.csr_matrix(m, dtype=np.float64)
            w.sum_duplicates()
            a = np.abs(w.data)
            dl, du = _box(w.data - zeta * a, w.data + zeta * a, arithmetic, qlo, qhi)
            wl = sp.csr_matrix((dl, w.indices, w.indptr), shape=w.shape)
            wu = sp.csr_matrix((du, w.indices, w.indptr), shape=w.shape)
            lp, ln = _split(wl)
            up, un = _split(wu)
            amax = abs(wl).maximum(abs(wu)).tocsr()
            self.srcs.append((s, lp.T.tocsr(), ln.T.tocsr(), up.T.tocsr(), un.T.tocsr(),
                              amax.T.tocsr()))
        fan = np.zeros(L.n)
        for _, m in L.inputs:
            fan += np.diff(sp.csc_matrix(m).indptr)
        self.fan = fan
        r = L.regs
        f = lambda a: np.asarray(a, np.float64)  # noqa: E731
        self.th = f(r.th_pos)
        tmax = float(spec.threshold_max)
        self.th_lo, self.th_hi = _box(np.clip(self.th * (1 - th_zeta), 1.0, tmax),
                                      np.clip(self.th * (1 + th_zeta), 1.0, tmax),
                                      arithmetic, 1.0, tmax)
        self.th_neg = f(r.th_neg)
        self.v_reset = f(r.v_reset)
        self.v_init = f(r.v_init)
        self.bias = f(r.bias)
        blo, bhi = (float(v) for v in spec.bias_range)
        ab = np.abs(self.bias)
        self.b_lo, self.b_hi = _box(np.clip(self.bias - b_zeta * ab, blo, bhi),
                                    np.clip(self.bias + b_zeta * ab, blo, bhi),
                                    arithmetic, blo, bhi)
        self.leak = f(r.leak)
        self.shift = f(r.shift)
        self.rmode = np.asarray(r.reset_mode)
        self.nmode = np.asarray(r.neg_mode)
        self.lmode = np.asarray(r.leak_mode)


def _mm(mT: sp.csr_matrix, x: np.ndarray) -> np.ndarray:
    """x [B, n_src] @ m [n_src, n] with m given transposed -> [B, n]."""
    return np.asarray(mT @ x.T).T


def _leak_bounds(lo, hi, P: _LayerBox, vlo, vhi, arithmetic: str):
    lm = P.lmode
    if not np.any(lm):
        return lo, hi
    lo, hi = lo.copy(), hi.copy()
    add, shf, mul = lm == 1, lm == 2, lm == 3
    if add.any():
        lo[:, add] = np.clip(lo[:, add] + P.leak[add], vlo, vhi)
        hi[:, add] = np.clip(hi[:, add] + P.leak[add], vlo, vhi)
    if arithmetic == "digital":           # integer membranes: the exact (monotone) chip rules
        if shf.any():
            k = np.exp2(P.shift[shf])
            lo[:, shf] = lo[:, shf] - np.floor(lo[:, shf] / k)
            hi[:, shf] = hi[:, shf] - np.floor(hi[:, shf] / k)
        if mul.any():
            f = 4096.0 - P.leak[mul]

            def rule(v):
                return np.sign(v) * np.floor(np.abs(v) * f / 4096.0)

            a, b = rule(lo[:, mul]), rule(hi[:, mul])
            lo[:, mul], hi[:, mul] = np.minimum(a, b), np.maximum(a, b)
        return lo, hi
    slack = 1.0 if arithmetic == "both" else 0.0
    if shf.any():
        g = 1.0 - np.exp2(-P.shift[shf])
        lo[:, shf] = lo[:, shf] * g
        hi[:, shf] = hi[:, shf] * g + g * slack
    if mul.any():
        beta = (4096.0 - P.leak[mul]) / 4096.0
        a, b = lo[:, mul] * beta, hi[:, mul] * beta
        lo[:, mul] = np.minimum(a, b) - slack
        hi[:, mul] = np.maximum(a, b) + slack
    return lo, hi


ARITHMETICS = ("both", "float", "digital")


def bounds(image, payloads: np.ndarray, zeta: float, *, thresholds: bool = False,
           arithmetic: str = "both", graph=None, params=None) -> Bounds:
    """IBP score bounds of every sample of ``payloads`` [T, B, n_in] for relative level ``zeta``.

    Args:
        params: the parameter kinds in the box (``compiler.params``: weights, bias, threshold;
            default ``DEFAULT_PARAMS``, weights and biases, as the random mismatch). The leak is
            refused when any neuron leaks (its box is not propagated).
        thresholds: th_pos varies in its box too (the older switch; same as adding
            'threshold' to ``params``).
        arithmetic: which chips the bounds cover: 'float' (analog instances: real weights in
            the box, the float kernel), 'digital' (integer weights in the re-quantized box
            [rint(w - zeta|w|), rint(w + zeta|w|)] saturated to the layer's width, the integer
            kernel; exact at zeta = 0) or 'both' (default: the union).
        graph: ``image.unmap()`` if already at hand.
    """
    if zeta < 0 or not np.isfinite(zeta):
        raise SimulationError(f"certify: zeta must be >= 0, got {zeta}")
    if arithmetic not in ARITHMETICS:
        raise SimulationError(f"certify: arithmetic must be one of {ARITHMETICS}, "
                              f"got '{arithmetic}'")
    p = np.asarray(payloads, np.float64)
    if p.ndim != 3 or p.shape[2] != image.n_inputs:
        raise SimulationError(f"payloads must have shape [T, B, {image.n_inputs}], got "
                              f"{list(p.shape)}")
    g = graph if graph is not None else image.unmap()
    params = _kinds(params, thresholds, g)
    spec = image.spec
    vlo, vhi = (float(x) for x in spec.membrane_range)
    T, B, _ = p.shape
    wz = float(zeta) if "weights" in params else 0.0
    tz = float(zeta) if "threshold" in params else 0.0
    bz = float(zeta) if "bias" in params else 0.0
    exact = arithmetic == "digital"       # integers below 2**53: float64 is exact
    boxes = {n: _LayerBox(g.node(n), wz, tz, spec, arithmetic, bz) for n in g.layers}
    lo = {n: np.broadcast_to(boxes[n].v_init, (B, boxes[n].n)).copy() for n in g.layers}
    hi = {n: v.copy() for n, v in lo.items()}
    c_lo = {n: np.zeros((B, boxes[n].n)) for n in g.layers}
    c_hi = {n: np.zeros((B, boxes[n].n)) for n in g.layers}
    out = g.output_layer
    P_out = boxes[out]
    S_lo = np.broadcast_to(P_out.v_init, (B, P_out.n)).copy()
    S_hi = S_lo.copy()
    ident = ((P_out.rmode == 1) & (P_out.lmode == 0))[None, :] & np.ones((B, 1), bool)
    tol_sum = np.zeros((B, P_out.n))
    uncertain = 0
    inp = g.input_name
    for t in range(T):
        act = {inp: (p[t], p[t])}
        for n in g.layers:
            P = boxes[n]
            i_lo = np.zeros((B, P.n))
            i_hi = np.zeros((B, P.n))
            mag = np.zeros((B, P.n))
            for s, lp, ln, up, un, amax in P.srcs:
                x_lo, x_hi = act[s]
                i_hi += _mm(up, x_hi) + _mm(un, x_lo)
                i_lo += _mm(lp, x_lo) + _mm(ln, x_hi)
                if not exact:
                    mag += _mm(amax, x_hi)
            a_lo, a_hi = _leak_bounds(lo[n], hi[n], P, vlo, vhi, arithmetic)
            u_lo = a_lo + i_lo + P.b_lo
            u_hi = a_hi + i_hi + P.b_hi
            if not exact:
                # float64 rounding of the kernel's sum (n terms: n * eps * sum |terms|) and of
                # our own bound arithmetic
                tol = _EPS * (P.fan + 4) * (mag + np.abs(a_lo) + np.abs(a_hi)
                                            + np.maximum(np.abs(P.b_lo), np.abs(P.b_hi)) + 1.0)
                u_lo, u_hi = u_lo - tol, u_hi + tol
                if n == out:
                    tol_sum += tol
            if n == out:
                S_lo += i_lo + P.b_lo
                S_hi += i_hi + P.b_hi
                ident &= (u_lo >= vlo) & (u_hi <= vhi)
            u_lo = np.clip(u_lo, vlo, vhi)
            u_hi = np.clip(u_hi, vlo, vhi)
            s_lo = u_lo >= P.th_hi
            s_hi = u_hi >= P.th_lo
            unc = s_hi & ~s_lo
            uncertain += int(unc.sum())
            # reset
            n_lo, n_hi = u_lo.copy(), u_hi.copy()
            soft, hard = P.rmode == 1, P.rmode == 0
            if soft.any():
                sp_lo = np.maximum(u_lo - P.th_hi, 0.0)
                sp_hi = u_hi - P.th_lo
                nn_hi = np.minimum(u_hi, P.th_hi)
                sel = s_lo & soft
                n_lo = np.where(sel, sp_lo, n_lo)
                n_hi = np.where(sel, sp_hi, n_hi)
                sel = unc & soft
                n_lo = np.where(sel, np.minimum(u_lo, 0.0), n_lo)
                n_hi = np.where(sel, np.maximum(sp_hi, nn_hi), n_hi)
                sel = ~s_hi & soft
                n_hi = np.where(sel, nn_hi, n_hi)
            if hard.any():
                vr = np.broadcast_to(P.v_reset, u_lo.shape)
                nn_hi = np.minimum(u_hi, P.th_hi)
                sel = s_lo & hard
                n_lo = np.where(sel, vr, n_lo)
                n_hi = np.where(sel, vr, n_hi)
                sel = unc & hard
                n_lo = np.where(sel, np.minimum(u_lo, vr), n_lo)
                n_hi = np.where(sel, np.maximum(nn_hi, vr), n_hi)
                sel = ~s_hi & hard
                n_hi = np.where(sel, nn_hi, n_hi)
            fl = P.nmode == 1
            if fl.any():
                if n == out:
                    ident &= ~(fl[None, :] & (n_lo < -P.th_neg))
                n_lo = np.where(fl, np.maximum(n_lo, -P.th_neg), n_lo)
                n_hi = np.where(fl, np.maximum(n_hi, -P.th_neg), n_hi)
            lo[n], hi[n] = n_lo, n_hi
            c_lo[n] += s_lo
            c_hi[n] += s_hi
            act[n] = (s_lo.astype(np.float64), s_hi.astype(np.float64))
    th = P_out.th
    gen_lo = c_lo[out] * th + lo[out]
    gen_hi = c_hi[out] * th + hi[out]
    if not exact:
        tg = _EPS * 8 * (np.abs(gen_lo) + np.abs(gen_hi) + 1.0)
        gen_lo, gen_hi = gen_lo - tg, gen_hi + tg
    # identity bound: score = S + count * (th - th_act)
    d_lo, d_hi = th - P_out.th_hi, th - P_out.th_lo
    cands = np.stack([c_lo[out] * d_lo, c_lo[out] * d_hi, c_hi[out] * d_lo, c_hi[out] * d_hi])
    tid = _EPS * 8 * (np.abs(S_lo) + np.abs(S_hi) + 1.0) + tol_sum if not exact else 0.0
    id_lo = S_lo + cands.min(axis=0) - tid
    id_hi = S_hi + cands.max(axis=0) + tid
    low = np.where(ident, np.maximum(gen_lo, id_lo), gen_lo)
    up = np.where(ident, np.minimum(gen_hi, id_hi), gen_hi)
    scale = np.asarray(g.node(out).scale if g.node(out).scale is not None else np.ones(P_out.n),
                       np.float64)
    lo_s, hi_s = low * scale, up * scale
    lower, upper = np.minimum(lo_s, hi_s), np.maximum(lo_s, hi_s)
    return Bounds(float(zeta), lower, upper, c_lo[out], c_hi[out], uncertain)


def _kinds(params, thresholds: bool, g) -> tuple[str, ...]:
    from compiler.params import parse_params
    kinds = parse_params(params, "certify")        # None: DEFAULT_PARAMS
    if thresholds and "threshold" not in kinds:
        kinds = parse_params(kinds + ("threshold",), "certify")
    if "leak" in kinds and any(np.any(np.asarray(g.node(n).regs.leak_mode) != 0)
                               for n in g.layers):
        raise SimulationError("certify: the leak is not in the certified box (leaky neurons "
                              "here)", "drop leak from the parameter kinds for --certify")
    return kinds


def certify(image, payloads: np.ndarray, labels: np.ndarray, zetas, *,
            thresholds: bool = False, arithmetic: str = "both", params=None,
            granularity: str = "cell") -> list[dict]:
    """Certified accuracy per zeta (see :func:`bounds`): rows {zeta, certified (fraction),
    n_certified, n, uncertain_spikes, params, granularity, thresholds, arithmetic, seconds}.

    ``granularity``: the chips a certificate covers are those of a per-cell box; the chips of
    the per-parameter model (one draw shared by the cells of a trained parameter) are a subset
    of them, so the same bounds certify both (sound, not tighter); the row records which
    model the caller asked about."""
    import time

    from compiler.params import check_granularity
    granularity = check_granularity(granularity, "certify granularity")
    g = image.unmap()
    kinds = _kinds(params, thresholds, g)
    y = np.asarray(labels, np.int64)
    rows = []
    for z in zetas:
        t0 = time.perf_counter()
        b = bounds(image, payloads, float(z), arithmetic=arithmetic, graph=g, params=kinds)
        ok = b.certified(y)
        rows.append({"zeta": float(z), "certified": float(ok.mean()) if y.size else float("nan"),
                     "n_certified": int(ok.sum()), "n": int(y.size),
                     "uncertain_spikes": b.uncertain_spikes,
                     "params": list(kinds), "granularity": granularity,
                     "thresholds": "threshold" in kinds, "arithmetic": arithmetic,
                     "seconds": time.perf_counter() - t0})
    return rows


__all__ = ["Bounds", "bounds", "certify"]
