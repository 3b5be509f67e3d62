"""Integer interpreter of a traced native model: integer weights, sum pools, the chip's integer
neuron (stage: training); equal to compiler.reference.run_int bit for bit."""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from frontends.native.layers import NEURON_MODULES
from frontends.training.qat.analysis import _PASS, INPUT_SCALE, SOURCE  # noqa: F401


def _reset(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, NEURON_MODULES):
            m.reset_state()


class _IntInterp(fx.Interpreter):
    """Runs the traced model with integer weights, sum pools and the chip's integer neuron."""

    def __init__(self, gm, mods, weights, regs, state, cnt, vlo, vhi):
        super().__init__(gm, garbage_collect_values=True)
        self.mods_, self.weights, self.regs = mods, weights, regs
        self.state, self.cnt, self.vlo, self.vhi = state, cnt, vlo, vhi

    def call_module(self, target, args, kwargs):
        m = self.mods_[target]
        x = args[0]
        if target in self.weights:
            w = self.weights[target]
            if isinstance(m, nn.Conv2d):
                return F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups)
            return F.linear(x, w)
        if type(m) is nn.AvgPool2d:
            return F.avg_pool2d(x, m.kernel_size, m.stride or m.kernel_size, m.padding, False,
                                True, divisor_override=1)
        if isinstance(m, NEURON_MODULES):
            return self._neuron(target, x)
        if isinstance(m, _PASS):
            return x
        return m(x)

    def call_function(self, target, args, kwargs):
        if target in (operator.mul, operator.imul, torch.mul):
            return next(a for a in args if isinstance(a, torch.Tensor))
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target in ("mul", "mul_"):
            return args[0]
        return super().call_method(target, args, kwargs)

    def _neuron(self, name, x):
        r = self.regs[name]
        B = x.shape[0]
        cur = x.reshape(B, -1)
        v = self.state[name]
        lm = r["lm"]
        if np.any(lm == 2):
            sel = torch.as_tensor(lm == 2, device=v.device)
            k = torch.exp2(r["sh"])
            v = torch.where(sel, v - torch.floor(v / k), v)
        if np.any(lm == 3):
            sel = torch.as_tensor(lm == 3, device=v.device)
            d = 4096.0 - r["lk"]
            v = torch.where(sel, torch.sign(v) * torch.floor(v.abs() * d / 4096.0), v)
        v = torch.clamp(v + cur + r["b"], self.vlo, self.vhi)
        s = v >= r["th"]
        if r["reset"] == "hard":
            v = torch.where(s, r["vr"].expand_as(v), v)
        elif r["reset"] == "soft":
            v = torch.where(s, v - r["th"], v)
        if r["floor"]:
            v = torch.where(v < -r["thn"], -r["thn"].expand_as(v), v)
        self.state[name] = v
        sf = s.to(torch.float64)
        self.cnt[name] += sf
        return sf.reshape(x.shape)
