"""ONNX export/import of SNN graphs: exact round trip, onnx.checker, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import Affine, AvgPool2d, Conv2d, Flatten, Graph, Input, Output, dump
from frontends import load_model, native
from frontends.native.convert import to_graph
from frontends.onnx import DOMAIN, export_onnx, import_onnx, to_onnx_model


def _assert_same_graph(a: Graph, b: Graph) -> None:
    assert a.topo_order() == b.topo_order()
    for name in a.topo_order():
        assert a.inputs(name) == b.inputs(name)
        na, nb = a.node(name), b.node(name)
        assert type(na) is type(nb), name
        for k, va in vars(na).items():
            vb = getattr(nb, k)
            if isinstance(va, np.ndarray):
                assert va.shape == vb.shape, (name, k)
                np.testing.assert_array_equal(va, vb, err_msg=f"{name}.{k}")
            else:
                assert va == vb, (name, k)
    assert dump(a) == dump(b)


def test_round_trip_every_node_type(ir_graph, tmp_path):
    p = tmp_path / "g.onnx"
    export_onnx(ir_graph, p)
    g2 = import_onnx(p)
    _assert_same_graph(ir_graph, g2)
    assert g2.attrs["dt"] == 1.0 and g2.attrs["leak_hints"] == {"lif1": "mult"}
    # float64 weights that float32 cannot hold -> the whole file is DOUBLE
    m = onnx.load(str(p))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE


def test_round_trip_torch_model_float32(residual_net, tmp_path):
    g = to_graph(residual_net.float(), (2, 8, 8))
    p = tmp_path / "m.onnx"
    export_onnx(residual_net, p, input_shape=(2, 8, 8))
    m = onnx.load(str(p))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    _assert_same_graph(g, import_onnx(p))
    assert load_model(p).topo_order() == g.topo_order()


def test_file_passes_checker_and_convention(ir_graph, tmp_path):
    p = tmp_path / "g.onnx"
    export_onnx(ir_graph, p)
    m = onnx.load(str(p))
    onnx.checker.check_model(m, full_check=True)
    assert {(o.domain, o.version) for o in m.opset_import} >= {("", 17), (DOMAIN, 1)}
    inp = m.graph.input[0]
    assert inp.name == "input"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [2, 8, 6]
    assert m.graph.output[0].name == "output"
    ops = {n.name: (n.domain, n.op_type) for n in m.graph.node}
    assert ops["conv1"] == ("", "Conv") and ops["bn1"] == ("", "BatchNormalization")
    assert ops["lif1"] == (DOMAIN, "LIF") and ops["if2"] == (DOMAIN, "IF")
    assert ops["spool"] == (DOMAIN, "SumPool2d") and ops["pool"] == ("", "AveragePool")
    assert ops["add"] == ("", "Sum") and ops["join"] == ("", "Add")
    assert ops["fc_a"] == ("", "Gemm") and ops["flat_s"] == ("", "Reshape")
    assert ops["scale_c"] == ("", "Mul") and ops["output"] == ("", "Identity")
    lif = next(n for n in m.graph.node if n.name == "lif1")
    attrs = {a.name: helper.get_attribute_value(a) for a in lif.attribute}
    assert attrs == {"reset": b"hard", "dt": 1.0, "neg_floor": np.float32(0.3), "leak": b"mult"}
    assert lif.doc_string == 'snnc.exact {"neg_floor": 0.3}'
    assert list(lif.input) == ["bn1", "lif1.v_threshold", "lif1.v_reset", "lif1.v_init",
                               "lif1.beta"]
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(inits["lif1.v_threshold"], ir_graph.node("lif1").v_threshold)
    assert inits["lif1.v_threshold"].dtype == np.float64
    assert float(inits["lif1.v_init"]) == 0.25
    assert {p.key: p.value for p in m.metadata_props}["snnc.format"] == "1"


def test_standard_ops_match_onnxruntime(tmp_path, helpers):
    """The standard-op part of the export computes what the IR means (checked by onnxruntime)."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    g = Graph({"dt": 1.0})
    x = g.add("input", Input((2, 7, 6)))
    x = g.add("conv", Conv2d(rng.normal(size=(3, 2, 3, 2)).astype(np.float32),
                             rng.normal(size=3).astype(np.float32), stride=(2, 1),
                             padding=(1, 0)), [x])
    x = g.add("pool", AvgPool2d(2, 1, 1), [x])
    x = g.add("flat", Flatten(), [x])
    x = g.add("fc", Affine(rng.normal(size=(4, 90)).astype(np.float32),
                           rng.normal(size=4).astype(np.float32)), [x])
    g.add("output", Output((4,)), [x])
    p = tmp_path / "ann.onnx"
    export_onnx(g, p)
    xin = rng.random((3, 2, 7, 6)).astype(np.float32)
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": xin})
    want, _ = helpers.eval_graph(g, xin[None].astype(np.float64))
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5)


def test_imported_file_matches_torch(seq_net, tmp_path, helpers):
    p = tmp_path / "seq.onnx"
    export_onnx(seq_net, p, input_shape=(1, 8, 8))
    g = import_onnx(p)
    x = np.random.default_rng(0).random((4, 2, 1, 8, 8))
    with torch.no_grad():
        s_t = native.run(seq_net, torch.from_numpy(x)).numpy()
    s_g, v_g = helpers.eval_graph(g, x)
    np.testing.assert_array_equal(s_g, s_t)
    np.testing.assert_allclose(v_g, native.readout(seq_net).v.numpy(), rtol=1e-9, atol=1e-9)
    assert s_t.sum() > 0


def test_overwrite_is_atomic(ir_graph, tmp_path):
    p = tmp_path / "g.onnx"
    p.write_bytes(b"old")
    export_onnx(ir_graph, p)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["g.onnx"]
    import_onnx(p)


def _model(nodes, inits=(), in_shape=(1, 4), out="y", opset=17, extra_opsets=()):
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "K"])], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                             ir_version=8)


def test_ann_op_raises_with_conversion_hint(tmp_path):
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    m = _model([helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
                helper.make_node("Relu", ["h"], ["y"], name="act1")], [w], in_shape=(4,))
    p = tmp_path / "ann.onnx"
    onnx.save(m, str(p))
    with pytest.raises(UnsupportedOpError) as e:
        import_onnx(p)
    assert e.value.op == "Relu" and e.value.node_name == "act1"
    assert "ann.onnx" in str(e.value)
    assert "snnc compile" in e.value.hint and "--calib" in e.value.hint


def test_unknown_op_names_node(tmp_path):
    m = _model([helper.make_node("Softplus", ["x"], ["y"], name="weird")], in_shape=(4,))
    p = tmp_path / "u.onnx"
    onnx.save(m, str(p))
    with pytest.raises(UnsupportedOpError, match="weird") as e:
        import_onnx(p)
    assert e.value.op == "Softplus" and "Conv" in e.value.hint
    m = _model([helper.make_node("Spiky", ["x"], ["y"], name="cust", domain=DOMAIN)],
               in_shape=(4,), extra_opsets=[helper.make_opsetid(DOMAIN, 1)])
    onnx.save(m, str(p))
    with pytest.raises(UnsupportedOpError, match="ai.snnc::Spiky"):
        import_onnx(p)


def test_foreign_standard_ops(tmp_path):
    """Hand-written files: MatMul, Reshape-as-flatten, Mul with a broadcast constant, attrs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
             numpy_helper.from_array(rng.random((1, 2, 1, 1)).astype(np.float32), "s"),
             numpy_helper.from_array(rng.random((18, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"]),
             helper.make_node("Reshape", ["a", "shape"], ["b"]),
             helper.make_node("MatMul", ["b", "w"], ["c"]),
             helper.make_node("IF", ["c"], ["y"], domain=DOMAIN, v_threshold=0.5)]
    m = _model(nodes, inits, in_shape=(2, 3, 3), extra_opsets=[helper.make_opsetid(DOMAIN, 1)])
    p = tmp_path / "f.onnx"
    onnx.save(m, str(p))
    g = import_onnx(p)
    assert [type(g.node(n)).__name__ for n in g.topo_order()] == [
        "Input", "Scale", "Flatten", "Linear", "IF", "Output"]
    assert g.node(g.topo_order()[1]).scale.shape == (2,)
    assert float(g.node(g.topo_order()[4]).v_threshold) == 0.5


def test_symbolic_input_needs_shape(tmp_path):
    g = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"], name="f")], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])])
    p = tmp_path / "s.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(p))
    with pytest.raises(FrontendError, match="input_shape"):
        import_onnx(p)
    assert import_onnx(p, input_shape=(3, 4)).node("x").input_type == (3, 4)


def test_corrupt_and_missing_files(ir_graph, tmp_path):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(b"\x08\x01garbage\xff\xfe not a protobuf")
    with pytest.raises(FrontendError, match="garbage.onnx"):
        import_onnx(p)
    p.write_bytes(b"")
    with pytest.raises(FrontendError, match="garbage.onnx"):
        import_onnx(p)
    good = tmp_path / "good.onnx"
    export_onnx(ir_graph, good)
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(FrontendError, match="trunc.onnx"):
        import_onnx(trunc)
    with pytest.raises(FrontendError, match="not found"):
        import_onnx(tmp_path / "nope.onnx")


def test_export_rejects_lowered_graph(helpers):
    from compiler.passes import fold_bn, lower
    g = lower(fold_bn(helpers.make_ir_graph()))
    with pytest.raises(FrontendError, match="operator graphs"):
        to_onnx_model(g)


def test_repeated_add_operand(tmp_path, helpers):
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
             helper.make_node("Gemm", ["x", "w"], ["k"], name="fc2", transB=1),
             helper.make_node("Sum", ["h", "h", "k"], ["s"], name="sum"),
             helper.make_node("Add", ["s", "s"], ["y"], name="dbl")]
    p = tmp_path / "rep.onnx"
    onnx.save(_model(nodes, [w], in_shape=(4,)), str(p))
    g = import_onnx(p)
    assert type(g.node("dbl")).__name__ == "Scale" and float(g.node("dbl").scale) == 2.0
    assert g.inputs("sum") == ["fc_x2", "fc2"] and float(g.node("fc_x2").scale) == 2.0
    x = np.random.default_rng(0).random((1, 2, 4))
    out, _ = helpers.eval_graph(g, x)
    np.testing.assert_allclose(out[0], 6 * x[0])


def test_bundled_example_model(helpers):
    """examples/digits/model.onnx imports and keeps its float accuracy (>= 95 %)."""
    from pathlib import Path

    from frontends.datasets import load_dataset

    path = Path(__file__).resolve().parents[2] / "examples" / "digits" / "model.onnx"
    if not path.is_file():
        pytest.skip("examples/digits/model.onnx not built (run examples/digits/train.py)")
    g = load_model(path)
    assert g.node("input").input_type == (1, 8, 8) and g.node("output").output_type == (10,)
    ds = load_dataset("digits", "test")
    out, v = helpers.eval_graph(g, np.broadcast_to(ds.x, (8,) + ds.x.shape))
    th = float(g.node(g.inputs("output")[0]).v_threshold)
    scores = out.sum(0) * th + v
    assert np.mean(scores.argmax(1) == ds.y) >= 0.95
