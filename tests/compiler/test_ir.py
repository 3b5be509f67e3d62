import numpy as np
import pytest
import torch
from factories import make_convnet, make_mlp

from compiler.errors import IRVerificationError
from compiler.ir import IF, Affine, Conv2d, Graph, Input, Output, dump, verify
from compiler.ir.linear import infer_shapes, op_matrix


def test_node_arrays_are_frozen():
    a = Affine(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError):
        a.weight[0, 0] = 5


def test_verify_and_shapes():
    g = make_convnet(residual=True)
    verify(g, "imported")
    shapes = infer_shapes(g)
    assert shapes["conv1"] == (4, 8, 4) and shapes["pool1"] == (4, 4, 2)


def test_bad_graph_names_node():
    g = Graph()
    x = g.add("input", Input((5,)))
    x = g.add("fc", Affine(np.ones((3, 4)), np.zeros(3)), [x])
    x = g.add("n", IF(v_threshold=1.0), [x])
    g.add("output", Output(), [x])
    with pytest.raises(IRVerificationError, match="'fc'.*input size 5"):
        verify(g, "imported")


@pytest.mark.parametrize("stride,pad,dil,groups", [((1, 1), (0, 0), (1, 1), 1),
                                                    ((2, 1), (1, 2), (1, 1), 1),
                                                    ((1, 2), (1, 0), (2, 1), 2)])
def test_conv_matrix_matches_torch(stride, pad, dil, groups):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 4 // groups, 3, 2))
    b = rng.normal(size=4)
    x = rng.normal(size=(4, 7, 6))
    node = Conv2d(w, b, stride, pad, dil, groups)
    g = Graph()
    g.add("input", Input(x.shape))
    g.add("c", node, ["input"])
    shape = infer_shapes(g)["c"]
    m, bias = op_matrix(node, x.shape, shape)
    got = x.reshape(-1) @ m + bias
    ref = torch.nn.functional.conv2d(torch.tensor(x)[None], torch.tensor(w), torch.tensor(b),
                                     stride, pad, dil, groups)[0].numpy()
    assert ref.shape == shape
    np.testing.assert_allclose(got, ref.reshape(-1), atol=1e-10)


def test_printer_is_stable():
    a, b = dump(make_mlp(seed=1)), dump(make_mlp(seed=1))
    assert a == b and "%fc0 = Affine(%input)" in a
    assert dump(make_mlp(seed=2)) != a
