"""Shared builders for frontend tests: small seeded torch SNNs, IR graphs and a numpy evaluator.

Test modules reach the plain helpers through the ``helpers`` fixture (never ``import conftest``,
which is ambiguous once several test folders have a conftest.py).

The evaluator runs an *imported* (operator) graph step by step: synapse operators through
``compiler.ir.linear.op_matrix`` (the compiler's own definition of each operator) and neurons
through an obviously-correct numpy loop of the documented semantics (compiler/ir/nodes.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from compiler.ir import (
    IF,
    LIF,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Graph,
    Input,
    Linear,
    Output,
    Scale,
    SumPool2d,
)
from compiler.ir.linear import infer_shapes, op_matrix
from frontends import native


# --- numpy reference of the neuron semantics ---------------------------------------------------
def neuron_step(v, z, th, *, beta=None, reset="soft", v_reset=0.0, neg_floor=None):
    """One step of the IR neuron on numpy arrays; returns (v_new, spikes)."""
    v = (v if beta is None else beta * v) + z
    s = v >= th
    if reset == "soft":
        v = v - th * s
    elif reset == "hard":
        v = np.where(s, v_reset, v)
    if neg_floor is not None:
        v = np.maximum(v, -neg_floor)
    return v, s.astype(np.float64)


def eval_graph(g: Graph, x_seq: np.ndarray):
    """Run an imported graph on x_seq [T, B, *input_shape].

    Returns (output per step [T, B, n_out], final membrane of the node feeding Output or None).
    """
    shapes = infer_shapes(g)
    T, B = x_seq.shape[:2]
    v: dict[str, np.ndarray] = {}
    outs = []
    src_out = g.inputs(g.output_name)[0]
    for t in range(T):
        act: dict[str, np.ndarray] = {}
        for name, node in g.items():
            ins = g.inputs(name)
            if isinstance(node, Input):
                act[name] = x_seq[t].reshape(B, -1).astype(np.float64)
            elif isinstance(node, Output):
                outs.append(act[ins[0]])
            elif isinstance(node, Add):
                act[name] = sum(act[i] for i in ins)
            elif isinstance(node, (IF, LIF)):
                n = int(np.prod(shapes[name]))
                full = lambda a, n=n, name=name: np.broadcast_to(  # noqa: E731
                    _per_neuron(a, shapes[name]), (n,))
                if name not in v:
                    v[name] = np.broadcast_to(full(node.v_init), (B, n)).copy()
                v[name], act[name] = neuron_step(
                    v[name], act[ins[0]], full(node.v_threshold),
                    beta=full(node.beta) if isinstance(node, LIF) else None,
                    reset=node.reset_mode, v_reset=full(node.v_reset), neg_floor=node.neg_floor)
            else:
                m, b = op_matrix(node, shapes[ins[0]], shapes[name])
                y = act[ins[0]] if m is None else np.asarray((m.T @ act[ins[0]].T).T)
                act[name] = y + (0.0 if b is None else b)
    return np.stack(outs), v.get(src_out)


def _per_neuron(a, shape):
    from compiler.ir.linear import broadcast
    return broadcast(a, shape)


# --- torch models ---------------------------------------------------------------------------------
class ResidualNet(nn.Module):
    """Stride-2, padded, non-square conv with bias -> BN -> IF; residual add; pool; linear."""

    def __init__(self, lif: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), bias=True)
        self.bn1 = nn.BatchNorm2d(4)
        self.sn1 = native.LIF(beta=0.75, v_threshold=0.6) if lif else native.IF(v_threshold=0.6)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.sn2 = native.IF(v_threshold=0.8, reset="hard", v_reset=0.1)
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.sn3 = native.IF(v_threshold=0.7, neg_floor=0.5)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 2 * 3, 5)
        self.out = native.IF()

    def forward(self, x):
        h = self.sn1(self.bn1(self.conv1(x)))
        y = self.sn2(self.conv2(h))
        y = self.conv3(y) + h
        y = self.sn3(torch.add(y, h))
        y = self.pool(y)
        y = torch.flatten(self.drop(y), 1)
        return self.out(self.fc(y))


def loud(model: nn.Module, factor: float = 3.0) -> nn.Module:
    """Scale weights and biases: the default init is too quiet to make every layer spike."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


@pytest.fixture
def residual_net():
    """A seeded ResidualNet for input (2, 8, 8), in eval mode, float64."""
    torch.manual_seed(0)
    return randomize_bn(ResidualNet()).double()


@pytest.fixture
def seq_net():
    """A seeded Sequential SNN (the digits example architecture, smaller) for input (1, 8, 8)."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), native.IF(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), native.LIF(beta=0.875, leak="shift"),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 10), native.IF(v_threshold=0.5),
    ).double().eval()
    return loud(model)


def make_ir_graph(seed: int = 0) -> Graph:
    """An operator graph using every node type the ONNX form covers (float64 arrays)."""
    rng = np.random.default_rng(seed)
    g = Graph({"dt": 1.0, "leak_hints": {"lif1": "mult"}})
    x = g.add("input", Input((2, 8, 6)))
    x = g.add("conv1", Conv2d(rng.normal(0, 0.5, (4, 2, 3, 2)), rng.normal(0, 0.1, 4),
                              stride=(2, 1), padding=(1, 0)), [x])
    x = g.add("bn1", BatchNorm(rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4),
                               rng.normal(0, 0.1, 4), rng.uniform(0.5, 1.5, 4), eps=1e-3), [x])
    # eps=1e-3 and neg_floor=0.3 are not float32 numbers: the ONNX form must keep them exact
    x = g.add("lif1", LIF(v_threshold=rng.uniform(0.5, 1.0, 4), beta=np.full(4, 0.9),
                          v_init=0.25, reset_mode="hard", v_reset=-0.1, neg_floor=0.3), [x])
    h = x
    x = g.add("scale_c", Scale(rng.uniform(0.5, 2.0, 4)), [x])
    x = g.add("conv2", Conv2d(rng.normal(0, 0.5, (4, 2, 3, 3)), np.zeros(4), padding=1,
                              dilation=1, groups=2), [x])
    x = g.add("add", Add(), [x, h, "scale_c"])
    x = g.add("if2", IF(v_threshold=0.7), [x])
    a = g.add("pool", AvgPool2d(2, 2), [x])
    b = g.add("spool", SumPool2d((2, 2), (2, 2), (1, 1)), [x])
    b = g.add("scale_s", Scale(np.asarray(0.25)), [b])
    b = g.add("flat_s", Flatten(1, -1), [b])          # (4, 3*3) rows
    b = g.add("fc_s", Linear(rng.normal(0, 0.3, (3, 36))), [b])
    b = g.add("if_s", IF(v_threshold=0.5, reset_mode="none"), [b])
    a = g.add("fc_a", Affine(rng.normal(0, 0.3, (3, 16)), rng.normal(0, 0.1, 3)), [a])
    x = g.add("join", Add(), [a, b])
    x = g.add("out", IF(v_threshold=1.0), [x])
    g.add("output", Output((3,)), [x])
    return g


@pytest.fixture
def ir_graph() -> Graph:
    return make_ir_graph()


@pytest.fixture
def helpers() -> SimpleNamespace:
    """neuron_step, eval_graph, ResidualNet, loud, randomize_bn, make_ir_graph."""
    return SimpleNamespace(neuron_step=neuron_step, eval_graph=eval_graph, ResidualNet=ResidualNet,
                           loud=loud, randomize_bn=randomize_bn, make_ir_graph=make_ir_graph)
