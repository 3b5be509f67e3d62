"""NIR import/export: round trips, the per-framework conventions, a real snnTorch producer."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compiler import reference
from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import IF, LIF, Affine, Conv2d, Graph, Input, Output, SumPool2d
from compiler.passes import fold_bn, lower
from compiler.passes.calibrate import direct_payloads
from frontends import compile_model, load_model
from frontends.datasets import load_dataset
from frontends.nir import CONVENTIONS, export_nir, from_nir_graph, import_nir, to_nir
from runtime.engines.tick import run_payloads
from runtime.image import from_sections


def _nir_file(tmp_path, g, name="m.nir"):
    p = tmp_path / name
    nir.write(str(p), g)
    return p


def _conv_graph(seed, k, stride, pad, dil=(1, 1), groups=1, cin=2, hw=(7, 6)):
    rng = np.random.default_rng(seed)
    g = Graph({"dt": 1e-3})
    x = g.add("input", Input((cin, *hw)))
    x = g.add("conv", Conv2d(rng.normal(0, 1, (4, cin // groups, *k)), rng.normal(0, 1, 4),
                             stride=stride, padding=pad, dilation=dil, groups=groups), [x])
    x = g.add("lif", LIF(v_threshold=rng.uniform(0.5, 1, 4), beta=0.75, v_init=0.1), [x])
    x = g.add("pool", SumPool2d((2, 1), (2, 1), (1, 0)), [x])
    n = int(np.prod(_shape(g, "pool")))
    x = g.add("fc", Affine(rng.normal(0, 0.5, (3, n)), rng.normal(0, 0.5, 3)), [x])
    x = g.add("out", IF(v_threshold=1.0, reset_mode="hard", v_reset=0.2), [x])
    g.add("output", Output((3,)), [x])
    return g


def _shape(g, name):
    from compiler.ir.linear import infer_shapes
    return infer_shapes(g)[name]


def test_round_trip_every_node_type(ir_graph, helpers, tmp_path):
    warns = export_nir(ir_graph, tmp_path / "g.nir", dt=1e-3)
    assert any("soft" in w for w in warns) and any("v_init" in w for w in warns)
    # type_check=False: nir 1.0.8 infers Conv2d shapes from the kernel height only
    meta = nir.read(str(tmp_path / "g.nir"), type_check=False).metadata
    assert meta["producer"] == "snnc" and float(meta["dt"]) == 1e-3
    assert meta["spike_predicate"] == ">=" and meta["reset"] == "mixed"
    g2 = import_nir(tmp_path / "g.nir")                  # no convention needed: snnc metadata
    assert g2.attrs["dt"] == 1e-3 and g2.attrs["nir"]["convention"] == "snnc"
    assert set(g2.topo_order()) == set(ir_graph.topo_order()) - {"bn1"}  # BN folded
    x = np.random.default_rng(0).uniform(0, 1, (6, 4, 2, 8, 6))
    o1, v1 = helpers.eval_graph(ir_graph, x)
    o2, v2 = helpers.eval_graph(g2, x)
    assert np.array_equal(o1, o2) and np.allclose(v1, v2, rtol=0, atol=1e-12)
    assert o1.sum() > 0


@pytest.mark.parametrize("k,stride,pad,dil,groups", [
    ((3, 2), (2, 1), (1, 0), (1, 1), 1),
    ((1, 3), (1, 2), (0, 2), (1, 1), 2),
    ((2, 2), (3, 2), (2, 1), (2, 1), 1),
])
def test_conv_round_trip_and_nir_semantics(tmp_path, helpers, k, stride, pad, dil, groups):
    """Non-square, strided, padded (dilated, grouped) convolutions with non-zero biases."""
    g = _conv_graph(1, k, stride, pad, dil, groups)
    export_nir(g, tmp_path / "c.nir", dt=1e-3)
    g2 = import_nir(tmp_path / "c.nir")
    x = np.random.default_rng(2).uniform(0, 1, (5, 3, 2, 7, 6))
    o1, _ = helpers.eval_graph(g, x)
    o2, _ = helpers.eval_graph(g2, x)
    assert np.array_equal(o1, o2)
    # the NIR Conv2d read by an independent implementation (torch, OIHW) equals the import
    conv = nir.read(str(tmp_path / "c.nir"), type_check=False).nodes["conv"]
    ng = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([2, 7, 6])}), conv,
                                type_check=False)
    gi = from_nir_graph(ng)
    xi = x[0]
    ours, _ = helpers.eval_graph(gi, xi[None])
    ref = F.conv2d(torch.from_numpy(xi), torch.from_numpy(np.asarray(conv.weight)),
                   torch.from_numpy(np.asarray(conv.bias)), tuple(conv.stride),
                   tuple(conv.padding), tuple(conv.dilation), int(conv.groups)).numpy()
    assert np.allclose(ours[0], ref.reshape(len(xi), -1), atol=1e-12)


# --- conventions: each framework's update rule as a plain loop (read from its code) ------------
def _lif_graph(tau, r, th, v_reset=0.0, neuron="LIF", v_leak=0.0):
    rng = np.random.default_rng(5)
    w, b = rng.normal(0, 1.0, (4, 3)), rng.normal(0.3, 0.2, 4)
    n = 4
    if neuron == "LIF":
        node = nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.full(n, v_leak),
                       v_threshold=np.full(n, th), v_reset=np.full(n, v_reset))
    else:
        node = nir.IF(r=np.full(n, r), v_threshold=np.full(n, th), v_reset=np.full(n, v_reset))
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                            "fc": nir.Affine(w, b), "lif": node,
                            "output": nir.Output(output_type={"output": np.array([n])})},
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    return g, w, b


def _reference(conv, z, tau, r, th, dt, v_reset=0.0, neuron="LIF", v_leak=0.0):
    """Spikes [T, B, n] of one layer driven by currents z [T, B, n] under ``conv``'s rules."""
    v = np.zeros(z.shape[1:])
    s_prev = np.zeros_like(v)
    out = []
    for zt in z:
        if neuron == "IF":
            gain = {"nir": r * dt, "norse": 1.0, "sinabs": 1.0, "lava": 1 / r}[conv]
            v = v + gain * zt
        elif conv == "nir":
            v = v + dt / tau * (v_leak - v + r * zt)
        elif conv == "norse":
            v = v + dt / tau * (v_leak - v + zt)
        elif conv in ("sinabs", "rockpool"):
            v = np.exp(-dt / tau) * v + zt
        elif conv == "lava":
            v = v * (1 - dt / tau) + dt / tau * zt
        elif conv == "snntorch":        # Leaky, reset_delay=True: subtract after the leak
            v = (1 - dt / tau) * v + r * dt / tau * zt - th * s_prev
        s = (v >= th) if conv in ("sinabs", "rockpool") else (v > th)
        if conv in ("sinabs", "rockpool"):
            v = v - th * s
        elif conv == "lava":
            v = np.where(s, 0.0, v)
        elif conv in ("nir", "norse"):
            v = np.where(s, v_reset, v)
        if conv == "sinabs" and neuron == "IF":
            v = np.maximum(v, -th)                 # min_v_mem = -threshold on import
        s_prev = s.astype(float)
        out.append(s.astype(float))
    return np.stack(out)


@pytest.mark.parametrize("conv,neuron", [
    ("nir", "LIF"), ("norse", "LIF"), ("sinabs", "LIF"), ("rockpool", "LIF"), ("lava", "LIF"),
    ("snntorch", "LIF"), ("nir", "IF"), ("norse", "IF"), ("sinabs", "IF"), ("lava", "IF"),
])
def test_convention_matches_framework_rule(conv, neuron, helpers):
    dt = 1e-3
    tau, r, th = 8e-3, {"nir": 2.0, "snntorch": 8.0}.get(conv, 1.0), 0.6
    if conv == "sinabs":
        dt, tau = 1.0, 6.0
    if conv == "nir" and neuron == "IF":
        r = 400.0                                   # the spec's IF gain is r * dt
    v_leak = 0.15 if conv in ("nir", "norse") and neuron == "LIF" else 0.0
    g, w, b = _lif_graph(tau, r, th, v_reset=0.05, neuron=neuron, v_leak=v_leak)
    ig = from_nir_graph(g, dt=dt, convention=conv)
    x = np.random.default_rng(6).uniform(0, 1, (30, 16, 3))
    z = x @ w.T + b
    ours, _ = helpers.eval_graph(ig, x)
    want = _reference(conv, z, tau, r, th, dt, 0.05, neuron, v_leak)
    assert want.sum() > 20 and (want.sum() < want.size)
    assert np.array_equal(ours, want)
    if conv == "sinabs" and neuron == "IF":
        assert ig.node("lif").neg_floor == th        # sinabs imports IF with min_v_mem = -th


def test_dt_and_convention_are_required_when_ambiguous(tmp_path):
    g, _, _ = _lif_graph(8e-3, 1.0, 0.6)
    p = _nir_file(tmp_path, g)
    with pytest.raises(FrontendError) as e:
        import_nir(p)
    assert "--nir-convention" in e.value.hint and "snntorch" in e.value.hint
    with pytest.raises(FrontendError, match="dt") as e:
        import_nir(p, convention="nir")
    assert "--dt" in e.value.hint
    with pytest.raises(FrontendError, match="dt"):
        import_nir(p, convention="spyx")
    assert import_nir(p, convention="spyx", dt=1e-3).attrs["dt"] == 1e-3
    assert import_nir(p, convention="norse").attrs["dt"] == CONVENTIONS["norse"].dt
    lif = import_nir(p, convention="norse", dt=2e-3).node("lif")
    assert np.isclose(float(lif.beta), 1 - 2e-3 / 8e-3)
    with pytest.raises(FrontendError, match="unknown NIR convention"):
        import_nir(p, convention="brian")


def test_cubalif_refused_or_approximated():
    n = 4
    cuba = nir.CubaLIF(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 1e-2), r=np.full(n, 10.0),
                       v_leak=np.zeros(n), v_threshold=np.ones(n), w_in=np.full(n, 2.0))
    g = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([3])}),
                               nir.Linear(np.ones((n, 3))), cuba)
    with pytest.raises(UnsupportedOpError) as e:
        from_nir_graph(g, convention="norse")
    assert e.value.op == "CubaLIF" and e.value.node_name == "cubalif"
    assert "cubalif='lif'" in e.value.hint
    ig = from_nir_graph(g, convention="norse", cubalif="lif")
    assert isinstance(ig.node("cubalif"), LIF)
    assert any("synaptic filter" in m for m in ig.attrs["nir"]["lossy"])


def test_nested_graph_delay_threshold_and_readouts(helpers):
    n = 3
    sub = nir.NIRGraph(
        nodes={"i": nir.Input(input_type={"input": np.array([4])}),
               "w": nir.Affine(np.eye(n, 4) * 2.0, np.full(n, 0.1)),
               "d": nir.Delay(np.zeros(n)),
               "lif": nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                              v_threshold=np.ones(n)),
               "o": nir.Output(output_type={"output": np.array([n])})},
        edges=[("i", "w"), ("w", "d"), ("d", "lif"), ("lif", "o")])
    g = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([4])}), "block": sub,
               "skip": nir.Linear(np.ones((n, 4))), "th": nir.Threshold(np.full(n, 0.5)),
               "ro": nir.LI(tau=np.full(n, 4e-3), r=np.full(n, 4.0), v_leak=np.zeros(n)),
               "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "block.i"), ("block", "th"), ("input", "skip"), ("skip", "th"),
               ("th", "ro"), ("ro", "output")], type_check=False)
    ig = from_nir_graph(g, convention="nir", dt=1e-3)
    names = ig.topo_order()
    assert "block_lif" in names and "th_sum" in names
    ro = ig.node("ro")
    assert isinstance(ro, LIF) and not np.isfinite(float(ro.v_threshold))
    assert np.isclose(float(ro.beta), 0.75)
    x = np.random.default_rng(0).uniform(0, 1, (5, 2, 4))
    out, v = helpers.eval_graph(ig, x)
    assert np.all(out == 0) and np.any(v != 0)        # a non-spiking readout integrates
    bad = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([3])}),
                                 nir.Delay(np.full(3, 2.0)))
    with pytest.raises(UnsupportedOpError, match="Delay"):
        from_nir_graph(bad)
    rec = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}),
               "w": nir.Linear(np.eye(3)), "lif": nir.IF(r=np.ones(3), v_threshold=np.ones(3)),
               "rec": nir.Linear(np.eye(3)),
               "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "w"), ("w", "lif"), ("lif", "rec"), ("rec", "lif"),
               ("lif", "output")])
    with pytest.raises(UnsupportedOpError, match="recurrent"):
        from_nir_graph(rec, convention="norse")


def test_batch_inclusive_flatten():
    """Sinabs writes torch's Flatten(start_dim=1) (batch counted): read it as flatten-all."""
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(2))
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([1, 4, 4])}), conv,
        nir.Flatten(input_type={"input": np.array([1, 2, 4, 4])}, start_dim=1, end_dim=-1),
        nir.Affine(np.ones((3, 32)), np.zeros(3)), type_check=False)
    ig = from_nir_graph(g)
    fl = ig.node("flatten")
    assert (fl.start_dim, fl.end_dim) == (0, -1)


def test_chip_image_export_is_spike_exact(tmp_path):
    """chip.bin -> unmap -> NIR -> import: the float reference equals the integer one."""
    from factories import make_convnet
    g = make_convnet(seed=3, residual=True)
    for n in ("if2",):                       # IF only: the chip's leak floors are not NIR
        old = g.node(n)
        g2 = Graph(g.attrs)
        for name, node in g.items():
            node = IF(v_threshold=old.v_threshold) if name == n else node
            g2.add(name, node, g.inputs(name))
        g = g2
    prog = compile_model(g, bits=8, timesteps=6)
    img = from_sections(prog.sections(), prog.spec.digest())
    ug = img.unmap()
    ug.attrs["threshold_max"] = img.spec.threshold_max
    warns = export_nir(ug, tmp_path / "chip.nir")
    assert any("payload" in w for w in warns)
    back = import_nir(tmp_path / "chip.nir")
    x = np.random.default_rng(1).uniform(0, 1, (40, 1, 8, 8))
    p = direct_payloads(x, 6)
    ri = reference.run_int(ug, p)
    rf = reference.run_float(lower(fold_bn(back)), p.astype(np.float64))
    for k, c in ri.counts.items():
        assert np.array_equal(c, rf.counts[k]), k
    assert np.array_equal(ri.predictions, rf.predictions)
    ng, _ = to_nir(ug)
    assert ng.metadata["snnc.stage"] == "folded"


def test_cli_export_and_compile_nir(tmp_path):
    from click.testing import CliRunner
    from factories import make_mlp

    from compiler.cli import cli
    from frontends.onnx import export_onnx
    onnx_path = tmp_path / "m.onnx"
    export_onnx(make_mlp(sizes=(64, 16, 10), seed=2), onnx_path)
    run = CliRunner()
    r = run.invoke(cli, ["export-nir", str(onnx_path), "-o", str(tmp_path / "m.nir"),
                         "--dt", "0.001"])
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["compile", str(tmp_path / "m.nir"), "-o", str(tmp_path / "c.bin"),
                         "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["cores_used"] >= 1
    r = run.invoke(cli, ["export-nir", str(tmp_path / "c.bin"), "-o", str(tmp_path / "c.nir")])
    assert r.exit_code == 0 and "integer chip graph" in r.output
    g, _, _ = _lif_graph(8e-3, 1.0, 0.6)
    p = _nir_file(tmp_path, g, "foreign.nir")
    r = run.invoke(cli, ["compile", str(p), "-o", str(tmp_path / "f.bin")])
    assert r.exit_code != 0 and isinstance(r.exception, FrontendError)
    r = run.invoke(cli, ["compile", str(p), "-o", str(tmp_path / "f.bin"), "--nir-convention",
                         "norse"])
    assert r.exit_code == 0, r.output
    assert isinstance(load_model(p, nir_convention="norse"), Graph)


# --- a real producer: snnTorch's own NIR exporter ------------------------------------------------
T_SNT, H_SNT, BETA = 10, 32, 0.9


@pytest.fixture(scope="module")
def snntorch_model():
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch", reason="snntorch.export_nir needs nirtorch")
    torch.manual_seed(0)
    tr = load_dataset("digits", "train")
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, H_SNT),
        snn.Leaky(beta=torch.full((H_SNT,), BETA), threshold=torch.ones(H_SNT), init_hidden=True),
        torch.nn.Linear(H_SNT, 10),
        snn.Leaky(beta=torch.full((10,), BETA), threshold=torch.ones(10), init_hidden=True,
                  output=True))
    x, y = torch.from_numpy(tr.x), torch.from_numpy(tr.y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):                                  # 2 epochs of BPTT: a few seconds
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(perm), 128):
            idx = perm[i:i + 128]
            cnt, mem, _ = _snn_sim(net, x[idx])
            loss = F.cross_entropy(cnt + mem, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def _snn_sim(net, x):
    """snnTorch's own simulation: output spike counts, final membrane, last spikes."""
    from snntorch import utils
    utils.reset(net)
    cnt, spk, mem = 0, None, None
    for _ in range(T_SNT):
        spk, mem = net(x)
        cnt = cnt + spk
    return cnt, mem, spk


def test_snntorch_export_runs_on_chip(snntorch_model, tmp_path):
    from snntorch.export_nir import export_to_nir
    net = snntorch_model
    ng = export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    path = _nir_file(tmp_path, ng, "snntorch.nir")
    g = import_nir(path, convention="snntorch")
    assert g.attrs["dt"] == 1e-4
    lifs = [n for n, node in g.items() if isinstance(node, LIF)]
    assert len(lifs) == 2 and np.isclose(float(g.node(lifs[0]).beta), BETA)
    # reset_delay remapped exactly: threshold theta/beta, v_init theta/beta - theta
    assert np.isclose(float(g.node(lifs[0]).v_threshold), 1 / BETA)
    te = load_dataset("digits", "test")
    p = direct_payloads(te.x, T_SNT)
    xq = torch.from_numpy((p[0] / 255.0).astype(np.float32).reshape(te.x.shape))
    with torch.no_grad():
        cnt, mem, spk = _snn_sim(net, xq)
    # the chip's decode (count * threshold + membrane after reset) in snnTorch's variables
    theirs = ((cnt - spk) / BETA + mem).argmax(1).numpy()
    rf = reference.run_float(lower(fold_bn(g)), p.astype(np.float64))
    assert np.mean(rf.predictions == theirs) >= 0.995          # float import: exact mapping
    prog = compile_model(g, bits=8, timesteps=T_SNT)
    img = from_sections(prog.sections(), prog.spec.digest())
    chip = run_payloads(img, p.astype(np.uint8)).predictions
    agree = float(np.mean(chip == theirs))
    assert agree >= 0.98, agree
    assert float(np.mean(chip == cnt.argmax(1).numpy())) >= 0.9    # plain spike-count argmax
