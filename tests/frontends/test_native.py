"""Native IF/LIF modules: forward semantics equal a hand-written numpy loop; surrogate gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from frontends import native
from frontends.native.layers import SURROGATES, surrogate_grad

CONFIGS = [
    dict(reset="soft"),
    dict(reset="hard", v_reset=0.25),
    dict(reset="none"),
    dict(reset="soft", neg_floor=0.5),
    dict(reset="hard", v_reset=-0.375, neg_floor=0.25),
    dict(reset="none", neg_floor=0.0),
]


def _run_module(mod, z):
    mod.reset_state()
    spikes, vs = [], []
    for t in range(z.shape[0]):
        spikes.append(mod(torch.from_numpy(z[t])).numpy())
        vs.append(mod.v.detach().numpy().copy())
    return np.stack(spikes), np.stack(vs)


def _run_numpy(step, z, th, beta=None, v_init=0.0, **kw):
    v = np.broadcast_to(v_init, z.shape[1:]).astype(np.float64)
    spikes, vs = [], []
    for t in range(z.shape[0]):
        v, s = step(v, z[t], th, beta=beta, **kw)
        spikes.append(s)
        vs.append(v)
    return np.stack(spikes), np.stack(vs)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("lif", [False, True], ids=["IF", "LIF"])
def test_forward_matches_numpy_loop(cfg, lif, helpers):
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 0.8, (12, 5, 7))
    th, v_init = 0.75, 0.125          # dyadic: exact in the float32 buffers
    if lif:
        mod = native.LIF(beta=0.875, v_threshold=th, v_init=v_init, **cfg).double()
    else:
        mod = native.IF(v_threshold=th, v_init=v_init, **cfg).double()
    kw = {k: v for k, v in cfg.items()}
    s_t, v_t = _run_module(mod, z)
    s_n, v_n = _run_numpy(helpers.neuron_step, z, th, beta=0.875 if lif else None,
                          v_init=v_init, **kw)
    np.testing.assert_array_equal(s_t, s_n)
    np.testing.assert_array_equal(v_t, v_n)
    assert s_t.sum() > 0 and (s_t == 0).sum() > 0   # the test exercises both branches


def test_per_channel_threshold_and_beta(helpers):
    rng = np.random.default_rng(1)
    z = rng.normal(0.2, 0.6, (6, 2, 3, 2, 2))
    th = np.array([0.5, 1.0, 1.5]).reshape(3, 1, 1)
    beta = np.array([0.5, 0.75, 1.0]).reshape(3, 1, 1)
    mod = native.LIF(beta=torch.tensor(beta), v_threshold=torch.tensor(th)).double()
    s_t, v_t = _run_module(mod, z)
    s_n, v_n = _run_numpy(helpers.neuron_step, z, th, beta=beta)
    np.testing.assert_array_equal(s_t, s_n)
    np.testing.assert_array_equal(v_t, v_n)


def test_spike_predicate_is_greater_equal():
    mod = native.IF(v_threshold=1.0)
    assert mod(torch.tensor([1.0, 0.999])).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_surrogate_gradients_nonzero(surrogate):
    mod = native.LIF(beta=0.9, surrogate=surrogate)
    x = torch.linspace(0.0, 2.0, 21, requires_grad=True)
    out = native.run(nn.Sequential(mod), x.unsqueeze(0).expand(4, 3, 21))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.abs() > 0).sum() > 10
    # the Heaviside forward is exact
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_surrogate_shapes_at_threshold():
    zero = torch.zeros(1)
    assert surrogate_grad(zero, "atan", 2.0).item() == pytest.approx(1.0)
    assert surrogate_grad(zero, "sigmoid", 4.0).item() == pytest.approx(1.0)
    assert surrogate_grad(zero, "triangle", 1.0).item() == pytest.approx(1.0)
    far = torch.tensor([10.0])
    assert surrogate_grad(far, "triangle", 1.0).item() == 0.0
    assert surrogate_grad(far, "atan", 2.0).item() == pytest.approx(1.0 / (1 + (10 * math.pi) ** 2))


def test_learnable_beta_gets_gradient():
    mod = native.LIF(beta=0.8, learnable=True)
    assert isinstance(mod.beta, nn.Parameter)
    x = torch.full((5, 2, 3), 0.4)
    out = native.run(mod, x)
    (out.sum() + mod.v.sum()).backward()
    assert mod.beta.grad is not None and mod.beta.grad.abs() > 0


def test_state_reset_and_run():
    model = nn.Sequential(nn.Linear(4, 3), native.IF(v_threshold=0.5), nn.Linear(3, 2), native.IF())
    x = torch.rand(6, 2, 4)
    a = native.run(model, x)
    assert a.shape == (6, 2, 2)
    b = native.run(model, x)                 # run() resets first: identical result
    assert torch.equal(a, b)
    native.reset(model)
    assert all(m.v is None for m in native.neurons(model))
    model(x[0])
    with pytest.raises(RuntimeError, match="reset"):
        model(torch.rand(3, 4))              # a new batch without reset is an error


def test_run_scores_is_integrated_input_for_soft_if():
    torch.manual_seed(0)
    fc = nn.Linear(5, 3).double()
    model = nn.Sequential(fc, native.IF(v_threshold=0.3, v_init=0.05)).double()
    x = torch.rand(7, 4, 5, dtype=torch.float64)
    scores = native.run_scores(model, x)
    expect = 0.05 + fc(x).sum(0)
    torch.testing.assert_close(scores, expect)
    # the CE gradient flows without the surrogate: d score / d bias = T
    scores.sum().backward()
    torch.testing.assert_close(fc.bias.grad, torch.full((3,), 7.0 * 4, dtype=torch.float64))


def test_readout_and_direct():
    model = nn.Sequential(nn.Linear(2, 2), native.IF(), nn.Linear(2, 2), native.LIF())
    assert native.readout(model) is model[3]
    with pytest.raises(ValueError):
        native.readout(nn.Sequential(nn.Linear(2, 2)))
    x = torch.rand(3, 2)
    d = native.direct(x, 5)
    assert d.shape == (5, 3, 2) and torch.equal(d[4], x)


@pytest.mark.parametrize("kwargs", [dict(reset="sometimes"), dict(surrogate="relu"),
                                    dict(v_threshold=0.0), dict(neg_floor=-1.0)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        native.IF(**kwargs)
    with pytest.raises(ValueError):
        native.LIF(beta=1.5)
