"""Training objectives for hardware robustness (stage: training; algorithms.md section 3).

An objective computes one batch's loss and back-propagates it into the parameters' ``.grad``
(some need several forward/backward passes at perturbed weights, so they cannot just return a
loss). The :class:`~frontends.training.trainer.Trainer` calls ``objective(ctx)`` with a
:class:`StepContext` and then steps the optimizer. All perturbations are undone before the call
returns; under QAT (``Trainer(quantizer=...)``) they act on the quantized weights, and the
gradients still land on the float masters.

    Standard()                         cross-entropy on the output scores
    ForwardNoise(eta=0.3)              CE at theta + |theta| eta N (fresh N per batch, no gradient
                                       through the noise; Buechel's "forward noise" baseline)
    AdversarialWeights(zeta=0.1, ...)  Buechel et al. 2022: CE(theta) + beta KL(f(theta) ||
                                       f(theta*)), theta* from N_steps sign-PGA inside the box
                                       |theta* - theta| <= zeta |theta| + zeta_const
    AWP(gamma=0.1, ...)                Wu et al. 2020 as in the Buechel code: PGA on CE, then CE at
                                       theta + gamma (theta* - theta)
    InputAdversarial('fgsm'|'pgd')     adversarial *input* training (torchattacks conventions)

Which parameters are perturbed: ``include=None`` (default) is ``compiler.params.DEFAULT_PARAMS``
(weights and biases), the ONE definition that ``snnrun --mismatch`` / ``--worst-case`` /
``--certify`` also default to, so "train robust to X, evaluate under X" holds by construction;
any comma list or sequence of the kinds 'weights' (Conv/Linear weight), 'bias' (Conv/Linear
bias), 'threshold' (IF/LIF ``v_threshold``) and 'leak' (LIF ``beta``) selects the same set as
``--mismatch-params`` does on the chip (neuron constants are perturbed even when they are fixed
buffers, as the chip's registers are); ``'all'`` is every trainable tensor except normalization
layers (the Buechel code's choice). Training noise is drawn per element of the trained tensors:
the chip's ``--mismatch-granularity parameter``.

Reference defaults: :func:`from_preset` builds an objective with one reference's values
(``compiler.params.TRAINING_PRESETS``; e.g. Büchel's AWP uses 10 inner steps, ours 3).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from compiler.params import TRAINING_PRESETS, ParamsError, parse_params, torch_kind
from frontends.native.layers import NEURON_MODULES

_SYNAPSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class StepContext:
    """What an objective sees of one training step."""

    model: nn.Module
    x: torch.Tensor                          # images [B, ...] in [0, 1]
    y: torch.Tensor                          # labels [B]
    forward: Callable[[torch.Tensor], torch.Tensor]   # images -> scores [B, classes]
    loss_fn: Callable                        # (scores, y) -> scalar


def perturbable(model: nn.Module, include=None) -> list[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs weight perturbations act on (see the module docstring):
    ``include`` None (``compiler.params.DEFAULT_PARAMS``), kinds ('weights,bias', ['weights',
    'threshold'], ...) or 'all'. Tensors are parameters, or buffers for fixed neuron constants."""
    out = []
    if include == "all":
        for mname, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "ShiftBN":
                continue
            for pname, p in m.named_parameters(recurse=False):
                if p.requires_grad and p.is_floating_point():
                    out.append((f"{mname}.{pname}" if mname else pname, p))
        return out
    try:
        kinds = parse_params(include, "include")
    except ParamsError as e:
        raise ValueError(f"{e.message} (or 'all')") from e
    for mname, m in model.named_modules():
        role = "synapse" if isinstance(m, _SYNAPSES) else \
            "neuron" if isinstance(m, NEURON_MODULES) else None
        if role is None:
            continue
        tensors = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
        for tname, t in tensors:
            if t is None or torch_kind(role, tname) not in kinds or not t.is_floating_point():
                continue
            if isinstance(t, nn.Parameter) and not t.requires_grad:
                continue
            out.append((f"{mname}.{tname}" if mname else tname, t))
    return out


@contextlib.contextmanager
def _differentiable(tensors: list[torch.Tensor]):
    """Let autograd differentiate w.r.t. buffers (fixed neuron constants) for a while."""
    flip = [t for t in tensors if not isinstance(t, nn.Parameter) and not t.requires_grad]
    try:
        for t in flip:
            t.requires_grad_(True)
        yield
    finally:
        for t in flip:
            t.requires_grad_(False)


@contextlib.contextmanager
def weights_at(params: list[nn.Parameter], values: list[torch.Tensor]):
    """Temporarily give ``params`` the ``values`` (forward and backward inside use them)."""
    saved = [p.data for p in params]
    try:
        for p, v in zip(params, values):
            p.data = v.to(p.dtype)
        yield
    finally:
        for p, d in zip(params, saved):
            p.data = d


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)), mean over the batch (Buechel: q clipped at 1e-6)."""
    p = F.softmax(p_logits, dim=1)
    logq = torch.log(torch.clamp(F.softmax(q_logits, dim=1), min=1e-6))
    return torch.sum(p * (torch.log(torch.clamp(p, min=1e-12)) - logq), dim=1).mean()


ROBUST_LOSSES = ("kl", "reverse_kl", "l2", "js")


def robustness_loss(kind: str, clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    if kind == "kl":
        return kl(clean, adv)
    if kind == "reverse_kl":
        return kl(adv, clean)
    if kind == "l2":
        return torch.linalg.vector_norm(clean - adv, dim=1).mean()
    if kind == "js":
        p, q = F.softmax(clean, 1), F.softmax(adv, 1)
        m = torch.log(torch.clamp((p + q) / 2, min=1e-12))
        return 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))
    raise ValueError(f"unknown robustness loss {kind!r}, expected one of {ROBUST_LOSSES}")


class Standard:
    """Cross-entropy (or the trainer's ``loss_fn``) on the output scores."""

    name = "standard"

    def __call__(self, ctx: StepContext) -> dict:
        scores = ctx.forward(ctx.x)
        loss = ctx.loss_fn(scores, ctx.y)
        loss.backward()
        return {"loss": float(loss.detach()), "scores": scores.detach()}


class ForwardNoise:
    """theta~ = theta + stop_grad(|theta| eta N) (``mode='relative'``) or
    ``eta * 0.5 (max W - min W) N`` per tensor (``mode='range'``), fresh every batch."""

    name = "forward-noise"

    def __init__(self, eta: float = 0.3, mode: str = "relative", include=None):
        if mode not in ("relative", "range"):
            raise ValueError(f"mode must be 'relative' or 'range', got {mode!r}")
        self.eta, self.mode, self.include = float(eta), mode, include

    def noisy(self, params: list[nn.Parameter]) -> list[torch.Tensor]:
        out = []
        for p in params:
            d = p.detach()
            n = torch.randn_like(d)
            if self.mode == "relative":
                out.append(d + d.abs() * self.eta * n)
            else:
                out.append(d + self.eta * 0.5 * (d.max() - d.min()) * n)
        return out

    def __call__(self, ctx: StepContext) -> dict:
        params = [p for _, p in perturbable(ctx.model, self.include)]
        with weights_at(params, self.noisy(params)):
            scores = ctx.forward(ctx.x)
            loss = ctx.loss_fn(scores, ctx.y)
            loss.backward()
        return {"loss": float(loss.detach()), "scores": scores.detach()}


class AdversarialWeights:
    """Buechel, Faber, Muir (ICLR 2022): adversarial weight regularization.

    ``L = L_nat(theta~) + beta * L_rob(f(theta), f(theta*))`` with theta* from ``steps`` steps of
    sign-PGA on ``L_rob`` (algorithms.md 3.1):
        theta*_0 = theta + |theta| init_rel N1 + init_const N2
        theta*  += (zeta |theta| + zeta_const) / steps * sign(grad L_rob)      (box, no projection)
    theta~ = theta, or theta + forward noise when ``eta`` is set ("Forward + Beta").
    Gradient: via f(theta) and via theta*(theta) with the diagonal Jacobian
    ``1 + sign(theta) (init_rel N1 + zeta/steps sum_t sign(g_t))`` (the released torch port);
    exact for ``p_norm='inf'`` (sign steps have zero derivative a.e.; equal to Büchel's JAX
    differentiation through theta*), an approximation for ``p_norm='2'`` (the dependence of
    g/||g|| on theta is dropped); ``treat_as_constant=True`` drops the theta* path.
    ``p_norm='2'`` steps along g/||g||_2 per tensor instead of sign(g).
    """

    name = "adversarial-weights"

    def __init__(self, zeta: float = 0.1, beta: float = 0.25, steps: int = 10,
                 init_rel: float = 1e-3, init_const: float = 0.0, zeta_const: float = 0.0,
                 loss: str = "kl", p_norm: str = "inf", eta: float | None = None,
                 treat_as_constant: bool = False, include=None):
        if p_norm not in ("inf", "2"):
            raise ValueError(f"p_norm must be 'inf' or '2', got {p_norm!r}")
        if loss not in ROBUST_LOSSES:
            raise ValueError(f"unknown robustness loss {loss!r}, expected one of {ROBUST_LOSSES}")
        self.zeta, self.beta, self.steps = float(zeta), float(beta), int(steps)
        self.init_rel, self.init_const, self.zeta_const = float(init_rel), float(init_const), \
            float(zeta_const)
        self.loss, self.p_norm, self.eta = loss, p_norm, eta
        self.treat_as_constant, self.include = bool(treat_as_constant), include

    def attack(self, ctx: StepContext, params: list[nn.Parameter], clean: torch.Tensor,
               loss_of: Callable | None = None):
        """theta* (list), the Jacobian diagonals (list) and the box radii (list)."""
        theta = [p.detach().clone() for p in params]
        n1 = [torch.randn_like(t) for t in theta]
        n2 = [torch.randn_like(t) for t in theta] if self.init_const else None
        star = [t + t.abs() * self.init_rel * a for t, a in zip(theta, n1)]
        if n2 is not None:
            star = [s + self.init_const * b for s, b in zip(star, n2)]
        radius = [self.zeta * t.abs() + self.zeta_const for t in theta]
        signs = [torch.zeros_like(t) for t in theta]
        loss_of = loss_of or (lambda s: robustness_loss(self.loss, clean, s))
        for _ in range(self.steps):
            with weights_at(params, star), _differentiable(params):
                adv = ctx.forward(ctx.x)
                lr = loss_of(adv)
                grads = torch.autograd.grad(lr, params, allow_unused=True)
            new = []
            for s, g, r, sg in zip(star, grads, radius, signs):
                if g is None:
                    new.append(s)
                    continue
                if self.p_norm == "inf":
                    d = torch.sign(g)
                    sg += d
                else:
                    d = g / torch.clamp(torch.linalg.vector_norm(g), min=1e-12)
                    sg += d
                new.append(s + r / self.steps * d)
            star = new
        jac = [1.0 + torch.sign(t) * (self.init_rel * a + self.zeta / self.steps * sg)
               for t, a, sg in zip(theta, n1, signs)]
        return star, jac, radius

    def __call__(self, ctx: StepContext) -> dict:
        params = [p for _, p in perturbable(ctx.model, self.include)]
        with torch.no_grad():
            clean0 = ctx.forward(ctx.x)
        star, jac, _ = self.attack(ctx, params, clean0)
        # theta* path: beta * d L_rob / d theta* (times the Jacobian diagonal)
        with weights_at(params, star), _differentiable(params):
            adv = ctx.forward(ctx.x)
            lrob_star = self.beta * robustness_loss(self.loss, clean0, adv)
            g_star = torch.autograd.grad(lrob_star, params, allow_unused=True)
        adv = adv.detach()
        # natural loss (optionally under forward noise)
        if self.eta:
            fn = ForwardNoise(self.eta, include=self.include)
            with weights_at(params, fn.noisy(params)):
                s_nat = ctx.forward(ctx.x)
                l_nat = ctx.loss_fn(s_nat, ctx.y)
                l_nat.backward()
            clean = ctx.forward(ctx.x)
            l_p = self.beta * robustness_loss(self.loss, clean, adv)
            l_p.backward()
            total = l_nat.detach() + l_p.detach()
        else:
            clean = ctx.forward(ctx.x)
            l_nat = ctx.loss_fn(clean, ctx.y)
            l_p = self.beta * robustness_loss(self.loss, clean, adv)
            (l_nat + l_p).backward()
            total = l_nat.detach() + l_p.detach()
        if not self.treat_as_constant:
            for p, g, j in zip(params, g_star, jac):
                if g is None or not isinstance(p, nn.Parameter):
                    continue
                add = g * j
                p.grad = add if p.grad is None else p.grad + add
        return {"loss": float(total), "scores": clean.detach(),
                "robust_loss": float(lrob_star.detach() / max(self.beta, 1e-30))}


class AWP:
    """Adversarial weight perturbation (Wu et al. 2020) as in the Buechel code: theta* from
    sign-PGA on the cross-entropy inside the same box, then the CE gradient at
    ``theta + gamma (theta* - theta)`` is applied to theta."""

    name = "awp"

    def __init__(self, gamma: float = 0.1, zeta: float = 0.1, steps: int = 3,
                 init_rel: float = 1e-3, include=None):
        self.gamma = float(gamma)
        self.pga = AdversarialWeights(zeta=zeta, steps=steps, init_rel=init_rel, include=include)
        self.include = include

    def __call__(self, ctx: StepContext) -> dict:
        params = [p for _, p in perturbable(ctx.model, self.include)]
        star, _, _ = self.pga.attack(ctx, params, None, lambda s: ctx.loss_fn(s, ctx.y))
        theta = [p.detach() for p in params]
        awp = [t + self.gamma * (s - t) for t, s in zip(theta, star)]
        with weights_at(params, awp):
            scores = ctx.forward(ctx.x)
            loss = ctx.loss_fn(scores, ctx.y)
            loss.backward()
        return {"loss": float(loss.detach()), "scores": scores.detach()}


class InputAdversarial:
    """Adversarial input training: loss = (1 - mix) CE(x) + mix CE(x_adv), x_adv by FGSM
    (``clamp(x + eps sign(grad), 0, 1)``) or L-inf PGD (random start, ``steps`` steps of
    ``alpha`` = eps/4 by default, projection), gradients through the surrogate (BPTT)."""

    name = "input-adversarial"

    def __init__(self, attack: str = "fgsm", eps: float = 8 / 255, steps: int = 10,
                 alpha: float | None = None, mix: float = 0.5, random_start: bool = True):
        if attack not in ("fgsm", "pgd"):
            raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
        self.attack, self.eps, self.steps = attack, float(eps), int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / 4
        self.mix, self.random_start = float(mix), bool(random_start)

    def adversarial(self, ctx: StepContext) -> torch.Tensor:
        x = ctx.x.detach()
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            if self.attack == "fgsm":
                xa = x.clone().requires_grad_(True)
                g, = torch.autograd.grad(ctx.loss_fn(ctx.forward(xa), ctx.y), xa)
                return torch.clamp(x + self.eps * g.sign(), 0, 1).detach()
            xa = x.clone()
            if self.random_start:
                xa = torch.clamp(xa + (torch.rand_like(xa) * 2 - 1) * self.eps, 0, 1)
            for _ in range(self.steps):
                xa = xa.detach().requires_grad_(True)
                g, = torch.autograd.grad(ctx.loss_fn(ctx.forward(xa), ctx.y), xa)
                xa = xa.detach() + self.alpha * g.sign()
                xa = torch.clamp(x + torch.clamp(xa - x, -self.eps, self.eps), 0, 1)
            return xa.detach()
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)

    def __call__(self, ctx: StepContext) -> dict:
        xa = self.adversarial(ctx)
        scores = ctx.forward(ctx.x)
        loss = (1 - self.mix) * ctx.loss_fn(scores, ctx.y)
        if self.mix > 0:
            loss = loss + self.mix * ctx.loss_fn(ctx.forward(xa), ctx.y)
        loss.backward()
        return {"loss": float(loss.detach()), "scores": scores.detach()}


def from_preset(method: str, preset: str, **kw):
    """Objective ``method`` (a :data:`METHODS` key) with the reference values of ``preset``
    (``compiler.params.TRAINING_PRESETS``: 'buechel' -> AWP/adversarial-weights with 10 inner
    steps, 'torchattacks' -> input PGD with alpha 2/255); ``kw`` overrides them."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}, expected one of {sorted(METHODS)}")
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"unknown preset {preset!r}, expected one of {sorted(TRAINING_PRESETS)}")
    values = dict(TRAINING_PRESETS[preset].get(method, {}))
    if not values:
        raise ValueError(f"preset {preset!r} has no reference values for {method!r}")
    values.update(kw)
    return METHODS[method](**values)


METHODS = {"standard": Standard, "forward-noise": ForwardNoise,
           "adversarial-weights": AdversarialWeights, "awp": AWP,
           "input-adversarial": InputAdversarial}

__all__ = ["StepContext", "Standard", "ForwardNoise", "AdversarialWeights", "AWP",
           "InputAdversarial", "METHODS", "perturbable", "from_preset", "weights_at", "kl",
           "robustness_loss"]
