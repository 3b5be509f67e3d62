"""The ONNX package split (issue 11): shims, and compile_model taking a Graph."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from compiler import compile_model as compile_graph
from compiler.errors import SnnError
from frontends import compile_model, load_model


@pytest.mark.parametrize("old,name", [("frontends.onnx_io", "import_ann"),
                                      ("frontends.convert_ann", "convert")])
def test_old_modules_are_deprecation_shims(old, name):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mod = importlib.import_module(old)
    assert any(issubclass(x.category, DeprecationWarning) and "frontends.onnx" in str(x.message)
               for x in w)
    import frontends.onnx as new
    assert getattr(mod, name) is getattr(new, name)


def test_compiler_takes_a_graph_frontends_load(tmp_path, ir_graph):
    from frontends.onnx import export_onnx
    with pytest.raises(SnnError, match="takes an operator Graph") as e:
        compile_graph(str(tmp_path / "m.onnx"))
    assert "frontends.load_model" in e.value.hint
    p = tmp_path / "m.onnx"
    export_onnx(ir_graph, p)
    prog = compile_model(p, timesteps=4)
    assert prog.source["path"] == "m.onnx" and len(prog.source["sha256"]) == 64
    same = compile_graph(load_model(p), timesteps=4)
    assert same.summary() == prog.summary()
