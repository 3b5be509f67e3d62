"""The layer engine (runtime/engines/layer.py) and the logical-layer descriptors (op_* sections):
layer == tick == reference on every layer's counts and membranes, counters equal, descriptors
checked against the crossbars."""

import dataclasses

import numpy as np
import pytest
import torch
from factories import make_convnet, make_mlp, random_net
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import compile_model, reference
from compiler import encoding as enc
from compiler.backend import binfmt, layerdesc
from compiler.chip import PICORE64
from compiler.errors import BinaryFormatError, SimulationError
from runtime import kernels
from runtime.engines import layer
from runtime.engines.tick import run, run_payloads
from runtime.image import ChipImage, from_sections
from runtime.lab import noise

TINY = dataclasses.replace(PICORE64, name="tiny", mesh_x=2, mesh_y=2, xbar_rows=64,
                           xbar_cols=128, max_chips=16)
# every counter the layer engine derives from spike counts (all but the cycle counter)
COUNTERS = [kernels.ST_SOPS, kernels.ST_SOPS1, kernels.ST_PACKETS, kernels.ST_HOPS,
            kernels.ST_XHOPS, kernels.ST_IN_EVENTS, kernels.ST_SPIKES]


def image_of(prog):
    return from_sections(prog.sections(), prog.spec.digest())


def assert_same(a, b):
    """Two RunResults agree on everything both engines define."""
    np.testing.assert_array_equal(a.counts_all, b.counts_all)
    np.testing.assert_array_equal(a.v_all, b.v_all)
    np.testing.assert_array_equal(a.out_counts, b.out_counts)
    np.testing.assert_array_equal(a.v_out, b.v_out)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.layer_spikes, b.layer_spikes)
    np.testing.assert_array_equal(a.stats[:, COUNTERS], b.stats[:, COUNTERS])
    for k in a.energy_pj:
        np.testing.assert_array_equal(a.energy_pj[k], b.energy_pj[k])


def check_all(img, payloads):
    tick = run_payloads(img, payloads, record=True, engine="tick")
    ref = reference.run_int(img.unmap(), payloads, membrane_bits=img.spec.membrane_bits)
    for li, L in enumerate(img.layers):
        glob = img.layer_neurons(li)
        np.testing.assert_array_equal(tick.counts_all[:, glob], ref.counts[L["name"]])
        np.testing.assert_array_equal(tick.v_all[:, glob], ref.v_final[L["name"]])
    for impl in ("onednn", "torch"):
        lay = layer.run_payloads(img, payloads, record=True, impl=impl, chunk=3)
        assert lay.engine == "layer"
        assert_same(tick, lay)
    return tick


@given(net=random_net(), bits=st.sampled_from([1, 2, 4, 8]), per_channel=st.booleans(),
       tiny=st.booleans(), T=st.integers(1, 5), graded=st.booleans())
@settings(max_examples=12, deadline=None)
def test_random_graphs_layer_equals_tick_and_reference(net, bits, per_channel, tiny, T, graded):
    g, seed = net
    spec = TINY if tiny else PICORE64
    prog = compile_model(g, spec, bits=bits, per_channel=per_channel, chips=16 if tiny else 1)
    img = image_of(prog)
    rng = np.random.default_rng(seed)
    p = (rng.integers(0, 256, (T, 7, img.n_inputs)) if graded
         else 255 * (rng.random((T, 7, img.n_inputs)) < 0.3)).astype(np.uint8)
    check_all(img, p)


@pytest.mark.parametrize("residual", [False, True])
def test_convnet_descriptors_are_convolutions(residual):
    prog = compile_model(make_convnet(residual=residual), bits=4)
    img = image_of(prog)
    kinds = {op.name for op in img.layer_ops}
    assert kinds == {"conv", "dense"}
    pooled = [op for op in img.layer_ops if op.pool != (1, 1)]
    assert pooled and all(op.trained for op in img.layer_ops)
    p = np.random.default_rng(1).integers(0, 256, (4, 6, img.n_inputs)).astype(np.uint8)
    check_all(img, p)
    # every cell holds what its parameter says; a conv kernel element sits in many cells
    vals = img.param_values()
    seen = np.zeros(img.n_params, np.int64)
    for c in range(img.n_cores):
        cp = img.cell_params(c)
        np.testing.assert_array_equal(np.where(cp >= 0, vals[np.maximum(cp, 0)], 0),
                                      img.weights(c))
        np.add.at(seen, cp[cp >= 0], 1)
    assert seen.max() > 1
    assert img.param_layer().shape == (img.n_params,)


@pytest.mark.parametrize("name", list(enc.ENCODINGS))
def test_every_encoding(name):
    prog = compile_model(make_convnet(), bits=8)
    img = image_of(prog)
    x = np.random.default_rng(2).random((5, img.n_inputs))
    a = run(img, x, encoding=name, timesteps=4, engine="tick", record=True)
    b = run(img, x, encoding=name, timesteps=4, engine="layer", record=True)
    assert_same(a, b)


def test_register_modes_mlp_lif_hard_reset():
    for kw in (dict(lif=True, reset="hard"), dict(lif=True, reset="none"), dict(reset="soft")):
        img = image_of(compile_model(make_mlp(sizes=(20, 16, 6), **kw), bits=4))
        p = np.random.default_rng(3).integers(0, 256, (6, 5, 20)).astype(np.uint8)
        check_all(img, p)


def test_float64_path_when_the_bound_is_exceeded(monkeypatch):
    img = image_of(compile_model(make_convnet(residual=True), bits=8))
    p = np.random.default_rng(4).integers(0, 256, (3, 4, img.n_inputs)).astype(np.uint8)
    tick = run_payloads(img, p, record=True, engine="tick")
    monkeypatch.setattr(layer, "EXACT_F32", 1)
    layer._PLANS.pop(img, None)
    lay = layer.run_payloads(img, p, record=True)
    assert {r.path for L in layer.plan(img).layers for r in L.ops} == {"f64"}
    assert_same(tick, lay)


def test_auto_switch_and_json_engine():
    img = image_of(compile_model(make_mlp(), bits=4))
    p = np.random.default_rng(5).integers(0, 256, (3, 4, 16)).astype(np.uint8)
    assert run_payloads(img, p).engine == "layer"
    assert run_payloads(img, p, ticks=True).engine == "tick"
    assert run_payloads(img, p, engine="tick").summary()["engine"] == "tick"
    s = run_payloads(img, p).summary()
    assert s["engine"] == "layer" and s["latency_us_per_sample"] is None
    with pytest.raises(SimulationError, match="unknown engine"):
        run_payloads(img, p, engine="fast")


def _sections(prog):
    return {k: v for k, v in prog.sections().items()}


def test_image_without_descriptors_runs_on_tick_only():
    prog = compile_model(make_mlp(), bits=4)
    sec = {k: v for k, v in _sections(prog).items() if not k.startswith("op_")}
    img = from_sections(sec, prog.spec.digest())
    assert not img.has_ops and layer.unsupported_reason(img)
    p = np.random.default_rng(6).integers(0, 256, (3, 4, 16)).astype(np.uint8)
    assert run_payloads(img, p).engine == "tick"
    with pytest.raises(SimulationError, match="layer engine cannot run"):
        run_payloads(img, p, engine="layer")


def test_tampered_descriptor_is_refused():
    prog = compile_model(make_convnet(), bits=4)
    sec = _sections(prog)
    w = sec["op_weights"].copy()
    k = int(np.flatnonzero(w)[0])
    w[k] = np.int8(-w[k] if w[k] != -128 else 1)
    sec["op_weights"] = w
    img = ChipImage(binfmt.read_bytes(binfmt.to_bytes(sec, prog.spec.digest())))
    p = np.random.default_rng(7).integers(0, 256, (3, 2, img.n_inputs)).astype(np.uint8)
    run_payloads(img, p, engine="tick")                  # the tick engine never reads them
    with pytest.raises(BinaryFormatError, match="differ from what the descriptors say"):
        run_payloads(img, p, engine="layer")
    bad = _sections(prog)
    t = bad["op_table"].copy()
    t[0, layerdesc.COLS.index("kh")] += 1
    bad["op_table"] = t
    with pytest.raises(BinaryFormatError, match="layer descriptors"):
        ChipImage(binfmt.read_bytes(binfmt.to_bytes(bad, prog.spec.digest())))


def test_digital_instances_bit_exact_analog_on_tick_by_default():
    img = image_of(compile_model(make_convnet(residual=True), bits=4))
    p = np.random.default_rng(8).integers(0, 256, (4, 5, img.n_inputs)).astype(np.uint8)
    for m in (noise.Mismatch(0.2, ("weights", "thresholds", "leak"), "digital"),
              noise.BitFlip(1e-2)):
        inst = noise.sample(img, m, seed=1, index=0)
        a = run_payloads(img, p, instance=inst, engine="tick", record=True)
        assert run_payloads(img, p, instance=inst).engine == "tick"       # auto, for now
        b = run_payloads(img, p, instance=inst, record=True, engine="layer")
        assert b.engine == "layer"
        assert_same(a, b)
    inst = noise.sample(img, noise.Mismatch(0.1, ("weights",), "analog"), seed=1, index=0)
    assert run_payloads(img, p, instance=inst).engine == "tick"
    b = run_payloads(img, p, instance=inst, engine="layer")
    a = run_payloads(img, p, instance=inst, engine="tick")
    np.testing.assert_allclose(b.v_out[a.out_counts == b.out_counts],
                               a.v_out[a.out_counts == b.out_counts], rtol=0, atol=1e-6)


def test_int8_selftest_and_kernel_columns():
    assert kernels.OP_IDX_LEN == len(layerdesc.COLS) - 1
    assert layerdesc.COLS.index("groups") == kernels.OP_GROUPS
    assert isinstance(layer.selftest_int8(), bool)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_equals_tick():
    img = image_of(compile_model(make_convnet(residual=True), bits=8))
    p = np.random.default_rng(9).integers(0, 256, (4, 9, img.n_inputs)).astype(np.uint8)
    a = run_payloads(img, p, engine="tick", record=True)
    b = run_payloads(img, p, device="cuda", record=True)
    assert_same(a, b)
