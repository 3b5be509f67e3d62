"""Native PyTorch SNNs: IF/LIF modules with surrogate gradients and whole-model helpers.

Stage: training. ``to_graph`` (in :mod:`frontends.native.convert`) turns a model built from these
modules and standard layers into the graph IR. Typical loop::

    from frontends import native
    scores = native.run_scores(model, native.direct(x, T=8))   # [B, classes]
    loss = F.cross_entropy(scores, y)
"""

from frontends.native import functional
from frontends.native.functional import direct, neurons, readout, reset, run, run_scores
from frontends.native.layers import IF, LIF, spike, surrogate_grad


def to_graph(module, input_shape):
    """Convert ``module`` to a graph IR (see :func:`frontends.native.convert.to_graph`)."""
    from frontends.native.convert import to_graph as _to_graph
    return _to_graph(module, input_shape)


__all__ = ["IF", "LIF", "spike", "surrogate_grad", "functional", "reset", "run", "run_scores",
           "readout", "neurons", "direct", "to_graph"]
