"""Seed-width VGG5 / VGG9 (CIFAR-10 widths: conv 64..256, FC 1024) compile onto the board the
compiler asks for (--chips auto) at 4 and 8 bits and run bit-exact. The input is reduced
(16 x 16 for VGG5, 8 x 8 for VGG9) so the suite stays fast; the full 32 x 32 compile figures
are in docs/benchmarks.md."""

import numpy as np
import pytest

from benchmarks.networks import SEED_FC, VGG5_SEED_CHANNELS, vgg5_seed, vgg9_seed, vgg_native
from compiler import compile_model
from compiler.chip import PICORE64
from runtime.cli.common import check_bit_exact
from runtime.engines import run_payloads
from runtime.image import from_sections


@pytest.mark.slow
@pytest.mark.parametrize("net,hw", [(vgg5_seed, 16), (vgg9_seed, 8)])
@pytest.mark.parametrize("bits", [4, 8])
def test_seed_vgg_compiles_on_auto_board_and_runs_bit_exact(net, hw, bits):
    prog = compile_model(net(hw=hw, bits=bits), PICORE64, bits=bits, chips="auto",
                         keep_float=False)
    cores = prog.graph.attrs["cores"]
    part = prog.graph.attrs["partition"]
    assert prog.graph.attrs["chips"] == -(-len(cores) // 64) > 1
    assert max(c.lcn for c in cores) >= 2            # the composed pools need fan-in extension
    assert sum(v["cores"] for v in part.values()) == len(cores)
    img = from_sections(prog.sections(), PICORE64.digest())
    p = np.random.default_rng(bits).integers(0, 256, (2, 2, img.n_inputs)).astype(np.uint8)
    r = run_payloads(img, p, record=True)
    ok, first = check_bit_exact(img, p, r)
    assert ok, first
    assert r.counts_all.sum() > 0


def test_native_vgg_matches_the_benchmark_graph(tmp_path):
    """The trainable native-layer VGG5 converts to the same layer structure as vgg5_seed and
    exports to ONNX (the form `snnc compile` reads)."""
    from compiler.passes import fold_bn, lower
    from frontends import load_model
    from frontends.native import to_graph
    from frontends.onnx import export_onnx

    m = vgg_native(VGG5_SEED_CHANNELS, fc=SEED_FC, hw=16).eval()
    g = to_graph(m, (3, 16, 16))
    a, b = lower(fold_bn(g)), lower(fold_bn(vgg5_seed(hw=16)))
    assert [a.node(n).shape for n in a.layers] == [b.node(n).shape for n in b.layers]
    assert [a.node(n).inputs[0][1].shape for n in a.layers] == [
        b.node(n).inputs[0][1].shape for n in b.layers]
    export_onnx(g, tmp_path / "vgg5.onnx")
    g2 = load_model(tmp_path / "vgg5.onnx")
    assert len(lower(fold_bn(g2)).layers) == len(a.layers)
