"""Synapse operators as sparse matrices: shape inference and chain composition.

Every synapse operator (Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, BatchNorm, Scale,
Add) is linear (plus a bias) on the flattened, row-major (C, H, W) activation of its input. The
``lower`` pass and the float reference both use :func:`compose` to turn the operator chain in
front of each neuron population into one CSR matrix per source population, which is exactly the
unrolled connectivity the crossbar cores store. AvgPool2d divides by k*k (count_include_pad).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from compiler.errors import IRVerificationError
from compiler.ir.graph import Graph
from compiler.ir.nodes import (
    IF,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Input,
    Linear,
    Output,
    Scale,
    SumPool2d,
)


def _pool_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def out_shape(name: str, node, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Shape of ``node``'s output given its input shapes; raises IRVerificationError."""
    def bad(why: str) -> IRVerificationError:
        return IRVerificationError("shapes", name, why)

    if isinstance(node, Input):
        return node.input_type
    if isinstance(node, Add):
        if len(set(in_shapes)) != 1:
            raise bad(f"Add inputs have different shapes {in_shapes}")
        return in_shapes[0]
    if len(in_shapes) != 1:
        raise bad(f"{node.kind} takes exactly one input, got {len(in_shapes)}")
    (s,) = in_shapes
    n_in = int(np.prod(s))
    if isinstance(node, (Affine, Linear)):
        w = node.weight
        if w.ndim != 2 or w.shape[1] != n_in:
            raise bad(f"weight shape {w.shape} does not match input size {n_in} (shape {s});"
                      " expected [out, in]")
        if isinstance(node, Affine) and node.bias.shape != (w.shape[0],):
            raise bad(f"bias shape {node.bias.shape}, expected ({w.shape[0]},)")
        return (w.shape[0],)
    if isinstance(node, Conv2d):
        if len(s) != 3:
            raise bad(f"Conv2d needs a (C, H, W) input, got shape {s}")
        co, cig, kh, kw = node.weight.shape
        if cig * node.groups != s[0] or co % node.groups:
            raise bad(f"weight {node.weight.shape} with groups={node.groups} does not match "
                      f"{s[0]} input channels")
        if node.bias.shape != (co,):
            raise bad(f"bias shape {node.bias.shape}, expected ({co},)")
        ho = _pool_out(s[1], kh, node.stride[0], node.padding[0], node.dilation[0])
        wo = _pool_out(s[2], kw, node.stride[1], node.padding[1], node.dilation[1])
        if ho <= 0 or wo <= 0:
            raise bad(f"output would be empty ({ho}x{wo}) for input {s}")
        return (co, ho, wo)
    if isinstance(node, AvgPool2d):  # includes SumPool2d
        if len(s) != 3:
            raise bad(f"{node.kind} needs a (C, H, W) input, got shape {s}")
        ho = _pool_out(s[1], node.kernel_size[0], node.stride[0], node.padding[0])
        wo = _pool_out(s[2], node.kernel_size[1], node.stride[1], node.padding[1])
        if ho <= 0 or wo <= 0:
            raise bad(f"output would be empty ({ho}x{wo}) for input {s}")
        return (s[0], ho, wo)
    if isinstance(node, Flatten):
        nd = len(s)
        a = node.start_dim % nd if nd else 0
        b = node.end_dim % nd if nd else 0
        return tuple(s[:a]) + (int(np.prod(s[a:b + 1])),) + tuple(s[b + 1:])
    if isinstance(node, (BatchNorm, Scale, IF, Output)):
        return s
    raise bad(f"no shape rule for node type {node.kind}")


def infer_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name in graph.topo_order():
        shapes[name] = out_shape(name, graph.node(name), [shapes[i] for i in graph.inputs(name)])
    return shapes


def broadcast(param, shape: tuple[int, ...], what: str = "parameter",
              where: str = "?") -> np.ndarray:
    """Flatten a scalar / per-channel / full-shape parameter to one value per neuron."""
    p = np.asarray(param, dtype=np.float64)
    n = int(np.prod(shape))
    if p.size == 1:
        return np.full(n, float(p.reshape(-1)[0]))
    if p.size == n:
        return p.reshape(-1).copy()
    if len(shape) >= 2 and p.size == shape[0]:
        return np.repeat(p.reshape(-1), n // shape[0])
    raise IRVerificationError("shapes", where,
                              f"{what} of shape {p.shape} does not broadcast to neurons {shape}")


def channels(shape: tuple[int, ...]) -> np.ndarray:
    """Per-neuron channel id: dim 0 of a (C, H, W) population, else the neuron index."""
    n = int(np.prod(shape))
    if len(shape) >= 2:
        return np.repeat(np.arange(shape[0]), n // shape[0])
    return np.arange(n)


def conv_matrix(w: np.ndarray, s: tuple[int, ...], stride, padding, dilation, groups,
                out) -> sp.csr_matrix:
    """The unrolled convolution as CSR [C*H*W, C_out*H_out*W_out] (zero weights dropped).

    Built as the CSR of its transpose (one row per output neuron) with the entries generated
    directly in sorted order, (o_c, oh, ow) then (in_c, a, b), which is increasing input index:
    no COO intermediate, no sort, one transpose conversion. Distinct kernel offsets reach
    distinct input pixels, so there are no duplicates.
    """
    co, cig, kh, kw = w.shape
    c, h, wd = s
    _, ho, wo = out
    cog = co // groups
    n_in, n_out = c * h * wd, co * ho * wo
    it = np.int32 if max(n_in, n_out) < 2**31 else np.int64
    ih = (np.arange(ho)[:, None] * stride[0] - padding[0]
          + np.arange(kh)[None, :] * dilation[0]).astype(it)            # [ho, kh]
    iw = (np.arange(wo)[:, None] * stride[1] - padding[1]
          + np.arange(kw)[None, :] * dilation[1]).astype(it)            # [wo, kw]
    in_c = ((np.arange(co)[:, None] // cog) * cig + np.arange(cig)[None, :]).astype(it)
    okh, okw = (ih >= 0) & (ih < h), (iw >= 0) & (iw < wd)
    ihc, iwc = np.clip(ih, 0, h - 1), np.clip(iw, 0, wd - 1)
    # 6-D grid [co, ho, wo, cig, kh, kw], a few output channels at a time (bounded temporaries)
    step = max(1, (1 << 23) // max(1, ho * wo * cig * kh * kw))
    rows_l, data_l, counts_l = [], [], []
    for o0 in range(0, co, step):
        sl = slice(o0, min(co, o0 + step))
        valid = (okh[None, :, None, None, :, None] & okw[None, None, :, None, None, :]
                 & (w[sl] != 0)[:, None, None, :, :, :])
        rows_l.append((in_c[sl, None, None, :, None, None] * (h * wd)
                       + ihc[None, :, None, None, :, None] * wd
                       + iwc[None, None, :, None, None, :])[valid])
        data_l.append(np.broadcast_to(np.asarray(w[sl], np.float64)[:, None, None, :, :, :],
                                      valid.shape)[valid])
        counts_l.append(valid.reshape(valid.shape[0] * ho * wo, -1).sum(axis=1))
        del valid
    rows, data, counts = (np.concatenate(a) for a in (rows_l, data_l, counts_l))
    del rows_l, data_l
    indptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    mt = sp.csr_matrix((data, rows, indptr.astype(it) if indptr[-1] < 2**31 else indptr),
                       shape=(n_out, n_in))
    mt.has_sorted_indices = True
    return mt.T.tocsr()


def op_matrix(node, in_shape: tuple[int, ...], shape: tuple[int, ...]):
    """(matrix [n_in, n_out] as CSR or None for identity, bias [n_out] or None)."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(shape))
    if isinstance(node, (Affine, Linear)):
        m = sp.csr_matrix(np.asarray(node.weight).T)
        return m, (np.asarray(node.bias, dtype=np.float64) if isinstance(node, Affine) else None)
    if isinstance(node, Conv2d):
        m = conv_matrix(np.asarray(node.weight), in_shape, node.stride, node.padding,
                        node.dilation, node.groups, shape)
        return m, np.repeat(np.asarray(node.bias, dtype=np.float64), n_out // shape[0])
    if isinstance(node, AvgPool2d):
        c = in_shape[0]
        k = np.ones((c, 1) + tuple(node.kernel_size))
        if not isinstance(node, SumPool2d):
            k = k / float(node.kernel_size[0] * node.kernel_size[1])
        return conv_matrix(k, in_shape, node.stride, node.padding, (1, 1), c, shape), None
    if isinstance(node, Flatten) or isinstance(node, Output):
        return None, None
    if isinstance(node, BatchNorm):
        var = np.asarray(node.var, np.float64)
        sc = np.asarray(node.gamma, np.float64) / np.sqrt(var + node.eps)
        sh = np.asarray(node.beta, np.float64) - np.asarray(node.mean, np.float64) * sc
        return (sp.diags(broadcast(sc, shape, "BatchNorm scale")).tocsr(),
                broadcast(sh, shape, "BatchNorm shift"))
    if isinstance(node, Scale):
        return sp.diags(broadcast(node.scale, shape, "Scale")).tocsr(), None
    assert n_in == n_out
    raise IRVerificationError("lowering", node.kind, f"{node.kind} is not a synapse operator")


def _eye(m, n: int):
    return sp.identity(n, format="csr", dtype=np.float64) if m is None else m


def compose(graph: Graph, target: str, shapes: dict[str, tuple[int, ...]] | None = None,
            populations: tuple = (Input, IF)):
    """Compose the synapse chain feeding node ``target`` (a neuron or Output node).

    Returns ``(inputs, bias)``: ``inputs`` is a list of (source population name, CSR [n_src, n])
    in topological order of the sources and ``bias`` the float bias per target neuron. Sources
    are the nearest nodes of the ``populations`` types (Input and neuron nodes).
    """
    shapes = shapes or infer_shapes(graph)
    memo: dict[str, tuple[dict[str, sp.csr_matrix], np.ndarray]] = {}

    def expr(name: str):
        if name in memo:
            return memo[name]
        node = graph.node(name)
        n = int(np.prod(shapes[name]))
        if isinstance(node, populations):
            res = ({name: None}, np.zeros(n))      # None: the identity (not materialised)
        elif isinstance(node, Add):
            terms: dict[str, sp.csr_matrix] = {}
            bias = np.zeros(n)
            for src in graph.inputs(name):
                t, b = expr(src)
                for k, m in t.items():
                    m = _eye(m, n)
                    terms[k] = (terms[k] + m).tocsr() if k in terms else m
                bias = bias + b
            res = (terms, bias)
        else:
            (src,) = graph.inputs(name)
            t, b = expr(src)
            m, ob = op_matrix(node, shapes[src], shapes[name])
            if m is None:
                res = (t, b)
            else:
                res = ({k: m.tocsr() if v is None else (v @ m).tocsr() for k, v in t.items()},
                       np.asarray(m.T @ b).reshape(-1) + (0.0 if ob is None else ob))
        memo[name] = res
        return res

    (src,) = graph.inputs(target)
    terms, bias = expr(src)
    order = {n: i for i, n in enumerate(graph.topo_order())}
    out = []
    for k in sorted(terms, key=order.__getitem__):
        m = _eye(terms[k], int(np.prod(shapes[k]))).tocsr()
        m.eliminate_zeros()
        m.sort_indices()
        out.append((k, m))
    return out, bias


def chain_structure(graph: Graph, target: str, shapes: dict[str, tuple[int, ...]] | None = None,
                    populations: tuple = (Input, IF)) -> dict[str, dict | None]:
    """The operator structure of each source's path into ``target`` (chip.bin layer descriptors).

    For every source population that :func:`compose` finds, a dict describing the single path
    from it to ``target`` when that path is ``SumPool/AvgPool(k == stride, no padding)* ->
    Flatten* -> [Conv2d | Affine | Linear] -> (BatchNorm | Scale | Flatten)*`` (the pools
    compose into one sum-pool factor; AvgPool's 1/k^2 lives in the scale), else ``None`` (the
    backend then describes that input by its matrix alone). Keys: ``op`` ('conv', 'dense' or
    'pool'), ``node`` (the weight node's name), ``pool`` [ph, pw], ``in_shape`` (the source
    shape), and for convolutions ``kernel``, ``stride``, ``padding``, ``dilation``, ``groups``,
    ``out_channels``. Only structure: the integers come from the quantized matrix in the
    backend, which checks that the structure reproduces it exactly.
    """
    shapes = shapes or infer_shapes(graph)
    paths: dict[str, list] = {}
    bad: set[str] = set()

    def walk(name: str, ops: list) -> None:
        node = graph.node(name)
        if isinstance(node, populations):
            if name in paths:
                bad.add(name)           # two paths from one source: the matrix is their sum
            paths[name] = list(reversed(ops))
            return
        if isinstance(node, Add):
            for src in graph.inputs(name):
                walk(src, ops + [("add", name)])
            return
        (src,) = graph.inputs(name)
        walk(src, ops + [(name, node)])

    (first,) = graph.inputs(target)
    walk(first, [])
    out: dict[str, dict | None] = {}
    for src, ops in paths.items():
        out[src] = None if src in bad else _describe_path(ops, shapes, src)
    return out


def _describe_path(ops: list, shapes: dict, src: str) -> dict | None:
    pool = [1, 1]
    i = 0
    ops = [o for o in ops if o[0] != "add"]
    while i < len(ops) and isinstance(ops[i][1], AvgPool2d):
        nd = ops[i][1]
        if tuple(nd.kernel_size) != tuple(nd.stride) or any(nd.padding):
            return None
        pool = [pool[0] * nd.kernel_size[0], pool[1] * nd.kernel_size[1]]
        i += 1
    while i < len(ops) and isinstance(ops[i][1], Flatten):
        i += 1
    rest = ops[i + 1:]
    if any(not isinstance(nd, (BatchNorm, Scale, Flatten)) for _, nd in rest):
        return None
    d = {"pool": pool, "in_shape": list(shapes[src])}
    if i == len(ops):
        if pool == [1, 1] or len(shapes[src]) != 3:
            return None
        return dict(d, op="pool", node=None)
    name, nd = ops[i]
    if isinstance(nd, Conv2d):
        if len(shapes[src]) != 3:
            return None
        return dict(d, op="conv", node=name, kernel=list(nd.weight.shape[2:]),
                    stride=list(nd.stride), padding=list(nd.padding),
                    dilation=list(nd.dilation), groups=int(nd.groups),
                    out_channels=int(nd.weight.shape[0]))
    if isinstance(nd, (Affine, Linear)):
        return dict(d, op="dense", node=name)
    return None
