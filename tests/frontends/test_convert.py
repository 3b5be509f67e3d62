"""nn.Module -> graph IR via torch.fx: structure, names, and step-by-step float equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import (
    IF,
    LIF,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Input,
    Linear,
    Output,
    Scale,
    verify,
)
from frontends import load_model, native
from frontends.native.convert import to_graph


def _kinds(g):
    return {name: type(node) for name, node in g.items()}


def _torch_run(model, x_seq):
    """(output spikes [T, B, n], score [B, n]) of a native model on x_seq [T, B, ...]."""
    with torch.no_grad():
        out = native.run(model, torch.from_numpy(x_seq))
        nrn = native.readout(model)
        return out.reshape(out.shape[0], out.shape[1], -1).numpy(), nrn.v.reshape(
            out.shape[1], -1).numpy()


def _assert_equivalent(model, g, x_seq, helpers):
    s_t, v_t = _torch_run(model, x_seq)
    s_g, v_g = helpers.eval_graph(g, x_seq)
    np.testing.assert_array_equal(s_t, s_g)
    np.testing.assert_allclose(v_t, v_g, rtol=1e-9, atol=1e-9)
    assert s_t.sum() > 0


def test_residual_net_structure(residual_net):
    g = to_graph(residual_net, (2, 8, 8))
    verify(g, "imported")
    k = _kinds(g)
    assert k["input"] is Input and k["output"] is Output
    assert k["conv1"] is Conv2d and k["bn1"] is BatchNorm and k["sn1"] is IF
    assert k["conv2"] is Conv2d and k["conv3"] is Conv2d and k["pool"] is AvgPool2d
    assert k["fc"] is Affine and k["out"] is IF
    assert k["add"] is Add and k["add_1"] is Add and k["flatten"] is Flatten
    assert "drop" not in g                       # Dropout is bypassed
    c1 = g.node("conv1")
    assert c1.stride == (2, 1) and c1.padding == (1, 0) and c1.weight.shape == (4, 2, 3, 2)
    np.testing.assert_array_equal(c1.bias, residual_net.conv1.bias.detach().numpy())
    np.testing.assert_array_equal(g.node("conv2").bias, np.zeros(4))   # bias=False -> zeros
    assert g.node("sn2").reset_mode == "hard" and float(g.node("sn2").v_reset) == pytest.approx(0.1)
    assert g.node("sn3").neg_floor == 0.5
    assert g.inputs("add_1") == ["add", "sn1"]
    assert g.node("output").output_type == (5,)
    assert g.attrs["dt"] == 1.0 and g.node("sn1").dt == 1.0


def test_residual_net_equivalent(residual_net, helpers):
    g = to_graph(residual_net, (2, 8, 8))
    x = np.random.default_rng(0).random((6, 3, 2, 8, 8))
    _assert_equivalent(residual_net, g, x, helpers)


def test_lif_and_leak_hints(helpers):
    torch.manual_seed(0)
    model = helpers.randomize_bn(helpers.ResidualNet(lif=True)).double()
    model.sn1.leak = "mult"
    g = to_graph(model, (2, 8, 8))
    assert isinstance(g.node("sn1"), LIF) and float(g.node("sn1").beta) == 0.75
    assert g.attrs["leak_hints"] == {"sn1": "mult"}
    _assert_equivalent(model, g, np.random.default_rng(1).random((5, 2, 2, 8, 8)), helpers)


def test_sequential_names_and_equivalence(seq_net, helpers):
    g = to_graph(seq_net, (1, 8, 8))
    assert [n for n in g.topo_order()] == ["input"] + [str(i) for i in range(9)] + ["output"]
    nested = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), native.IF())
    g2 = to_graph(nested, (1, 8, 8))
    assert set(g2.topo_order()) == {"input", "0_0", "0_1", "1", "output"}
    _assert_equivalent(seq_net, g, np.random.default_rng(2).random((4, 3, 1, 8, 8)), helpers)


class _Functional(nn.Module):
    def __init__(self, flatten: str):
        super().__init__()
        self.flatten = flatten
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1, dilation=1, groups=1)
        self.sn = native.IF(v_threshold=0.5)
        self.bn = nn.BatchNorm1d(32)
        self.fc = nn.Linear(32, 3, bias=False)
        self.id = nn.Identity()
        self.out = native.IF()

    def forward(self, x):
        y = self.sn(self.conv(x)) * 0.5
        if self.flatten == "view":
            y = y.view(y.size(0), -1)
        elif self.flatten == "method":
            y = y.flatten(1)
        elif self.flatten == "reshape":
            y = y.reshape(y.shape[0], -1)
        else:
            y = torch.flatten(y, start_dim=1)
        return self.out(self.fc(self.id(self.bn(y))))


@pytest.mark.parametrize("flatten", ["view", "method", "reshape", "function"])
def test_functional_ops(flatten, helpers):
    torch.manual_seed(0)
    model = helpers.loud(helpers.randomize_bn(_Functional(flatten)).double(), 2.0)
    model.out.v_threshold.fill_(0.25)
    g = to_graph(model, (1, 8, 8))
    kinds = set(_kinds(g).values())
    assert {Scale, Flatten, BatchNorm, Linear} <= kinds
    assert "id" not in g
    _assert_equivalent(model, g, np.random.default_rng(3).random((4, 2, 1, 8, 8)), helpers)


def test_grouped_dilated_conv_equivalent(helpers):
    torch.manual_seed(0)
    model = helpers.loud(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2), native.IF(v_threshold=0.3),
        nn.Conv2d(4, 4, (1, 3), stride=(1, 2), groups=4), native.IF(v_threshold=0.3),
        nn.Flatten(), nn.Linear(48, 2), native.IF(v_threshold=0.2)).double())
    with torch.no_grad():
        model[5].weight.abs_()       # make the output layer fire
    g = to_graph(model, (2, 6, 6))
    assert g.node("0").groups == 2 and g.node("0").dilation == (2, 2)
    _assert_equivalent(model, g, np.random.default_rng(4).random((4, 2, 2, 6, 6)), helpers)


def test_linear_on_unflattened_input_is_rejected():
    # nn.Linear on (B, 4, 36) acts on the last dim; the IR's Affine flattens everything
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), native.IF(), nn.Flatten(2),
                          nn.Linear(36, 2))
    with pytest.raises(FrontendError, match="'3'") as e:
        to_graph(model, (2, 6, 6))
    assert "nn.Flatten()" in e.value.hint


def test_unsupported_module_names_node():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())
    with pytest.raises(UnsupportedOpError) as e:
        to_graph(model, (1, 8, 8))
    assert e.value.op == "ReLU" and e.value.node_name == "1"
    assert e.value.source == "torch module"
    assert "IF/LIF" in e.value.hint
    with pytest.raises(UnsupportedOpError, match="MaxPool2d") as e:
        to_graph(nn.Sequential(nn.MaxPool2d(2)), (1, 8, 8))
    assert "AvgPool2d" in e.value.hint


def test_unsupported_function_names_node():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return F.relu(self.fc(x))

    with pytest.raises(UnsupportedOpError) as e:
        to_graph(M(), (4,))
    assert e.value.node_name == "relu" and "relu" in str(e.value)


@pytest.mark.parametrize("mod", [nn.AvgPool2d(2, ceil_mode=True),
                                 nn.AvgPool2d(3, padding=1, count_include_pad=False),
                                 nn.BatchNorm2d(1, track_running_stats=False),
                                 nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")])
def test_unsupported_module_options(mod):
    with pytest.raises(UnsupportedOpError):
        to_graph(nn.Sequential(mod), (1, 8, 8))


def test_untraceable_and_missing_shape():
    class Dyn(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(FrontendError, match="trace"):
        to_graph(Dyn(), (1, 4, 4))
    with pytest.raises(FrontendError, match="input_shape"):
        to_graph(nn.Sequential(nn.Flatten()), None)


def test_load_model_dispatch(seq_net, tmp_path):
    g = load_model(seq_net, input_shape=(1, 8, 8))
    assert g.node("output").output_type == (10,)
    assert load_model(g) is g
    with pytest.raises(FrontendError, match="pickled"):
        load_model(tmp_path / "model.pt")
    (tmp_path / "m.nir").write_bytes(b"x")
    with pytest.raises(FrontendError, match="not a readable NIR file"):
        load_model(tmp_path / "m.nir")
    with pytest.raises(FrontendError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(FrontendError, match="unknown model format"):
        load_model(tmp_path / "model.h5")
    with pytest.raises(FrontendError):
        load_model(42)


def test_self_add_becomes_scale(helpers):
    class Double(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.sn = native.IF(v_threshold=0.5)

        def forward(self, x):
            h = self.fc(x)
            return self.sn(h + h)       # one edge cannot carry two operands

    torch.manual_seed(0)
    model = Double().double()
    g = to_graph(model, (3,))
    assert isinstance(g.node("add"), Scale) and float(g.node("add").scale) == 2.0
    _assert_equivalent(model, g, np.random.default_rng(5).random((6, 2, 3)) + 0.5, helpers)
