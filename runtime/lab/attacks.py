"""Adversarial input attacks on a deployed network: FGSM, PGD (L-inf) and SDA (docs/attacks.md).

Gradients come from a differentiable model, the adversarial examples are always *evaluated on the
cycle-level runtime* (``run_payloads``):

* hardware level (default): white-box on the deployed integer weights through
  :class:`runtime.lab.twin.Twin` (bit-exact forward, surrogate backward), optionally of a noise
  instance;
* algorithm level (``--source model.onnx``): gradients of the float source model (lowered float
  graph, the same Twin code with float neurons); the examples are then *transferred* to the chip.

Conventions (torchattacks, algorithms.md §4.1-4.2): inputs are images in [0, 1]; the encoder is
inside the model (straight-through backward, ``compiler.encoding.encode_torch``); the loss is the
cross-entropy on the output scores expressed in output-spike units (``scores / twin.logit_unit``:
count + V/th of the output layer, the scale the model was trained with; raw chip scores are
``x scale`` integers and would saturate the softmax). FGSM: ``x + eps sign(grad)``; PGD: uniform
random start in the eps-ball, ``steps`` sign steps of ``alpha`` (default eps/4 as in the PDSG
code), projection to the ball and [0, 1] after every step. Stochastic encodings (rate) average the
gradient over ``eot`` encoder draws per step, with seeds disjoint from the evaluation seed.

SDA (algorithms.md §4.4, Sparse Dynamic Attack) works on binary event inputs x in {0,1}^{T x n}
(payload 255 per event): generation picks bit flips by gradient (twin) and keeps those whose
finite difference of the CW margin loss, measured on the runtime, decreases it; reduction then
binary-searches the smallest set of the most useful flips that still fools the chip. Reported: the
success rate over correctly classified samples and L0 (flipped events) of the successes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from compiler.encoding import encode
from compiler.errors import SnnError
from runtime.engines.tick import run_payloads
from runtime.lab import evaluate as ev
from runtime.lab.twin import Twin, encode_payloads, torch_threads

ATTACKS = ("fgsm", "pgd", "sda")
STOCHASTIC = ("rate",)
DEFAULT_EPS = (2 / 255, 8 / 255, 16 / 255)
EOT_SEED_BASE = 1_000_003      # attack-side encoder draws never reuse the evaluation seed


# --------------------------------------------------------------------------------------------
# the gradient oracle
# --------------------------------------------------------------------------------------------
class Target:
    """A differentiable model + encoding: loss gradients w.r.t. images in [0, 1].

    Args:
        twin: a :class:`Twin` (of a chip image or of a float graph).
        encoding, T: the input encoding and timesteps.
        eot: encoder draws averaged per gradient for stochastic encodings (1 otherwise).
        seed: base seed of the attack's encoder draws.
        temperature: logits = scores / logit_unit / temperature.
    """

    def __init__(self, twin: Twin, encoding: str, T: int, eot: int = 1, seed: int = 0,
                 temperature: float = 1.0):
        self.twin, self.encoding, self.T = twin, encoding, int(T)
        self.eot = max(1, int(eot)) if encoding in STOCHASTIC else 1
        self.seed = int(seed)
        self.temperature = float(temperature)
        self._unit = 0
        self._draws = 0

    def start_unit(self, key: int) -> None:
        """Restart the encoder-draw sequence for work unit ``key`` (a sample chunk at one eps):
        the draws of a unit depend on the run seed and the unit's coordinates only, so chunks
        give the same numbers in any order, on any worker (runtime/lab/cluster.py)."""
        self._unit = int(key)
        self._draws = 0

    def _next_seed(self) -> int:
        self._draws += 1
        return EOT_SEED_BASE + 7919 * self.seed + 104729 * self._unit + self._draws

    def logits(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        p = encode_payloads(x, self.encoding, self.T, self._next_seed() if seed is None else seed)
        return self.twin.logits(p) / self.temperature

    def grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d CE / d x, averaged over ``eot`` encoder draws (summed over the batch)."""
        return self.grad_and_loss(x, y)[0]

    def grad_and_loss(self, x: torch.Tensor, y: torch.Tensor):
        """(d CE / d x, per-sample CE [B], per-sample wrong [B] bool), all EOT-averaged."""
        x = x.detach().clone().requires_grad_(True)
        loss, per, wrong = 0.0, 0.0, 0.0
        for _ in range(self.eot):
            z = self.logits(x)
            ce = F.cross_entropy(z, y, reduction="none")
            loss = loss + ce.sum()
            per = per + ce.detach()
            wrong = wrong + (z.detach().argmax(1) != y).to(torch.float64)
        (loss / self.eot).backward()
        return x.grad.detach(), per / self.eot, (wrong / self.eot) > 0.5

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seed: int) -> np.ndarray:
        return self.logits(x, seed).argmax(1).numpy()


def fgsm(target: Target, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM (torchattacks): ``clamp(x + eps * sign(grad CE), 0, 1)``."""
    g = target.grad(x, y)
    return torch.clamp(x + eps * g.sign(), 0.0, 1.0).detach()


def pgd(target: Target, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float | None = None,
        steps: int = 10, random_start: bool = True, seed: int = 0,
        keep_best: bool = True) -> torch.Tensor:
    """L-inf PGD (torchattacks): random start, ``steps`` sign steps of ``alpha``, projection.

    ``keep_best`` (default) returns, per sample, the iterate the target model ranks best
    (misclassified first, then the highest CE) instead of the last one: never weaker than
    plain PGD's last iterate under the target model (the twin is exact for deterministic
    encodings, so "misclassified by the twin" means "misclassified by the chip").
    """
    alpha = eps / 4 if alpha is None else float(alpha)
    x_adv = x.clone()
    if random_start and eps > 0:
        gen = torch.Generator().manual_seed(int(seed))
        x_adv = x_adv + (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * eps
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    best = x_adv.clone()
    best_key = torch.full((len(x),), -math.inf, dtype=torch.float64)
    for i in range(int(steps) + (1 if keep_best else 0)):
        g, ce, wrong = target.grad_and_loss(x_adv, y)
        if keep_best:
            key = ce + wrong.to(torch.float64) * 1e6
            better = key > best_key
            best[better] = x_adv[better]
            best_key = torch.where(better, key, best_key)
        if i == int(steps):
            break
        x_adv = x_adv + alpha * g.sign()
        x_adv = torch.clamp(x + torch.clamp(x_adv - x, -eps, eps), 0.0, 1.0).detach()
    return best if keep_best else x_adv


def generate_chunk(target: Target, xb: np.ndarray, yb: np.ndarray, attack: str, eps: float,
                   steps: int, alpha: float | None, seed: int, start: int) -> np.ndarray:
    """One work unit: adversarial images for the chunk of samples starting at index ``start``.
    Its randomness (PGD start, EOT encoder draws) depends on (seed, start, eps) only."""
    if attack not in ("fgsm", "pgd"):
        raise SnnError(f"unknown attack '{attack}'",
                       "use fgsm or pgd (sda: runtime.lab.attacks.sda)")
    xt = torch.as_tensor(np.asarray(xb, np.float64))
    if eps <= 0:
        return xt.numpy()
    yt = torch.as_tensor(np.asarray(yb, np.int64))
    target.start_unit(start * 1000003 + int(round(float(eps) * 1e6)))
    with torch_threads(1):
        if attack == "fgsm":
            adv = fgsm(target, xt, yt, eps)
        else:
            adv = pgd(target, xt, yt, eps, alpha, steps, seed=seed + start)
    return adv.numpy()


def generate(target: Target, x: np.ndarray, y: np.ndarray, attack: str, eps: float,
             steps: int = 10, alpha: float | None = None, batch: int = 128,
             seed: int = 0, cluster=None, pb=None) -> np.ndarray:
    """Adversarial images (same shape as ``x``, in [0, 1]) for a whole set, chunk by chunk.

    With ``cluster`` (runtime/lab/cluster.py) the chunks are work units on Ray (the target is
    put in the object store once); the result is identical to the local run. ``pb``: a
    progress bar (compiler/progress.py) advanced by the samples of each chunk."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    starts = list(range(0, len(x), batch))
    units = [(x[i:i + batch], y[i:i + batch], attack, float(eps), int(steps), alpha, int(seed), i)
             for i in starts]
    if cluster is not None and units:
        parts = cluster.map(generate_chunk, units, shared=(cluster.put(target),),
                            desc=f"{attack} eps={float(eps):.4g}")
    else:
        parts = []
        for u in units:
            parts.append(generate_chunk(target, *u))
            if pb is not None:
                pb.update(len(u[0]))
    if cluster is not None and pb is not None:
        pb.update(len(x))
    return np.concatenate(parts) if parts else np.empty_like(x)


# --------------------------------------------------------------------------------------------
# evaluation on the runtime
# --------------------------------------------------------------------------------------------
def run_images(image, x: np.ndarray, encoding: str, T: int, seed: int = 0, weights=None,
               batch: int = 256, workers=None):
    """Encode images and run them on the runtime with per-neuron counts recorded."""
    p = encode(encoding, np.asarray(x).reshape(len(x), -1), T, seed=seed)
    kw = {} if weights is None else {"weights": weights}
    return run_payloads(image, p, record=True, encoding=encoding, batch=batch, workers=workers,
                        **kw)


def evaluate_examples(image, x, x_adv, y, encoding: str, T: int, seed: int = 0,
                      clean=None, workers=None) -> dict:
    """Runtime metrics of adversarial images against clean ones (runtime/lab/evaluate.py)."""
    clean = clean if clean is not None else run_images(image, x, encoding, T, seed,
                                                       workers=workers)
    adv = run_images(image, x_adv, encoding, T, seed, workers=workers)
    m = ev.compare_runs(clean, adv, y, image, T)
    m.update(ev.perturbation_norms(x, x_adv))
    return m


def float_graph_of(source, spec, input_shape=None, **load_options):
    """The lowered float graph of a source model (fold-bn + lower), for algorithm-level attacks.

    ``load_options``: frontends.load_model options (e.g. dt, nir_convention, cubalif for a .nir
    file)."""
    from compiler import compile_model
    from frontends import load_model
    g = load_model(source, input_shape=input_shape, **load_options)
    return compile_model(g, spec, stop_after="lower", progress=False).graph


@dataclass
class SweepConfig:
    attack: str = "fgsm"
    eps: tuple = (8 / 255,)
    encoding: str = "direct"
    T: int = 8
    surrogate: str = "atan"
    alpha: float | None = None
    steps: int = 10
    eot: int = 1
    seed: int = 0
    batch: int = 128
    workers: int | None = None
    progress: bool = False          # a bar over eps x samples (compiler/progress.py)


def attack_sweep(image, x: np.ndarray, y: np.ndarray, cfg: SweepConfig, source_graph=None,
                 instance=None, cluster=None) -> dict:
    """FGSM/PGD over ``cfg.eps`` on ``image``; every example evaluated on the runtime.

    With ``source_graph`` (a lowered float graph) the gradients come from the float model
    (algorithm level) and each result also holds ``source_clean_accuracy`` /
    ``source_adv_accuracy`` (the float model on its own examples) next to the chip numbers
    (transfer). Returns ``{"attack", "encoding", "surrogate", "level", ..., "results": [...]}``.
    """
    with torch_threads(1):
        return _attack_sweep(image, x, y, cfg, source_graph, instance, cluster)


def _attack_sweep(image, x, y, cfg: SweepConfig, source_graph=None, instance=None,
                  cluster=None) -> dict:
    t0 = time.perf_counter()
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if source_graph is not None:
        twin = Twin.from_graph(source_graph, cfg.surrogate)
        level = "algorithm"
    else:
        twin = Twin(image, instance=instance, surrogate=cfg.surrogate)
        level = "hardware"
    target = Target(twin, cfg.encoding, cfg.T, cfg.eot, cfg.seed)
    clean = run_images(image, x, cfg.encoding, cfg.T, cfg.seed, workers=cfg.workers)
    results = []
    src_clean = None
    if source_graph is not None:
        src_clean = ev.accuracy(_predict(target, x, cfg), y)
    from compiler.progress import bar
    pb = bar(len(cfg.eps) * len(x), f"{cfg.attack} ({level})", unit="sample",
             enabled=cfg.progress)
    for eps in cfg.eps:
        ts = time.perf_counter()
        pb.set_postfix_str(f"eps {float(eps) * 255:g}/255")
        x_adv = generate(target, x, y, cfg.attack, float(eps), cfg.steps, cfg.alpha, cfg.batch,
                         cfg.seed, cluster=cluster, pb=pb)
        r = {"eps": float(eps), "eps_255": float(eps) * 255}
        r.update(evaluate_examples(image, x, x_adv, y, cfg.encoding, cfg.T, cfg.seed, clean,
                                   cfg.workers))
        if source_graph is not None:
            sa = ev.accuracy(_predict(target, x_adv, cfg), y)
            r.update({"source_clean_accuracy": src_clean, "source_adv_accuracy": sa,
                      "source_accuracy_loss": src_clean - sa})
        r["seconds"] = time.perf_counter() - ts
        results.append(r)
    pb.close()
    return {"attack": cfg.attack, "encoding": cfg.encoding, "surrogate": cfg.surrogate,
            "level": level, "timesteps": cfg.T, "steps": cfg.steps if cfg.attack == "pgd" else 1,
            "alpha": cfg.alpha, "eot": target.eot, "n": int(len(x)), "results": results,
            "seconds": time.perf_counter() - t0}


def _predict(target: Target, x: np.ndarray, cfg: SweepConfig) -> np.ndarray:
    out = []
    for i in range(0, len(x), cfg.batch):
        out.append(target.predict(torch.as_tensor(x[i:i + cfg.batch]), cfg.seed))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


# --------------------------------------------------------------------------------------------
# SDA: sparse dynamic attack on binary events
# --------------------------------------------------------------------------------------------
def events_to_payloads(events: np.ndarray) -> np.ndarray:
    """Binary events [N, T, ...] -> payloads uint8 [T, N, n] (255 per event)."""
    e = np.asarray(events)
    N, T = e.shape[:2]
    return np.ascontiguousarray((e.reshape(N, T, -1).transpose(1, 0, 2) > 0).astype(np.uint8)
                                * np.uint8(255))


def _margin(scores: np.ndarray, y: int, unit: np.ndarray) -> np.ndarray:
    """CW margin max(z_y - max_{j != y} z_j, 0) of scores [K, C] in spike units."""
    z = scores / unit
    other = np.delete(z, y, axis=1).max(axis=1)
    return np.maximum(z[:, y] - other, 0.0)


@dataclass
class SDAResult:
    x_adv: np.ndarray          # [N, T, n] binary events
    success: np.ndarray        # [N] bool: clean-correct and fooled
    attacked: np.ndarray       # [N] bool: clean-correct (the samples SDA works on)
    l0: np.ndarray             # [N] flipped events (0 for failures)
    iterations: np.ndarray     # [N]
    queries: np.ndarray        # [N] runtime evaluations (samples run)


def sda(image, events: np.ndarray, y: np.ndarray, twin: Twin | None = None, k_init: int = 10,
        iters: int = 100, batch_limit: int = 64, seed: int = 0, workers=None) -> SDAResult:
    """Sparse Dynamic Attack (generation + reduction) on binary events [N, T, ...].

    Gradients from ``twin`` (default: the hardware twin with the PDSG surrogate); every finite
    difference and every success check runs on the chip runtime.
    """
    twin = twin or Twin(image, surrogate="pdsg")
    e = (np.asarray(events).reshape(len(events), events.shape[1], -1) > 0).astype(np.uint8)
    N, T, n = e.shape
    unit = twin.logit_unit.numpy()
    rng = np.random.default_rng(seed)
    runs = lambda xs: run_payloads(image, events_to_payloads(xs), workers=workers,  # noqa: E731
                                   batch=batch_limit).scores
    clean_pred = np.argmax(runs(e), axis=1) if N else np.zeros(0, np.int64)
    attacked = clean_pred == np.asarray(y)
    x_adv = e.copy()
    success = np.zeros(N, bool)
    l0 = np.zeros(N, np.int64)
    its = np.zeros(N, np.int64)
    queries = np.zeros(N, np.int64)
    for b in np.flatnonzero(attacked):
        x0 = e[b].reshape(-1).astype(np.int64)
        yb = int(y[b])
        sel = np.zeros(x0.size, bool)
        fd = np.full(x0.size, np.inf)
        xa = x0.copy()
        found = False
        q = 0
        for it in range(int(iters)):
            its[b] = it + 1
            xt = torch.as_tensor(xa.reshape(T, 1, n).astype(np.float64)).requires_grad_(True)
            z = twin(xt * 255.0) / twin.logit_unit
            zo = torch.cat([z[0, :yb], z[0, yb + 1:]]).max()
            torch.clamp(z[0, yb] - zo, min=0.0).backward()
            g = xt.grad.reshape(-1).numpy().copy()
            # keep flips that decrease the loss to first order: 0->1 where g<0, 1->0 where g>0
            nxt = xa - np.sign(g)
            g = np.where((nxt >= 0) & (nxt <= 1), g, 0.0)
            nz = np.abs(g[g != 0])
            fill = rng.random(g.size) * (nz.min() if nz.size else 1.0)
            g = np.where(g == 0, fill, g)
            g = g * (~sel)
            free = int((~sel).sum())
            if free == 0:
                break
            k = min((it + 1) * int(k_init), free)
            idx = np.argpartition(-np.abs(g), k - 1)[:k]
            base = _margin(runs(xa.reshape(1, T, n)), yb, unit)[0]
            cand = np.repeat(xa[None], k, axis=0)
            cand[np.arange(k), idx] = 1 - cand[np.arange(k), idx]
            li = _margin(runs(cand.reshape(k, T, n)), yb, unit)
            q += k + 1
            fd[idx] = li - base
            sel[idx] = True
            bad = fd > 0
            sel[bad] = False
            fd[bad] = np.inf
            xa = np.where(sel, 1 - x0, x0)
            q += 1
            if np.argmax(runs(xa.reshape(1, T, n))[0]) != yb:
                found = True
                break
        queries[b] = q
        if not found:
            continue
        # reduction: revert the least useful flips while the chip stays fooled
        order = np.flatnonzero(sel)
        order = order[np.argsort(np.abs(fd[order]), kind="stable")]
        lo, hi, best = 0, order.size - 1, xa
        while lo <= hi:
            m = (lo + hi) // 2
            c = xa.copy()
            c[order[:m + 1]] = x0[order[:m + 1]]
            queries[b] += 1
            if np.argmax(runs(c.reshape(1, T, n))[0]) != yb:
                best, lo = c, m + 1
            else:
                hi = m - 1
        x_adv[b] = best.reshape(T, n)
        l0[b] = int(np.count_nonzero(best != x0))
        success[b] = l0[b] > 0
    return SDAResult(x_adv, success, attacked, l0, its, queries)


def sda_metrics(image, events: np.ndarray, y: np.ndarray, res: SDAResult, workers=None) -> dict:
    """Runtime metrics of an SDA run: accuracy, ASR, success rate, L0 statistics, NSR."""
    e = (np.asarray(events).reshape(len(events), events.shape[1], -1) > 0).astype(np.uint8)
    T = e.shape[1]
    clean = run_payloads(image, events_to_payloads(e), record=True, workers=workers)
    adv = run_payloads(image, events_to_payloads(res.x_adv), record=True, workers=workers)
    m = ev.compare_runs(clean, adv, y, image, T)
    l0s = res.l0[res.success]
    n_att = int(res.attacked.sum())
    m.update({
        "eps": None, "attacked": n_att,
        "sda_success_rate": float(res.success.sum() / n_att) if n_att else float("nan"),
        "l0_mean": float(l0s.mean()) if l0s.size else float("nan"),
        "l0_median": float(np.median(l0s)) if l0s.size else float("nan"),
        "l0_fraction": float(l0s.mean() / e[0].size) if l0s.size else float("nan"),
        "l0_200": float(np.mean(l0s < 200)) if l0s.size else float("nan"),
        "l0_800": float(np.mean(l0s < 800)) if l0s.size else float("nan"),
        "events_per_sample": float(e.reshape(len(e), -1).sum(1).mean()) if len(e) else 0.0,
        "input_bits": int(e[0].size) if len(e) else 0,
        "mean_iterations": float(res.iterations[res.attacked].mean()) if n_att else float("nan"),
        "mean_queries": float(res.queries[res.attacked].mean()) if n_att else float("nan"),
    })
    return m


def sda_run(image, events: np.ndarray, y: np.ndarray, surrogate: str = "pdsg", k_init: int = 10,
            iters: int = 100, seed: int = 0, workers=None, name: str = "events") -> dict:
    t0 = time.perf_counter()
    with torch_threads(1):
        res = sda(image, events, y, Twin(image, surrogate=surrogate), k_init, iters, seed=seed,
                  workers=workers)
    m = sda_metrics(image, events, y, res, workers)
    m["seconds"] = time.perf_counter() - t0
    return {"attack": "sda", "encoding": "events", "surrogate": surrogate, "level": "hardware",
            "data": name, "timesteps": int(np.asarray(events).shape[1]), "k_init": k_init,
            "iters": iters, "n": int(len(events)), "results": [m],
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# snnrun --attack
# --------------------------------------------------------------------------------------------


__all__ = ["Target", "fgsm", "pgd", "generate", "attack_sweep", "SweepConfig", "sda",
           "sda_metrics", "sda_run", "SDAResult", "evaluate_examples", "run_images",
           "float_graph_of", "events_to_payloads", "DEFAULT_EPS"]
