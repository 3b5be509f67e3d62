"""Invariant 1: the runtime equals compiler/reference.py on unmap() bit for bit."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from factories import random_net
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import reference
from compiler.chip import PICORE64
from compiler.errors import SimulationError
from compiler.ir import IF, Affine, Graph, Input, Output
from frontends import compile_model
from runtime.engines.tick import run_payloads
from runtime.image import from_sections

TINY = dataclasses.replace(PICORE64, name="tiny", mesh_x=2, mesh_y=2, xbar_rows=64,
                           xbar_cols=128, max_chips=16)


def image_of(prog):
    return from_sections(prog.sections(), prog.spec.digest())


def assert_bit_exact(img, payloads, prog=None):
    r = run_payloads(img, payloads, record=True, workers=2)
    un = img.unmap()
    ref = reference.run_int(un, payloads, membrane_bits=img.spec.membrane_bits)
    for li, L in enumerate(img.layers):
        glob = img.layer_neurons(li)
        np.testing.assert_array_equal(r.counts_all[:, glob], ref.counts[L["name"]], L["name"])
        np.testing.assert_array_equal(r.v_all[:, glob], ref.v_final[L["name"]], L["name"])
    np.testing.assert_array_equal(r.out_counts, ref.counts[un.output_layer])
    np.testing.assert_array_equal(r.predictions, ref.predictions)
    if prog is not None:  # unmap() round-trips the compiled graph
        ref2 = reference.run_int(prog.graph, payloads)
        for k in ref.counts:
            np.testing.assert_array_equal(ref.counts[k], ref2.counts[k])
        for name in prog.graph.layers:
            a, b = prog.graph.node(name), un.node(name)
            for (s1, m1), (s2, m2) in zip(a.inputs, b.inputs):
                assert s1 == s2 and (m1 != m2.astype(m1.dtype)).nnz == 0
            for reg in a.regs.NAMES:
                np.testing.assert_array_equal(getattr(a.regs, reg), getattr(b.regs, reg))
    return r


@given(net=random_net(), bits=st.sampled_from([1, 2, 4, 8]), per_channel=st.booleans(),
       tiny=st.booleans(), T=st.integers(1, 6), graded=st.booleans())
@settings(max_examples=30)
def test_random_graphs_bit_exact(net, bits, per_channel, tiny, T, graded):
    g, seed = net
    spec = TINY if tiny else PICORE64
    prog = compile_model(g, spec, bits=bits, per_channel=per_channel, chips=16 if tiny else 1)
    img = image_of(prog)
    rng = np.random.default_rng(seed)
    n_in = img.n_inputs
    payloads = (rng.integers(0, 256, (T, 5, n_in)) if graded
                else 255 * (rng.random((T, 5, n_in)) < 0.3)).astype(np.uint8)
    assert_bit_exact(img, payloads, prog)


def test_multichip_board_counts_interchip_hops():
    rng = np.random.default_rng(0)
    g = Graph()
    g.add("input", Input((60,)))
    g.add("fc", Affine(rng.normal(0, .5, (300, 60)), np.zeros(300)), ["input"])
    g.add("n", IF(v_threshold=0.5), ["fc"])
    g.add("fc2", Affine(rng.normal(0, .5, (10, 300)), np.zeros(10)), ["n"])
    g.add("o", IF(v_threshold=1.0), ["fc2"])
    g.add("output", Output(), ["o"])
    prog = compile_model(g, TINY, chips=8)
    img = image_of(prog)
    assert img.chips == 8 and len(set(img.a["core_chip"].tolist())) > 1
    p = (255 * (rng.random((4, 8, 60)) < 0.5)).astype(np.uint8)
    r = assert_bit_exact(img, p, prog)
    s = r.summary()
    assert s["interchip_hops_per_sample"] > 0 and s["energy_uj_per_sample"] > 0
    assert r.tick_cycles.shape == (8, 4 + img.latency)


def test_accounting_matches_hand_count():
    """One input, one neuron, weight 3 at w=4: SOPs and one-bit SOPs are exact."""
    g = Graph()
    g.add("input", Input((1,)))
    g.add("fc", Affine(np.array([[3.0]]), np.zeros(1)), ["input"])
    g.add("o", IF(v_threshold=1e4), ["fc"])
    g.add("output", Output(), ["o"])
    prog = compile_model(g, PICORE64, bits=4)
    img = image_of(prog)
    w = prog.graph.node("o").matrix("input").toarray()[0, 0]
    assert w == 7
    p = np.full((5, 1, 1), 255, np.uint8)
    r = run_payloads(img, p)
    assert r.sops[0] == 5
    assert r.sops_1bit[0] == 5 * 8 * bin(int(w) & 0xF).count("1")   # graded: 8 bit-serial passes
    assert r.stats[0, 7] == 0   # no spikes


def test_bad_inputs_raise_clear_errors():
    from factories import make_mlp
    img = image_of(compile_model(make_mlp(), PICORE64))
    with pytest.raises(SimulationError, match=r"\[T, B, 16\]"):
        run_payloads(img, np.zeros((3, 2, 5), np.uint8))
    with pytest.raises(SimulationError, match="0..255"):
        run_payloads(img, np.full((3, 2, 16), 300))


def test_unmap_matrices_equal_compiled():
    from factories import make_convnet
    prog = compile_model(make_convnet(residual=True), PICORE64, bits=4, per_channel=True)
    un = image_of(prog).unmap()
    for name in prog.graph.layers:
        for (s1, m1), (s2, m2) in zip(prog.graph.node(name).inputs, un.node(name).inputs):
            assert s1 == s2
            diff = sp.csr_matrix(m1, dtype=np.int64) - sp.csr_matrix(m2, dtype=np.int64)
            assert abs(diff).sum() == 0


@pytest.mark.parametrize("fan_in,bits,lcn", [(9000, 8, 4), (20000, 4, 5), (65536, 2, 6)])
def test_wide_fan_in_lcn_up_to_64x_bit_exact(fan_in, bits, lcn):
    """picore64 reads a core as up to 64 x 1024 axons (LCN 6): the partitioner picks the
    smallest LCN that holds the fan-in, emit lays the 2**LCN row blocks side by side, and the
    runtime decodes them bit-exactly (axon indices reach 65535, the top of u16)."""
    rng = np.random.default_rng(fan_in)
    g = Graph()
    g.add("input", Input((fan_in,)))
    n = 3 * PICORE64.neurons_per_core(bits, lcn) - 1
    # |w| in [0.6, 1]: every weight survives 2-bit quantization, so the fan-in is all inputs
    w = rng.choice([-1.0, 1.0], (n, fan_in)) * rng.uniform(0.6, 1.0, (n, fan_in))
    g.add("fc", Affine(w, np.zeros(n)), ["input"])
    g.add("h", IF(v_threshold=8.0), ["fc"])
    g.add("fc2", Affine(rng.normal(0, .5, (4, n)), np.zeros(4)), ["h"])
    g.add("o", IF(v_threshold=1.0), ["fc2"])
    g.add("output", Output(), ["o"])
    prog = compile_model(g, PICORE64, bits=bits)
    cores = [c for c in prog.graph.attrs["cores"] if c.layer == "h"]
    assert {c.lcn for c in cores} == {lcn} and len(cores) == 3
    assert max(c.n_axons for c in cores) == fan_in
    img = image_of(prog)
    assert set(img.a["core_lcn"][img.layers[0]["cores"]].tolist()) == {lcn}
    p = rng.integers(0, 256, (3, 2, fan_in)).astype(np.uint8)
    r = assert_bit_exact(img, p, prog)
    assert r.out_counts.sum() >= 0 and r.counts_all[:, img.layer_neurons(0)].sum() > 0
