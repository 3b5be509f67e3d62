"""QAT (frontends/training/qat/): the quantizer's integers are the compiler's, and the QAT model's
integer evaluation equals the compiled chip's runtime output bit for bit."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from compiler import reference
from compiler.errors import UnsupportedOpError
from compiler.passes.calibrate import direct_payloads
from frontends import compile_model, native
from frontends.training.qat import (
    Quantizer,
    ShiftBN,
    check_against,
    export_model,
    fold_batchnorm,
    quantize_input,
)
from frontends.training.trainer import TrainConfig, Trainer


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine is shared: oversubscribed torch threads cost 5x wall time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- small models covering the supported chain forms ------------------------------------------
def _digits_like(c1=4, c2=6) -> nn.Module:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, c1, 3, padding=1)), ("if1", native.IF()),
        ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(c1, c2, 3, padding=1)), ("if2", native.IF()),
        ("pool2", nn.AvgPool2d(2)), ("flat", nn.Flatten()),
        ("fc", nn.Linear(c2 * 4, 5)), ("out", native.IF()),
    ]))


class _Residual(nn.Module):
    """Two branches from different sources summed into one population, a Scale, LIF leaks."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.lif1 = native.LIF(beta=0.875, reset="hard", v_reset=0.1)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.lif2 = native.LIF(beta=0.9, v_init=0.3, neg_floor=0.5)
        self.fa = nn.Linear(3 * 16, 4)
        self.fb = nn.Linear(4 * 16, 4)
        self.out = native.IF(v_threshold=torch.tensor([1.0, 0.8, 1.2, 1.0]))

    def forward(self, x):
        a = self.lif1(self.conv1(x))
        p = self.pool(a) * 0.5
        b = self.lif2(self.conv2(p))
        return self.out(self.fa(torch.flatten(p, 1)) + self.fb(b.flatten(1)))


def _scaled(model: nn.Module, k: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(k)
    return model


def _images(n=40, shape=(1, 8, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n,) + shape).astype(np.float32)


CASES = [
    ("digits", 8, False, "max"), ("digits", 4, True, "max"), ("digits", 2, False, "p99"),
    ("digits", 1, False, "max"), ("residual", 8, False, "max"), ("residual", 4, True, "p99.5"),
]


@pytest.mark.parametrize("kind,bits,per_channel,clip", CASES)
def test_quantizer_equals_compiler(kind, bits, per_channel, clip):
    torch.manual_seed(1)
    model = _digits_like() if kind == "digits" else _Residual()
    model = _scaled(model, 3.0, 2)
    q = Quantizer(model, (1, 8, 8), bits=bits, per_channel=per_channel, clip=clip)
    prog = compile_model(model, input_shape=(1, 8, 8), bits=bits, per_channel=per_channel,
                         clip=clip, stop_after="fold-thresholds")
    cmp = check_against(q, prog)
    assert all(all(v.values()) for v in cmp.values()), cmp
    x = _images()
    mine = q.run_int(x, 6)
    ref = reference.run_int(prog.graph, direct_payloads(x, 6))
    for k in ref.counts:
        np.testing.assert_array_equal(mine.counts[k], ref.counts[k])
        np.testing.assert_array_equal(mine.v_final[k], ref.v_final[k])
    np.testing.assert_array_equal(mine.scores, ref.scores)
    assert sum(int(c.sum()) for c in mine.counts.values()) > 0     # the test exercises spikes


def test_quantized_context_swaps_and_restores():
    model = _scaled(_digits_like(), 3.0, 3)
    q = Quantizer(model, (1, 8, 8), bits=4)
    w0 = model.conv1.weight.detach().clone()
    th0 = model.out.v_threshold.clone()
    x = torch.from_numpy(_images(8))
    with q.quantized():
        wq = model.conv1.weight.detach().clone()
        s = native.run_scores(model, native.direct(quantize_input(x), 4))
        s.sum().backward()
    assert torch.equal(model.conv1.weight.detach(), w0)
    assert torch.equal(model.out.v_threshold, th0)
    assert model.conv1.weight.grad is not None
    # the swapped weights take at most 2*qmax+1 distinct values (times one scale)
    assert len(torch.unique(wq)) <= 15
    lq = q.quantize_all()["if1"]
    np.testing.assert_allclose(wq.double().numpy(),
                               (lq.weights["conv1"].numpy()
                                * lq.group_scale[0] * 255.0), rtol=1e-6)


def test_float_qat_forward_tracks_integer_model():
    model = _scaled(_digits_like(), 3.0, 4)
    q = Quantizer(model, (1, 8, 8), bits=4)
    x = torch.from_numpy(_images(30))
    ir = q.run_int(x, 6)
    counts = {}
    hooks = [m.register_forward_hook(
        lambda mo, i, o, n=n: counts.__setitem__(n, counts.get(n, 0) + o.reshape(len(o), -1)))
        for n, m in model.named_modules() if isinstance(m, native.IF)]
    with torch.no_grad(), q.quantized():
        native.run(model, native.direct(quantize_input(x), 6))
    for h in hooks:
        h.remove()
    for k, c in counts.items():
        np.testing.assert_array_equal(c.numpy().astype(np.int64), ir.counts[k])


def test_unsupported_structures_are_named():
    over = nn.Sequential(nn.Conv2d(1, 2, 3), native.IF(), nn.AvgPool2d(3, stride=1),
                         nn.Flatten(), nn.Linear(2 * 4 * 4, 3), native.IF())
    with pytest.raises(UnsupportedOpError, match="stride"):
        Quantizer(over, (1, 8, 8))
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), native.IF(), nn.Flatten(),
                       nn.Linear(72, 3), native.IF())
    with pytest.raises(UnsupportedOpError, match="fold_batchnorm"):
        Quantizer(bn, (1, 8, 8))
    cc = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), native.IF(), nn.Flatten(),
                       nn.Linear(32, 3), native.IF())
    with pytest.raises(UnsupportedOpError, match="neuron in between"):
        Quantizer(cc, (1, 8, 8))


def test_fold_batchnorm_keeps_the_function():
    torch.manual_seed(5)
    m = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 3, 3, padding=1)), ("bn", nn.BatchNorm2d(3)), ("if1", native.IF()),
        ("flat", nn.Flatten()), ("fc", nn.Linear(192, 4)), ("out", native.IF())]))
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    m.eval()
    f = fold_batchnorm(m)
    assert isinstance(f.bn, nn.Identity)
    x = torch.from_numpy(_images(6))
    a = native.run_scores(m, native.direct(x, 4))
    b = native.run_scores(f, native.direct(x, 4))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    Quantizer(f, (1, 8, 8), bits=4)        # foldable after the transform


def _digits_data():
    from frontends.datasets import load_dataset
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _chip(model, x, T, **opts):
    from runtime.engines.tick import run
    from runtime.image import from_sections
    prog = compile_model(model, input_shape=(1, 8, 8), timesteps=T, **opts)
    img = from_sections(prog.sections(), prog.spec.digest())
    return prog, run(img, x, timesteps=T, encoding="direct")


def test_qat_digits_equals_compiled_chip(tmp_path):
    """Train 4-bit QAT on digits, export ONNX, compile, run the chip runtime: identical."""
    from frontends.onnx import export_onnx
    tr, te = _digits_data()
    torch.manual_seed(0)
    model = _digits_like(8, 16)
    model.fc = nn.Linear(16 * 4, 10)
    q = Quantizer(model, (1, 8, 8), bits=4)
    cfg = TrainConfig(epochs=2, timesteps=6, batch_size=64, lr=1e-2, seed=0, progress=False,
                      threads=1, device="cpu")
    Trainer(model, cfg, quantizer=q).fit(tr.x[:1000], tr.y[:1000])
    path = tmp_path / "qat4.onnx"
    export_onnx(model, path, input_shape=(1, 8, 8))
    mine = q.run_int(te.x, 6)
    prog, chip = _chip(str(path), te.x, 6, bits=4)
    assert prog.complete
    np.testing.assert_array_equal(chip.predictions, mine.predictions)
    np.testing.assert_array_equal(chip.out_counts, mine.counts["out"])
    np.testing.assert_array_equal(chip.v_out, mine.v_final["out"])
    np.testing.assert_array_equal(chip.scores, mine.scores)
    per_layer = {n: int(c.sum()) for n, c in mine.counts.items()}
    assert {n: int(v) for n, v in zip(chip.layer_names, chip.layer_spikes.sum(0))} == per_layer
    assert mine.accuracy(te.y) > 0.6


def test_shiftbn_export_is_shift_only_and_exact():
    tr, te = _digits_data()
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 8, 3, padding=1, bias=False)), ("sbn1", ShiftBN(8)),
        ("if1", native.IF()), ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(8, 8, 3, padding=1, bias=False)), ("sbn2", ShiftBN(8)),
        ("if2", native.IF()), ("pool2", nn.AvgPool2d(2)), ("flat", nn.Flatten()),
        ("fc", nn.Linear(32, 10)), ("out", native.IF())]))
    q = Quantizer(model, (1, 8, 8), bits=4)
    cfg = TrainConfig(epochs=1, timesteps=4, batch_size=128, lr=1e-2, seed=0, progress=False,
                      threads=1, device="cpu")
    Trainer(model, cfg, quantizer=q).fit(tr.x[:512], tr.y[:512])
    model.eval()
    plain = export_model(model, q)
    prog, chip = _chip(plain, te.x[:100], 4, bits=4)
    folded = prog.history["fold-thresholds"]
    for layer in ("if1", "if2"):
        th = folded.node(layer).regs.th_pos
        assert np.all(th == 2 ** np.round(np.log2(th))), th       # powers of two only
    mine = q.run_int(te.x[:100], 4)
    np.testing.assert_array_equal(chip.out_counts, mine.counts["out"])
    np.testing.assert_array_equal(chip.v_out, mine.v_final["out"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_quantizer_equals_cpu():
    """The integer model on the GPU (float64) is the CPU's, and QAT trains on CUDA."""
    model = _scaled(_Residual(), 3.0, 7)
    x = _images(64)
    cpu = Quantizer(model, (1, 8, 8), bits=4, per_channel=True).run_int(x, 6)
    model = model.cuda()
    q = Quantizer(model, (1, 8, 8), bits=4, per_channel=True)
    gpu = q.run_int(x, 6)
    for k in cpu.counts:
        np.testing.assert_array_equal(gpu.counts[k], cpu.counts[k])
        np.testing.assert_array_equal(gpu.v_final[k], cpu.v_final[k])
    np.testing.assert_array_equal(gpu.scores, cpu.scores)
    y = np.random.default_rng(0).integers(0, 4, 64)
    cfg = TrainConfig(epochs=1, timesteps=4, batch_size=32, seed=0, progress=False,
                      device="cuda")
    h = Trainer(model, cfg, quantizer=q).fit(x, y)
    assert np.isfinite(h.loss[0])
