"""The BPTT trainer (frontends/training/trainer.py) and the robustness objectives (robust.py)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from frontends import native
from frontends.training.robust import (
    AWP,
    AdversarialWeights,
    ForwardNoise,
    InputAdversarial,
    StepContext,
    perturbable,
)
from frontends.training.trainer import CHECKPOINT_FORMAT, TrainConfig, Trainer


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("flat", nn.Flatten()), ("fc1", nn.Linear(16, 24)), ("if1", native.IF()),
        ("fc2", nn.Linear(24, 3)), ("out", native.IF())]))


def _data(n=96, seed=0):
    """Three separable classes of 4x4 'images' in [0, 1]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    proto = rng.random((3, 1, 4, 4))
    x = np.clip(proto[y] + 0.15 * rng.standard_normal((n, 1, 4, 4)), 0, 1)
    return x.astype(np.float32), y.astype(np.int64)


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, timesteps=4, batch_size=16, lr=1e-2, seed=0, progress=False,
                device="cpu", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_learns_and_is_deterministic():
    x, y = _data()
    m1, m2 = _model(), _model()
    h = Trainer(m1, _cfg(epochs=6)).fit(x, y, x, y)
    Trainer(m2, _cfg(epochs=6)).fit(x, y)
    assert _same(m1, m2)
    assert h.loss[-1] < h.loss[0]
    assert h.val_accuracy[-1] > 0.8
    assert len(h.lr) == 6 and h.lr[0] > h.lr[-1]           # cosine schedule


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    x, y = _data()
    ref = _model()
    Trainer(ref, _cfg(epochs=3), method=ForwardNoise(0.3)).fit(x, y)
    ck = tmp_path / "run.pt"
    part = _model()
    t = Trainer(part, _cfg(epochs=3, checkpoint=str(ck)), method=ForwardNoise(0.3))
    t.fit(x, y, until=2)                                     # "interrupted" after 2 epochs
    st = torch.load(ck, weights_only=True)                  # plain tensors and values only
    assert st["format"] == CHECKPOINT_FORMAT and st["epoch"] == 2
    resumed = _model(seed=123)                               # different init: all state from ck
    h = Trainer(resumed, _cfg(epochs=3, checkpoint=str(ck)), method=ForwardNoise(0.3)).fit(x, y)
    assert h.epochs_done == 3
    assert _same(ref, resumed)


def test_forward_noise_restores_weights_and_perturbs_forward():
    x, y = _data(32)
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    seen = []
    fwd = lambda xb: (seen.append(m.fc1.weight.detach().clone()),  # noqa: E731
                      native.run_scores(m, native.direct(xb, 4)))[1]
    ctx = StepContext(m, torch.from_numpy(x), torch.from_numpy(y), fwd,
                      torch.nn.functional.cross_entropy)
    ForwardNoise(0.3)(ctx)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    rel = (seen[0] - before["fc1.weight"]) / before["fc1.weight"].abs()
    assert 0.2 < float(rel.std()) < 0.4                     # |w| * 0.3 * N
    assert m.fc1.weight.grad is not None


def test_adversarial_weights_stay_in_the_box():
    x, y = _data(32)
    m = _model()
    ctx = StepContext(m, torch.from_numpy(x), torch.from_numpy(y),
                      lambda xb: native.run_scores(m, native.direct(xb, 4)),
                      torch.nn.functional.cross_entropy)
    aw = AdversarialWeights(zeta=0.1, beta=0.25, steps=4, init_rel=1e-3)
    params = [p for _, p in perturbable(m)]
    with torch.no_grad():
        clean = ctx.forward(ctx.x)
    star, jac, radius = aw.attack(ctx, params, clean)
    for p, s, r in zip(params, star, radius):
        d = (s - p.detach()).abs()
        assert torch.all(d <= r + 4e-3 * p.detach().abs() + 1e-7)
    assert any(float((s - p.detach()).abs().max()) > 0 for p, s in zip(params, star))
    w0 = m.fc1.weight.detach().clone()
    out = aw(ctx)
    assert torch.equal(m.fc1.weight.detach(), w0)
    assert out["robust_loss"] >= 0 and m.fc1.weight.grad is not None


@pytest.mark.parametrize("method", [
    AdversarialWeights(zeta=0.1, beta=0.1, steps=2, eta=0.3),
    AWP(gamma=0.1, zeta=0.1, steps=2),
    InputAdversarial("fgsm", eps=0.1),
    InputAdversarial("pgd", eps=0.1, steps=2),
])
def test_every_method_trains(method):
    x, y = _data(48)
    m = _model()
    h = Trainer(m, _cfg(epochs=2), method=method).fit(x, y)
    assert np.all(np.isfinite(h.loss))


def test_input_adversarial_examples_in_the_ball():
    x, y = _data(16)
    m = _model()
    ctx = StepContext(m, torch.from_numpy(x), torch.from_numpy(y),
                      lambda xb: native.run_scores(m, native.direct(xb, 4)),
                      torch.nn.functional.cross_entropy)
    xa = InputAdversarial("pgd", eps=0.05, steps=3).adversarial(ctx)
    assert float((xa - ctx.x).abs().max()) <= 0.05 + 1e-6
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert all(p.requires_grad for p in m.parameters())


def test_rate_encoding_and_config_errors():
    x, y = _data(32)
    h = Trainer(_model(), _cfg(epochs=1, encoding="rate")).fit(x, y)
    assert np.isfinite(h.loss[0])
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_closely():
    x, y = _data()
    a, b = _model(), _model()
    Trainer(a, _cfg(epochs=2)).fit(x, y)
    Trainer(b, _cfg(epochs=2, device="cuda")).fit(x, y)
    for (k, va), vb in zip(a.state_dict().items(), b.cpu().state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-3, atol=1e-3, msg=k)


# --- one parameter-set definition with the chip evaluation (compiler/params.py) -------------
def test_perturbable_uses_the_chip_default_parameter_set():
    from compiler.params import DEFAULT_PARAMS
    m = _model()
    names = [n for n, _ in perturbable(m)]
    assert DEFAULT_PARAMS == ("weights", "bias")
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in perturbable(m, "weights")] == ["fc1.weight", "fc2.weight"]
    th = [n for n, _ in perturbable(m, "weights,threshold")]
    assert th == ["fc1.weight", "if1.v_threshold", "fc2.weight", "out.v_threshold"]
    lif = nn.Sequential(nn.Linear(4, 3), native.LIF(beta=0.9))
    assert [n for n, _ in perturbable(lif, ["leak"])] == ["1.beta"]
    with pytest.raises(ValueError, match="unknown parameter kind"):
        perturbable(m, "gain")
    # the chip evaluation reads the same definition
    from runtime.lab import noise
    assert noise.Mismatch(0.1).on == DEFAULT_PARAMS


def test_adversarial_weights_on_thresholds_restores_the_buffers():
    x, y = _data(16)
    m = _model()
    ctx = StepContext(m, torch.from_numpy(x), torch.from_numpy(y),
                      lambda xb: native.run_scores(m, native.direct(xb, 4)),
                      torch.nn.functional.cross_entropy)
    th0 = m.if1.v_threshold.clone()
    aw = AdversarialWeights(zeta=0.2, beta=0.25, steps=2, include="weights,bias,threshold")
    params = perturbable(m, aw.include)
    with torch.no_grad():
        clean = ctx.forward(ctx.x)
    star, _, radius = aw.attack(ctx, [p for _, p in params], clean)
    moved = {n: float((s - p.detach()).abs().max()) for (n, p), s in zip(params, star)}
    assert moved["if1.v_threshold"] > 0                 # the threshold is attacked too
    aw(ctx)
    assert torch.equal(m.if1.v_threshold, th0) and not m.if1.v_threshold.requires_grad
    assert m.if1.v_threshold.grad is None and m.fc1.weight.grad is not None


def test_training_presets():
    from frontends.training.robust import from_preset
    assert from_preset("awp", "buechel").pga.steps == 10
    assert AWP().pga.steps == 3                          # ours, listed in docs/robustness.md
    assert from_preset("adversarial-weights", "buechel", zeta=0.3).zeta == 0.3
    assert from_preset("input-adversarial", "torchattacks").alpha == pytest.approx(2 / 255)
    with pytest.raises(ValueError, match="no reference values"):
        from_preset("standard", "buechel")
