"""A VGG9-shaped CIFAR-10 network maps onto a multi-chip board; too few chips is a clear error."""

import numpy as np
import pytest

from benchmarks.networks import vgg9
from compiler.chip import PICORE64
from compiler.errors import CapacityError
from compiler.ir import verify
from compiler.passes import place, route
from frontends import compile_model
from runtime.engines.tick import run_payloads
from runtime.image import from_sections


@pytest.fixture(scope="module")
def partitioned():
    return compile_model(vgg9(), PICORE64, bits=4, stop_after="partition")


@pytest.mark.slow
def test_vgg9_needs_a_board_and_says_how_many(partitioned):
    n = len(partitioned.graph.attrs["cores"])
    need = -(-n // 64)
    assert need > 1
    with pytest.raises(CapacityError, match=f"needs {need} chip") as e:
        place(partitioned.graph, PICORE64, chips=need - 1)
    assert f"--chips {need}" in str(e.value)


@pytest.mark.slow
def test_vgg9_compiles_and_runs_on_board(partitioned):
    n = len(partitioned.graph.attrs["cores"])
    chips = -(-n // 64)
    g = route(place(partitioned.graph, PICORE64, chips=chips), PICORE64)
    verify(g, "routed")
    prog = partitioned
    prog.graph = g
    img = from_sections(prog.sections(), PICORE64.digest())
    assert img.chips == chips and len(set(img.a["core_chip"].tolist())) == chips
    rng = np.random.default_rng(0)
    p = rng.integers(0, 256, (2, 2, img.n_inputs)).astype(np.uint8)
    r = run_payloads(img, p)
    s = r.summary()
    assert s["interchip_hops_per_sample"] > 0 and r.latency_ticks == img.latency
