"""The layer engine: exact, time-batched, layer-by-layer execution of a feed-forward chip image.

For an image whose layers form a DAG with balanced delays (every route lands in its consumer's
integration window; what ``snnc`` writes), the tick engine's result equals the layer-synchronous
reference (compiler/reference.py). This engine computes that directly from the logical-layer
descriptors (chip.bin op_* sections, checked cell for cell against the crossbars before use):
per layer, the synaptic input of all T steps and all samples of a chunk in one convolution / GEMM
over the sources' spike trains, then one integer neuron scan over T (kernels.neuron_scan: leak
NONE/ADD/SHIFT/MULT, 24-bit saturation, bias, reset HARD/SOFT/NONE, negative floor, v_init).

Exactness (guards, not hopes):
  * per layer, ``bound`` = sum over its ops of max(input) * pool area * max_j sum |w_j| bounds
    every partial sum of every neuron's input; float32 arithmetic is exact below 2**24, so a
    layer with bound < 2**24 runs in float32 or the int8 path (whose s32 result is converted to
    float32), else in float64 (exact below 2**53; a bound beyond that is refused);
  * the int8 path (oneDNN u8 x s8 -> s32, CPU) is used only after a self-test at first use
    reproduced exact int64 results on inputs that saturate 16-bit intermediate sums (CPUs
    without VNNI); otherwise float32;
  * graded 8-bit first-layer inputs are u8 operands (0..255), exact on both paths.
Counters (SOPs, one-bit SOPs, packets, hops, inter-chip hops, input events, spikes per layer,
energy) come from per-neuron spike counts and per-input nonzero counts times per-element costs
read off the crossbars and routes; they equal the tick engine's. Per-tick latency, busy cycles
and link loads need the tick engine (``engine='tick'``).

Devices: ``device='cpu'`` (oneDNN int8 / float, numba scan; samples in chunks over a thread
pool) or ``'cuda'`` (torch float32 with TF32 off / float64 convolutions and a torch scan, same
exactness bounds). ``impl='torch'`` runs the device code path on the CPU (tests).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from compiler.backend.layerdesc import KIND_CONV, KIND_SPARSE, LayerOp
from compiler.errors import SimulationError
from compiler.ir.nodes import NeuronRegs
from compiler.reference import score
from runtime import kernels
from runtime.engines.inputs import check_payloads
from runtime.engines.result import RunResult
from runtime.image import ChipImage

EXACT_F32 = 1 << 24
EXACT_F64 = 1 << 53
CHUNK = 8
_SELFTEST: dict[str, bool] = {}
_lock = threading.Lock()
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --- applicability ------------------------------------------------------------------------
def unsupported_reason(image: ChipImage) -> str | None:
    """Why the layer engine cannot run ``image`` (None when it can); cached on the image."""
    cache = image.__dict__
    if "_layer_unsupported" not in cache:
        cache["_layer_unsupported"] = _unsupported(image)
    return cache["_layer_unsupported"]


def _unsupported(image: ChipImage) -> str | None:
    if not image.has_ops:
        return "the image has no layer descriptors (compiled by an older snnc)"
    names = [L["name"] for L in image.layers]
    inp = image.meta["input"]["name"]
    for li, L in enumerate(image.layers):
        for s in L["sources"]:
            if s != inp and names.index(s) >= li:
                return f"layer '{L['name']}' has a recurrent or backward source '{s}'"
    a = image.a
    ts = a["core_tick_start"].astype(np.int64)
    g = image.gaxon
    ok = g >= 0
    src_core = image.core_of_neuron[np.repeat(np.arange(image.n_neurons),
                                              np.diff(a["neu_route_base"].astype(np.int64)))]
    dst_core = image.core_of_axon[g[ok]]
    if np.any(ts[dst_core] != ts[src_core[ok]] + a["rt_delay"].astype(np.int64)[ok]):
        return "route delays are not balanced (a spike lands outside its consumer's window)"
    if np.any(ts[image.core_of_axon[image.in_gaxon]] != a["in_rt_delay"].astype(np.int64) - 1):
        return "input route delays are not balanced"
    return None


def selftest_int8() -> bool:
    """Does oneDNN's u8 x s8 -> s32 conv/linear reproduce exact int64 sums here? (Some CPUs
    without VNNI saturate 16-bit intermediate pair sums.) Cached per process."""
    with _lock:
        if "int8" in _SELFTEST:
            return _SELFTEST["int8"]
        ok = False
        try:
            g = torch.Generator().manual_seed(0)
            x = torch.randint(200, 256, (2, 16, 5, 5), generator=g).to(torch.uint8)
            w = torch.randint(-128, 128, (8, 16, 3, 3), generator=g).to(torch.int8)
            w[:4] = 127
            w[4:] = -128
            y = _QConv(w.numpy(), (1, 1), (1, 1), (1, 1), 1)(x)
            ref = F.conv2d(x.double(), w.double(), padding=1)
            xl = x.reshape(2, -1)[:, :64].contiguous()
            wl = w.reshape(8, -1)[:, :64].numpy()
            yl = _QLinear(wl)(xl)
            refl = xl.double() @ torch.from_numpy(wl).double().T
            ok = torch.equal(y.double(), ref) and torch.equal(yl.double(), refl)
        except (RuntimeError, AttributeError):
            ok = False
        _SELFTEST["int8"] = bool(ok)
        return bool(ok)


# --- operators ----------------------------------------------------------------------------
class _QConv:
    """oneDNN u8 x s8 -> s32 convolution, result as float32 (exact below 2**24)."""

    def __init__(self, k: np.ndarray, stride, padding, dilation, groups):
        co = k.shape[0]
        self.ws = torch.ones(co, dtype=torch.float32)
        self.wz = torch.zeros(co, dtype=torch.int64)
        self.args = ([int(s) for s in stride], [int(p) for p in padding],
                     [int(d) for d in dilation], int(groups))
        self.w = torch.ops.onednn.qconv_prepack(torch.from_numpy(np.array(k, np.int8)),
                                                self.ws, 1.0, 0, *self.args, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s, p, d, g = self.args
        return torch.ops.onednn.qconv2d_pointwise(x, 1.0, 0, self.w, self.ws, self.wz, None, s, p,
                                                  d, g, 1.0, 0, torch.float32, "none", [], "")


class _QLinear:
    """oneDNN u8 x s8 -> s32 GEMM x [M, K] @ w.T, w [N, K]; float32 result."""

    def __init__(self, w: np.ndarray):
        n = w.shape[0]
        self.ws = torch.ones(n, dtype=torch.float32)
        self.wz = torch.zeros(n, dtype=torch.int64)
        self.w = torch.ops.onednn.qlinear_prepack(
            torch.from_numpy(np.array(w, np.int8)), None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, self.w, self.ws, self.wz, None, 1.0,
                                                  0, torch.float32, "none", [], "")


@dataclass
class _OpRun:
    """One source's contribution to a layer, ready to run."""

    op: LayerOp | None
    source: int                     # -1 input, else layer index
    path: str                       # 'int8', 'f32', 'f64', 'sparse'
    fn: object = None               # prepacked int8 operator
    weight: torch.Tensor | None = None
    matrix: sp.csr_matrix | None = None
    max_in: int = 1


@dataclass
class _LayerRun:
    li: int
    n: int
    shape: tuple
    ops: list
    dtype: torch.dtype              # float32 or float64 current
    regs: tuple                     # 10 register arrays in layer order (int64 / float64)
    analog: bool = False


@dataclass
class Plan:
    """Everything a run needs, per image x device x instance (cached for the clean image)."""

    layers: list
    device: str
    impl: str
    glob: list                      # per layer: global neuron ids in layer order
    cost: dict = field(default_factory=dict)   # per layer: [n, 5] int64 spike costs
    in_cost: np.ndarray | None = None          # [n_in, 3] input costs (sops, sops1, events)
    out_src: np.ndarray | None = None          # [n_out] (layer, local) of host routes
    analog: bool = False


def _max_in(image: ChipImage, source: int) -> int:
    return image.spec.payload_max if source < 0 else 1


def _bound(op: LayerOp, max_in: int) -> int:
    return max_in * op.pool[0] * op.pool[1] * op.abs_colsum_max()


def _make_op(op: LayerOp, max_in: int, exact32: bool, impl: str, device: str) -> _OpRun:
    pooled_max = max_in * op.pool[0] * op.pool[1]
    if op.kind == KIND_SPARSE:
        m = op.matrix().astype(np.float32 if exact32 else np.float64)
        if impl == "torch":
            t = torch.from_numpy(m.toarray()).to(device)
            return _OpRun(op, op.source, "f32" if exact32 else "f64", weight=t, max_in=max_in)
        return _OpRun(op, op.source, "sparse", matrix=m.tocsr(), max_in=max_in)
    int8 = impl == "onednn" and exact32 and pooled_max <= 255 and selftest_int8()
    w = op.weights
    if op.kind == KIND_CONV:
        if int8:
            return _OpRun(op, op.source, "int8", fn=_QConv(w, op.stride, op.padding, op.dilation,
                                                            op.groups), max_in=max_in)
        dt = torch.float32 if exact32 else torch.float64
        return _OpRun(op, op.source, "f32" if exact32 else "f64",
                      weight=torch.from_numpy(w.astype(np.float64)).to(device=device, dtype=dt),
                      max_in=max_in)
    if int8:
        return _OpRun(op, op.source, "int8", fn=_QLinear(np.ascontiguousarray(w.T)),
                      max_in=max_in)
    dt = torch.float32 if exact32 else torch.float64
    return _OpRun(op, op.source, "f32" if exact32 else "f64",
                  weight=torch.from_numpy(np.ascontiguousarray(w.astype(np.float64))).to(
                      device=device, dtype=dt), max_in=max_in)


def _costs(image: ChipImage) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per neuron (layer order) the counters one spike adds: SOPs, one-bit SOPs, packets, hops,
    inter-chip hops; per input element what one nonzero payload adds: SOPs, one-bit SOPs
    (x payload_bits), events; and the (layer, local neuron) behind each host output."""
    a, spec = image.a, image.spec
    nnz = np.zeros(image.n_axons, np.int64)
    bits = np.zeros(image.n_axons, np.int64)
    ab = a["core_axon_base"].astype(np.int64)
    nb = a["core_neuron_base"].astype(np.int64)
    for c in range(image.n_cores):
        lo, hi = int(a["core_xbar_base"][c]), int(a["core_xbar_base"][c + 1])
        n_ax = int(ab[c + 1] - ab[c])
        if n_ax == 0:
            continue
        packed = a["xbar"][lo:hi].reshape(-1, spec.xbar_cols // 8)
        kernels.axon_row_counts(packed, int(a["core_w"][c]), int(a["core_lcn"][c]),
                                spec.xbar_rows, spec.xbar_cols, n_ax, int(nb[c + 1] - nb[c]),
                                nnz[ab[c]:ab[c + 1]], bits[ab[c]:ab[c + 1]])
    # per route entry -> per source neuron
    rb = a["neu_route_base"].astype(np.int64)
    src = np.repeat(np.arange(image.n_neurons), np.diff(rb))
    g = image.gaxon
    ok = g >= 0
    nnz, bits = np.append(nnz, 0), np.append(bits, 0)   # index -1 safe also with 0 axons
    gg = np.where(ok, g, nnz.size - 1)
    hops, xhops = _route_hops(image)
    N = image.n_neurons
    per = np.zeros((N, 5), np.int64)
    np.add.at(per[:, 0], src, np.where(ok, nnz[gg], 0))
    np.add.at(per[:, 1], src, np.where(ok, bits[gg], 0))
    np.add.at(per[:, 2], src, ok.astype(np.int64))
    np.add.at(per[:, 3], src, np.where(ok, hops, 0))
    np.add.at(per[:, 4], src, np.where(ok, xhops, 0))
    ib = a["in_route_base"].astype(np.int64)
    isrc = np.repeat(np.arange(image.n_inputs), np.diff(ib))
    ig = image.in_gaxon
    inc = np.zeros((image.n_inputs, 3), np.int64)
    np.add.at(inc[:, 0], isrc, nnz[ig])
    np.add.at(inc[:, 1], isrc, bits[ig] * spec.payload_bits)
    np.add.at(inc[:, 2], isrc, 1)
    cost = {}
    out_src = np.full((int(image.meta["output"]["neurons"]), 2), -1, np.int64)
    lay = a["core_layer"].astype(np.int64)[image.core_of_neuron]
    nidx = a["neu_index"].astype(np.int64)
    for li in range(len(image.layers)):
        glob = image.layer_neurons(li)
        cost[li] = np.ascontiguousarray(per[glob])
    host = ~ok
    out_src[-1 - g[host], 0] = lay[src[host]]
    out_src[-1 - g[host], 1] = nidx[src[host]]
    return cost, inc, out_src


def _route_hops(image: ChipImage) -> tuple[np.ndarray, np.ndarray]:
    """On-chip and inter-chip hops of every neuron route entry (0 for host routes), with the
    tick engine's XY model (kernels.xy_links)."""
    a, spec = image.a, image.spec
    rb = a["neu_route_base"].astype(np.int64)
    src_core = image.core_of_neuron[np.repeat(np.arange(image.n_neurons), np.diff(rb))]
    g = image.gaxon
    host = g < 0
    dst_core = src_core.copy()              # host routes: no hops (an image may have no axons)
    dst_core[~host] = image.core_of_axon[g[~host]]
    cw, _ = image.meta["board"]["grid"]
    chip = a["core_chip"].astype(np.int64)
    X = (chip % cw) * spec.mesh_x + a["core_x"].astype(np.int64)
    Y = (chip // cw) * spec.mesh_y + a["core_y"].astype(np.int64)
    _, _, hops, xhops = kernels.xy_links(X[src_core], Y[src_core], X[dst_core], Y[dst_core],
                                         cw * spec.mesh_x, spec.mesh_x, spec.mesh_y)
    return np.where(host, 0, hops), np.where(host, 0, xhops)


def plan(image: ChipImage, device: str = "cpu", impl: str | None = None,
         instance=None) -> Plan:
    """Build (or fetch the cached) execution plan."""
    why = unsupported_reason(image)
    if why:
        raise SimulationError(f"{image.path}: the layer engine cannot run this image: {why}",
                              "use engine='tick' (--engine tick)")
    impl = impl or ("onednn" if device == "cpu" else "torch")
    key = (device, impl)
    # kept beside the image, not in it: prepacked oneDNN weights cannot be pickled (Ray ships
    # images to workers)
    cache = _PLANS.setdefault(image, {})
    if instance is None and key in cache:
        return cache[key]
    base = cache.get(key)
    analog = bool(instance is not None and instance.analog)
    REG_NAMES = NeuronRegs.NAMES
    ops_all = image.layer_ops               # checks every crossbar cell once
    glob = [image.layer_neurons(li) for li in range(len(image.layers))]
    inst_m = _instance_matrices(image, instance) if instance is not None else None
    layers = []
    for li, L in enumerate(image.layers):
        ops = [op for op in ops_all if op.layer == li]
        if base is not None and inst_m is not None and not inst_m[li]["changed"]:
            runs = base.layers[li].ops
            dt = base.layers[li].dtype
        elif inst_m is not None:
            mats = inst_m[li]["mats"]
            bound = sum(_max_in(image, s) * float(np.asarray(abs(m).sum(axis=0)).max(initial=0))
                        for s, m in mats.items())
            exact32 = (not analog) and bound < EXACT_F32
            if not analog and bound >= EXACT_F64:
                raise SimulationError(f"layer '{L['name']}': input bound {bound:.3g} beyond "
                                      "float64 exactness")
            dt = torch.float32 if exact32 else torch.float64
            runs = []
            for s, m in mats.items():
                m = m.astype(np.float32 if exact32 else np.float64).tocsr()
                if impl == "torch":
                    runs.append(_OpRun(None, s, "f32" if exact32 else "f64",
                                       weight=torch.from_numpy(m.toarray()).to(device),
                                       max_in=_max_in(image, s)))
                else:
                    runs.append(_OpRun(None, s, "sparse", matrix=m, max_in=_max_in(image, s)))
        else:
            bound = sum(_bound(op, _max_in(image, op.source)) for op in ops)
            if bound >= EXACT_F64:
                raise SimulationError(f"layer '{L['name']}': input bound {bound} beyond float64 "
                                      "exactness", "use engine='tick'")
            exact32 = bound < EXACT_F32
            dt = torch.float32 if exact32 else torch.float64
            runs = [_make_op(op, _max_in(image, op.source), exact32, impl, device) for op in ops]
        regs_g = image.regs(glob[li])
        regs = []
        for k in REG_NAMES:
            r = np.asarray(getattr(regs_g, k))
            if instance is not None and instance.regs and instance.regs.get(k) is not None:
                r = np.asarray(instance.regs[k])[glob[li]]
            regs.append(np.ascontiguousarray(r, np.float64 if analog and k not in (
                "reset_mode", "neg_mode", "leak_mode") else np.int64))
        if analog:                      # the tick kernel's analog leak: v - v * decay
            lm, sh, lk = regs[9], regs[6], regs[5]
            regs[6] = np.ascontiguousarray(np.where(
                lm == 2, np.exp2(-np.where(lm == 2, sh, 0.0)),
                np.where(lm == 3, lk / 4096.0, 0.0)), np.float64)
        layers.append(_LayerRun(li, int(L["neurons"]), tuple(L["shape"]), runs, dt, tuple(regs),
                                analog))
    if base is not None:
        cost, inc, out_src = base.cost, base.in_cost, base.out_src
    else:
        cost, inc, out_src = _costs(image)
    p = Plan(layers, device, impl, glob, cost, inc, out_src, analog)
    if instance is None:
        cache[key] = p
    return p


def _instance_matrices(image: ChipImage, instance) -> list[dict]:
    """Per layer: the instance's per-source matrices [n_src, n] (CSR, int64 or float64) built
    from its weight rows, and whether any cell differs from the deployed image."""
    a = image.a
    nb = a["core_neuron_base"].astype(np.int64)
    ab = a["core_axon_base"].astype(np.int64)
    n_per, a_per = np.diff(nb), np.diff(ab)
    core_off = np.concatenate([[0], np.cumsum(n_per * a_per)])   # dense-row layout (tick)
    wrow = np.asarray(instance.wrow)
    if wrow.shape != (int(core_off[-1]),):
        raise SimulationError(f"instance '{instance.label}': weight rows of shape "
                              f"{list(wrow.shape)}, the image needs [{int(core_off[-1])}]")
    analog = bool(instance.analog)
    REG_NAMES = NeuronRegs.NAMES
    unknown = set(instance.regs or {}) - set(REG_NAMES)
    if unknown:
        raise SimulationError(f"instance '{instance.label}': unknown registers {sorted(unknown)}")
    for k, v in (instance.regs or {}).items():
        if v is not None and np.shape(v) != (image.n_neurons,):
            raise SimulationError(f"instance '{instance.label}': register {k} has shape "
                                  f"{list(np.shape(v))}, expected [{image.n_neurons}]")
        if v is not None and not analog and np.any(np.asarray(v) != np.round(v)):
            raise SimulationError(f"instance '{instance.label}': register {k} must be integer "
                                  "on a digital instance")
    if not analog and wrow.dtype != np.int8 and (
            not np.issubdtype(wrow.dtype, np.integer)
            or (wrow.size and (wrow.min() < -128 or wrow.max() > 127))):
        raise SimulationError(f"instance '{instance.label}': a digital instance needs int8 "
                              "weight rows")
    pop, elem = image.axon_sources()
    names = [L["name"] for L in image.layers]
    inp = image.meta["input"]["name"]
    out = []
    parts: dict = {li: {} for li in range(len(image.layers))}
    changed = {li: False for li in range(len(image.layers))}
    nidx = a["neu_index"].astype(np.int64)
    for c in range(image.n_cores):
        li = int(a["core_layer"][c])
        blk = wrow[core_off[c]:core_off[c + 1]].reshape(a_per[c], n_per[c])
        if not changed[li] and not np.array_equal(blk, image.weights(c)):
            changed[li] = True
        a0, a1 = int(ab[c]), int(ab[c + 1])
        n0, n1 = int(nb[c]), int(nb[c + 1])
        r, j = np.nonzero(blk)
        for s in np.unique(pop[a0:a1]):
            sel = pop[a0:a1][r] == s
            parts[li].setdefault(int(s), []).append(
                (elem[a0:a1][r[sel]], nidx[n0:n1][j[sel]], blk[r[sel], j[sel]]))
    for li, L in enumerate(image.layers):
        mats = {}
        for s in L["sources"]:
            si = -1 if s == inp else names.index(s)
            n_src = image.n_inputs if si < 0 else int(image.layers[si]["neurons"])
            ps = parts[li].get(si, [])
            rr = np.concatenate([p[0] for p in ps]) if ps else np.zeros(0, np.int64)
            cc = np.concatenate([p[1] for p in ps]) if ps else np.zeros(0, np.int64)
            vv = (np.concatenate([p[2] for p in ps]) if ps else np.zeros(0)).astype(
                np.float64 if analog else np.int64)
            m = sp.csr_matrix((vv, (rr, cc)), shape=(n_src, int(L["neurons"])))
            m.sum_duplicates()
            mats[si] = m
        out.append({"mats": mats, "changed": changed[li] or analog})
    return out


# --- execution ----------------------------------------------------------------------------
def _apply(r: _OpRun, x: np.ndarray, src_shape: tuple, TB: int, impl: str,
           device: str, dt: torch.dtype) -> torch.Tensor:
    """One source's synaptic input [TB, n_out] (float, exact integers) from activations x
    [TB, n_src] (u8 numpy on CPU, a tensor on the device path)."""
    op = r.op
    if r.path == "sparse":
        xs = sp.csr_matrix(np.asarray(x).reshape(TB, -1))
        y = (xs @ r.matrix).toarray()
        return torch.from_numpy(np.ascontiguousarray(y))
    c, h, w = src_shape if op is None else op.in_shape
    if op is not None and op.pool != (1, 1):
        ph, pw = op.pool
        if impl == "torch" or r.path != "int8":
            t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
            hp, wp = h // ph, w // pw
            t = t.reshape(TB, c, h, w)[:, :, :hp * ph, :wp * pw].to(device=device, dtype=dt)
            xp = t.reshape(TB, c, hp, ph, wp, pw).sum(dim=(3, 5))   # exact integer sums
        else:
            out = np.empty((TB, c, h // ph, w // pw), np.uint8)
            kernels.sum_pool(np.asarray(x).reshape(TB, c, h, w), ph, pw, out)
            xp = torch.from_numpy(out)
        c, h, w = c, h // ph, w // pw
    else:
        xp = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if r.path == "int8":
        if op.kind == KIND_CONV:
            return r.fn(xp.reshape(TB, c, h, w)).reshape(TB, -1)
        return r.fn(xp.reshape(TB, -1))
    xf = xp.to(device=device, dtype=dt)
    if op is None or op.kind == KIND_SPARSE:
        return xf.reshape(TB, -1) @ r.weight
    if op.kind == KIND_CONV:
        return F.conv2d(xf.reshape(TB, c, h, w), r.weight, None, op.stride, op.padding,
                        op.dilation, op.groups).reshape(TB, -1)
    return xf.reshape(TB, -1) @ r.weight


def _scan_torch(cur: torch.Tensor, regs, vlo: int, vhi: int, analog: bool):
    """The neuron scan in torch ops (device path): cur [T, B, n] -> spikes u8, counts, v."""
    T, B, n = cur.shape
    dev = cur.device
    fdt = torch.float64 if analog else torch.int64
    R = [torch.as_tensor(np.array(r), device=dev) for r in regs]
    th, thn, vr, vi, bias, lk, sh, rm, nm, lm = R
    if not analog:
        th, thn, vr, vi, bias, lk, sh = (x.to(torch.int64) for x in (th, thn, vr, vi, bias, lk,
                                                                        sh))
    v = vi.to(fdt).expand(B, n).clone()
    cnt = torch.zeros(B, n, dtype=torch.int64, device=dev)
    spikes = torch.zeros(T, B, n, dtype=torch.uint8, device=dev)
    for t in range(T):
        if analog:
            v = torch.where(lm == 1, (v + lk).clamp(vlo, vhi), v)
            v = torch.where((lm == 2) | (lm == 3), v - v * sh, v)
            v = (v + cur[t].to(fdt) + bias).clamp(vlo, vhi)
        else:
            v = torch.where(lm == 1, (v + lk).clamp(vlo, vhi), v)
            v = torch.where(lm == 2, v - torch.bitwise_right_shift(v, sh), v)
            av = torch.where(v >= 0, v, -v)
            mv = torch.bitwise_right_shift(av * (4096 - lk), 12)
            v = torch.where(lm == 3, torch.where(v >= 0, mv, -mv), v)
            v = (v + torch.round(cur[t]).to(torch.int64) + bias).clamp(vlo, vhi)
        s = v >= th
        v = torch.where(s & (rm == 0), vr.to(fdt), v)
        v = torch.where(s & (rm == 1), v - th, v)
        v = torch.where((nm == 1) & (v < -thn), -thn.to(fdt), v)
        spikes[t] = s.to(torch.uint8)
        cnt += s
    return spikes, cnt, v


def _run_chunk(pl: Plan, image: ChipImage, p: np.ndarray, record: bool, vlo, vhi):
    """p: u8 [T, b, n_in] -> per layer (counts [b, n] int64, v [b, n]), input nonzero counts."""
    T, b, n_in = p.shape
    TB = T * b
    dev = pl.device
    acts: dict[int, object] = {-1: p.reshape(TB, n_in) if pl.impl != "torch"
                               else torch.from_numpy(np.ascontiguousarray(p)).to(dev)
                               .reshape(TB, n_in)}
    shapes = {-1: _shape3(image.meta["input"]["shape"])}
    res = []
    for L in pl.layers:
        cur = None
        for r in L.ops:
            y = _apply(r, acts[r.source], shapes[r.source], TB, pl.impl, dev, L.dtype)
            cur = y if cur is None else cur + y.to(cur.dtype)
        if cur is None:
            cur = torch.zeros(TB, L.n, dtype=L.dtype, device=dev)
        cur = cur.reshape(T, b, L.n)
        if pl.impl == "torch":
            spk, cnt, v = _scan_torch(cur, L.regs, vlo, vhi, L.analog)
            acts[L.li] = spk.reshape(TB, L.n)
            res.append((cnt.cpu().numpy(), v.cpu().numpy()))
        else:
            c = np.ascontiguousarray(cur.numpy())
            spk = np.empty((T, b, L.n), np.uint8)
            cnt = np.empty((b, L.n), np.int64)
            v = np.empty((b, L.n), np.float64 if L.analog else np.int64)
            if L.analog:                  # v's dtype selects the membrane type
                kernels.neuron_scan(c.astype(np.float64), *L.regs, float(vlo), float(vhi),
                                    spk, cnt, v)
            else:
                kernels.neuron_scan(c, *L.regs, vlo, vhi, spk, cnt, v)
            acts[L.li] = spk.reshape(TB, L.n)
            res.append((cnt, v))
        shapes[L.li] = _shape3(L.shape)
    nz = np.count_nonzero(p, axis=0)          # [b, n_in] steps with a nonzero payload
    return res, nz


def _shape3(s) -> tuple:
    s = tuple(int(x) for x in s)
    return s if len(s) == 3 else (int(np.prod(s)), 1, 1)


def default_workers() -> int:
    import numba
    return max(1, min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1))


def run_payloads(image: ChipImage, payloads: np.ndarray, *, batch: int = 256,
                 workers: int | None = None, record: bool = False, progress: bool = False,
                 encoding: str = "direct", weights=None, instance=None, device: str = "cpu",
                 impl: str | None = None, chunk: int = CHUNK):
    """The layer engine's ``run_payloads`` (same arguments and RunResult as the tick engine's;
    ``tick_cycles``, ``core_busy`` and ``link_load`` are empty and the cycle counter is 0)."""
    if weights is not None:
        raise SimulationError("the layer engine takes noise instances (instance=), not raw "
                              "weight rows", "use engine='tick' with weights=")
    if device not in ("cpu", "cuda"):
        raise SimulationError(f"unknown device '{device}'", "use 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise SimulationError("device 'cuda' requested but torch sees no CUDA GPU",
                              "use --device cpu")
    p = check_payloads(image, payloads)
    T, B, _ = p.shape
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    pl = plan(image, device, impl, instance)
    spec = image.spec
    vlo, vhi = spec.membrane_range
    workers = workers or default_workers()
    nl = len(image.layers)
    n_out = pl.out_src.shape[0]
    N = image.n_neurons
    counts = [np.zeros((B, L.n), np.int64) for L in pl.layers]
    vs = [np.zeros((B, L.n), np.float64 if L.analog else np.int64) for L in pl.layers]
    nz = np.zeros((B, image.n_inputs), np.int64)
    chunk = max(1, int(chunk))
    starts = list(range(0, B, chunk))
    t0 = time.perf_counter()

    def work(i):
        j = min(B, i + chunk)
        res, z = _run_chunk(pl, image, np.ascontiguousarray(p[:, i:j]), record, vlo, vhi)
        for li, (c, v) in enumerate(res):
            counts[li][i:j] = c
            vs[li][i:j] = v
        nz[i:j] = z

    threads = min(workers, len(starts)) if pl.impl != "torch" or device == "cpu" else 1
    if threads <= 1:
        for i in starts:
            work(i)
    else:
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as ex:
                list(ex.map(work, starts))
        finally:
            torch.set_num_threads(old)
    wall = time.perf_counter() - t0
    # counters from spike counts
    stats = np.zeros((B, kernels.N_STATS), np.int64)
    layer_spk = np.zeros((B, nl), np.int64)
    for li in range(nl):
        cst = pl.cost[li]
        stats[:, kernels.ST_SOPS] += counts[li] @ cst[:, 0]
        stats[:, kernels.ST_SOPS1] += counts[li] @ cst[:, 1]
        stats[:, kernels.ST_PACKETS] += counts[li] @ cst[:, 2]
        stats[:, kernels.ST_HOPS] += counts[li] @ cst[:, 3]
        stats[:, kernels.ST_XHOPS] += counts[li] @ cst[:, 4]
        layer_spk[:, li] = counts[li].sum(axis=1)
    stats[:, kernels.ST_SOPS] += nz @ pl.in_cost[:, 0]
    stats[:, kernels.ST_SOPS1] += nz @ pl.in_cost[:, 1]
    stats[:, kernels.ST_IN_EVENTS] = nz @ pl.in_cost[:, 2]
    stats[:, kernels.ST_SPIKES] = layer_spk.sum(axis=1)
    out_counts = np.zeros((B, n_out), np.int64)
    has = pl.out_src[:, 0] >= 0
    for k in np.flatnonzero(has):
        out_counts[:, k] = counts[pl.out_src[k, 0]][:, pl.out_src[k, 1]]
    out_glob = np.asarray(image.meta["output"]["global"], np.int64)
    lay_of = image.a["core_layer"].astype(np.int64)[image.core_of_neuron]
    loc = image.a["neu_index"].astype(np.int64)
    v_out = np.zeros((B, out_glob.size), np.float64 if pl.analog else np.int64)
    for o, gidx in enumerate(out_glob):
        v_out[:, o] = vs[lay_of[gidx]][:, loc[gidx]]
    th_dep = image.a["neu_th_pos"].astype(np.int64)[out_glob]
    sc = score(out_counts, v_out, th_dep, np.asarray(image.meta["output"]["scale"], np.float64))
    n_per = np.diff(image.a["core_neuron_base"].astype(np.int64))
    energy = {
        "synaptic": stats[:, kernels.ST_SOPS1] * spec.e_sop_pj,
        "neuron": np.full(B, float(np.sum(n_per)) * T * spec.e_neuron_pj),
        "routing": (stats[:, kernels.ST_HOPS] * spec.e_hop_pj
                    + stats[:, kernels.ST_XHOPS] * spec.e_interchip_pj),
    }
    cnt_all = v_all = None
    if record:
        cnt_all = np.zeros((B, N), np.int64)
        v_all = np.zeros((B, N), np.float64 if pl.analog else np.int64)
        for li in range(nl):
            cnt_all[:, pl.glob[li]] = counts[li]
            v_all[:, pl.glob[li]] = vs[li]
    return RunResult(
        timesteps=T, latency_ticks=image.latency, encoding=encoding, out_counts=out_counts,
        v_out=v_out, scores=sc, layer_spikes=layer_spk, stats=stats,
        tick_cycles=np.zeros((B, 0), np.int64), core_busy=np.zeros(image.n_cores, np.int64),
        link_load=np.zeros(0, np.int64), layer_names=[x["name"] for x in image.layers],
        layer_sizes=np.array([x["neurons"] for x in image.layers]), energy_pj=energy,
        clock_hz=spec.clock_hz, wall_s=wall, counts_all=cnt_all, v_all=v_all, engine="layer")


__all__ = ["run_payloads", "plan", "unsupported_reason", "selftest_int8", "Plan"]
