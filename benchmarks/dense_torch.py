"""Dense PyTorch CPU simulations of the *same integer network* a chip image holds.

The usual way SNNs are simulated in PyTorch: every neuron of every layer updated every step with
dense tensor ops. ``DenseMatrices`` uses the image's own unmapped integer matrices as dense
tensors (MLPs, small nets); ``DenseConv`` rebuilds the convolutional structure from the operator
graph (integer-valued weights, AvgPool as SumPool) with the image's integer thresholds. Both run
integer semantics in float32 (exact below 2**24) and return output counts and final membranes,
which the benchmark checks against snnrun before timing anything.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from compiler.ir import IF, Affine, AvgPool2d, Conv2d, Flatten, Input, Linear, Output


class DenseMatrices:
    """Layer-synchronous IF/soft-reset simulation with dense [n_src, n] matrices."""

    def __init__(self, unmapped):
        self.g = unmapped
        self.layers = []
        for name in unmapped.layers:
            L = unmapped.node(name)
            r = L.regs
            if np.any(r.leak_mode != 0) or np.any(r.reset_mode != 1) or np.any(r.neg_mode != 0):
                raise ValueError("dense baseline supports IF neurons with soft reset only")
            mats = [(s, torch.tensor(m.toarray(), dtype=torch.float32)) for s, m in L.inputs]
            self.layers.append((name, mats, torch.tensor(r.th_pos, dtype=torch.float32),
                                torch.tensor(r.bias, dtype=torch.float32),
                                torch.tensor(r.v_init, dtype=torch.float32)))
        self.out = unmapped.output_layer

    @torch.no_grad()
    def run(self, payloads: np.ndarray):
        T, B, _ = payloads.shape
        x = torch.tensor(payloads, dtype=torch.float32)
        v = {n: v0.expand(B, -1).clone() for n, _, _, _, v0 in self.layers}
        cnt = {n: torch.zeros(B, th.numel()) for n, _, th, _, _ in self.layers}
        for t in range(T):
            act = {self.g.input_name: x[t]}
            for n, mats, th, b, _ in self.layers:
                z = b.expand(B, -1).clone()
                for s, m in mats:
                    z += act[s] @ m
                vv = torch.clamp(v[n] + z, -(2 ** 23), 2 ** 23 - 1)
                s_ = (vv >= th).float()
                v[n] = vv - s_ * th
                cnt[n] += s_
                act[n] = s_
        return cnt[self.out].numpy().astype(np.int64), v[self.out].numpy().astype(np.int64)


class DenseConv:
    """Conv/pool/affine structure from the operator graph, thresholds from the image."""

    def __init__(self, op_graph, unmapped):
        self.g = op_graph
        self.regs = {n: unmapped.node(n).regs for n in unmapped.layers}
        self.shapes = {n: unmapped.node(n).shape for n in unmapped.layers}
        self.out = unmapped.output_layer

    @torch.no_grad()
    def run(self, payloads: np.ndarray):
        g = self.g
        T, B, n_in = payloads.shape
        shape = g.node(g.input_name).input_type
        x = torch.tensor(payloads, dtype=torch.float32).reshape((T, B) + tuple(shape))
        th = {n: torch.tensor(r.th_pos, dtype=torch.float32).reshape((1,) + self.shapes[n])
              for n, r in self.regs.items()}
        v = {n: torch.tensor(r.v_init, dtype=torch.float32).reshape((1,) + self.shapes[n])
             .expand((B,) + self.shapes[n]).clone() for n, r in self.regs.items()}
        bias = {n: torch.tensor(r.bias, dtype=torch.float32).reshape((1,) + self.shapes[n])
                for n, r in self.regs.items()}
        cnt = {n: torch.zeros((B,) + self.shapes[n]) for n in self.regs}
        ops = {}
        for name, node in g.items():
            if isinstance(node, Conv2d):
                ops[name] = (torch.tensor(node.weight, dtype=torch.float32), node)
            elif isinstance(node, (Affine, Linear)):
                ops[name] = (torch.tensor(node.weight, dtype=torch.float32), node)
        order = g.topo_order()
        for t in range(T):
            val = {}
            for name in order:
                node = g.node(name)
                ins = [val[i] for i in g.inputs(name)]
                if isinstance(node, Input):
                    val[name] = x[t]
                elif isinstance(node, Conv2d):
                    w, nd = ops[name]
                    val[name] = F.conv2d(ins[0], w, None, nd.stride, nd.padding, nd.dilation,
                                         nd.groups)
                elif isinstance(node, (Affine, Linear)):
                    val[name] = ins[0] @ ops[name][0].T
                elif isinstance(node, AvgPool2d):
                    k = node.kernel_size
                    val[name] = F.avg_pool2d(ins[0], k, node.stride, node.padding) * (k[0] * k[1])
                elif isinstance(node, Flatten):
                    val[name] = ins[0].reshape(B, -1)
                elif isinstance(node, IF):
                    vv = torch.clamp(v[name] + ins[0].reshape(v[name].shape) + bias[name],
                                     -(2 ** 23),
                                     2 ** 23 - 1)
                    s_ = (vv >= th[name]).float()
                    v[name] = vv - s_ * th[name]
                    cnt[name] += s_
                    val[name] = s_
                elif isinstance(node, Output):
                    pass
                else:
                    raise ValueError(f"dense baseline: no rule for {node.kind}")
        o = self.out
        return (cnt[o].reshape(B, -1).numpy().astype(np.int64),
                v[o].reshape(B, -1).numpy().astype(np.int64))
