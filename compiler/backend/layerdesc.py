"""Logical-layer descriptors: the operator behind each layer's crossbars (chip.bin ops sections).

Stage: backend (written by ``emit``) and runtime (read by ``runtime.image``, run by the layer
engine ``runtime.engines.layer``). One descriptor (an *op*) per (layer, source population): the
integer operator whose unrolled matrix [n_src, n] is exactly the layer's synapses from that
source, which the crossbars of the layer's cores hold cell by cell:

    conv    sum-pool the source (C, H, W) by (ph, pw) (non-overlapping; rows/columns beyond
            (H // ph) * ph dropped), then a 2-D convolution with the integer kernel
            [C_out, C_in / groups, kh, kw], stride, padding, dilation, groups
    dense   sum-pool as above (or none), flatten (C, H, W) row-major, then an integer matrix
            [n_pooled, n_out]
    sparse  an integer CSR matrix [n_src, n_out] (any other composition)

Parameters: the integers of all ops are concatenated in ``op_weights``; *parameter id* p is an
index into it. Crossbar cell (axon a, neuron j) of a core holds parameter p when the op of the
axon's source maps that (source element, neuron) pair to kernel/matrix entry p (conv: one
kernel element per cell, shared over positions and over the pooled inputs; dense: one matrix
entry per cell, shared over the pool window; sparse: one stored entry). ``op_info`` names, per
op, the operator node whose weight tensor the kernel/matrix came from and whether the map is
one-to-one with that trained tensor (``trained``: kernel element k is the quantized
``weight.flat[k]`` of ``node``; for dense ops entry (q, j) is ``weight[j, q]``).

The compiler derives the integers from the quantized matrix and the operator structure recorded
by ``lower`` and keeps a conv/dense op only when it reproduces that matrix exactly (else it
writes the sparse form). The runtime checks again, core by core, that the ops reproduce every
crossbar cell, and refuses the image otherwise (:func:`check_image_cells`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

KIND_CONV, KIND_DENSE, KIND_SPARSE = 1, 2, 3
KIND_NAMES = {KIND_CONV: "conv", KIND_DENSE: "dense", KIND_SPARSE: "sparse"}
#: columns of the ``op_table`` section (i64 [n_ops, len(COLS)])
COLS = ("layer", "source", "kind", "w_off", "w_len", "c_in", "h_in", "w_in", "pool_h", "pool_w",
        "c_out", "h_out", "w_out", "kh", "kw", "stride_h", "stride_w", "pad_h", "pad_w",
        "dil_h", "dil_w", "groups", "idx_off", "idx_len")
C = {n: i for i, n in enumerate(COLS)}
N_COLS = len(COLS)


def _shape3(shape) -> tuple[int, int, int]:
    s = tuple(int(x) for x in shape)
    if len(s) == 3:
        return s
    return (int(np.prod(s)), 1, 1)


@dataclass(frozen=True, eq=False)
class LayerOp:
    """One decoded descriptor (see the module docstring). ``source`` is -1 for the graph input."""

    layer: int
    source: int
    kind: int
    in_shape: tuple[int, int, int]
    pool: tuple[int, int]
    out_shape: tuple[int, int, int]
    weights: np.ndarray                 # int8: conv kernel / dense [n_pooled, n] / sparse data
    param_base: int                     # offset of ``weights`` in op_weights
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    indptr: np.ndarray | None = None    # sparse only
    indices: np.ndarray | None = None
    node: str | None = None
    trained: bool = False

    @property
    def n_src(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def pooled_shape(self) -> tuple[int, int, int]:
        c, h, w = self.in_shape
        return (c, h // self.pool[0], w // self.pool[1])

    @property
    def name(self) -> str:
        return KIND_NAMES[self.kind]

    def row(self) -> np.ndarray:
        r = np.zeros(N_COLS, np.int64)
        vals = dict(layer=self.layer, source=self.source, kind=self.kind, w_off=self.param_base,
                    w_len=self.weights.size, pool_h=self.pool[0], pool_w=self.pool[1],
                    kh=self.kernel[0], kw=self.kernel[1], stride_h=self.stride[0],
                    stride_w=self.stride[1], pad_h=self.padding[0], pad_w=self.padding[1],
                    dil_h=self.dilation[0], dil_w=self.dilation[1], groups=self.groups)
        vals.update(zip(("c_in", "h_in", "w_in"), self.in_shape))
        vals.update(zip(("c_out", "h_out", "w_out"), self.out_shape))
        for k, v in vals.items():
            r[C[k]] = int(v)
        return r

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (source element, neuron, local parameter index) the op connects (COO)."""
        if self.kind == KIND_SPARSE:
            rows = np.repeat(np.arange(self.n_src), np.diff(self.indptr))
            return rows, self.indices.astype(np.int64), np.arange(self.weights.size)
        c, h, w = self.in_shape
        pc, ph_, pw_ = self.pooled_shape
        if self.kind == KIND_DENSE:
            n = self.n_out
            q = np.repeat(np.arange(pc * ph_ * pw_), n)
            j = np.tile(np.arange(n), pc * ph_ * pw_)
            prow, cols, pid = q, j, q * n + j
        else:
            co, ho, wo = self.out_shape
            kh, kw = self.kernel
            cig = c // self.groups
            cog = co // self.groups
            o, ic, dy, dx = (a.reshape(-1) for a in np.meshgrid(
                np.arange(co), np.arange(cig), np.arange(kh), np.arange(kw), indexing="ij"))
            pid_t = ((o * cig + ic) * kh + dy) * kw + dx
            oy, ox = (a.reshape(-1) for a in np.meshgrid(np.arange(ho), np.arange(wo),
                                                          indexing="ij"))
            iy = oy[None, :] * self.stride[0] - self.padding[0] + dy[:, None] * self.dilation[0]
            ix = ox[None, :] * self.stride[1] - self.padding[1] + dx[:, None] * self.dilation[1]
            ok = (iy >= 0) & (iy < ph_) & (ix >= 0) & (ix < pw_)
            inc = (o // cog) * cig + ic
            prow = ((inc[:, None] * ph_ + iy) * pw_ + ix)[ok]
            cols = ((o[:, None] * ho + oy[None, :]) * wo + ox[None, :])[ok]
            pid = np.broadcast_to(pid_t[:, None], ok.shape)[ok]
        if self.pool == (1, 1):
            return prow, cols, pid
        # expand each pooled element to its ph x pw source elements
        pcc, rem = np.divmod(prow, ph_ * pw_)
        py, px = np.divmod(rem, pw_)
        a, b = np.meshgrid(np.arange(self.pool[0]), np.arange(self.pool[1]), indexing="ij")
        a, b = a.reshape(-1), b.reshape(-1)
        rows = ((pcc[:, None] * h + py[:, None] * self.pool[0] + a) * w
                + px[:, None] * self.pool[1] + b)
        k = a.size
        return rows.reshape(-1), np.repeat(cols, k), np.repeat(pid, k)

    def matrix(self) -> sp.csr_matrix:
        """The unrolled integer matrix [n_src, n_out] (int64, explicit zeros removed)."""
        r, c, p = self.cells()
        m = sp.csr_matrix((self.weights.reshape(-1)[p].astype(np.int64), (r, c)),
                          shape=(self.n_src, self.n_out))
        m.sum_duplicates()
        m.eliminate_zeros()
        return m

    def abs_colsum_max(self) -> int:
        """max over neurons of sum |w| over its synapses from one pooled input element set:
        the bound of one neuron's current per unit of (pooled) input."""
        if self.kind == KIND_CONV:
            k = np.abs(self.weights.astype(np.int64)).reshape(self.weights.shape[0], -1)
            return int(k.sum(axis=1).max(initial=0))
        if self.kind == KIND_DENSE:
            return int(np.abs(self.weights.astype(np.int64)).sum(axis=0).max(initial=0))
        m = self.matrix()
        return int(np.asarray(abs(m).sum(axis=0)).max(initial=0))


# --- compiler side ------------------------------------------------------------------------
def _struct_op(li: int, si: int, desc: dict | None, mat: sp.csr_matrix, in_shape, out_shape
               ) -> LayerOp | None:
    """A conv/dense op whose integers are read off ``mat`` at the structure's first cell of each
    parameter, kept only if it reproduces ``mat`` exactly."""
    if desc is None:
        return None
    ins, outs = _shape3(in_shape), _shape3(out_shape)
    pool = tuple(int(p) for p in desc.get("pool", (1, 1)))
    if tuple(desc.get("in_shape", in_shape)) != tuple(in_shape) or (
            pool != (1, 1) and len(tuple(in_shape)) != 3):
        return None
    c, h, w = ins
    pooled = (c, h // pool[0], w // pool[1])
    if min(pooled) <= 0:
        return None
    if desc["op"] in ("conv", "pool"):
        if len(tuple(out_shape)) != 3:
            return None
        if desc["op"] == "pool":
            kernel, stride, pad, dil, groups = (1, 1), (1, 1), (0, 0), (1, 1), c
            if outs != pooled:
                return None
            wshape = (c, 1, 1, 1)
        else:
            kernel = tuple(desc["kernel"])
            stride, pad, dil = (tuple(desc[k]) for k in ("stride", "padding", "dilation"))
            groups = int(desc["groups"])
            if outs[0] != desc["out_channels"] or c % groups or outs[0] % groups:
                return None
            wshape = (outs[0], c // groups) + kernel
        op = LayerOp(li, si, KIND_CONV, ins, pool, outs, np.zeros(wshape, np.int8), 0,
                     kernel, stride, pad, dil, groups, node=desc.get("node"),
                     trained=desc["op"] == "conv")
    elif desc["op"] == "dense":
        n_p = int(np.prod(pooled))
        op = LayerOp(li, si, KIND_DENSE, ins, pool, outs, np.zeros((n_p, int(np.prod(outs))),
                                                                      np.int8), 0,
                     node=desc.get("node"), trained=True)
    else:
        return None
    r, cc, pid = op.cells()
    if r.size and (r.max() >= mat.shape[0] or cc.max() >= mat.shape[1]):
        return None
    first = np.full(op.weights.size, -1, np.int64)
    order = np.arange(pid.size)[::-1]
    first[pid[order]] = order                     # the first occurrence wins (written last)
    k = np.zeros(op.weights.size, np.int64)
    have = first >= 0
    if np.any(have):
        at = first[have]
        k[have] = np.asarray(mat[r[at], cc[at]]).reshape(-1)
    if np.any(k < -128) or np.any(k > 127):
        return None
    op = _replace_weights(op, k.astype(np.int8).reshape(op.weights.shape))
    if not _same(op.matrix(), mat):
        return None
    return op


def _replace_weights(op: LayerOp, w: np.ndarray, base: int | None = None) -> LayerOp:
    d = dict(op.__dict__)
    d["weights"] = w
    if base is not None:
        d["param_base"] = base
    return LayerOp(**d)


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    if a.shape != b.shape:
        return False
    d = (a.astype(np.int64) - b.astype(np.int64)).tocsr()
    d.eliminate_zeros()
    return d.nnz == 0


def build_ops(layers: list[tuple[int, str, tuple, list]], input_name: str,
              input_shape: tuple, operators: dict) -> list[LayerOp]:
    """Descriptors of a quantized layer list.

    Args:
        layers: (layer index, name, shape, [(source name, integer CSR [n_src, n])]) in
            topological order.
        input_name, input_shape: the graph input.
        operators: ``graph.attrs['operators']`` recorded by ``lower`` (may be empty).
    """
    idx = {name: li for li, name, _, _ in layers}
    shapes = {name: shape for _, name, shape, _ in layers}
    shapes[input_name] = tuple(input_shape)
    ops: list[LayerOp] = []
    base = 0
    for li, name, shape, inputs in layers:
        for src, m in inputs:
            m = sp.csr_matrix(m).astype(np.int64)
            m.eliminate_zeros()
            si = -1 if src == input_name else idx[src]
            op = _struct_op(li, si, (operators.get(name) or {}).get(src), m, shapes[src], shape)
            if op is None:
                m.sort_indices()
                if np.any(m.data < -128) or np.any(m.data > 127):
                    raise ValueError(f"layer '{name}': weights beyond int8")
                op = LayerOp(li, si, KIND_SPARSE, _shape3(shapes[src]), (1, 1), _shape3(shape),
                             m.data.astype(np.int8), 0, indptr=m.indptr.astype(np.int64),
                             indices=m.indices.astype(np.int64))
            op = _replace_weights(op, op.weights, base)
            base += op.weights.size
            ops.append(op)
    return ops


def to_sections(ops: list[LayerOp]) -> dict:
    """ops -> the four chip.bin sections (op_table, op_weights, op_index, op_info)."""
    table = np.zeros((len(ops), N_COLS), np.int64)
    idx_parts, off = [], 0
    for i, op in enumerate(ops):
        table[i] = op.row()
        if op.kind == KIND_SPARSE:
            part = np.concatenate([op.indptr, op.indices]).astype(np.uint32)
            table[i, C["idx_off"]], table[i, C["idx_len"]] = off, part.size
            idx_parts.append(part)
            off += part.size
    weights = (np.concatenate([op.weights.reshape(-1) for op in ops]).astype(np.int8)
               if ops else np.zeros(0, np.int8))
    info = [{"node": op.node, "trained": bool(op.trained)} for op in ops]
    return {
        "op_table": table,
        "op_weights": weights,
        "op_index": (np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.uint32)),
        "op_info": np.frombuffer(json.dumps(info, sort_keys=True, separators=(",", ":"))
                                 .encode(), np.uint8).copy(),
    }


# --- runtime side -------------------------------------------------------------------------
class DescriptorError(ValueError):
    """A descriptor section is malformed (the loader turns it into a BinaryFormatError)."""


def from_sections(arrays: dict, n_layers: int) -> list[LayerOp]:
    """Decode and bounds-check the ops sections (not yet against the crossbars)."""
    table = np.asarray(arrays["op_table"])
    weights = np.asarray(arrays.get("op_weights", np.zeros(0, np.int8)))
    index = np.asarray(arrays.get("op_index", np.zeros(0, np.uint32))).astype(np.int64)
    try:
        info = json.loads(bytes(np.asarray(arrays.get("op_info", np.zeros(0, np.uint8))))
                          .decode() or "[]")
    except (UnicodeDecodeError, ValueError) as e:
        raise DescriptorError(f"op_info is not JSON ({e})") from e
    if table.ndim != 2 or table.shape[1] != N_COLS:
        raise DescriptorError(f"op_table has shape {list(table.shape)}, expected [ops, {N_COLS}]")
    if not isinstance(info, list) or len(info) != table.shape[0]:
        raise DescriptorError("op_info does not list one entry per op")
    ops = []
    for i, r in enumerate(table):
        g = {k: int(r[C[k]]) for k in COLS}
        where = f"op {i}"
        if not 0 <= g["layer"] < n_layers or not -1 <= g["source"] < n_layers:
            raise DescriptorError(f"{where}: layer/source index out of range")
        if g["kind"] not in KIND_NAMES:
            raise DescriptorError(f"{where}: unknown kind {g['kind']}")
        dims = [g[k] for k in ("c_in", "h_in", "w_in", "c_out", "h_out", "w_out", "pool_h",
                               "pool_w", "kh", "kw", "stride_h", "stride_w", "dil_h", "dil_w",
                               "groups")]
        if min(dims) < 1 or g["pad_h"] < 0 or g["pad_w"] < 0 or max(dims) > 1 << 24:
            raise DescriptorError(f"{where}: a dimension is out of range")
        w0, wn = g["w_off"], g["w_len"]
        if w0 < 0 or wn < 0 or w0 + wn > weights.size:
            raise DescriptorError(f"{where}: weights {w0}..{w0 + wn} beyond op_weights")
        ins = (g["c_in"], g["h_in"], g["w_in"])
        outs = (g["c_out"], g["h_out"], g["w_out"])
        pool = (g["pool_h"], g["pool_w"])
        w = weights[w0:w0 + wn]
        meta = info[i] if isinstance(info[i], dict) else {}
        kw = dict(node=meta.get("node"), trained=bool(meta.get("trained", False)))
        n_src, n_out = int(np.prod(ins)), int(np.prod(outs))
        pooled = (ins[0], ins[1] // pool[0], ins[2] // pool[1])
        if g["kind"] == KIND_CONV:
            gr = g["groups"]
            if ins[0] % gr or outs[0] % gr:
                raise DescriptorError(f"{where}: groups {gr} do not divide the channels")
            wshape = (outs[0], ins[0] // gr, g["kh"], g["kw"])
            if wn != int(np.prod(wshape)):
                raise DescriptorError(f"{where}: {wn} weights, kernel {list(wshape)} needs "
                                      f"{int(np.prod(wshape))}")
            for ax in (0, 1):
                k, s, p, d = (g[x] for x in (("kh", "stride_h", "pad_h", "dil_h"),
                                            ("kw", "stride_w", "pad_w", "dil_w"))[ax])
                if (pooled[1 + ax] + 2 * p - d * (k - 1) - 1) // s + 1 != outs[1 + ax]:
                    raise DescriptorError(f"{where}: output size disagrees with the conv")
            ops.append(LayerOp(g["layer"], g["source"], KIND_CONV, ins, pool, outs,
                               w.reshape(wshape), w0, (g["kh"], g["kw"]),
                               (g["stride_h"], g["stride_w"]), (g["pad_h"], g["pad_w"]),
                               (g["dil_h"], g["dil_w"]), gr, **kw))
        elif g["kind"] == KIND_DENSE:
            n_p = int(np.prod(pooled))
            if wn != n_p * n_out or min(pooled) < 1:
                raise DescriptorError(f"{where}: dense matrix size disagrees with the shapes")
            ops.append(LayerOp(g["layer"], g["source"], KIND_DENSE, ins, pool, outs,
                               w.reshape(n_p, n_out), w0, **kw))
        else:
            i0, il = g["idx_off"], g["idx_len"]
            if i0 < 0 or il != n_src + 1 + wn or i0 + il > index.size or pool != (1, 1):
                raise DescriptorError(f"{where}: sparse index out of range")
            ptr, ind = index[i0:i0 + n_src + 1], index[i0 + n_src + 1:i0 + il]
            if ptr[0] != 0 or ptr[-1] != wn or np.any(np.diff(ptr) < 0) or (
                    ind.size and ind.max() >= n_out):
                raise DescriptorError(f"{where}: malformed sparse matrix")
            ops.append(LayerOp(g["layer"], g["source"], KIND_SPARSE, ins, pool, outs, w, w0,
                               indptr=ptr, indices=ind, **kw))
    return ops


__all__ = ["LayerOp", "build_ops", "to_sections", "from_sections", "DescriptorError",
           "KIND_CONV", "KIND_DENSE", "KIND_SPARSE", "COLS"]
