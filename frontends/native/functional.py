"""Whole-model helpers for native SNNs: reset state, run a sequence, read the output scores.

Stage: training (PyTorch). Output decoding convention (the same as ``compiler/reference.py``):
the model's last neuron module is the output layer; its *score* per class is

    score = count * v_threshold + v_final

which for a soft-reset IF without floor equals ``v_init + sum_t z_t`` (the integrated input), so
a cross-entropy loss on it has a gradient that does not depend on the surrogate.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from frontends.native.layers import NEURON_MODULES


def neurons(model: nn.Module) -> list[nn.Module]:
    """All IF/LIF modules of ``model`` in registration order."""
    return [m for m in model.modules() if isinstance(m, NEURON_MODULES)]


def reset(model: nn.Module) -> None:
    """Reset the membrane of every IF/LIF module in ``model`` (call before each new sequence)."""
    for m in neurons(model):
        m.reset_state()


def readout(model: nn.Module) -> nn.Module:
    """The output neuron module: the last IF/LIF registered in ``model``.

    Raises:
        ValueError: the model has no IF/LIF module.
    """
    ns = neurons(model)
    if not ns:
        raise ValueError("model has no IF/LIF module to read out; end it with an IF output layer")
    return ns[-1]


def run(model: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """Reset ``model``, then step it over ``x_seq`` [T, B, ...]; returns outputs [T, B, ...]."""
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...], got shape {tuple(x_seq.shape)}")
    reset(model)
    return torch.stack([model(x_seq[t]) for t in range(x_seq.shape[0])])


def run_scores(model: nn.Module, x_seq: torch.Tensor, output: nn.Module | None = None
               ) -> torch.Tensor:
    """Run ``model`` on ``x_seq`` [T, B, ...] and return the output scores [B, classes].

    ``score = count * v_threshold + v_final`` of the output neuron module (``output`` or
    :func:`readout`), whose spikes must be the model's return value.
    """
    out_mod = output if output is not None else readout(model)
    s = run(model, x_seq)
    counts = s.sum(0)
    th = out_mod.v_threshold.to(counts)
    if out_mod.v is None or out_mod.v.shape != counts.shape:
        got = None if out_mod.v is None else tuple(out_mod.v.shape)
        raise ValueError(f"the output neuron's membrane {got} does not match the model output "
                         f"{tuple(counts.shape)}; the model must end with its output IF/LIF module")
    return counts * th + out_mod.v


def direct(x: torch.Tensor, T: int) -> torch.Tensor:
    """Direct encoding: the same input at every step, [B, ...] -> [T, B, ...] (a view)."""
    return x.unsqueeze(0).expand((int(T),) + tuple(x.shape))


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run a block with ``n`` torch intra-op threads (restored after). The twin's tensors are
    small: on a loaded 2-core machine one thread is ~30x faster than two spinning ones."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
