"""Graph builders for tests (like NIR's mock_* helpers): small, seeded, deterministic."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from compiler.ir import IF, LIF, Add, Affine, AvgPool2d, Conv2d, Flatten, Graph, Input, Output
from compiler.ir.linear import infer_shapes


def make_mlp(sizes=(16, 12, 4), seed=0, lif=False, bias=True, reset="soft") -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph({"dt": 1.0})
    prev = g.add("input", Input((sizes[0],)))
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0, 1.5 / np.sqrt(a), (b, a))
        bb = rng.normal(0, 0.05, b) if bias else np.zeros(b)
        prev = g.add(f"fc{i}", Affine(w, bb), [prev])
        th = rng.uniform(0.5, 1.0)
        nrn = (LIF(v_threshold=th, beta=0.875, reset_mode=reset) if lif
               else IF(v_threshold=th, reset_mode=reset))
        prev = g.add(f"n{i}", nrn, [prev])
    g.add("output", Output((sizes[-1],)), [prev])
    return g


def make_convnet(seed=0, c=(1, 4, 6), hw=8, residual=False) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph({"dt": 1.0})
    x = g.add("input", Input((c[0], hw, hw)))
    w1 = rng.normal(0, 0.6, (c[1], c[0], 3, 2))
    x = g.add("conv1", Conv2d(w1, rng.normal(0, 0.05, c[1]), stride=(1, 2), padding=(1, 0)), [x])
    x = g.add("if1", IF(v_threshold=0.8), [x])
    h1 = x
    x = g.add("pool1", AvgPool2d(2, 2), [x])
    w2 = rng.normal(0, 0.5, (c[2], c[1], 3, 3))
    x = g.add("conv2", Conv2d(w2, rng.normal(0, 0.05, c[2]), padding=1), [x])
    x = g.add("if2", LIF(v_threshold=1.0, beta=0.9), [x])
    if residual:
        w3 = rng.normal(0, 0.5, (c[2], c[2], 3, 3))
        y = g.add("conv3", Conv2d(w3, np.zeros(c[2]), padding=1), [x])
        w4 = rng.normal(0, 0.5, (c[2], c[1], 1, 1))
        sk = g.add("pool_s", AvgPool2d(2, 2), [h1])
        sk = g.add("skip", Conv2d(w4, np.zeros(c[2])), [sk])
        x = g.add("add", Add(), [y, sk])
        x = g.add("if3", IF(v_threshold=1.0), [x])
    x = g.add("flat", Flatten(), [x])
    n_in = c[2] * (hw // 2) * (hw // 4)
    x = g.add("fc", Affine(rng.normal(0, 0.3, (5, n_in)), rng.normal(0, 0.05, 5)), [x])
    x = g.add("out", IF(v_threshold=1.0), [x])
    g.add("output", Output((5,)), [x])
    return g


@st.composite
def random_net(draw):
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    conv = draw(st.booleans())
    g = Graph()
    x = g.add("input", Input((2, 6, 5) if conv else (draw(st.integers(3, 40)),)))

    def neuron(name, src):
        kind = draw(st.sampled_from(["if", "lif", "lif_mult"]))
        reset = draw(st.sampled_from(["soft", "hard", "none"]))
        th = float(rng.uniform(0.3, 1.5))
        floor = draw(st.sampled_from([None, 0.5]))
        kw = dict(v_threshold=th, reset_mode=reset, neg_floor=floor,
                  v_init=float(rng.uniform(0, th / 2)), v_reset=0.0)
        if kind == "if":
            node = IF(**kw)
        else:
            node = LIF(beta=0.75 if kind == "lif" else 0.9, **kw)
        return g.add(name, node, [src])

    if conv:
        c1 = draw(st.integers(1, 5))
        x = g.add("c1", Conv2d(rng.normal(0, 1, (c1, 2, 3, 2)), rng.normal(0, .1, c1),
                               stride=(1, 2), padding=(1, 1)), [x])
        h = x = neuron("n1", x)
        x = g.add("c2", Conv2d(rng.normal(0, 1, (3, c1, 2, 2)), rng.normal(0, .1, 3)), [x])
        x = neuron("n2", x)
        if draw(st.booleans()):
            y = g.add("c3", Conv2d(rng.normal(0, 1, (3, 3, 3, 3)), np.zeros(3), padding=1), [x])
            s = g.add("p", AvgPool2d((2, 1), (1, 1)), [h])
            s = g.add("c4", Conv2d(rng.normal(0, 1, (3, c1, 1, 2)), np.zeros(3)), [s])
            x = g.add("add", Add(), [y, s])
            x = neuron("n3", x)
        x = g.add("flat", Flatten(), [x])
        n_in = None
    else:
        n_in = g.node("input").input_type[0]
    depth = draw(st.integers(1, 3))
    for i in range(depth):
        n_in = int(np.prod(infer_shapes(g)[x]))
        n_out = draw(st.integers(2, 30))
        x = g.add(f"fc{i}", Affine(rng.normal(0, 2 / np.sqrt(n_in), (n_out, n_in)),
                                   rng.normal(0, .1, n_out)), [x])
        if i < depth - 1 or draw(st.booleans()):
            x = neuron(f"f{i}", x)
    g.add("output", Output(), [x])
    return g, seed
