"""Pass tests: hand-built graph, one pass, structural property, verify, reference before/after."""

import dataclasses

import numpy as np
import pytest
from factories import make_convnet, make_mlp

from compiler import reference
from compiler.chip import PICORE64
from compiler.errors import CapacityError, PassError, QuantizationError
from compiler.ir import BatchNorm, Conv2d, Graph, verify
from compiler.passes import (
    PIPELINE,
    fold_bn,
    fold_thresholds,
    lower,
    partition,
    place,
    quantize,
    route,
    run_pipeline,
)
from compiler.passes.calibrate import direct_payloads
from frontends import compile_model

TINY = dataclasses.replace(PICORE64, name="tiny", mesh_x=2, mesh_y=2, xbar_rows=64,
                           xbar_cols=128, max_chips=16)


def _x(g, n=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + g.node("input").input_type)


def test_fold_bn_preserves_float_behaviour():
    g = make_convnet()
    rng = np.random.default_rng(3)
    g2 = Graph(dict(g.attrs))
    for name in g.topo_order():
        node = g.node(name)
        ins = g.inputs(name)
        if name == "if1":
            c = 4
            g2.add("bn1", BatchNorm(rng.uniform(0.5, 2, c), rng.normal(0, .1, c),
                                    rng.normal(0, .1, c), rng.uniform(.5, 2, c)), ins)
            ins = ["bn1"]
        g2.add(name, node, ins)
    folded = fold_bn(g2)
    assert "bn1" not in folded and isinstance(folded.node("conv1"), Conv2d)
    verify(folded, "bn_folded")
    p = direct_payloads(_x(g2), 6).astype(float)
    a = reference.run_float(lower(g2), p)
    b = reference.run_float(lower(folded), p)
    np.testing.assert_array_equal(a.counts["if2"], b.counts["if2"])


def test_lower_shapes_and_readout():
    g = lower(fold_bn(make_convnet(residual=True)))
    verify(g, "lowered")
    assert g.layers == ["if1", "if2", "if3", "out"]
    assert set(g.node("if3").sources) == {"if1", "if2"}
    # input matrix is in event units (1/255 of the float weights)
    assert np.abs(g.node("if1").matrix("input").data).max() < 0.02


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_ranges_and_error_bound(bits, per_channel):
    g = lower(fold_bn(make_convnet()))
    q = quantize(g, PICORE64, bits=bits, per_channel=per_channel)
    verify(q, "quantized")
    qmax = (1 << (bits - 1)) - 1
    for name in q.layers:
        L, F = q.node(name), g.node(name)
        for (_s, m), (_, mf) in zip(L.inputs, F.inputs):
            assert np.abs(m.data).max() <= qmax
            # error bound: |w - s*q| <= s/2 for unclipped max-scaled weights
            dense_q = m.toarray() * L.scale[None, :]
            assert np.all(np.abs(mf.toarray() - dense_q) <= L.scale[None, :] / 2 + 1e-12)
        assert q.attrs["quant"][name]["clipped"] == 0.0


def test_quantize_auto_and_percentile():
    g = lower(fold_bn(make_mlp(sizes=(40, 30, 5))))
    q = quantize(g, PICORE64, bits="auto", auto_sqnr=20)
    assert all(q.node(n).bits in (2, 4, 8) for n in q.layers)
    assert all(q.attrs["quant"][n]["sqnr_db"] >= 20 for n in q.layers)
    qp = quantize(g, PICORE64, bits=4, clip="p90")
    assert any(qp.attrs["quant"][n]["clipped"] > 0 for n in qp.layers)
    with pytest.raises(QuantizationError, match="3-bit"):
        quantize(g, PICORE64, bits=3)


def test_fold_thresholds_exact_for_integer_weights():
    """Weights that are already integers x scale: the folded integer net equals the float one."""
    g = lower(fold_bn(make_mlp(lif=True)))
    f = fold_thresholds(quantize(g, PICORE64, bits=8), PICORE64)
    verify(f, "folded")
    regs = f.node("n0").regs
    assert set(regs.leak_mode.tolist()) == {2} and set(regs.shift.tolist()) == {3}  # 0.875
    assert f.node("n0").leak_error == 0.0


def test_partition_respects_limits_on_tiny_chip():
    g = compile_model(make_convnet(c=(2, 8, 8), hw=8), TINY, stop_after="partition").graph
    verify(g, "partitioned", TINY)
    cores = g.attrs["cores"]
    assert len(cores) > 3
    for c in cores:
        assert c.n_neurons <= TINY.neurons_per_core(c.w, c.lcn)
        assert c.n_axons <= TINY.axons_per_core(c.lcn)


def test_place_deterministic_and_injective():
    g = compile_model(make_convnet(c=(2, 8, 8)), TINY, chips=12, stop_after="partition").graph
    a = place(g, TINY, chips=12, seed=1)
    b = place(g, TINY, chips=12, seed=1)
    ca = [(c.chip, c.x, c.y) for c in a.attrs["cores"]]
    assert ca == [(c.chip, c.x, c.y) for c in b.attrs["cores"]]
    assert len(set(ca)) == len(ca)
    verify(a, "placed", TINY)


def test_placement_beats_serpentine_start():
    g = compile_model(make_convnet(c=(2, 8, 8)), TINY, chips=12, stop_after="partition").graph
    none = place(g, TINY, chips=12, effort=0.0).attrs["placement_cost_pj_per_step"]
    annealed = place(g, TINY, chips=12, effort=1.0).attrs["placement_cost_pj_per_step"]
    assert annealed <= none


def test_route_balances_delays():
    g = compile_model(make_convnet(residual=True), PICORE64).graph
    verify(g, "routed")
    r = g.attrs["routes"]
    assert r.depth == {"input": 0, "if1": 1, "if2": 2, "if3": 3, "out": 4}
    assert r.latency == 3
    # the skip if1 -> if3 spans two stages
    cores = g.attrs["cores"]
    pr = r.pops["if1"]
    skip = [cores[c].layer == "if3" for c in pr.core]
    assert set(pr.delay[np.array(skip)]) == {2}


def test_capacity_error_says_chips_needed():
    with pytest.raises(CapacityError, match=r"needs \d+ chip") as e:
        compile_model(make_convnet(c=(2, 8, 8)), TINY, chips=1)
    assert "--chips" in str(e.value)


def test_fan_in_too_large():
    spec = dataclasses.replace(TINY, max_lcn=0)
    with pytest.raises(CapacityError, match="fan-in 100 > 64 axons"):
        compile_model(make_mlp(sizes=(100, 4)), spec)


def test_pipeline_stop_and_dump():
    dumps = {}
    g, hist = run_pipeline(make_mlp(), PICORE64, PIPELINE, dump_after={"lower", "quantize"},
                           stop_after="quantize", dump=dumps.__setitem__)
    assert g.stage == "quantized" and set(dumps) == {"lower", "quantize"}
    assert "stage: lowered" in dumps["lower"]
    with pytest.raises(PassError, match="unknown pass 'nope'"):
        run_pipeline(make_mlp(), PICORE64, PIPELINE, stop_after="nope")


def test_silent_layer_warning_and_strict():
    g = make_mlp(sizes=(8, 6, 3))
    x = _x(g, 8) * 0.0  # no input -> nothing fires in float either: not silent
    prog = compile_model(g, PICORE64, calib=x)
    assert prog.graph.attrs["calibration"]["silent"] == []
    # one large negative weight sets the 2-bit scale; the small positive weights that make
    # the layer fire round to zero -> the integer layer is silent while the float one fires
    from compiler.ir import IF, Affine, Input, Output
    w = np.full((6, 8), 0.5)
    w[:, 0] = -10.0
    neg = Graph()
    neg.add("input", Input((8,)))
    neg.add("fc", Affine(w, np.zeros(6)), ["input"])
    neg.add("n", IF(v_threshold=1.0), ["fc"])
    neg.add("fc2", Affine(np.ones((2, 6)), np.zeros(2)), ["n"])
    neg.add("o", IF(v_threshold=1.0), ["fc2"])
    neg.add("output", Output(), ["o"])
    xc = _x(neg, 16)
    xc[:, 0] = 0
    prog = compile_model(neg, PICORE64, bits=2, calib=xc)
    assert "n" in prog.graph.attrs["calibration"]["silent"]
    with pytest.raises(QuantizationError, match="SILENT"):
        compile_model(neg, PICORE64, bits=2, calib=xc, strict=True)


def test_partition_route_full_pipeline_verifies():
    prog = compile_model(make_convnet(residual=True), TINY, chips=16, calib=_x(make_convnet()))
    verify(prog.graph, "routed", TINY)
    assert prog.summary()["cores_used"] == len(prog.graph.attrs["cores"])
    assert route  # imported name used
    assert partition


def test_weight_out_of_range_names_layer_and_limit():
    """A quantized graph whose integers do not fit the layer's width is refused by verify."""
    import scipy.sparse as sp

    from compiler.errors import IRVerificationError
    from compiler.ir import Layer
    g = quantize(lower(fold_bn(make_mlp())), PICORE64, bits=4)
    bad = g.derive()
    for name in g.topo_order():
        node = g.node(name)
        if name == "n1":
            (src, m), = node.inputs
            m = sp.csr_matrix(m, dtype=np.int8)
            m.data[0] = 9                                   # 4-bit range is [-8, 7]
            node = Layer(shape=node.shape, inputs=((src, m),), bias=node.bias,
                         neuron=node.neuron, channel=node.channel, bits=4, scale=node.scale)
        bad.add(name, node, g.inputs(name))
    with pytest.raises(IRVerificationError, match=r"'n1'.*outside the 4-bit range \[-8, 7\]"):
        verify(bad, "quantized")


def _pooled_fc(spec_lcn=1):
    from compiler.ir import IF, Affine, AvgPool2d, Flatten, Input, Output
    rng = np.random.default_rng(0)
    g = Graph({"dt": 1.0})
    g.add("input", Input((2, 8, 8)))
    g.add("conv", Conv2d(rng.normal(0, 1, (8, 2, 3, 3)), np.zeros(8), padding=1), ["input"])
    g.add("if1", IF(v_threshold=1.0), ["conv"])
    g.add("pool", AvgPool2d(2, 2), ["if1"])
    g.add("flat", Flatten(), ["pool"])
    w = rng.choice([-1.0, 1.0], (6, 128))
    g.add("fc", Affine(w, np.zeros(6)), ["flat"])
    g.add("out", IF(v_threshold=1.0), ["fc"])
    g.add("output", Output(), ["out"])
    return g, dataclasses.replace(TINY, max_lcn=spec_lcn)


def test_fan_in_error_names_the_composed_pool_and_the_fix():
    g, spec = _pooled_fc()
    with pytest.raises(CapacityError) as e:
        compile_model(g, spec, chips=16)
    msg = str(e.value)
    assert "layer 'out'" in msg and "fan-in 512 > 128 axons per core (LCN 1 = 2X" in msg
    assert "AvgPool 'pool' (2x2, stride 2)" in msg and "multiplying its fan-in by 4" in msg
    assert "about 128 without it" in msg
    assert "spiking layer after" in msg and "at most 128 inputs" in msg
    assert e.value.resource == "axons" and e.value.needed == 512


def test_estimate_before_tiling_and_partition_report():
    from compiler.passes.partition import estimate
    g = compile_model(make_convnet(c=(2, 8, 8)), TINY, chips="auto").graph
    part = g.attrs["partition"]
    assert set(part) == set(g.layers)
    for name, d in part.items():
        assert d["cores"] == sum(c.layer == name for c in g.attrs["cores"])
        assert d["cores"] >= d["cores_lower_bound"] >= 1
    assert g.attrs["chips"] == -(-len(g.attrs["cores"]) // TINY.cores_per_chip)
    folded = compile_model(make_convnet(c=(2, 8, 8)), TINY, stop_after="calibrate").graph
    est = estimate(folded, TINY)
    assert {k: v["lcn"] for k, v in est["layers"].items()} == {
        k: v["lcn"] for k, v in part.items()}
    for k, v in est["layers"].items():
        assert part[k]["cores_lower_bound"] <= v["cores"] <= 2 * part[k]["cores"]


def test_route_limited_layer_is_reported():
    """A layer feeding a wide fully connected layer is limited by route entries (each neuron
    owns one entry per consumer core), not by its neurons per core: the report says so."""
    from compiler.ir import IF, Affine, Input, Output
    rng = np.random.default_rng(1)
    spec = dataclasses.replace(TINY, route_entries=32, max_chips=64)
    g = Graph({"dt": 1.0})
    g.add("input", Input((16,)))
    g.add("fc1", Affine(rng.normal(0, 1, (256, 16)), np.zeros(256)), ["input"])
    g.add("h", IF(v_threshold=1.0), ["fc1"])
    g.add("fc2", Affine(rng.choice([-1.0, 1.0], (40, 256)), np.zeros(40)), ["h"])
    g.add("o", IF(v_threshold=1.0), ["fc2"])
    g.add("output", Output(), ["o"])
    part = compile_model(g, spec, bits=8, chips="auto").graph.attrs["partition"]
    assert part["h"]["limit"] == "route entries" and part["h"]["cores"] > part["h"][
        "cores_lower_bound"]
