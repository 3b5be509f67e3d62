"""The differentiable twin: a PyTorch model of a deployed chip image, bit-exact in its forward.

``Twin(image)`` rebuilds the logical network from ``image.unmap()`` (so it holds exactly the
deployed integer weights and registers) and runs the chip's integer neuron update (chip.md
'Neuron', ``compiler.reference.int_step``) in float64 torch ops; integer sums are exact in float64
(|values| < 2^53), so for integer instances the forward equals ``runtime.engines.tick.run_payloads``
bit for bit (spike counts, final membranes, scores). The backward pass replaces the Heaviside spike
by a surrogate derivative (below), the floor-based leaks by their linear trend (straight-through)
and the encoders by ``compiler.encoding.encode_torch``'s straight-through estimator.

    from runtime.lab.twin import Twin, encode_payloads
    twin = Twin(image, surrogate="pdsg")              # or Twin(image, instance=inst)
    p = encode_payloads(x01, "direct", T=8)           # [T, B, n_in] payload floats, grad -> x01
    scores = twin(p)                                  # [B, n_out] float64 == runtime scores
    scores, st = twin(p, return_state=True)           # st.spikes/v/counts per layer

Public API (other modules depend on it; keep it stable)
------------------------------------------------------
``Twin(image, instance=None, surrogate="atan", alpha=None)``
    ``image``: a ``ChipImage``. ``instance``: optional device-noise instance
    (``runtime.lab.noise``),
    any object with ``wrow`` (dense weight rows, int8 or float64, layout of
    ``runtime.engines.tick.dense_rows(image)``), ``regs`` (dict register name -> array over GLOBAL
    neurons, or None) and ``analog`` (bool: real-valued weights/registers, no integer rounding in
    the leaks). The instance's weights enter through :func:`rows_to_csr` (the bridge): the twin's
    sparsity is the deployed sparsity, plus any cell the instance made nonzero.
    ``surrogate``: 'atan' | 'sigmoid' | 'triangle' (``frontends.native.layers.surrogate_grad``,
    default alpha per surrogate when ``alpha`` is None: 2, 4, 1) or 'pdsg' (alpha unused).
``Twin.from_graph(graph, surrogate="atan", alpha=None, membrane_bits=24)``
    The same module on a graph: a lowered *float* graph (stage 'lowered': the float IF/LIF model
    ``v <- beta*v + z``, ``compiler.reference.run_float``; used for algorithm-level attacks) or a
    folded integer graph (``compiler.reference.run_int``).
``twin.forward(x, wvals=None, return_state=False)``
    ``x``: float tensor [T, B, n_in] in payload units (0..255; for bit-exactness, integers).
    Returns scores [B, n_out] float64: ``(count * th_pos + V) * scale`` of the output layer
    (``compiler.reference.score``), or ``(scores, TwinState)``.
    ``wvals``: optional dict ``(layer, source) -> 1-D float tensor`` of the nonzero weight values
    of that matrix in **CSR data order** of ``twin.matrices[(layer, source)]`` (rows = source
    elements, columns = neurons of the layer; for a twin without an instance this is exactly the
    data order of ``image.unmap().node(layer).matrix(source)``). Missing keys keep the twin's
    values. Gradients flow into the given tensors (worst-case weight attacks).
``twin.wvals()``
    The twin's own values, ``{(layer, source): float64 tensor}`` (detached copies).
``twin.rows(wvals, dtype=np.float64)``
    The inverse bridge: values -> dense weight rows for ``run_payloads(..., weights=rows)``.
``twin.logit_unit``
    Per output neuron, the float value of one output spike (``th_pos * scale``; 1 for a non-spiking
    readout): ``scores / logit_unit`` are the scores in spike units, the scale the attacks feed to
    the cross-entropy (docs/attacks.md).
``rows_to_csr(image, wrow, union=True)`` / ``csr_to_rows(image, mats, dtype)``
    The bridge between the runtime's dense rows and per-(layer, source) CSR matrices.
``encode_payloads(x01, encoding, T, seed=0)``
    Images in [0, 1] -> payload floats [T, B, n_in] (exact integers forward, straight-through
    backward via ``compiler.encoding.encode_torch``).

Surrogates act on the threshold-relative potential ``u = (V - th) / th`` (so an integer layer
and its float source see the same surrogate): atan/sigmoid/triangle as in training; PDSG
(algorithms.md §4.3) is the Normal pdf with mean sigma/2 and std sigma, sigma the std of the
pre-reset relative potentials recorded so far in this forward pass (steps 1..t, over batch,
per channel for (C, H, W) layers and per neuron otherwise; sigma = 1 where it is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from compiler.errors import SimulationError
from compiler.ir.graph import Graph
from compiler.ir.linear import channels
from compiler.ir.nodes import LIF
from compiler.ir.verify import stage_index
from frontends.native.functional import torch_threads  # noqa: F401  (re-exported)

SURROGATES = ("atan", "sigmoid", "triangle", "pdsg")
DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0, "triangle": 1.0, "pdsg": 1.0}
_F64 = torch.float64



# --------------------------------------------------------------------------------------------
# the bridge: dense weight rows <-> per (layer, source) CSR matrices
# --------------------------------------------------------------------------------------------
def _axon_offsets(image) -> tuple[np.ndarray, np.ndarray]:
    """(core_off [C+1], ax_off [A]) exactly as ``runtime.engines.tick.dense_rows`` lays rows out."""
    a = image.a
    nb_ = a["core_neuron_base"].astype(np.int64)
    ab = a["core_axon_base"].astype(np.int64)
    n_per, a_per = np.diff(nb_), np.diff(ab)
    core_off = np.concatenate([[0], np.cumsum(n_per * a_per)]).astype(np.int64)
    coa = image.core_of_axon
    ax_off = core_off[coa] + (np.arange(image.n_axons) - ab[coa]) * n_per[coa]
    return core_off, ax_off.astype(np.int64)


@dataclass
class _Link:
    """One (layer, source) matrix: canonical CSR structure and where its values live in wrow."""

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    off: np.ndarray        # wrow offset of every crossbar cell feeding this matrix
    inv: np.ndarray        # canonical CSR entry of every cell (cells on one entry are summed)

    def values(self, wrow: np.ndarray) -> np.ndarray:
        return np.bincount(self.inv, weights=np.asarray(wrow[self.off], np.float64),
                           minlength=self.indices.size)

    def matrix(self, wrow: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((self.values(wrow), self.indices, self.indptr), shape=self.shape)


def bridge(image, wrow: np.ndarray | None = None, union: bool = True) -> dict:
    """Map crossbar cells to CSR entries: ``{(layer, source): _Link}``.

    The structure is the deployed nonzero pattern (the CSR structure of ``image.unmap()``), plus,
    when ``union`` and ``wrow`` is given, every cell that is nonzero in ``wrow`` (a fault that
    turned a zero weight on). Entries are in canonical CSR order (row-major, sorted columns).
    """
    a = image.a
    nb_ = a["core_neuron_base"].astype(np.int64)
    core_off, ax_off = _axon_offsets(image)
    ptr, nrn, _ = image.axon_table
    ax = np.repeat(np.arange(image.n_axons), np.diff(ptr))
    cells_ax, cells_n = ax, nrn
    if wrow is not None and union:
        off_dep = ax_off[ax] + (nrn - nb_[image.core_of_neuron[nrn]])
        nz = np.flatnonzero(np.asarray(wrow) != 0)
        extra = np.setdiff1d(nz, off_dep, assume_unique=False)
        if extra.size:
            c = np.searchsorted(core_off, extra, side="right") - 1
            n_per = np.diff(nb_)
            loc = extra - core_off[c]
            ab = a["core_axon_base"].astype(np.int64)
            cells_ax = np.concatenate([ax, ab[c] + loc // n_per[c]])
            cells_n = np.concatenate([nrn, nb_[c] + loc % n_per[c]])
    off = ax_off[cells_ax] + (cells_n - nb_[image.core_of_neuron[cells_n]])
    pop, elem = image.axon_sources()
    nlayer = a["core_layer"].astype(np.int64)[image.core_of_neuron]
    nidx = a["neu_index"].astype(np.int64)
    inp = image.meta["input"]["name"]
    names = [L["name"] for L in image.layers]
    sizes = {inp: image.n_inputs, **{L["name"]: int(L["neurons"]) for L in image.layers}}
    out = {}
    for li, L in enumerate(image.layers):
        sel_l = nlayer[cells_n] == li
        for s in L["sources"]:
            si = -1 if s == inp else names.index(s)
            e = np.flatnonzero(sel_l & (pop[cells_ax] == si))
            n_l = int(L["neurons"])
            key = elem[cells_ax[e]] * n_l + nidx[cells_n[e]]
            uk, inv = np.unique(key, return_inverse=True)
            rows, cols = uk // n_l, uk % n_l
            indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=sizes[s]))])
            out[(L["name"], s)] = _Link((sizes[s], n_l), indptr.astype(np.int64),
                                        cols.astype(np.int64), off[e], inv.reshape(-1))
    return out


def rows_to_csr(image, wrow: np.ndarray, union: bool = True) -> dict:
    """Dense weight rows (``runtime.engines.tick.dense_rows`` layout) -> ``{(layer, source): CSR}``
    (float64 values, canonical order; see :func:`bridge` for the structure)."""
    return {k: lk.matrix(wrow) for k, lk in bridge(image, wrow, union).items()}


def csr_to_rows(image, mats: dict, dtype=np.float64, links: dict | None = None) -> np.ndarray:
    """The inverse of :func:`rows_to_csr`: ``{(layer, source): CSR or 1-D values}`` -> dense rows.

    Values are given either as CSR matrices with the bridge's structure or as 1-D arrays in its
    CSR data order. Keys not given keep the deployed weights. When several crossbar cells feed
    one entry (never in compiled images), the whole value goes to the first cell.
    """
    from runtime.engines.tick import dense_rows

    _, base = dense_rows(image)
    rows = base.astype(dtype)
    links = links or bridge(image)
    for k, v in mats.items():
        lk = links[k]
        vals = np.asarray(v.data if sp.issparse(v) else v, np.float64).reshape(-1)
        if vals.size != lk.indices.size:
            raise SimulationError(f"weights for {k}: {vals.size} values, expected "
                                  f"{lk.indices.size}")
        order = np.argsort(lk.inv, kind="stable")
        keep = np.ones(order.size, bool)
        keep[1:] = lk.inv[order][1:] != lk.inv[order][:-1]
        first_cells, rest = order[keep], order[~keep]
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            vals = np.clip(np.rint(vals), info.min, info.max)
        rows[lk.off[first_cells]] = vals[lk.inv[first_cells]].astype(dtype)
        rows[lk.off[rest]] = 0
    return rows


# --------------------------------------------------------------------------------------------
# spike function with surrogate gradients
# --------------------------------------------------------------------------------------------
def surrogate_derivative(u: torch.Tensor, kind: str, alpha: float,
                         sigma: torch.Tensor | None = None) -> torch.Tensor:
    """d spike / d u at the threshold-relative potential ``u``."""
    if kind == "pdsg":
        sg = torch.ones_like(u) if sigma is None else sigma
        return torch.exp(-((u - sg / 2) ** 2) / (2 * sg * sg)) / (math.sqrt(2 * math.pi) * sg)
    from frontends.native.layers import surrogate_grad
    return surrogate_grad(u, kind, alpha)


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, kind, alpha, sigma):
        ctx.save_for_backward(u, sigma if sigma is not None else torch.empty(0))
        ctx.kind, ctx.alpha, ctx.has_sigma = kind, alpha, sigma is not None
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        u, sigma = ctx.saved_tensors
        d = surrogate_derivative(u, ctx.kind, ctx.alpha, sigma if ctx.has_sigma else None)
        return grad * d, None, None, None


def spike(u: torch.Tensor, kind: str = "atan", alpha: float | None = None,
          sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Heaviside ``u >= 0`` with the named surrogate derivative in backward."""
    if kind not in SURROGATES:
        raise SimulationError(f"unknown surrogate '{kind}'", f"use one of {', '.join(SURROGATES)}")
    return _Spike.apply(u, kind, DEFAULT_ALPHA[kind] if alpha is None else float(alpha), sigma)


def _ste(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """Forward ``exact``, backward through ``smooth``."""
    return smooth + (exact - smooth).detach()


# --------------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------------
@dataclass
class TwinState:
    """Per-layer records of one forward pass (layout [T, B, n] / [B, n])."""

    spikes: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor]

    def rates(self) -> dict[str, np.ndarray]:
        """Time-averaged firing rates per layer, numpy [B, n]."""
        return {k: (c / max(self.spikes[k].shape[0], 1)).detach().numpy()
                for k, c in self.counts.items()}


@dataclass
class _Src:
    name: str
    key: tuple[str, str]
    shape: tuple[int, int]
    idx_t: torch.Tensor          # [2, nnz] indices of W^T (neuron, source element), coalesced
    perm: torch.Tensor           # CSR data order -> idx_t order
    vals: torch.Tensor           # float64 values in CSR data order
    mat: sp.csr_matrix | None = None     # cached W^T (scipy) for the default values
    mat_t: sp.csr_matrix | None = None   # and W (for the backward pass)


class _SpMM(torch.autograd.Function):
    """``W^T @ x`` for fixed weights through scipy CSR (float64, exact for integer sums, ~2-30x
    faster than torch's COO kernels on CPU); the backward uses the precomputed ``W``."""

    @staticmethod
    def forward(ctx, x, wt, w):
        ctx.w = w
        return torch.from_numpy(np.asarray(wt @ x.detach().numpy()))

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(np.asarray(ctx.w @ grad.detach().contiguous().numpy())), None, None


def _col(a, n) -> torch.Tensor:
    """Per-neuron array -> float64 column [n, 1] (broadcast over the batch)."""
    return torch.as_tensor(np.broadcast_to(np.asarray(a, np.float64), (n,)).copy(),
                           dtype=_F64).reshape(n, 1)


class Twin(nn.Module):
    """Differentiable, bit-exact model of a chip image (see the module docstring)."""

    def __init__(self, image=None, instance=None, surrogate: str = "atan",
                 alpha: float | None = None, *, graph: Graph | None = None,
                 membrane_bits: int | None = None):
        super().__init__()
        if surrogate not in SURROGATES:
            raise SimulationError(f"unknown surrogate '{surrogate}'",
                                  f"use one of {', '.join(SURROGATES)}")
        self.surrogate = surrogate
        self.alpha = DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha)
        self.image = image
        self._links = None
        if graph is None:
            if image is None:
                raise SimulationError("Twin needs a chip image or a graph")
            graph = image.unmap()
            membrane_bits = image.spec.membrane_bits
        self.graph = graph
        stage = graph.stage
        if stage == "lowered":
            self.mode = "float"
        elif stage_index(stage) >= stage_index("folded"):
            self.mode = "analog" if instance is not None and getattr(instance, "analog", False) \
                else "int"
        else:
            raise SimulationError(f"Twin needs a lowered float graph or a folded integer graph, "
                                  f"got stage '{stage}'")
        mb = int(membrane_bits or 24)
        self.vlo, self.vhi = float(-(1 << (mb - 1))), float((1 << (mb - 1)) - 1)
        self.input_name = graph.input_name
        self.n_in = int(np.prod(graph.node(self.input_name).input_type))
        self.output = graph.output_layer
        mats = None
        if instance is not None:
            if image is None:
                raise SimulationError("a noise instance needs the chip image (its wrow layout)")
            self._links = bridge(image, instance.wrow, union=True)
            mats = {k: lk.matrix(instance.wrow) for k, lk in self._links.items()}
        self.layer_names = list(graph.layers)
        self._layers = []
        for li, name in enumerate(self.layer_names):
            L = graph.node(name)
            srcs = []
            for s, m in L.inputs:
                m = mats[(name, s)] if mats is not None else m
                srcs.append(self._make_src(name, s, m))
            P = self._params(L, li, instance)
            P["ch"] = torch.as_tensor(np.array(L.channel if L.channel is not None
                                               else channels(L.shape), np.int64))
            P["n_ch"] = int(P["ch"].max()) + 1 if L.n else 0
            self._layers.append((name, L.n, srcs, P))
        P_out = self._layers[self.layer_names.index(self.output)][3]
        # the readout count * th + V uses the *deployed* thresholds (what the host programmed),
        # also for a noise instance whose th_pos registers differ (runtime.engines.tick)
        L_out = graph.node(self.output)
        self._score_th = P_out["th"] if self.mode == "float" else _col(L_out.regs.th_pos, L_out.n)
        th = self._score_th.reshape(-1)
        th_max = math.inf if self.mode == "float" else float(
            image.spec.threshold_max if image is not None else (1 << 23) - 1)
        spiking = torch.isfinite(th) & (th < th_max)
        unit = torch.where(spiking, torch.where(torch.isfinite(th), th, 1.0) * P_out["scale"]
                           .reshape(-1), torch.ones_like(th))
        self.logit_unit = unit.abs().clamp_min(1e-12)

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_graph(cls, graph: Graph, surrogate: str = "atan", alpha: float | None = None,
                   membrane_bits: int = 24) -> Twin:
        """A twin of a lowered float graph or a folded integer graph (no chip image)."""
        return cls(None, None, surrogate, alpha, graph=graph, membrane_bits=membrane_bits)

    def _make_src(self, layer: str, s: str, m) -> _Src:
        m = sp.csr_matrix(m)
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        n_src, n = m.shape
        coo = m.tocoo()
        rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)  # CSR data order
        key_t = cols * n_src + rows
        perm = np.argsort(key_t, kind="stable")
        idx_t = torch.as_tensor(np.stack([cols[perm], rows[perm]]))
        vals = torch.as_tensor(np.asarray(coo.data, np.float64))
        return _Src(s, (layer, s), (n_src, n), idx_t, torch.as_tensor(perm), vals)

    def _params(self, L, li: int, instance) -> dict:
        n = L.n
        if self.mode == "float":
            nrn = L.neuron
            th = np.broadcast_to(np.asarray(nrn.v_threshold, np.float64), (n,))
            return {
                "th": _col(th, n), "v_init": _col(nrn.v_init, n), "v_reset": _col(nrn.v_reset, n),
                "bias": _col(L.bias, n),
                "beta": _col(nrn.beta, n) if isinstance(nrn, LIF) else None,
                "reset": nrn.reset_mode,
                "floor": None if nrn.neg_floor is None else float(nrn.neg_floor),
                "scale": torch.ones(n, 1, dtype=_F64),
            }
        regs = {k: np.asarray(getattr(L.regs, k)) for k in L.regs.NAMES}
        inst_regs = getattr(instance, "regs", None) if instance is not None else None
        if inst_regs:
            glob = self.image.layer_neurons(li)
            for k, v in inst_regs.items():
                if v is not None and k in regs:
                    regs[k] = np.asarray(v)[glob]
        P = {k: _col(regs[k], n) for k in ("th_pos", "th_neg", "v_reset", "v_init", "bias",
                                            "leak", "shift")}
        P["th"] = P.pop("th_pos")
        for k in ("reset_mode", "neg_mode", "leak_mode"):
            P[k] = torch.as_tensor(np.rint(regs[k]).astype(np.int64)).reshape(n, 1)
        P["scale"] = _col(L.scale if L.scale is not None else np.ones(n), n)
        return P

    # --- weights --------------------------------------------------------------------------
    @property
    def matrices(self) -> dict:
        """``{(layer, source): scipy CSR}`` of the twin's current values (the wvals order)."""
        out = {}
        for _, _, srcs, _ in self._layers:
            for s in srcs:
                inv = torch.argsort(s.perm)
                rows, cols = s.idx_t[1][inv].numpy(), s.idx_t[0][inv].numpy()
                indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=s.shape[0]))])
                out[s.key] = sp.csr_matrix((s.vals.numpy().copy(), cols, indptr), shape=s.shape)
        return out

    def wvals(self) -> dict:
        """``{(layer, source): float64 tensor}``: the twin's weight values in CSR data order."""
        return {s.key: s.vals.clone() for _, _, srcs, _ in self._layers for s in srcs}

    def rows(self, wvals: dict, dtype=np.float64) -> np.ndarray:
        """Dense weight rows for ``run_payloads(weights=...)`` from a wvals dict."""
        if self.image is None:
            raise SimulationError("rows() needs a twin built from a chip image")
        if self._links is None:
            self._links = bridge(self.image)
        vals = {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                for k, v in wvals.items()}
        return csr_to_rows(self.image, vals, dtype, self._links)

    def _matmul(self, s: _Src, wvals: dict | None, a: torch.Tensor) -> torch.Tensor:
        """Current from source ``s``: W^T [n, n_src] @ a [n_src, B]."""
        if wvals is not None and s.key in wvals:
            v = wvals[s.key]
            if v.numel() != s.vals.numel():
                raise SimulationError(f"wvals{s.key}: {v.numel()} values, expected "
                                      f"{s.vals.numel()}")
            wt = torch.sparse_coo_tensor(s.idx_t, v.to(_F64)[s.perm], (s.shape[1], s.shape[0]),
                                         is_coalesced=True, check_invariants=False)
            return torch.sparse.mm(wt, a)
        if s.mat is None:
            inv = torch.argsort(s.perm).numpy()
            rows, cols = s.idx_t[1].numpy()[inv], s.idx_t[0].numpy()[inv]   # CSR order of W
            w = sp.csr_matrix((s.vals.numpy(), (rows, cols)), shape=s.shape)
            s.mat_t, s.mat = w, w.T.tocsr()
        return _SpMM.apply(a, s.mat, s.mat_t)

    # --- dynamics -------------------------------------------------------------------------
    def _spike(self, v, P, stats):
        th = P["th"]
        fin = torch.isfinite(th)
        th_safe = torch.where(fin, th, torch.ones_like(th))
        u = torch.where(fin, (v - th) / th_safe, torch.full_like(v, -math.inf))
        sigma = None
        if self.surrogate == "pdsg" and torch.is_grad_enabled():
            ud = torch.where(fin, u.detach(), torch.zeros_like(u))
            ch, n_ch = P["ch"], P["n_ch"]
            s1 = torch.zeros(n_ch, dtype=_F64).index_add_(0, ch, ud.sum(1))
            s2 = torch.zeros(n_ch, dtype=_F64).index_add_(0, ch, (ud * ud).sum(1))
            cnt = torch.zeros(n_ch, dtype=_F64).index_add_(0, ch, torch.full_like(ud[:, 0],
                                                                                ud.shape[1]))
            if stats is not None:
                s1, s2, cnt = s1 + stats[0], s2 + stats[1], cnt + stats[2]
            stats = (s1, s2, cnt)
            var = (s2 - s1 * s1 / cnt.clamp_min(1)) / (cnt - 1).clamp_min(1)
            sd = var.clamp_min(0).sqrt()
            sd = torch.where((sd > 0) & torch.isfinite(sd), sd, torch.ones_like(sd))
            sigma = sd[ch].reshape(-1, 1).expand_as(u)
        return spike(u, self.surrogate, self.alpha, sigma), th_safe, stats

    def _int_step(self, v, cur, P, stats):
        lm = P["leak_mode"]
        exact = self.mode == "int"
        if bool((lm == 1).any()):
            v = torch.where(lm == 1, torch.clamp(v + P["leak"], self.vlo, self.vhi), v)
        if bool((lm == 2).any()):
            k = torch.where(lm == 2, P["shift"], torch.zeros_like(P["shift"]))
            p2 = torch.pow(2.0, k)
            smooth = v - v * (1.0 / p2)
            new = _ste(v - torch.floor(v / p2), smooth) if exact else smooth
            v = torch.where(lm == 2, new, v)
        if bool((lm == 3).any()):
            smooth = v - v * (P["leak"] / 4096.0)
            if exact:
                new = _ste(torch.sign(v) * torch.floor(v.abs() * (4096.0 - P["leak"]) / 4096.0),
                           smooth)
            else:
                new = smooth
            v = torch.where(lm == 3, new, v)
        v = torch.clamp(v + cur + P["bias"], self.vlo, self.vhi)
        s, th, stats = self._spike(v, P, stats)
        rm = P["reset_mode"]
        if bool((rm == 0).any()):
            hard = (rm == 0) & (s > 0)
            v = _ste(torch.where(hard, P["v_reset"].expand_as(v), v),
                     v + s * (rm == 0) * (P["v_reset"] - v))
        if bool((rm == 1).any()):
            v = v - s * (rm == 1) * th
        nm = P["neg_mode"] == 1
        if bool(nm.any()):
            v = torch.where(nm & (v < -P["th_neg"]), -P["th_neg"].expand_as(v), v)
        return v, s, stats

    def _float_step(self, v, cur, P, stats):
        if P["beta"] is not None:
            v = v * P["beta"]
        v = v + (cur + P["bias"])
        s, th, stats = self._spike(v, P, stats)
        if P["reset"] == "soft":
            v = v - th * s
        elif P["reset"] == "hard":
            v = _ste(torch.where(s > 0, P["v_reset"].expand_as(v), v), v + s * (P["v_reset"] - v))
        if P["floor"] is not None:
            v = torch.clamp(v, min=-P["floor"])
        return v, s, stats

    def forward(self, x: torch.Tensor, wvals: dict | None = None, return_state: bool = False,
                regs: dict | None = None):
        """Run payload floats ``x`` [T, B, n_in]; returns scores [B, n_out] (and a TwinState).

        ``regs``: optional differentiable register overrides ``{(layer, 'bias' | 'th'): tensor
        [n]}`` (the adversarial-weight search of runtime.lab.sweep.worst_case); the readout
        still uses the deployed thresholds."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.dim() != 3 or x.shape[2] != self.n_in:
            raise SimulationError(f"twin inputs must have shape [T, B, {self.n_in}], got "
                                  f"{list(x.shape)}")
        x = x.to(_F64)
        T, B = int(x.shape[0]), int(x.shape[1])
        step = self._float_step if self.mode == "float" else self._int_step
        v = {name: P["v_init"].expand(n, B).clone() for name, n, _, P in self._layers}
        counts = {name: torch.zeros(n, B, dtype=_F64) for name, n, _, _ in self._layers}
        stats = {name: None for name in self.layer_names}
        spikes = {name: [] for name in self.layer_names} if return_state else None
        layers = self._layers
        if regs:
            known = {(name, k) for name in self.layer_names for k in ("bias", "th")}
            bad = set(regs) - known
            if bad:
                raise SimulationError(f"twin register overrides {sorted(bad)} are not "
                                      "(layer, 'bias' | 'th') of this twin")
            layers = []
            for name, n, srcs, P in self._layers:
                P = dict(P)
                for k in ("bias", "th"):
                    if (name, k) in regs:
                        P[k] = regs[(name, k)].to(_F64).reshape(n, 1)
                layers.append((name, n, srcs, P))
        for t in range(T):
            act = {self.input_name: x[t].transpose(0, 1)}
            for name, n, srcs, P in layers:
                cur = torch.zeros(n, B, dtype=_F64)
                for s in srcs:
                    cur = cur + self._matmul(s, wvals, act[s.name])
                v[name], sp_, stats[name] = step(v[name], cur, P, stats[name])
                counts[name] = counts[name] + sp_
                act[name] = sp_
                if return_state:
                    spikes[name].append(sp_.transpose(0, 1))
        P = self._layers[self.layer_names.index(self.output)][3]
        th = self._score_th
        fin = torch.isfinite(th)
        sc = torch.where(fin, counts[self.output] * torch.where(fin, th, 0.0), 0.0) \
            + v[self.output]
        scores = (sc * P["scale"]).transpose(0, 1)
        if not return_state:
            return scores
        st = TwinState(spikes={k: torch.stack(s) for k, s in spikes.items()},
                       v={k: val.transpose(0, 1) for k, val in v.items()},
                       counts={k: c.transpose(0, 1) for k, c in counts.items()})
        return scores, st

    def logits(self, x: torch.Tensor, wvals: dict | None = None,
               regs: dict | None = None) -> torch.Tensor:
        """Scores in output-spike units (``scores / logit_unit``): what the attacks' CE sees."""
        return self.forward(x, wvals, regs=regs) / self.logit_unit


# --------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------
def encode_payloads(x01: torch.Tensor, encoding: str, T: int, seed=0) -> torch.Tensor:
    """Images [B, ...] in [0, 1] -> payload floats [T, B, n_in] (float64).

    Forward: exactly ``compiler.encoding.encode(encoding, x, T, seed)`` (integers); backward: the
    encoder's straight-through gain (``compiler.encoding.ste_gain``) times 255.
    """
    from compiler.encoding import INPUT_SCALE, encode_torch

    if not isinstance(x01, torch.Tensor):
        x01 = torch.as_tensor(np.asarray(x01, np.float64))
    p = encode_torch(encoding, x01.to(_F64), int(T), seed=seed) * INPUT_SCALE
    return _ste(torch.round(p.detach()), p)


def images_forward(twin: Twin, x01: torch.Tensor, encoding: str, T: int, seed=0,
                   wvals: dict | None = None) -> torch.Tensor:
    """``twin(encode_payloads(x01, encoding, T, seed))``: scores for images in [0, 1]."""
    return twin(encode_payloads(x01, encoding, T, seed), wvals)


__all__ = ["Twin", "TwinState", "SURROGATES", "torch_threads", "bridge", "rows_to_csr",
           "csr_to_rows", "spike", "surrogate_derivative", "encode_payloads", "images_forward"]
