"""IBP certificates (runtime/lab/certify.py): exact at zeta = 0, sound on sampled chip instances."""

import json

import numpy as np
import pytest
from factories import make_mlp, random_net
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.chip import PICORE64
from compiler.errors import SimulationError
from frontends import compile_model
from runtime.engines.tick import run_payloads
from runtime.image import from_sections
from runtime.lab import certify, noise


def image_of(graph, **kw):
    prog = compile_model(graph, PICORE64, **kw)
    return from_sections(prog.sections(), prog.spec.digest())


def payloads_for(img, T, B, seed, graded):
    rng = np.random.default_rng(seed)
    if graded:
        return rng.integers(0, 256, (T, B, img.n_inputs)).astype(np.uint8)
    return (255 * (rng.random((T, B, img.n_inputs)) < 0.4)).astype(np.uint8)


@given(net=random_net(), graded=st.booleans())
@settings(max_examples=10, deadline=None)
def test_zero_zeta_bounds_are_the_integer_run(net, graded):
    g, seed = net
    img = image_of(g, bits=4)
    p = payloads_for(img, 5, 6, seed, graded)
    r = run_payloads(img, p)
    b = certify.bounds(img, p, 0.0, arithmetic="digital")
    np.testing.assert_array_equal(b.lower, r.scores)
    np.testing.assert_array_equal(b.upper, r.scores)
    assert b.uncertain_spikes == 0


def _box_instances(img, zeta, thresholds, rng, n, arithmetic):
    """Chips in the box: analog (corners and uniform points of the real box) and digital
    (corners and uniform integers of the re-quantized box)."""
    lay = noise._layout(img)
    w = lay.wrow.astype(np.float64)
    th = lay.regs.th_pos.astype(np.float64)
    th_max = img.spec.threshold_max
    for k in range(n):
        corner = k % 2 == 0
        f = np.sign(rng.standard_normal(w.size)) if corner else rng.uniform(-1, 1, w.size)
        ft = np.sign(rng.standard_normal(th.size)) if corner else rng.uniform(-1, 1, th.size)
        if arithmetic in ("float", "both"):
            regs = {"th_pos": np.clip(th * (1 + zeta * ft), 1, th_max)} if thresholds else {}
            yield noise.ChipInstance(w + zeta * np.abs(w) * f, regs, True, "analog")
        if arithmetic in ("digital", "both"):
            lo = np.clip(np.rint(w - zeta * np.abs(w)), lay.wlo, lay.whi)
            hi = np.clip(np.rint(w + zeta * np.abs(w)), lay.wlo, lay.whi)
            wi = np.where(f > 0, hi, lo) if corner else rng.integers(lo, hi + 1)
            ti = {}
            if thresholds:
                tl = np.clip(np.rint(np.clip(th * (1 - zeta), 1, th_max)), 1, th_max)
                tu = np.clip(np.rint(np.clip(th * (1 + zeta), 1, th_max)), 1, th_max)
                ti = {"th_pos": (np.where(ft > 0, tu, tl) if corner
                                 else rng.integers(tl, tu + 1)).astype(np.int64)}
            yield noise.ChipInstance(wi.astype(np.int8), ti, False, "digital")


@given(net=random_net(), bits=st.sampled_from([2, 4, 8]),
       zeta=st.sampled_from([1e-3, 0.02, 0.1, 0.5, 1.5]), thresholds=st.booleans(),
       graded=st.booleans(), arithmetic=st.sampled_from(["both", "float", "digital"]))
@settings(max_examples=30, deadline=None)
def test_bounds_are_sound_on_sampled_instances(net, bits, zeta, thresholds, graded, arithmetic):
    """No chip in the box may leave the score bounds or contradict a certificate."""
    g, seed = net
    img = image_of(g, bits=bits)
    lw = {L["name"]: L["bits"] for L in img.layers}
    assert all(int(img.a["core_w"][c]) == lw[img.layers[int(img.a["core_layer"][c])]["name"]]
               for c in range(img.n_cores))      # the digital box uses the layer's width
    p = payloads_for(img, 5, 6, seed, graded)
    y = run_payloads(img, p).predictions          # labels the clean chip gets right
    b = certify.bounds(img, p, zeta, thresholds=thresholds, arithmetic=arithmetic)
    assert np.all(b.lower <= b.upper)
    cert = b.certified(y)
    rng = np.random.default_rng(seed)
    for inst in _box_instances(img, zeta, thresholds, rng, 4, arithmetic):
        r = run_payloads(img, p, instance=inst, workers=2)
        assert np.all(r.scores >= b.lower) and np.all(r.scores <= b.upper), inst.label
        assert np.all(r.predictions[cert] == y[cert]), inst.label


@pytest.fixture(scope="module")
def digits_like():
    img = image_of(make_mlp((64, 40, 10), seed=5), bits=8)
    from compiler.encoding import encode
    from frontends.datasets import load_dataset
    ds = load_dataset("digits", split="test", limit=60)
    p = encode("direct", ds.x.reshape(len(ds.x), -1), 6)
    return img, p


def test_certified_fraction_is_monotone_and_sound_by_sampling(digits_like):
    img, p = digits_like
    y = run_payloads(img, p).predictions
    rows = certify.certify(img, p, y, [0.0, 1e-4, 1e-3, 1e-2, 0.1], arithmetic="float")
    fr = [r["certified"] for r in rows]
    assert fr[0] == 1.0 or fr[0] >= fr[-1]
    assert all(a >= b for a, b in zip(fr, fr[1:]))
    assert all(a["uncertain_spikes"] <= b["uncertain_spikes"] for a, b in zip(rows, rows[1:]))
    z = 1e-3
    cert = certify.bounds(img, p, z, arithmetic="float").certified(y)
    assert cert.any()
    for i in range(20):       # random mismatch inside the box: |zeta N| clipped to zeta
        rng = noise.rng_for(0, i, "certify")
        w = noise.clean_instance(img).wrow.astype(np.float64)
        f = np.clip(rng.standard_normal(w.size), -1, 1)
        inst = noise.ChipInstance(w + z * np.abs(w) * f, {}, True, "s")
        assert np.all(run_payloads(img, p, instance=inst).predictions[cert] == y[cert])


def test_rejects_bad_arguments(digits_like):
    img, p = digits_like
    with pytest.raises(SimulationError):
        certify.bounds(img, p, -0.1)
    with pytest.raises(SimulationError, match="shape"):
        certify.bounds(img, p[:, :, :5], 0.1)
    with pytest.raises(SimulationError, match="arithmetic"):
        certify.bounds(img, p, 0.1, arithmetic="exact")


def test_cli_certify(tmp_path):
    from click.testing import CliRunner

    from runtime.cli import main_run
    path = tmp_path / "chip.bin"
    compile_model(make_mlp((64, 24, 10), seed=2), PICORE64, bits=8).write(path)
    r = CliRunner().invoke(main_run, [str(path), "--data", "digits", "--limit", "30",
                                      "--certify", "0,1e-4,0.05", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert "sweep" in d and [c["zeta"] for c in d["certify"]] == [0.0, 1e-4, 0.05]
    assert d["certify"][0]["certified"] <= d["clean_accuracy"]


@given(net=random_net(), zeta=st.sampled_from([0.05, 0.3]),
       gran=st.sampled_from(["cell", "parameter"]))
@settings(max_examples=8, deadline=None)
def test_bias_box_is_sound_for_both_granularities(net, zeta, gran):
    """Chips whose weights AND biases carry mismatch (per cell or per trained parameter,
    |N| clipped to 1) stay inside the bounds of params=('weights', 'bias')."""
    g, seed = net
    img = image_of(g, bits=4)
    p = payloads_for(img, 5, 6, seed, True)
    y = run_payloads(img, p).predictions
    rows = certify.certify(img, p, y, [zeta], arithmetic="both", params=("weights", "bias"),
                           granularity=gran)
    assert rows[0]["params"] == ["weights", "bias"] and rows[0]["granularity"] == gran
    b = certify.bounds(img, p, zeta, arithmetic="both", params=("weights", "bias"))
    w_only = certify.bounds(img, p, zeta, arithmetic="both", params=("weights",))
    assert np.all(b.lower <= w_only.lower + 1e-9) and np.all(b.upper >= w_only.upper - 1e-9)
    cert = b.certified(y)
    for i in range(3):
        m = noise.Mismatch(zeta, ("weights", "bias"), "analog", gran)
        n_w, _, _, n_b = m.draws(img, noise._layout(img).wrow.size, seed, i)
        lay = noise._layout(img)
        w = lay.wrow.astype(np.float64)
        b0 = lay.regs.bias.astype(np.float64)
        inst = noise.ChipInstance(w * (1 + zeta * np.clip(n_w, -1, 1)),
                                  {"bias": b0 * (1 + zeta * np.clip(n_b, -1, 1))}, True, "s")
        r = run_payloads(img, p, instance=inst, workers=2)
        assert np.all(r.scores >= b.lower) and np.all(r.scores <= b.upper)
        assert np.all(r.predictions[cert] == y[cert])
