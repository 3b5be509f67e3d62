"""ONNX CNNs: import checked against onnxruntime, ANN -> SNN conversion, CLI, bundled example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import IF, Scale
from frontends import is_ann_file, load_model
from frontends.datasets import calibration_arrays, load_dataset
from frontends.onnx import (
    Activation,
    activation_thresholds,
    calibrate_v_init,
    check_onnxruntime,
    convert,
    import_ann,
    import_onnx,
    is_ann_model,
    lower_snn,
    report,
    run_ann,
    run_snn_float,
    to_snn,
)

ROOT = Path(__file__).resolve().parents[2]
ANN = ROOT / "examples" / "cnn" / "ann.onnx"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def calib():
    return calibration_arrays("digits", 256)


def _f(a) -> np.ndarray:
    return np.asarray(a, np.float32)


def _model(nodes, inits, in_shape, out="y", opset=17):
    g = helper.make_graph(
        nodes, "ann", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "K"])],
        [numpy_helper.from_array(np.asarray(v, np.int64) if np.asarray(v).dtype.kind == "i"
                                 else _f(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def _every_op_model(rng, maxpool=False):
    """Conv + unfolded BN + Relu, residual Add, Clip(0, 6), MatMul + Add, GlobalAveragePool,
    Dropout, Identity, Reshape-as-flatten, trailing Softmax (and optionally a MaxPool)."""
    c = 4
    inits = {
        "w1": rng.normal(0, 0.6, (c, 1, 3, 2)), "b1": rng.normal(0, 0.1, c),
        "g": rng.uniform(0.5, 1.5, c), "be": rng.normal(0, 0.1, c),
        "mu": rng.normal(0, 0.1, c), "var": rng.uniform(0.5, 1.5, c),
        "w2": rng.normal(0, 0.4, (c, c, 3, 3)), "b2": rng.normal(0, 0.1, c),
        "lo": np.zeros(()), "hi": np.full((), 6.0),
        "w3": rng.normal(0, 0.5, (c, c, 1, 1)), "cb3": rng.normal(0, 0.1, (c, 1, 1)),
        "shape": np.array([0, -1]), "m": rng.normal(0, 0.5, (c * 2 * 3, 10)),
        "mb": rng.normal(0, 0.1, 10), "wf": rng.normal(0, 0.5, (5, 14)),
        "bf": rng.normal(0, 0.1, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 2],
                         strides=[2, 1], pads=[1, 0, 1, 0]),
        helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["n1"], name="bn1",
                         epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "b2r"], ["c2b"], name="conv2_bias"),
        helper.make_node("Add", ["c2b", "r1"], ["s"], name="residual"),
        helper.make_node("Clip", ["s", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Dropout", ["r2"], ["d"], name="drop"),
        helper.make_node("Conv", ["d", "w3"], ["c3"], name="conv3", kernel_shape=[1, 1]),
        helper.make_node("Add", ["cb3", "c3"], ["c3b"], name="conv3_bias"),
        helper.make_node("Relu", ["c3b"], ["r3"], name="relu3"),
    ]
    inits["b2r"] = inits.pop("b2").reshape(1, c, 1, 1)
    last = "r3"
    if maxpool:
        nodes.append(helper.make_node("MaxPool", [last], ["mp"], name="maxpool",
                                      kernel_shape=[1, 1]))
        last = "mp"
    nodes += [
        helper.make_node("Identity", [last], ["id"], name="ident"),
        helper.make_node("GlobalAveragePool", ["id"], ["gap"], name="gap"),
        helper.make_node("Reshape", ["id", "shape"], ["fl"], name="flatten"),
        helper.make_node("MatMul", ["fl", "m"], ["mm"], name="fc1"),
        helper.make_node("Add", ["mm", "mb"], ["h"], name="fc1_bias"),
        helper.make_node("Relu", ["h"], ["rh"], name="relu_fc"),
        helper.make_node("Flatten", ["gap"], ["gf"], name="gap_flat", axis=1),
        helper.make_node("Concat", ["rh", "gf"], ["cat"], name="concat", axis=1),
    ]
    return nodes, inits


def test_every_supported_op_matches_onnxruntime(calib):
    rng = np.random.default_rng(0)
    nodes, inits = _every_op_model(rng)
    # no Concat in the IR: replace it with a Gemm on the fc branch plus a residual Gemm on gap
    nodes = nodes[:-1] + [
        helper.make_node("Gemm", ["rh", "wa"], ["ya"], name="head_a", transB=1),
        helper.make_node("Gemm", ["gf", "wb", "bf"], ["yb"], name="head_b", transB=1),
        helper.make_node("Add", ["ya", "yb"], ["logits"], name="heads"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    inits["wa"] = rng.normal(0, 0.5, (5, 10))
    inits["wb"] = rng.normal(0, 0.5, (5, 4))
    m = _model(nodes, inits, (1, 5, 3))
    assert is_ann_model(m)
    ann = import_ann(m)
    kinds = {n: ann.graph.node(n).kind for n in ann.graph.topo_order()}
    assert kinds["conv2"] == "Conv2d" and "conv2_bias" not in kinds     # bias Add folded in
    assert kinds["fc1"] == "Affine" and "fc1_bias" not in kinds          # MatMul + Add
    assert kinds["relu6"] == "Activation" and ann.graph.node("relu6").upper == 6.0
    assert kinds["gap"] == "AvgPool2d" and kinds["bn1"] == "BatchNorm"
    assert ann.compare_tensor == "logits" and any("Softmax" in n for n in ann.notes)
    x = calib[:64, :, :5, :3].copy()
    res = check_onnxruntime(ann, x)
    assert res["ok"] and res["max_abs_diff"] <= 1e-5 * res["scale"], res
    conv = convert(ann, x)
    assert conv.ort_check["ok"]
    assert float(conv.thresholds["relu6"]) == 6.0                       # the Clip bound
    snn = conv.graph
    assert isinstance(snn.node("relu1"), IF) and isinstance(snn.node("relu1_theta"), Scale)


class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 6, (3, 2), stride=(1, 2), padding=(1, 0))
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.sk = nn.Conv2d(6, 6, 1, stride=(1, 2))
        self.fc = nn.Linear(6 * 4 * 2, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.c1(x)))
        y = F.relu(self.c2(h))
        y = F.relu(self.c3(y) + self.sk(h))
        y = F.avg_pool2d(y, 2)
        return F.log_softmax(self.fc(torch.flatten(y, 1)), 1)


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_exporters(tmp_path, calib, dynamo):
    """Both torch.onnx exporters of torch 2.13: TorchScript (Flatten, dynamic batch) and
    torch.export-based (Reshape with the static batch dim written out)."""
    torch.manual_seed(0)
    m = _ResNet().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    p = tmp_path / "m.onnx"
    kw = {} if dynamo else dict(dynamic_axes={"input": {0: "batch"}})
    torch.onnx.export(m, (torch.zeros(1, 1, 8, 8),), str(p), dynamo=dynamo,
                      input_names=["input"], output_names=["out"], **kw)
    ann = import_ann(p)
    res = check_onnxruntime(ann, calib[:64])
    assert res["ok"] and res["max_abs_diff"] < 1e-5, res
    with torch.no_grad():
        ref = m(torch.from_numpy(calib[:64])).numpy()
    ours = run_ann(ann.graph, calib[:64])
    assert np.array_equal(np.argmax(ours, 1), np.argmax(ref, 1))
    assert is_ann_file(p) and not is_ann_file(ROOT / "examples/digits/model.onnx")


def test_maxpool_refused_with_alternatives(calib):
    rng = np.random.default_rng(1)
    nodes, inits = _every_op_model(rng, maxpool=True)
    nodes = nodes[:-3] + [helper.make_node("Relu", ["h"], ["y"], name="relu_out")]
    m = _model(nodes, inits, (1, 5, 3))
    with pytest.raises(UnsupportedOpError) as e:
        import_ann(m)
    assert e.value.op == "MaxPool" and e.value.node_name == "maxpool"
    assert "AvgPool" in e.value.hint and "--maxpool avg" in e.value.hint
    assert "lossy" in e.value.hint
    ann = import_ann(m, maxpool="avg")
    assert ann.lossy and any("MaxPool" in n and "lossy" in n for n in ann.notes)
    conv = convert(ann, calib[:32, :, :5, :3].copy())      # onnxruntime check skipped: lossy
    assert conv.ort_check is None and conv.graph.node("maxpool").kind == "AvgPool2d"


@pytest.mark.parametrize("op,attrs", [("Sigmoid", {}), ("LeakyRelu", {"alpha": 0.1}),
                                      ("Tanh", {})])
def test_unsupported_activation_names_node_and_suggests(op, attrs):
    m = _model([helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
                helper.make_node(op, ["h"], ["y"], name="act", **attrs)],
               {"w": np.ones((3, 4))}, (4,))
    with pytest.raises(UnsupportedOpError) as e:
        import_ann(m)
    assert e.value.op == op and e.value.node_name == "act"
    assert "ReLU" in e.value.hint and "retrain" in e.value.hint


def test_clip_bounds_need_no_calibration_relu_does():
    w = np.random.default_rng(2).normal(0, 1, (6, 4))
    m = _model([helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
                helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act"),
                helper.make_node("Gemm", ["a", "w2"], ["y"], name="out", transB=1)],
               {"w": w, "lo": np.zeros(()), "hi": np.full((), 2.5),
                "w2": np.ones((3, 6))}, (4,))
    conv = convert(import_ann(m))                       # no calibration data needed
    assert float(conv.graph.node("act").v_threshold) == 2.5
    assert float(conv.graph.node("act").v_init) == 1.25   # theta / 2
    m2 = _model([helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
                 helper.make_node("Relu", ["h"], ["y"], name="act")], {"w": w}, (4,))
    with pytest.raises(FrontendError, match="calibration") as e:
        convert(import_ann(m2))
    assert "--calib" in e.value.hint
    with pytest.raises(UnsupportedOpError) as e:       # the SNN path keeps refusing it
        import_onnx_model(m2)
    assert e.value.op == "Relu"


def import_onnx_model(m):
    from frontends.onnx import from_onnx_model
    return from_onnx_model(m)


def _tiny_ann(rng, n_in=6, n_hid=8):
    w = rng.normal(0, 1, (n_hid, n_in))
    b = rng.normal(0, 0.2, n_hid)
    m = _model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
                helper.make_node("Relu", ["h"], ["a"], name="act"),
                helper.make_node("Gemm", ["a", "w2"], ["y"], name="out", transB=1)],
               {"w": w, "b": b, "w2": rng.normal(0, 1, (3, n_hid))}, (n_in,))
    return import_ann(m), w, b


def test_if_rate_is_the_qcfs_quantized_activation():
    """Soft reset + v0 = theta/2 under constant input z: count = clip(floor(zT/theta + 1/2),
    0, T), the QCFS activation with L = T (algorithms.md §6.1)."""
    rng = np.random.default_rng(3)
    ann, w, b = _tiny_ann(rng)
    x = rng.integers(0, 256, (64, 6)) / 255.0            # exact payloads
    th = {"act": np.asarray(1.7)}
    lowered = lower_snn(to_snn(ann, th))
    z = x @ w.T + b
    for T in (4, 8, 16):
        counts, _ = run_snn_float(lowered, x, T)
        want = np.clip(np.floor(z * T / 1.7 + 0.5), 0, T)
        assert np.array_equal(counts["act"], want)
        zero = lower_snn(to_snn(ann, th, v_init="zero"))
        c0, _ = run_snn_float(zero, x, T)
        assert np.array_equal(c0["act"], np.clip(np.floor(z * T / 1.7), 0, T))


def test_thresholds_percentile_and_per_channel(calib):
    ann = import_ann(ANN)
    _, acts = run_ann(ann.graph, calib, record=True)
    th = activation_thresholds(ann, calib, "p99.9")
    a = acts["Relu"]
    assert np.isclose(float(th["Relu"]), np.percentile(a[a > 0], 99.9))
    thm = activation_thresholds(ann, calib, "max")
    assert np.isclose(float(thm["Relu"]), a.max())
    thc = activation_thresholds(ann, calib, "p99.9", per_channel=True)
    assert thc["Relu"].shape == (a.shape[1],)
    with pytest.raises(FrontendError, match="threshold rule"):
        activation_thresholds(ann, calib, "q99")


def test_v_init_calibration_closes_the_rate_gap():
    rng = np.random.default_rng(4)
    ann, w, b = _tiny_ann(rng, n_hid=16)
    x = rng.integers(0, 256, (200, 6)) / 255.0
    th = activation_thresholds(ann, x, "max")
    T = 4
    target = np.clip(x @ w.T + b, 0, float(th["act"])).mean(axis=0)

    def gap(v_inits):
        c, _ = run_snn_float(lower_snn(to_snn(ann, th, v_inits=v_inits)), x, T)
        return np.abs(c["act"].mean(axis=0) * float(th["act"]) / T - target).mean()

    v0 = calibrate_v_init(ann, th, x, T)
    assert v0["act"].shape == (16,)
    assert gap(v0) < 0.5 * gap(None)


@pytest.fixture(scope="module")
def digits_report(calib):
    ann = import_ann(ANN)
    te = load_dataset("digits", "test")
    from compiler.cli import _run_chip
    return report(ann, calib, te.x, te.y, timesteps=(8, 32), run_chip=_run_chip)


def test_bundled_cnn_done_when(digits_report):
    """The issue's bar: deployed SNN within 2 points of the ANN at T=32, within 5 at T=8."""
    r = digits_report
    assert r["ann_accuracy"] > 0.97
    assert r["onnxruntime_check"]["ok"] and r["onnxruntime_check"]["max_abs_diff"] < 1e-5
    rows = {row["timesteps"]: row for row in r["rows"]}
    assert rows[32]["runtime_accuracy"] >= r["ann_accuracy"] - 0.02
    assert rows[8]["runtime_accuracy"] >= r["ann_accuracy"] - 0.05
    for row in r["rows"]:          # the chip runtime equals the integer reference (residual
        assert row["runtime_bit_exact"]        # branch delays balanced by route)
        assert row["runtime_accuracy"] == row["snn_int_accuracy"]


def test_load_model_dispatches_by_content(calib):
    g = load_model(ROOT / "examples/digits/model.onnx")
    assert any(isinstance(n, IF) for _, n in g.items())
    with pytest.raises(FrontendError, match="calibration") as e:
        load_model(ANN)
    assert "--calib" in e.value.hint
    snn = load_model(ANN, calib=calib[:128])
    ifs = [n for n, node in snn.items() if isinstance(node, IF)]
    assert len(ifs) == 3 and snn.attrs["conversion"]["threshold"] == "p99.9"
    assert not any(isinstance(node, Activation) for _, node in snn.items())
    with pytest.raises(UnsupportedOpError):
        import_onnx(ANN)


def _run(*args, ok=True):
    """snnc in-process (the subprocess contract is tests/e2e/test_cli.py's)."""
    from click.testing import CliRunner

    from compiler.cli import cli
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=not ok)
    if ok:
        assert r.exit_code == 0, r.output[-2000:]
    return r


def test_cli_compile_verify_and_report(tmp_path):
    chip, snn = tmp_path / "chip.bin", tmp_path / "snn.onnx"
    r = _run("compile", ANN, "-o", chip, "--calib", "digits", "--calib-limit", "128",
             "--save-snn", snn)
    assert "wrote" in r.output
    assert b"ai.snnc" in snn.read_bytes()
    v = json.loads(_run("verify", snn, chip, "--data", "digits", "--limit", "60",
                        "--json").output)
    assert v["bit_exact"] and not v["warnings"] and v["runtime_accuracy"] > 0.9
    r = json.loads(_run("convert-report", ANN, "--calib", "digits", "--calib-limit", "128",
                        "--limit", "60", "--timesteps", "4,8", "--json").output)
    assert [row["timesteps"] for row in r["rows"]] == [4, 8]
    assert {"ann_accuracy", "snn_float_accuracy", "snn_int_accuracy"} <= set(r["rows"][0])
    bad = _run("compile", ANN, "-o", tmp_path / "x.bin", ok=False)
    assert isinstance(bad.exception, FrontendError) and "--calib" in bad.exception.hint
    assert not (tmp_path / "x.bin").exists()


def test_cli_error_is_clean(tmp_path):
    p = subprocess.run([str(BIN / "snnc"), "compile", str(ANN), "-o", str(tmp_path / "x.bin"),
                        "--maxpool", "avg"], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode == 1 and "--calib" in p.stderr and "Traceback" not in p.stderr
