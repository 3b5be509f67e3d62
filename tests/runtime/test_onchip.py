"""On-chip training: FP16 shadow arithmetic, rounding, re-quantisation to every weight width,
FedAvg and shards, and the tuned image (same placement, bit-exact, source in META)."""

import dataclasses

import numpy as np
import pytest
import torch
from factories import make_mlp

from compiler import compile_model
from compiler.backend import binfmt
from compiler.chip import PICORE64, TRAINING_FIELDS, ChipSpec
from compiler.encoding import encode
from compiler.errors import SimulationError
from runtime.cli.common import check_bit_exact
from runtime.engines.tick import dense_rows, run_payloads
from runtime.image import from_sections, load
from runtime.lab.onchip import (
    Chip,
    OnChipConfig,
    fedavg,
    image_sections,
    make_shards,
    pow2_scale,
    requantize,
    shadow_update,
    step_cost,
    train,
)
from runtime.lab.twin import Twin

F16 = torch.float16


def image_of(prog):
    return from_sections(prog.sections(), prog.spec.digest())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 16)).astype(np.float32)
    w = rng.normal(size=(16, 4))
    y = np.argmax((x - 0.5) @ w, axis=1)
    return x, y


@pytest.fixture(scope="module", params=[1, 2, 4, 8])
def image(request):
    prog = compile_model(make_mlp((16, 12, 4), seed=1), PICORE64, bits=request.param,
                         timesteps=4)
    return image_of(prog)


# --- update arithmetic ------------------------------------------------------------------------
def test_shadow_update_is_fp16_arithmetic():
    rng = np.random.default_rng(1)
    s = (rng.normal(size=200) * 60).astype(np.float16)
    m = rng.normal(size=200).astype(np.float16)
    g = rng.normal(size=200).astype(np.float16)
    lo, hi = np.full(200, -128.0), np.full(200, 127.0)
    s2, m2 = shadow_update(torch.as_tensor(s), torch.as_tensor(m), torch.as_tensor(g), 0.05,
                           0.9, torch.as_tensor(lo), torch.as_tensor(hi))
    assert s2.dtype == F16 and m2.dtype == F16
    # numpy float16 ops round every result to binary16 (float32 intermediates are exact enough)
    m_ref = np.float16(0.9) * m + g
    s_ref = np.clip(s - np.float16(0.05) * m_ref, np.float16(-128), np.float16(127))
    np.testing.assert_array_equal(m2.numpy(), m_ref)
    np.testing.assert_array_equal(s2.numpy(), s_ref)


def test_fp16_shadow_swallows_updates_below_half_an_ulp():
    # at 100 the FP16 spacing is 1/16: a step of 0.02 vanishes, 0.04 rounds to one ulp
    s = torch.tensor([100.0], dtype=F16)
    z = torch.zeros(1, dtype=F16)
    lo, hi = torch.tensor([-128.0]), torch.tensor([127.0])
    small, _ = shadow_update(s, z, torch.tensor([1.0], dtype=F16), 0.02, 0.0, lo, hi)
    big, _ = shadow_update(s, z, torch.tensor([1.0], dtype=F16), 0.04, 0.0, lo, hi)
    assert float(small) == 100.0 and float(big) == 100.0 - 1 / 16
    clipped, _ = shadow_update(s, z, torch.tensor([-1.0], dtype=F16), 100.0, 0.0, lo, hi)
    assert float(clipped) == 127.0


def test_shadow_update_rejects_other_dtypes():
    with pytest.raises(SimulationError):
        shadow_update(torch.zeros(2), torch.zeros(2, dtype=F16), torch.zeros(2, dtype=F16), 0.1,
                      0.9, torch.zeros(2), torch.ones(2))


def test_pow2_scale_is_exact_in_fp16():
    g = np.array([3e-6, -1e-6, 2e-6])
    s = pow2_scale(g)
    assert np.log2(s) == round(np.log2(s))
    assert 0.5 < np.sqrt(np.mean((g / s) ** 2)) < 2
    assert pow2_scale(np.zeros(3)) == 1.0


@pytest.mark.parametrize("w", [1, 2, 4, 8])
def test_requantize_nearest_every_width(w):
    lo, hi = PICORE64.weight_range(w)
    s = np.array([lo - 3.0, lo - 0.4, 0.5, 1.5, 2.5, -0.5, hi + 0.49, hi + 7, 0.49], np.float64)
    q = requantize(torch.as_tensor(s).to(F16), np.full(s.size, lo), np.full(s.size, hi))
    expect = np.clip(np.rint(s.astype(np.float16).astype(np.float64)), lo, hi)
    np.testing.assert_array_equal(q, expect)
    assert q.min() >= lo and q.max() <= hi
    assert list(requantize(np.array([0.5, 1.5, 2.5]), -8, 7)) == [0, 2, 2]   # half to even


@pytest.mark.parametrize("w", [1, 2, 4, 8])
def test_requantize_stochastic_unbiased_seeded(w):
    lo, hi = PICORE64.weight_range(w)
    v = lo + 0.3 * (hi - lo) + 0.25 if hi - lo > 1 else 0.25
    s = np.full(20000, v)
    q1 = requantize(s, lo, hi, "stochastic", np.random.default_rng(5))
    q2 = requantize(s, lo, hi, "stochastic", np.random.default_rng(5))
    np.testing.assert_array_equal(q1, q2)
    assert set(np.unique(q1)) <= {np.floor(v), np.floor(v) + 1}
    assert abs(q1.mean() - v) < 0.02
    with pytest.raises(SimulationError):
        requantize(s, lo, hi, "stochastic", None)


def test_fedavg_weighted_one_rounding():
    a = {"k": torch.tensor([1.0, 2.0, 100.0], dtype=F16)}
    b = {"k": torch.tensor([3.0, 2.0, 100.0625], dtype=F16)}
    out = fedavg([a, b], [1, 3])
    ref = (0.25 * np.array([1, 2, 100.0]) + 0.75 * np.array([3, 2, 100.0625])).astype(np.float16)
    assert out["k"].dtype == F16
    np.testing.assert_array_equal(out["k"].numpy(), ref)
    with pytest.raises(SimulationError):
        fedavg([a, b], [1])


def test_shards_iid_and_non_iid():
    y = np.repeat(np.arange(10), 30)
    for non_iid in (False, True):
        sh = make_shards(y, 5, non_iid, seed=3)
        allidx = np.concatenate(sh)
        assert sorted(allidx.tolist()) == list(range(len(y)))
        assert sh[0].tolist() == make_shards(y, 5, non_iid, seed=3)[0].tolist()
        labels = [len(np.unique(y[s])) for s in sh]
        if non_iid:
            assert max(labels) <= 4
        else:
            assert min(labels) >= 8


# --- the tuned image --------------------------------------------------------------------------
def test_tuned_image_every_width(image, data, tmp_path):
    x, y = data
    tuned, rep = train(image, x, y, epochs=2, batch=16, lr=0.05, seed=1)
    w = int(image.a["core_w"][0])
    assert {"accuracy_before", "accuracy_after", "epochs", "workers", "rounds", "cost"} <= set(rep)
    # same placement, routes and registers: only the crossbar bits and META change; the
    # logical-layer descriptors (op_*) no longer describe per-cell-trained crossbars: dropped
    for k, v in image.a.items():
        if k != "xbar" and not k.startswith("op_"):
            np.testing.assert_array_equal(tuned.a[k], v, k)
    assert not any(k.startswith("op_") for k in tuned.a)
    assert tuned.meta["source"]["dropped_sections"] == sorted(
        k for k in image.a if k.startswith("op_"))
    _, rows = dense_rows(tuned)
    lo, hi = image.spec.weight_range(w)
    assert rows.min() >= lo and rows.max() <= hi
    assert rep["weights_changed"] > 0
    assert tuned.meta["source"]["kind"] == "on-chip training"
    assert tuned.meta["source"]["training"]["epochs"] == 2
    # written through binfmt, re-read, bit-exact with the reference and the twin
    path = tmp_path / f"tuned{w}.bin"
    binfmt.write(path, image_sections(tuned), tuned.spec_digest)
    back = load(path)
    p = encode("direct", x, 4)
    res = run_payloads(back, p, record=True)
    ok, first = check_bit_exact(back, p, res)
    assert ok, first
    with torch.no_grad():
        sc = Twin(back)(torch.as_tensor(p, dtype=torch.float64))
    np.testing.assert_array_equal(sc.numpy(), res.scores)
    # the accuracy measured during training (programmed weights) is the written image's
    assert rep["history"][-1]["accuracy"] == rep["accuracy_after"] == res.accuracy(y)


def test_mismatch_instance_trained_on_its_own_chip(data):
    x, y = data
    img = image_of(compile_model(make_mlp((16, 12, 4), seed=1), PICORE64, bits=8, timesteps=4))
    cfg = OnChipConfig(epochs=1, batch=16, mismatch=0.5, instance_seed=4)
    tuned, rep = train(img, x, y, config=cfg)
    assert rep["mismatch"]["zeta"] == 0.5
    # the chip's effective weights for the deployed programming are the sampled instance
    chip = Chip(img, cfg, 0)
    np.testing.assert_array_equal(chip.instance_for(chip.deployed()).wrow, chip.instance.wrow)
    assert rep["accuracy_before"] == pytest.approx(
        run_payloads(img, encode("direct", x, 4), instance=chip.instance).accuracy(y))
    assert rep["history"][-1]["accuracy"] == rep["accuracy_after"]


def test_federated_rounds_and_communication(data):
    x, y = data
    img = image_of(compile_model(make_mlp((16, 12, 4), seed=1), PICORE64, bits=4, timesteps=4))
    _, rep = train(img, x, y, epochs=2, workers=3, federated=True, non_iid=True, batch=8)
    assert rep["workers"] == 3 and rep["rounds"] == 2 and len(rep["history"]) == 2
    n = rep["trainable_synapses"]
    assert rep["cost"]["communication_bytes_per_round"] == 2 * 3 * 2 * n
    assert rep["cost"]["samples"] == 2 * len(x)


def test_options_are_validated(image, data):
    x, y = data
    for kw in (dict(workers=2), dict(non_iid=True), dict(layers=("nope",)), dict(lr=-1.0),
               dict(rounding="up"), dict(epochs=0)):
        with pytest.raises(SimulationError):
            train(image, x, y, **kw)


def test_cost_model_is_sparsity_aware(data):
    x, y = data
    img = image_of(compile_model(make_mlp((16, 12, 4), seed=1), PICORE64, bits=8, timesteps=4))
    dense = step_cost(img, x[:16], y[:16])
    sparse = step_cost(img, x[:16] * (np.arange(16) < 4), y[:16])
    assert sparse["input_event_density"] < dense["input_event_density"]
    assert sparse["fp_flops"] < dense["fp_flops"]
    for c in (dense, sparse):
        assert c["cycles"] == c["fp_cycles"] + c["bp_cycles"] + c["wg_cycles"] + c["dram_cycles"]
        assert c["gpu_dram_bytes_estimate"] > c["dram_bytes"] >= 0
        assert c["energy_uj"] > 0
    # a buffer too small for the shadow weights spills to DRAM
    spec = dataclasses.replace(img.spec, train_buffer_bytes=64)
    assert spec.digest() != img.spec.digest()


def test_training_fields_keep_old_digests():
    d = PICORE64.to_dict()
    assert not set(TRAINING_FIELDS) & set(d)
    spec = ChipSpec(**d)
    assert spec.digest() == PICORE64.digest()
    other = dataclasses.replace(PICORE64, fp_macs_per_cycle=32)
    assert other.to_dict()["fp_macs_per_cycle"] == 32
    assert ChipSpec(**{**other.to_dict(), "weight_widths": (1, 2, 4, 8)}).digest() == \
        other.digest()


def test_facade_and_lab_train(data, tmp_path):
    import runtime.lab
    import snnc
    x, y = data
    img = image_of(compile_model(make_mlp((16, 12, 4), seed=1), PICORE64, bits=4, timesteps=4))
    out = tmp_path / "t.bin"
    tuned, rep = snnc.train_chip(img, x, y, epochs=1, batch=24, output=out)
    assert load(out).meta["source"] == tuned.meta["source"]
    tuned2, rep2 = runtime.lab.train(img, x, y, epochs=1, batch=24)
    np.testing.assert_array_equal(tuned2.a["xbar"], tuned.a["xbar"])      # deterministic
    assert rep2["accuracy_after"] == rep["accuracy_after"]
