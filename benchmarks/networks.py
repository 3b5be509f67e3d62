"""Benchmark networks with integer-valued weights, so the compiled integers equal them exactly.

Weights are integers in [-127, 127] with the extreme reached in every layer (per-layer 8-bit
quantization then maps them to themselves: scale 1 for spiking inputs, 1/255 for the graph
input's event units). Thresholds are set from a short calibration so that hidden layers fire
near a target rate.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import IF, Affine, AvgPool2d, Conv2d, Flatten, Graph, Input, Output


def _int_weights(rng, shape, bits=8):
    """Integer weights of ``bits`` width with the range's extreme present (maps to itself)."""
    q = (1 << (bits - 1)) - 1
    w = np.rint(rng.normal(0, q / 3, shape)).clip(-q, q)
    w.flat[0] = q
    return w


def mlp(sizes=(784, 512, 512, 10), seed=0, thresholds=None, bits=8) -> Graph:
    """MLP of IF neurons; thresholds in integer units (input layer: payload units)."""
    rng = np.random.default_rng(seed)
    g = Graph({"dt": 1.0})
    x = g.add("input", Input((sizes[0],)))
    th = thresholds or [None] * (len(sizes) - 1)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = _int_weights(rng, (b, a), bits)
        x = g.add(f"fc{i}", Affine(w, np.zeros(b)), [x])
        q = (1 << (bits - 1)) - 1
        # float threshold: the first layer sees inputs in [0, 1] (payload/255)
        t = th[i] if th[i] is not None else (q / 3 * np.sqrt(a) * (1.0 if i else 0.15))
        x = g.add(f"if{i}", IF(v_threshold=t, reset_mode="soft"), [x])
    g.add("output", Output((sizes[-1],)), [x])
    return g


VGG9_CHANNELS = (32, 32, "P", 64, 64, "P", 128, 128, 128, "P")     # half width (make bench)
# the seed papers' widths (CIFAR-10, 32 x 32 x 3 input, 3x3 convs with padding 1, AvgPool 2x2)
VGG9_SEED_CHANNELS = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P")
VGG5_SEED_CHANNELS = (64, "P", 128, 128, "P")
SEED_FC = 1024


def vgg9(seed=0, channels=VGG9_CHANNELS, hw=32, fc=256, classes=10, th_scale=1.0,
         bits=4) -> Graph:
    """A VGG9-shaped CIFAR-10 network: 7 conv (3x3, pad 1) + 2 FC, AvgPool 2x2 downsampling."""
    rng = np.random.default_rng(seed)
    q = (1 << (bits - 1)) - 1
    g = Graph({"dt": 1.0})
    x = g.add("input", Input((3, hw, hw)))
    c_in, size, k = 3, hw, 0
    for ch in channels:
        if ch == "P":
            x = g.add(f"pool{k}", AvgPool2d(2, 2), [x])
            size //= 2
            continue
        k += 1
        w = _int_weights(rng, (ch, c_in, 3, 3), bits)
        x = g.add(f"conv{k}", Conv2d(w, np.zeros(ch), padding=1), [x])
        base = q / 3 * np.sqrt(c_in * 9)
        x = g.add(f"if{k}", IF(v_threshold=th_scale * base * (0.25 if k == 1 else 0.9)), [x])
        c_in = ch
    x = g.add("flat", Flatten(), [x])
    n = c_in * size * size
    x = g.add("fc1", Affine(_int_weights(rng, (fc, n), bits), np.zeros(fc)), [x])
    x = g.add("if_fc1", IF(v_threshold=th_scale * q / 3 * np.sqrt(n) * 0.9), [x])
    x = g.add("fc2", Affine(_int_weights(rng, (classes, fc), bits), np.zeros(classes)), [x])
    x = g.add("out", IF(v_threshold=q / 3 * np.sqrt(fc)), [x])
    g.add("output", Output((classes,)), [x])
    return g


def vgg9_seed(seed=0, hw=32, bits=4, **kw) -> Graph:
    """VGG9 at the seed papers' width: conv 64,64,P,128,128,P,256,256,256,P; FC 1024, 10."""
    return vgg9(seed=seed, channels=VGG9_SEED_CHANNELS, hw=hw, fc=SEED_FC, bits=bits, **kw)


def vgg5_seed(seed=0, hw=32, bits=4, **kw) -> Graph:
    """VGG5 at the seed papers' width: conv 64,P,128,128,P; FC 1024, 10."""
    return vgg9(seed=seed, channels=VGG5_SEED_CHANNELS, hw=hw, fc=SEED_FC, bits=bits, **kw)


def vgg_native(channels=VGG9_SEED_CHANNELS, fc=SEED_FC, classes=10, in_ch=3, hw=32,
               neuron="if", batchnorm=True, v_threshold=1.0):
    """The same VGG as a trainable torch module of native layers (frontends.native.layers):
    Conv3x3(pad 1) [+ BatchNorm] + IF/LIF per conv, AvgPool2d(2) for 'P', then FC fc + neuron,
    FC classes + neuron (the readout). Train it with the training library (BPTT, QAT), export
    with snnc's native converter (``frontends.native.to_graph``) or ONNX (``export_onnx``)."""
    import torch.nn as nn

    from frontends.native.layers import IF as NIF
    from frontends.native.layers import LIF as NLIF

    def nrn():
        return NLIF(v_threshold=v_threshold, beta=0.9) if neuron == "lif" else NIF(
            v_threshold=v_threshold)

    mods, c, size = [], in_ch, hw
    for ch in channels:
        if ch == "P":
            mods.append(nn.AvgPool2d(2))
            size //= 2
            continue
        mods.append(nn.Conv2d(c, ch, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            mods.append(nn.BatchNorm2d(ch))
        mods.append(nrn())
        c = ch
    mods += [nn.Flatten(), nn.Linear(c * size * size, fc), nrn(), nn.Linear(fc, classes), nrn()]
    return nn.Sequential(*mods)


def calibrate_thresholds(graph: Graph, x: np.ndarray, target: float = 0.1, T: int = 8,
                         input_scale: float = 255.0) -> Graph:
    """Set each IF layer's threshold so it fires ~``target`` spikes per neuron per step.

    One sweep in topological order on the lowered float graph: layer k's input currents are
    computed from the (already calibrated) spike trains of its sources; for soft-reset IF the
    rate is ~ mean positive drive / threshold, so threshold = E[max(mean_t z, 0)] / target.
    Thresholds are rounded to integers in the layer's weight units (exact on the chip).
    """
    from compiler.ir.nodes import IF as IFNode
    from compiler.passes import fold_bn, lower

    low = lower(fold_bn(graph), input_scale=input_scale)
    xs = np.asarray(x, np.float64).reshape(len(x), -1) * input_scale
    acts = {low.input_name: np.broadcast_to(xs, (T,) + xs.shape)}
    new_th = {}
    for name in low.layers:
        L = low.node(name)
        z = np.zeros((T, len(xs), L.n))
        for s, m in L.inputs:
            z += np.stack([np.asarray((m.T @ acts[s][t].T).T) for t in range(T)])
        z += L.bias
        drive = np.maximum(z.mean(axis=0), 0).mean()
        scale = 1.0 / input_scale if low.input_name in L.sources else 1.0
        if np.all(np.isinf(L.neuron.v_threshold)) or name == low.output_layer:
            th = max(1.0, drive / 0.3)
        else:
            th = max(1.0, drive / target)
        th = max(1.0, np.rint(th / scale)) * scale if scale == 1.0 else th
        new_th[name] = th
        v = np.zeros((len(xs), L.n))
        spk = np.zeros((T, len(xs), L.n))
        for t in range(T):
            v += z[t]
            s_ = v >= th
            v -= s_ * th
            spk[t] = s_
        acts[name] = spk
    g = graph.derive()
    for name in graph.topo_order():
        node = graph.node(name)
        if isinstance(node, IFNode) and name in new_th:
            node = IFNode(v_threshold=new_th[name], reset_mode=node.reset_mode)
        g.add(name, node, graph.inputs(name))
    return g
