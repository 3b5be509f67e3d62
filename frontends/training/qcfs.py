"""QCFS ANN training for low-latency ANN -> SNN conversion (stage: training; algorithms.md 6.1).

Bu et al. (ICLR 2022), "Optimal ANN-SNN conversion for high-accuracy and ultra-low-latency SNNs":
replace every ReLU by the quantization-clip-floor-shift activation

    h(z) = lam * clip(floor(z * L / lam + 1/2) / L, 0, 1)       (floor: straight-through)

with a trainable threshold ``lam`` per layer (init 8.0, as in the reference code). An IF
neuron with threshold lam, soft reset and v_init = lam/2 fed T steps of the constant input z
emits ``lam * clip(floor(z T / lam + 1/2), 0, T) / T`` per step on average: exactly h with
L = T, which is why a QCFS network converts with small error at low T.

Conversion path: :func:`to_clip` replaces each QCFS by ``clamp(x, 0, lam)`` (ONNX ``Clip``),
:func:`export_ann` writes a standard ONNX CNN, and snnc's ANN importer
(``frontends.onnx.import_ann`` + ``frontends.onnx.convert``) maps every
``Clip(0, lam)`` to ``IF(v_threshold=lam, soft reset, v_init=lam/2)``: the Clip bound *is* the
QCFS threshold, so no calibration data is needed for those layers.

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), QCFS(L=4), nn.AvgPool2d(2), ...)
    Trainer(model, TrainConfig(epochs=30), ann=True).fit(x, y)     # plain ANN training
    export_ann(model, "ann.onnx", input_shape=(1, 8, 8))
    snnc compile ann.onnx --timesteps 4 -o chip.bin                  # (or compile_model)
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):
        return g


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (replaces ReLU).

    Args:
        L: quantization levels (the SNN latency it is tuned for).
        lam: initial threshold lambda (trainable unless ``trainable=False``).
        shift: phi, 1/2 in QCFS (0 gives the plain clip-floor activation).
    """

    def __init__(self, L: int = 8, lam: float = 8.0, trainable: bool = True, shift: float = 0.5):
        super().__init__()
        if L < 1:
            raise ValueError(f"L must be >= 1, got {L}")
        self.L = int(L)
        self.shift = float(shift)
        t = torch.tensor(float(lam))
        if trainable:
            self.lam = nn.Parameter(t)
        else:
            self.register_buffer("lam", t)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lam = self.lam
        x = torch.clamp(z / lam, 0, 1)
        x = _FloorSTE.apply(x * self.L + self.shift) / self.L
        return x * lam

    def extra_repr(self) -> str:
        return f"L={self.L}, lam={float(self.lam):.4g}, shift={self.shift}"


class ClipAct(nn.Module):
    """``clamp(x, 0, upper)``: the export form of QCFS (ONNX Clip; the converter's threshold)."""

    def __init__(self, upper: float):
        super().__init__()
        self.upper = float(upper)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, self.upper)

    def extra_repr(self) -> str:
        return f"upper={self.upper:.6g}"


def to_clip(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`QCFS` replaced by ``ClipAct(lam)``."""
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, QCFS):
            parent, _, leaf = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, leaf, ClipAct(abs(float(m.lam.detach()))))
    return model


def thresholds(model: nn.Module) -> dict[str, float]:
    """The trained lambda of every QCFS layer."""
    return {n: float(m.lam.detach()) for n, m in model.named_modules() if isinstance(m, QCFS)}


def export_ann(model: nn.Module, path, input_shape, opset: int = 17) -> Path:
    """Write ``model`` (QCFS replaced by Clip) as a standard ONNX CNN for snnc's converter.

    Uses ``torch.onnx.export(..., dynamo=False)`` in eval mode with a dynamic batch dim; the
    input is named ``input``.
    """
    path = Path(path)
    m = to_clip(model).cpu().eval()
    x = torch.zeros((1,) + tuple(int(s) for s in input_shape))
    torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], opset_version=opset,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


__all__ = ["QCFS", "ClipAct", "to_clip", "thresholds", "export_ann"]
