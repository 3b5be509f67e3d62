"""IntegerNet-style shift batch-norm for QAT (stage: training; algorithms.md section 7.1)."""

from __future__ import annotations

import torch
from torch import nn

INPUT_SCALE = 255.0
SOURCE = "QAT"
_PASS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)

# ==============================================================================================
# IntegerNet-style shift batch-norm
# ==============================================================================================
def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class ShiftBN(nn.Module):
    """Shift batch-norm (IntegerNet, algorithms.md section 7.1) in front of an IF/LIF.

    On the input current ``z`` [B, C, ...] (or [B, C]), measured in integer units ``u`` (the
    layer's quantization scale while a :class:`Quantizer` is active, else 1):

        bias  = round(mean(z/u) - beta * 2**shift)        (an integer)
        shift = max(0, round(log2(std(z/u))) + offset)     (an integer)
        y     = (z/u - bias) * 2**-shift

    batch statistics in training (running statistics, momentum ``momentum``, in evaluation),
    straight-through rounding. ``beta`` (learnable, per channel) is a bias in normalized units;
    there is no gamma (IntegerNet has no float BN). With the neuron threshold theta in normalized
    units, the integer neuron integrates ``z_int - bias`` against ``th_pos = round(theta *
    2**shift)``: every per-channel scaling is a power of two (``th_pos = 2**shift`` for theta = 1)
    and the bias an integer. :func:`export_model` folds it into the conv bias and the neuron's
    per-channel threshold/v_init/v_reset so the unchanged compiler reproduces those integers.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, offset: int = 0,
                 affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.offset = int(offset)
        self.eps = float(eps)
        self.beta = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("unit", torch.ones(()))

    def _view(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return t.reshape((1, -1) + (1,) * (z.dim() - 2))

    def integer_params(self, unit=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bias, shift) per channel from the running statistics (integers as float tensors)."""
        u = self.unit if unit is None else torch.as_tensor(unit, dtype=self.running_mean.dtype)
        u = u.reshape(-1) if u.numel() > 1 else u
        mean, std = self.running_mean / u, self.running_std / u
        shift = torch.clamp(torch.round(torch.log2(torch.clamp(std, min=self.eps))) + self.offset,
                            min=0)
        beta = self.beta.detach() if self.beta is not None else 0.0
        bias = torch.round(mean - beta * torch.exp2(shift))
        return bias, shift

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, z.dim()))
        u = self.unit.to(z)
        uc = u.reshape(-1) if u.numel() > 1 else u
        if self.training:
            mean = z.mean(dims)
            std = z.std(dims, unbiased=False)
            with torch.no_grad():
                if int(self.num_batches_tracked) == 0:
                    self.running_mean.copy_(mean)
                    self.running_std.copy_(std)
                else:
                    m = self.momentum
                    self.running_mean.mul_(1 - m).add_(m * mean)
                    self.running_std.mul_(1 - m).add_(m * std)
                self.num_batches_tracked += 1
        else:
            mean, std = self.running_mean, self.running_std
        shift = torch.clamp(_round_ste(torch.log2(torch.clamp(std.detach() / uc, min=self.eps)))
                            + self.offset, min=0)
        beta = self.beta if self.beta is not None else torch.zeros_like(mean)
        bias = _round_ste(mean / uc - beta * torch.exp2(shift))
        uu = u if u.numel() == 1 else self._view(u, z)
        return (z / uu - self._view(bias, z)) * self._view(torch.exp2(-shift), z)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, offset={self.offset}"
