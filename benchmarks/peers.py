"""snnTorch and spikingjelly peers of the *same integer network* a chip image holds.

Each peer is written the way its users write a network: snnTorch as a per-step loop of
``snn.Leaky`` neurons (beta = 1: IF, no leak) fed by fixed-weight torch layers; spikingjelly as an
``nn.Sequential`` in multi-step mode (``layer.*`` with ``step_mode='m'``, ``neuron.IFNode``, the
synaptic ops of all T steps in one call). The weights are the image's integers (the unmapped
integer matrices for MLPs, the operator graph's integer conv/affine weights for CNNs), the
thresholds are the image's ``th_pos``, the reset is the image's (soft: subtract the threshold,
hard: to ``v_reset``), the input is the chip's graded payloads (direct encoding, 0..255). Float32
arithmetic is exact on these integers (|v| < 2**24).

The chip fires at ``v >= th``; snnTorch fires at ``mem - th > 0``. Holding snnTorch's membrane at
``v + 1/2`` (exact in float32) makes its strict test the chip's ``>=`` without changing any other
step (a soft reset subtracts th and keeps the offset; a hard reset targets ``v_reset + 1/2``).
snnTorch applies the reset at the *next* call (from the previous membrane); its spike trains
equal the chip's, and its returned membrane is the pre-reset one, so the post-reset membrane is
recovered as ``mem - spk * th`` (soft) for the equality check.

The benchmark checks every peer's output counts (and final output membranes where the peer
exposes them) against snnrun before it times anything.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from compiler.ir import IF, Affine, AvgPool2d, Conv2d, Flatten, Input, Linear, Output


class SumPool2d(nn.Module):
    """AvgPool2d x k^2: the chip's integer sum pool (exact: division by a power of two or an
    integer average re-multiplied; checked by the output equality test)."""

    def __init__(self, k, stride, padding):
        super().__init__()
        self.k, self.stride, self.padding = k, stride, padding

    def forward(self, x):
        k = self.k
        return F.avg_pool2d(x, k, self.stride, self.padding) * (k[0] * k[1])


class AddBias(nn.Module):
    """The image's per-neuron integer bias, added to the synaptic input every step."""

    def __init__(self, bias):
        super().__init__()
        self.bias = bias

    def forward(self, x):
        return x + self.bias


class Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


def _neuron_regs(regs, name):
    """(th, reset, v_reset, v_init) of an IF layer; refuses registers the peers cannot express."""
    if np.any(regs.leak_mode != 0) or np.any(regs.neg_mode != 0):
        raise ValueError(f"peer baseline: layer {name} has a leak or a negative floor")
    rm = np.unique(regs.reset_mode)
    if rm.size != 1 or int(rm[0]) not in (0, 1):
        raise ValueError(f"peer baseline: layer {name} mixes reset modes or has reset NONE")
    return (regs.th_pos.astype(np.float32), "soft" if int(rm[0]) == 1 else "hard",
            regs.v_reset.astype(np.float32), regs.v_init.astype(np.float32))


def stages_from_matrices(unmapped):
    """[(synaptic module, layer name), ...] for a chain of dense integer matrices."""
    stages, prev = [], unmapped.input_name
    for name in unmapped.layers:
        L = unmapped.node(name)
        if len(L.inputs) != 1 or L.inputs[0][0] != prev:
            raise ValueError("peer baseline: MLP path supports a plain chain of layers")
        m = torch.tensor(L.inputs[0][1].toarray().T, dtype=torch.float32)
        lin = nn.Linear(m.shape[1], m.shape[0], bias=False)
        lin.weight.data = m.contiguous()
        stages.append((lin, name, (m.shape[0],)))
        prev = name
    return stages


def stages_from_graph(op_graph, unmapped):
    """[(synaptic module, IF layer name, layer shape), ...] from a chain operator graph."""
    g, stages, ops = op_graph, [], []
    for name in g.topo_order():
        node = g.node(name)
        if len(g.inputs(name)) > 1:
            raise ValueError("peer baseline: CNN path supports chain graphs only")
        if isinstance(node, (Input, Output)):
            continue
        if isinstance(node, Conv2d):
            w = torch.tensor(node.weight, dtype=torch.float32)
            c = nn.Conv2d(w.shape[1] * node.groups, w.shape[0], w.shape[2:], node.stride,
                          node.padding, node.dilation, node.groups, bias=False)
            c.weight.data = w
            ops.append(c)
        elif isinstance(node, (Affine, Linear)):
            w = torch.tensor(node.weight, dtype=torch.float32)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data = w
            ops.append(lin)
        elif isinstance(node, AvgPool2d):
            ops.append(SumPool2d(node.kernel_size, node.stride, node.padding))
        elif isinstance(node, Flatten):
            ops.append(nn.Flatten())
        elif isinstance(node, IF):
            shape = unmapped.node(name).shape
            ops.append(Reshape(shape))
            stages.append((nn.Sequential(*ops), name, shape))
            ops = []
        else:
            raise ValueError(f"peer baseline: no rule for {node.kind}")
    return stages


def _input_shape(op_graph, n_in):
    if op_graph is None:
        return (n_in,)
    return tuple(op_graph.node(op_graph.input_name).input_type)


class SnnTorchNet:
    """snnTorch: fixed-weight torch layers + ``snn.Leaky(beta=1)`` stepped over T."""

    def __init__(self, stages, unmapped, op_graph=None):
        import snntorch as snn
        self.op_graph, self.stages = op_graph, []
        for syn, name, shape in stages:
            th, reset, v_reset, v_init = _neuron_regs(unmapped.node(name).regs, name)
            if reset == "hard" and np.any(v_reset != 0):
                raise ValueError(f"snnTorch peer: {name} resets to a nonzero v_reset")
            th_t = torch.tensor(th.reshape(shape))
            lif = snn.Leaky(beta=1.0, threshold=th_t,
                            reset_mechanism="subtract" if reset == "soft" else "zero")
            self.stages.append((syn, lif, th_t, torch.tensor(v_init.reshape(shape)) + 0.5))
        self.reset = reset

    @torch.no_grad()
    def run(self, payloads: np.ndarray):
        T, B, n_in = payloads.shape
        x = torch.tensor(payloads, dtype=torch.float32).reshape(
            (T, B) + _input_shape(self.op_graph, n_in))
        mems = [v0.expand((B,) + v0.shape).clone() for _, _, _, v0 in self.stages]
        cnt = None
        for t in range(T):
            a = x[t]
            for i, (syn, lif, _, _) in enumerate(self.stages):
                a, mems[i] = lif(syn(a), mems[i])
            cnt = a if cnt is None else cnt + a
        _, _, th, _ = self.stages[-1]
        v = mems[-1] - 0.5
        v = v - a * th if self.reset == "soft" else v * (1 - a)
        return (cnt.reshape(B, -1).numpy().astype(np.int64),
                v.reshape(B, -1).numpy().astype(np.int64))


class SpikingJellyNet:
    """spikingjelly (activation_based): multi-step ``nn.Sequential`` with ``neuron.IFNode``."""

    def __init__(self, stages, unmapped, op_graph=None):
        from spikingjelly.activation_based import layer, neuron
        self.op_graph = op_graph
        mods = []
        for syn, name, _ in stages:
            th, reset, v_reset, v_init = _neuron_regs(unmapped.node(name).regs, name)
            if np.any(v_init != 0) or np.unique(th).size != 1 or np.unique(v_reset).size != 1:
                raise ValueError(f"spikingjelly peer: {name} needs per-neuron registers")
            mods.append(layer.SeqToANNContainer(syn))
            mods.append(neuron.IFNode(v_threshold=float(th[0]),
                                      v_reset=None if reset == "soft" else float(v_reset[0]),
                                      step_mode="m", store_v_seq=False))
        self.net = nn.Sequential(*mods).eval()
        self.last = mods[-1]

    @torch.no_grad()
    def run(self, payloads: np.ndarray):
        from spikingjelly.activation_based import functional
        T, B, n_in = payloads.shape
        x = torch.tensor(payloads, dtype=torch.float32).reshape(
            (T, B) + _input_shape(self.op_graph, n_in))
        functional.reset_net(self.net)
        s = self.net(x)
        v = self.last.v
        return (s.sum(0).reshape(B, -1).numpy().astype(np.int64),
                v.reshape(B, -1).numpy().astype(np.int64))


def build(peer: str, unmapped, op_graph=None):
    """A peer network ('snntorch' or 'spikingjelly') of the image's integer network."""
    stages = (stages_from_matrices(unmapped) if op_graph is None
              else stages_from_graph(op_graph, unmapped))
    with_bias = []
    for syn, name, shape in stages:
        b = unmapped.node(name).regs.bias
        if np.any(b != 0):
            syn = nn.Sequential(syn, AddBias(torch.tensor(b.reshape(shape), dtype=torch.float32)))
        with_bias.append((syn, name, shape))
    stages = with_bias
    cls = {"snntorch": SnnTorchNet, "spikingjelly": SpikingJellyNet}[peer]
    return cls(stages, unmapped, op_graph)
