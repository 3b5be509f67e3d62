"""IF and LIF torch modules with surrogate gradients: exactly the IR's discrete-time neurons.

Stage: training (PyTorch). Each module is *stateful in step mode*: one call is one time step on
input current ``z`` [B, ...]; the membrane ``v`` persists between calls until
:meth:`reset_state` (or :func:`frontends.native.functional.reset` on the whole model). Per step,
as in ``compiler/ir/nodes.py``:

    IF : v <- v + z            LIF: v <- beta * v + z        (leak, then integrate)
    s  = v >= v_threshold      (Heaviside forward, surrogate derivative backward)
    reset 'soft': v <- v - v_threshold * s ; 'hard': v <- v_reset where s ; 'none': unchanged
    neg_floor (optional, >= 0): v <- max(v, -neg_floor)

The step returns the spikes ``s`` (value 1). ``frontends.native.convert.to_graph`` reads the
parameters below into IR ``IF``/``LIF`` nodes unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SURROGATES = ("atan", "sigmoid", "triangle")
DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0, "triangle": 1.0}
RESETS = ("soft", "hard", "none")
LEAKS = ("shift", "mult")


def surrogate_grad(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """d spike / d x at ``x = v - v_threshold`` for the named surrogate.

    atan:     alpha / 2 / (1 + (pi/2 * alpha * x)^2)        (SpikingJelly's ATan)
    sigmoid:  alpha * sig(alpha x) * (1 - sig(alpha x))
    triangle: alpha * max(0, 1 - alpha * |x|)
    """
    if surrogate == "atan":
        return alpha / 2.0 / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)
    if surrogate == "sigmoid":
        sg = torch.sigmoid(alpha * x)
        return alpha * sg * (1.0 - sg)
    if surrogate == "triangle":
        return alpha * torch.clamp(1.0 - alpha * x.abs(), min=0.0)
    raise ValueError(f"unknown surrogate '{surrogate}', expected one of {SURROGATES}")


class SpikeFn(torch.autograd.Function):
    """Heaviside ``x >= 0`` forward, surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * surrogate_grad(x, ctx.surrogate, ctx.alpha), None, None


def spike(x: torch.Tensor, surrogate: str = "atan", alpha: float | None = None) -> torch.Tensor:
    """Spike function on ``x = v - v_threshold`` (differentiable through the surrogate)."""
    return SpikeFn.apply(x, surrogate, DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha))


def _as_buffer(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{name} must be finite, got {value}")
    return t


class IF(nn.Module):
    """Integrate-and-fire neuron (one time step per call, membrane kept in ``self.v``).

    Args:
        v_threshold: firing threshold (> 0); a float or a tensor broadcastable to the input
            (e.g. per channel shaped [C, 1, 1]).
        reset: 'soft' (subtract threshold), 'hard' (set to ``v_reset``) or 'none'.
        v_reset: membrane after a hard reset.
        v_init: membrane at the start of every sequence.
        neg_floor: if set (>= 0), the membrane is floored at ``-neg_floor`` after reset.
        surrogate: 'atan' (default), 'sigmoid' or 'triangle'.
        alpha: surrogate sharpness (default per surrogate: 2, 4, 1).
        detach_reset: stop gradients through the reset term (a common training trick).
    """

    def __init__(self, v_threshold=1.0, reset: str = "soft", v_reset=0.0, v_init=0.0,
                 neg_floor: float | None = None, surrogate: str = "atan",
                 alpha: float | None = None, detach_reset: bool = False):
        super().__init__()
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got '{reset}'")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got '{surrogate}'")
        if neg_floor is not None and not (neg_floor >= 0 and math.isfinite(neg_floor)):
            raise ValueError(f"neg_floor must be a finite value >= 0 or None, got {neg_floor}")
        self.register_buffer("v_threshold", _as_buffer(v_threshold, "v_threshold"))
        if torch.any(self.v_threshold <= 0):
            raise ValueError(f"v_threshold must be > 0, got {v_threshold}")
        self.register_buffer("v_reset", _as_buffer(v_reset, "v_reset"))
        self.register_buffer("v_init", _as_buffer(v_init, "v_init"))
        self.reset = reset
        self.neg_floor = None if neg_floor is None else float(neg_floor)
        self.surrogate = surrogate
        self.alpha = DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha)
        self.detach_reset = bool(detach_reset)
        self.v: torch.Tensor | None = None

    def reset_state(self) -> None:
        """Forget the membrane; the next call starts from ``v_init``."""
        self.v = None

    def _leak(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            v = torch.broadcast_to(self.v_init.to(z), z.shape)
        elif self.v.shape != z.shape:
            raise RuntimeError(f"{type(self).__name__}: input shape {tuple(z.shape)} differs from "
                               f"the stored membrane {tuple(self.v.shape)}; call "
                               "frontends.native.reset(model) before each new sequence")
        else:
            v = self.v
        v = self._leak(v) + z
        th = self.v_threshold.to(z)
        s = spike(v - th, self.surrogate, self.alpha)
        sr = s.detach() if self.detach_reset else s
        if self.reset == "soft":
            v = v - th * sr
        elif self.reset == "hard":
            v = sr * self.v_reset.to(z) + (1.0 - sr) * v
        if self.neg_floor is not None:
            v = torch.clamp(v, min=-self.neg_floor)
        self.v = v
        return s

    def extra_repr(self) -> str:
        th = self.v_threshold
        th = f"{th.item():g}" if th.numel() == 1 else f"tensor{list(th.shape)}"
        floor = "" if self.neg_floor is None else f", neg_floor={self.neg_floor:g}"
        return f"v_threshold={th}, reset='{self.reset}'{floor}, surrogate='{self.surrogate}'"


class LIF(IF):
    """Leaky integrate-and-fire: ``v <- beta * v + z`` (leak first), otherwise as :class:`IF`.

    Args:
        beta: decay per step in (0, 1], float or tensor (e.g. 0.875 = 1 - 2**-3, which the
            chip implements exactly as a shift leak).
        learnable: make ``beta`` an nn.Parameter (default: a fixed buffer).
        leak: hint for the compiler's leak implementation, 'shift' (beta = 1 - 2**-k) or
            'mult' (multiplicative decay); recorded in the graph as ``attrs['leak_hints']``.
        **kwargs: as :class:`IF`.
    """

    def __init__(self, beta=0.875, *args, learnable: bool = False, leak: str = "shift",
                 **kwargs):
        super().__init__(*args, **kwargs)
        if leak not in LEAKS:
            raise ValueError(f"leak must be one of {LEAKS}, got '{leak}'")
        b = _as_buffer(beta, "beta")
        if torch.any(b < 0) or torch.any(b > 1):
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if learnable:
            self.beta = nn.Parameter(b)
        else:
            self.register_buffer("beta", b)
        self.leak = leak

    def _leak(self, v: torch.Tensor) -> torch.Tensor:
        return self.beta.to(v) * v

    def extra_repr(self) -> str:
        b = self.beta
        b = f"{b.item():g}" if b.numel() == 1 else f"tensor{list(b.shape)}"
        return f"beta={b}, " + super().extra_repr() + f", leak='{self.leak}'"


NEURON_MODULES = (IF, LIF)
