"""Dual-phase conversion, phase II (issue 19): calibration formula, never worse, bit-exact."""
import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compiler import compile_model
from compiler.errors import FrontendError
from frontends.convert_ann import activation_thresholds, run_ann
from frontends.datasets import load_dataset
from frontends.onnx_io import import_ann
from frontends.training import dual_phase as DP
from frontends.training.qcfs import QCFS, export_ann

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _train(model, x, y, epochs, seed=0):
    from frontends.training.trainer import TrainConfig, Trainer
    torch.manual_seed(seed)
    Trainer(model, TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed,
                               progress=False), ann=True).fit(x, y)
    return model


@pytest.fixture(scope="module")
def digits():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    return tr.x, tr.y, te.x, te.y


@pytest.fixture(scope="module")
def cnn_onnx(digits, tmp_path_factory):
    """A small QCFS CNN on digits, briefly trained (phase I is poor at T = 2)."""
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    m = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3, padding=1)), ("act1", QCFS(L=4, lam=2.0)),
        ("pool1", nn.AvgPool2d(2)), ("conv2", nn.Conv2d(6, 8, 3, padding=1)),
        ("act2", QCFS(L=4, lam=2.0)), ("pool2", nn.AvgPool2d(2)), ("flat", nn.Flatten()),
        ("fc", nn.Linear(32, 10))]))
    _train(m, xtr, ytr, epochs=3)
    return export_ann(m, tmp_path_factory.mktemp("dp") / "cnn.onnx", (1, 8, 8))


@pytest.fixture(scope="module")
def toy_ann(tmp_path_factory):
    """Flatten -> Linear(4, 3) -> ReLU -> Linear(3, 2): one hidden layer to hand-check."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([[0.9, -0.4, 0.3, 0.2], [0.5, 0.5, -0.2, 0.1],
                                        [-0.3, 0.8, 0.6, 0.4]]))
        m[1].bias.copy_(torch.tensor([0.05, -0.1, 0.2]))
    path = export_ann(m, tmp_path_factory.mktemp("toy") / "toy.onnx", (1, 2, 2))
    return import_ann(path)


def test_calibration_formula_against_hand_computation(toy_ann):
    """v_init_int += rint((mean ANN - mean theta*count/T) * T / s), with the IF run by hand."""
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 2, 2)).astype(np.float32)
    T = 3
    th = activation_thresholds(toy_ann, x, "max")
    (act,) = toy_ann.activations
    model, pops = DP.build_snn(toy_ann, th)
    opts = DP.Options()
    prog = DP.compile_snn(model, (1, 2, 2), T, opts)
    hid = pops[0].module
    L = prog.graph.node(hid)
    # hand computation: integer IF, soft reset, direct-encoded input, T steps
    ((src, W),) = L.inputs
    pay = np.clip(np.rint(x.reshape(6, -1) * 255.0), 0, 255).astype(np.int64)
    cur = pay @ W.toarray().astype(np.int64) + L.regs.bias
    v = np.broadcast_to(L.regs.v_init, cur.shape).astype(np.int64).copy()
    cnt = np.zeros_like(v)
    for _ in range(T):
        v += cur
        s = v >= L.regs.th_pos
        cnt += s
        v -= np.where(s, L.regs.th_pos, 0)
    theta = float(th[act])
    a = np.maximum(0, x.reshape(6, -1).astype(np.float64) @ np.array(
        [[0.9, -0.4, 0.3, 0.2], [0.5, 0.5, -0.2, 0.1], [-0.3, 0.8, 0.6, 0.4]]).T
        + [0.05, -0.1, 0.2])
    ann_mean = np.minimum(a, theta).mean(0)
    expect = L.regs.v_init + np.rint((ann_mean - cnt.mean(0) * theta / T) * T / L.scale)
    # the same through the library: targets from run_ann, the integer reference
    _, targets = run_ann(toy_ann.graph, x, clip=th, record=True)
    np.testing.assert_allclose(targets[act].mean(0), ann_mean, rtol=0, atol=1e-6)
    out = DP.calibrate(model, pops, targets, x, (1, 2, 2), T, opts)
    np.testing.assert_array_equal(out[hid]["v_init_int"], expect.astype(np.int64))
    assert np.any(out[hid]["delta_int"] != 0)
    # written into the v_init register of the recompiled network, exactly
    prog2 = DP.compile_snn(model, (1, 2, 2), T, opts)
    np.testing.assert_array_equal(prog2.graph.node(hid).regs.v_init, expect.astype(np.int64))


def test_build_snn_equals_default_conversion(cnn_onnx, digits):
    """Phase I native model == convert_ann's SNN (v_init theta/2) on the chip's integers."""
    from frontends.convert_ann import convert
    xtr, _, xte, _ = digits
    ann = import_ann(cnn_onnx)
    conv = convert(ann, xtr[:64], timesteps=4, check=False)
    ref = compile_model(conv.graph, timesteps=4, stop_after="fold-thresholds")
    model, _ = DP.build_snn(ann, conv.thresholds)
    mine = DP.compile_snn(model, (1, 8, 8), 4, DP.Options())
    _, s_ref = DP.run_chip_int(ref, xte[:80], 4)
    _, s_mine = DP.run_chip_int(mine, xte[:80], 4)
    np.testing.assert_array_equal(np.argmax(s_ref, 1), np.argmax(s_mine, 1))


@pytest.mark.parametrize("T", [2, 4])
def test_phase2_never_lowers_calibration_accuracy(cnn_onnx, digits, T):
    xtr, ytr, _, _ = digits
    ann = import_ann(cnn_onnx)
    x, y = xtr[:96], ytr[:96]
    r = DP.dual_phase(ann, x, y, timesteps=T, epochs=1, batch=48)
    stages = [h["stage"] for h in r.history]
    assert stages == list(DP.STAGES)
    acc = {h["stage"]: h["calib_accuracy"] for h in r.history}
    assert acc[r.best] == max(acc.values()) >= acc["phase-1"]
    # the returned model is the kept checkpoint: re-evaluate it on the chip's arithmetic
    prog = compile_model(r.graph, r.options.spec, bits=8, timesteps=T,
                         stop_after="fold-thresholds")
    _, sc = DP.run_chip_int(prog, x, T)
    assert float(np.mean(np.argmax(sc, 1) == y)) == acc[r.best]
    if T == 2:          # phase I is poor at T = 2 on this net; calibration must help
        assert acc["calibrated"] > acc["phase-1"]


def test_finetune_changes_weights_and_vinit_through_quantizer(cnn_onnx, digits):
    xtr, _, _, _ = digits
    ann = import_ann(cnn_onnx)
    x = xtr[:64]
    th = activation_thresholds(ann, x)
    logits, _ = run_ann(ann.graph, x, record=True)
    _, targets = run_ann(ann.graph, x, clip=th, record=True)
    model, pops = DP.build_snn(ann, th)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = DP.finetune(model, pops, targets, logits.reshape(len(x), -1), x, (1, 8, 8), 2,
                       DP.Options(), epochs=1, batch=32)
    after = model.state_dict()
    for p in pops:
        assert not torch.equal(before[f"{p.synapse}.weight"], after[f"{p.synapse}.weight"])
        assert np.isfinite(hist[p.module]["loss_last"])
    hidden = [p for p in pops if p.activation is not None]
    assert any(not torch.equal(before[f"{p.module}.v_init"], after[f"{p.module}.v_init"])
               for p in hidden)


def test_dual_phase_errors(cnn_onnx, digits):
    xtr, ytr, _, _ = digits
    ann = import_ann(cnn_onnx)
    with pytest.raises(FrontendError, match="bits"):
        DP.dual_phase(ann, xtr[:16], ytr[:16], bits="auto")
    with pytest.raises(FrontendError, match="calibration"):
        DP.dual_phase(ann, None)
    with pytest.raises(FrontendError, match="unknown conversion method"):
        DP.convert_method(ann, xtr[:16], "magic", 4)


def test_residual_network_refused(tmp_path):
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.fc1(x.flatten(1)))
            return self.out(torch.relu(self.fc2(h)) + h)

    ann = import_ann(export_ann(Res(), tmp_path / "res.onnx", (1, 2, 2)))
    th = activation_thresholds(ann, np.random.default_rng(0).random((8, 1, 2, 2)))
    with pytest.raises(FrontendError, match="chain"):
        DP.build_snn(ann, th)


def _run(cmd, *args):
    p = subprocess.run([str(BIN / cmd), *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.mark.slow
def test_cli_compile_dual_phase_bit_exact_on_runtime(cnn_onnx, tmp_path):
    out = tmp_path / "dp.bin"
    p = _run("snnc", "compile", cnn_onnx, "--calib", "digits", "--calib-limit", "96",
             "--convert", "dual-phase", "--phase2-epochs", "1", "--timesteps", "2", "-o", out)
    assert "kept" in p.stderr
    d = json.loads(_run("snnrun", out, "--data", "digits", "--limit", "60", "--check",
                        "--json").stdout)
    assert d["bit_exact"] is True and d["timesteps"] == 2
    # the image holds the calibrated v_init registers, not theta/2
    from runtime.image import load
    img = load(out)
    g = img.unmap()
    hid = [n for n in g.layers if n != g.output_layer]
    assert any(len(np.unique(g.node(n).regs.v_init)) > 1 for n in hid)


@pytest.mark.slow
def test_cli_convert_report_methods(cnn_onnx, tmp_path):
    rep = tmp_path / "rep"
    p = _run("snnc", "convert-report", cnn_onnx, "--calib", "digits", "--calib-limit", "64",
             "--limit", "60", "--methods", "relu,qcfs,dual-phase", "--timesteps", "1,2",
             "--phase2-epochs", "0", "--report", rep, "--plot", tmp_path / "p.png", "--json")
    d = json.loads(p.stdout)
    assert d["methods"] == ["relu", "qcfs", "dual-phase"] and d["timesteps"] == [1, 2]
    assert len(d["rows"]) == 6
    assert all(r["runtime_bit_exact"] for r in d["rows"])
    for T in (1, 2):
        row = next(r for r in d["rows"] if r["method"] == "dual-phase" and r["timesteps"] == T)
        assert row["phase2"]["best"] in DP.STAGES
    assert (rep / "convert-report.md").is_file() and (rep / "convert-report.png").is_file()
    assert (tmp_path / "p.png").is_file()
    bad = subprocess.run([str(BIN / "snnc"), "convert-report", str(cnn_onnx), "--calib",
                          "digits", "--methods", "relu,magic"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "magic" in bad.stderr
