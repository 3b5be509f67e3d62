"""compiler.encoding: payload formulas, shapes, determinism, torch twin, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler import encoding as E
from compiler.errors import SimulationError

ALL_NAMES = list(E.ENCODINGS) + ["latency-log"]


def _x(seed=0, shape=(4, 3, 5)):
    return np.random.default_rng(seed).random(shape)


# ---------------------------------------------------------------- shapes and dtypes

@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("T", [1, 3, 8, 11])
def test_shape_dtype(name, T):
    x = _x(shape=(4, 3, 5))
    p = E.encode(name, x, T, seed=1)
    assert p.shape == (T, 4, 15)
    assert p.dtype == np.uint8
    assert p.flags.c_contiguous


@pytest.mark.parametrize("name", ALL_NAMES)
def test_accepts_float32_and_empty_batch(name):
    x = _x(shape=(2, 7)).astype(np.float32)
    assert E.encode(name, x, 4).shape == (4, 2, 7)
    assert E.encode(name, np.zeros((0, 7)), 4).shape == (4, 0, 7)


# ---------------------------------------------------------------- direct

def test_direct_formula():
    x = np.array([[0.0, 1.0, 0.5, 1 / 255, 0.3, 128.5 / 255]])
    p = E.direct(x, 3)
    want = np.array([0, 255, 128, 1, 76, 128], dtype=np.uint8)  # rint: 127.5 -> 128, 128.5 -> 128
    for t in range(3):
        np.testing.assert_array_equal(p[t, 0], want)


def test_direct_matches_calibration_rule():
    x = _x(3, (5, 20))
    np.testing.assert_array_equal(E.direct(x, 2)[0], np.clip(np.rint(x * 255), 0, 255))


# ---------------------------------------------------------------- rate

def test_rate_determinism_and_values():
    x = _x(1, (3, 50))
    a = E.rate(x, 16, seed=7)
    b = E.rate(x, 16, seed=7)
    c = E.rate(x, 16, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0, 255}
    # the documented stream: Generator(PCG64(seed)).random((B, T, n)) < x, sample-major
    u = np.random.Generator(np.random.PCG64(7)).random((3, 16, 50))
    want = (255 * (u < x[:, None, :])).astype(np.uint8).transpose(1, 0, 2)
    np.testing.assert_array_equal(a, want)


def test_rate_generator_variant_and_dispatch():
    x = _x(2, (2, 10))
    a = E.rate(x, 5, seed=3)
    b = E.rate_with_generator(x, 5, np.random.Generator(np.random.PCG64(3)))
    c = E.rate(x, 5, seed=np.random.Generator(np.random.PCG64(3)))
    d = E.encode("rate", x, 5, seed=3)
    e = E.encode("rate", x, 5, rng=np.random.Generator(np.random.PCG64(3)))
    for o in (b, c, d, e):
        np.testing.assert_array_equal(a, o)


def test_rate_batch_prefix_consistent_and_samples_independent():
    x = np.full((4, 30), 0.5)
    full = E.rate(x, 8, seed=0)
    np.testing.assert_array_equal(E.rate(x[:2], 8, seed=0), full[:, :2])
    assert not np.array_equal(full[:, 0], full[:, 1])  # identical inputs, independent draws


def test_rate_mean_and_endpoints():
    x = np.array([[0.0, 1.0, 0.1, 0.5, 0.9]])
    p = E.rate(np.repeat(x, 200, axis=0), 100, seed=0).astype(np.float64) / 255
    m = p.mean(axis=(0, 1))
    assert m[0] == 0.0 and m[1] == 1.0
    np.testing.assert_allclose(m[2:], x[0, 2:], atol=0.01)


def test_rate_generator_is_advanced():
    rng = np.random.Generator(np.random.PCG64(0))
    a = E.rate_with_generator(np.full((1, 20), 0.5), 4, rng)
    b = E.rate_with_generator(np.full((1, 20), 0.5), 4, rng)
    assert not np.array_equal(a, b)


def test_rate_chunking_equals_one_draw(monkeypatch):
    x = _x(4, (7, 9))
    want = E.rate(x, 5, seed=11)
    monkeypatch.setattr(E, "_RATE_CHUNK", 50)  # forces one sample per generator call
    np.testing.assert_array_equal(E.rate(x, 5, seed=11), want)


# ---------------------------------------------------------------- phase

def test_phase_paper_examples_K8():
    x = np.array([[192 / 256, 1 / 256, 128 / 256, 255 / 256]])
    p = E.phase(x, 8, K=8)[:, 0, :].T  # [inputs, phases]
    np.testing.assert_array_equal(p[0], [128, 64, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(p[1], [0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(p[2], [128, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(p[3], [128, 64, 32, 16, 8, 4, 2, 1])


def _phase_recursion(x: float, K: int) -> list[int]:
    """algorithms.md section 5, literally."""
    r, out = min(x, 1 - 2.0 ** -K), []
    for i in range(K):
        s = 1 if r >= 2.0 ** -(i + 1) else 0
        r -= 2.0 ** -(i + 1) * s
        out.append(s * 2 ** (7 - i))      # weight 2^-(i+1) on the 8-bit scale, any K
    return out


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, (3, 6), elements=st.floats(0, 1)), st.integers(1, 8),
       st.integers(1, 20))
def test_phase_matches_recursion_and_sum_identity(x, K, T):
    p = E.phase(x, T, K=K)
    per = E.phase(x, K, K=K).astype(np.int64)
    q = np.minimum(np.floor(x * 2 ** K), 2 ** K - 1)
    # one period delivers 2^(8-K) floor(2^K x): the magnitude of x whatever K
    np.testing.assert_array_equal(per.sum(axis=0), q * 2 ** (8 - K))
    assert np.all(np.abs(per.sum(axis=0) - 256 * np.minimum(x, 1 - 2.0 ** -K))
                  <= 2 ** (8 - K))
    np.testing.assert_array_equal(E.phase_levels(x, K), q)
    for t in range(T):
        np.testing.assert_array_equal(p[t], per[t % K])  # period K
    for b in range(3):
        for j in range(6):
            assert per[:, b, j].tolist() == _phase_recursion(float(x[b, j]), K)


def test_phase_clips_one_and_defaults():
    p = E.encode("phase", np.ones((1, 1)), 8)
    assert p[:, 0, 0].tolist() == [128, 64, 32, 16, 8, 4, 2, 1]  # 1 -> 1 - 2^-8
    assert E.phase(np.full((1, 1), 0.5), 3, K=4)[:, 0, 0].tolist() == [128, 0, 0]  # T < K
    # K = 4 delivers the magnitude of K = 8 up to the 4-bit quantisation (not 2^4/255 of it)
    x = np.array([[0.3, 0.75, 0.9]])
    s4, s8 = E.phase(x, 4, K=4).sum(0), E.phase(x, 8, K=8).sum(0)
    assert np.all(np.abs(s4.astype(int) - s8.astype(int)) < 16)


# ---------------------------------------------------------------- latency

def test_latency_linear_formula_and_endpoints():
    T = 9
    x = np.array([[1.0, 0.5, 0.25, 1 / 16, 0.0]])
    p = E.latency(x, T)
    assert set(np.unique(p)) <= {0, 255}
    tf = [int(np.flatnonzero(p[:, 0, j])[0]) if p[:, 0, j].any() else None for j in range(5)]
    assert tf == [0, 4, 6, 8, None]  # rint(8 * (1 - x)): 0, 4, 6, rint(7.5) = 8; x = 0 never fires
    assert (p > 0).sum(axis=0)[0, :4].tolist() == [1, 1, 1, 1]


def test_latency_log_formula_and_endpoints():
    T = 8
    x = np.array([[1.0, 0.5, 0.01, 1e-4, 0.0]])
    alpha = math.exp(T - 1) - 1
    want = [int(np.clip(np.rint((T - 1) - math.log(alpha * v + 1)), 0, T - 1)) for v in x[0, :4]]
    p = E.encode("latency-log", x, T)
    np.testing.assert_array_equal(p, E.latency(x, T, mode="log"))
    got = [int(np.flatnonzero(p[:, 0, j])[0]) for j in range(4)]
    assert got == want
    assert got[0] == 0
    assert not p[:, 0, 4].any()
    assert E.latency_times(x, T, "log")[0, 4] == T - 1  # would fire at T-1 (SpikingJelly)


def test_latency_zero_fires_option_matches_spikingjelly():
    x = np.array([[0.0, 0.3]])
    p = E.latency(x, 6, zero_fires=True)
    assert p[:, 0, 0].tolist() == [0, 0, 0, 0, 0, 255]
    assert E.latency(x, 1).tolist() == [[[0, 255]]]  # T = 1: everything at step 0


def test_latency_log_large_T_no_overflow():
    x = np.array([[1.0, 0.5, 1e-300, 0.0]])
    tf = E.latency_times(x, 1000, "log")
    assert tf[0, 0] == 0 and tf[0, 3] == 999
    assert tf[0, 1] == round(-math.log(0.5))


# ---------------------------------------------------------------- torch twin

@pytest.mark.parametrize("name", ALL_NAMES)
def test_torch_forward_equals_numpy(name):
    torch = pytest.importorskip("torch")
    x = torch.rand(3, 2, 4, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0] = 0.0
    x[0, 0, 1] = 1.0
    out = E.encode_torch(name, x.clone().requires_grad_(True), 6, seed=5)
    p = E.encode(name, x.numpy(), 6, seed=5)
    assert out.shape == (6, 3, 8) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.detach().numpy(), p.astype(np.float32) / np.float32(255))
    out2 = E.encode_torch(name, x, 6, seed=5)  # no grad path
    assert torch.equal(out2, out.detach())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_torch_ste_gradient(name):
    torch = pytest.importorskip("torch")
    T = 5
    x = torch.rand(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    out = E.encode_torch(name, x, T, seed=0)
    assert out.dtype == torch.float64
    w = torch.arange(T * 12, dtype=torch.float64).reshape(T, 2, 6)
    (out * w).sum().backward()
    g = E.ste_gain(name, T)
    torch.testing.assert_close(x.grad, g * w.sum(0))


def test_ste_gains():
    assert E.ste_gain("direct", 8) == 1.0
    assert E.ste_gain("rate", 8) == 1.0
    assert E.ste_gain("phase", 8) == 256 / (255 * 8)
    assert E.ste_gain("phase", 8, K=4) == 256 / (255 * 4)
    assert E.ste_gain("latency", 8) == 1 / 8
    assert E.ste_gain("latency-log", 4) == 1 / 4


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("name", ALL_NAMES)
def test_errors_range(name):
    with pytest.raises(SimulationError, match=r"found range \[0, 255\]") as ei:
        E.encode(name, np.array([[0.0, 255.0]]), 4)
    assert "divide by 255" in str(ei.value)
    with pytest.raises(SimulationError, match=r"\[-0.5, 1\]"):
        E.encode(name, np.array([[-0.5, 1.0]]), 4)
    with pytest.raises(SimulationError, match="NaN"):
        E.encode(name, np.array([[np.nan, 0.5]]), 4)


@pytest.mark.parametrize("T", [0, -1, 2.5, True])
def test_errors_T(T):
    with pytest.raises(SimulationError, match="T"):
        E.encode("direct", np.zeros((1, 2)), T)


def test_errors_misc():
    with pytest.raises(SimulationError, match="unknown encoding 'poisson'") as ei:
        E.encode("poisson", np.zeros((1, 2)), 4)
    assert "direct" in ei.value.hint
    with pytest.raises(SimulationError, match="batch"):
        E.encode("direct", np.zeros(5), 4)
    with pytest.raises(SimulationError, match="K"):
        E.encode("phase", np.zeros((1, 2)), 4, K=9)
    with pytest.raises(SimulationError, match="mode"):
        E.latency(np.zeros((1, 2)), 4, mode="exp")
    with pytest.raises(SimulationError, match="option"):
        E.encode("direct", np.zeros((1, 2)), 4, K=3)
    with pytest.raises(SimulationError, match="seed"):
        E.rate(np.zeros((1, 2)), 4, seed=-1)
