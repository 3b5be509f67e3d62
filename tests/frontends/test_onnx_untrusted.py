"""Untrusted ONNX files (issue 10): attributes checked against the weights and the op semantics.

Each malformed file must give a FrontendError naming the node / attribute / tensor (never a
traceback from numpy or onnx), and external data must stay inside the model's folder.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import FrontendError, SnnError
from frontends import load_model
from frontends.onnx import export_onnx, import_ann, import_onnx, to_onnx_model


def _cnn(conv_attrs=None, pool_attrs=None, w=None, opset=17, extra_inits=()):
    """x [N,1,6,6] -> Conv(w) -> Relu -> AveragePool -> Flatten -> Gemm -> y."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (2, 1, 3, 3)).astype(np.float32) if w is None else w
    ca = dict(kernel_shape=[3, 3]) | (conv_attrs or {})
    pa = dict(kernel_shape=[2, 2], strides=[2, 2]) | (pool_attrs or {})
    inits = [numpy_helper.from_array(w, "conv.weight"),
             numpy_helper.from_array(np.zeros(2, np.float32), "conv.bias"),
             numpy_helper.from_array(rng.normal(0, 0.5, (3, 8)).astype(np.float32), "fc.weight"),
             *extra_inits]
    nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="conv", **ca),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("AveragePool", ["r"], ["p"], name="pool", **pa),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "fc.weight"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 1, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _save(m, tmp_path, name="m.onnx"):
    p = tmp_path / name
    p.write_bytes(m.SerializeToString())
    return p


def _refused(p, *words):
    with pytest.raises(FrontendError) as e:
        import_ann(p)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_valid_model_imports(tmp_path):
    ann = import_ann(_save(_cnn(), tmp_path))
    assert ann.graph.node("conv").kind == "Conv2d"


@pytest.mark.parametrize("attrs,words", [
    (dict(dilations=[0, 0]), ["conv", "dilations"]),
    (dict(strides=[0, 1]), ["conv", "strides"]),
    (dict(kernel_shape=[2, 2]), ["conv", "kernel_shape", "conv.weight"]),
    (dict(pads=[-1, 0, -1, 0]), ["conv", "pads"]),
    (dict(group=3), ["conv", "group"]),
])
def test_conv_attributes_checked(tmp_path, attrs, words):
    m = _cnn(conv_attrs=attrs)
    _refused(_save(m, tmp_path), *words)


@pytest.mark.parametrize("attrs,words", [
    (dict(kernel_shape=[0, 0]), ["pool", "kernel_shape"]),
    (dict(strides=[0, 0]), ["pool", "strides"]),
    (dict(pads=[2, 2, 2, 2]), ["pool", "pads", "kernel"]),
])
def test_pool_attributes_checked(tmp_path, attrs, words):
    _refused(_save(_cnn(pool_attrs=attrs), tmp_path), *words)


def test_opset_999_refused(tmp_path):
    msg = _refused(_save(_cnn(opset=999), tmp_path), "999")
    assert "opset" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_weights_named(tmp_path, bad):
    w = np.full((2, 1, 3, 3), 0.1, np.float32)
    w[1, 0, 2, 2] = bad
    _refused(_save(_cnn(w=w), tmp_path), "conv.weight", "NaN/Inf")


def test_string_initializer_refused(tmp_path):
    m = _cnn()
    m.graph.initializer[2].CopyFrom(helper.make_tensor("fc.weight", TensorProto.STRING, [3, 8],
                                                       [b"a"] * 24))
    msg = _refused(_save(m, tmp_path), "fc.weight")
    assert "element type" in msg or "cannot be read" in msg


@pytest.mark.parametrize("dt", [0.0, math.nan, -1.0])
def test_snn_bad_dt_refused(tmp_path, dt, ir_graph):
    m = to_onnx_model(ir_graph)
    for n in m.graph.node:
        if n.domain == "ai.snnc" and n.op_type in ("IF", "LIF"):
            for a in list(n.attribute):
                if a.name == "dt":
                    n.attribute.remove(a)
            n.attribute.append(helper.make_attribute("dt", dt))
            n.doc_string = ""
            node_name = n.name
            break
    with pytest.raises(FrontendError) as e:
        import_onnx(_save(m, tmp_path))
    assert node_name in str(e.value) and "dt" in str(e.value)


def test_external_data_outside_folder_refused(tmp_path):
    m = _cnn()
    t = m.graph.initializer[2]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "96")):
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "secret.bin").write_bytes(b"\0" * 96)
    d = tmp_path / "model"
    d.mkdir()
    p = _save(m, d)
    with pytest.raises(FrontendError) as e:
        load_model(p)
    assert "fc.weight" in str(e.value) and "outside" in str(e.value)
    t.external_data[0].value = str(tmp_path / "secret.bin")     # absolute path
    with pytest.raises(FrontendError, match="outside"):
        load_model(_save(m, d))


def test_external_data_inside_folder_loads(tmp_path):
    m = _cnn()
    w = numpy_helper.to_array(m.graph.initializer[0])
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").is_file()
    ann = import_ann(p)
    np.testing.assert_array_equal(ann.graph.node("conv").weight, w)


def test_errors_are_snn_errors_not_tracebacks(tmp_path):
    # a truncated file and a wrong Reshape are user errors too
    p = _save(_cnn(), tmp_path)
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(SnnError):
        load_model(p)


def test_export_roundtrip_still_exact(tmp_path, ir_graph):
    p = tmp_path / "s.onnx"
    export_onnx(ir_graph, p)
    assert import_onnx(p).topo_order() == ir_graph.topo_order()
