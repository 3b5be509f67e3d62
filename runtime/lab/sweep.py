"""Monte Carlo robustness of a deployed chip image, worst-case weights, weight-loss landscape.

In: a ChipImage, encoded payloads [T, B, n_in] and labels. Out: tables of rows (plain dicts).

* :func:`sweep`: for each level, ``samples`` frozen chip instances (``runtime.lab.noise``;
  instance i seeded by (seed, i), so the same seed gives the same numbers and one instance keeps
  its noise pattern across levels), each running the whole dataset through ``run_payloads``
  (the compiled kernels are reused; the samples of one instance are spread over the Numba
  threads). Rows:
  ``{kind, level, label, mean, std, min, max, median, n, accuracies}``: the accuracy over
  instances, the seed paper's Table-1 form (std with ddof=0, as numpy's default).
* :func:`worst_case`: projected sign-gradient ascent (algorithms.md 3.1/3.5) on the deployed
  weights inside the relative box ``|w* - w| <= zeta|w|``, through the differentiable twin
  (``runtime.lab.twin``), evaluated on the runtime (analog float path, and re-quantized), next to
  random relative mismatch of the same zeta.
* :func:`landscape`: loss along random relative directions ``d = 0.2 |w| N`` (algorithms.md 8.1)
  on the runtime, with a flatness number.

The ``snnrun`` noise mode (options, dispatch) is :mod:`runtime.cli.noise`; tables and figures are
:mod:`runtime.reports.noise`.
"""

from __future__ import annotations

import time

import numpy as np

from compiler.errors import SimulationError
from compiler.progress import bar, note
from runtime.engines.tick import run_payloads
from runtime.lab import noise

KIND_TITLES = {
    "mismatch": "relative mismatch zeta",
    "pcm": "PCM inference time",
    "bitflip": "SRAM bit-flip rate",
    "stuck-at": "stuck-at cell rate",
    "dead-cores": "dead cores",
}


def level_label(kind: str, level: float) -> str:
    if kind == "pcm":
        return noise.format_time(level)
    if kind == "dead-cores":
        return str(int(level))
    return f"{level:g}"


def _stats(accs: np.ndarray) -> dict:
    a = np.asarray(accs, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max()), "median": float(np.median(a)), "n": int(a.size)}


def accuracy(image, payloads, labels, instance=None, **kw) -> float:
    """Accuracy of one chip instance (None: the deployed chip) on the payloads."""
    return run_payloads(image, payloads, instance=instance, **kw).accuracy(labels)


def instance_accuracy(image, payloads, labels, seed: int, model, i: int, *,
                      workers: int | None = 1, batch: int = 256) -> float:
    """One work unit of a sweep: accuracy of chip instance ``i`` (seeded by (seed, i)) of noise
    ``model`` on the whole set."""
    inst = noise.sample(image, model, seed, i)
    return run_payloads(image, payloads, instance=inst, workers=workers,
                        batch=batch).accuracy(labels)


def sweep(image, payloads: np.ndarray, labels: np.ndarray, kind: str, levels, samples: int = 20,
          seed: int = 0, *, domain: str = "digital", on=None, gdc: bool = True,
          registers: bool = False, stuck_value: int | None = None, workers: int | None = None,
          batch: int = 256, progress: bool = False, granularity: str = "cell",
          params=None, cluster=None) -> list[dict]:
    """Accuracy over ``samples`` chip instances at each level of one noise ``kind``.

    Args:
        kind: 'mismatch' (level = zeta), 'pcm' (seconds after programming), 'bitflip' (rate),
            'stuck-at' (rate) or 'dead-cores' (number of cores).
        domain, params (alias ``on``), granularity: mismatch options
            (``runtime.lab.noise.Mismatch``; params default ``compiler.params.DEFAULT_PARAMS``);
            gdc: PCM drift compensation; registers: bit flips in neuron registers too;
            stuck_value: 0, 1 or None (half each).
        cluster: a :class:`runtime.lab.cluster.Cluster`: the (instance, level) units run on Ray;
            the numbers are identical to the local run (instance i is seeded by (seed, i)).
    Returns:
        one row per level: kind, level, label, mean, std, min, max, median, n, accuracies;
        mismatch rows also carry ``granularity``, ``params`` and ``domain``.
    """
    from compiler.params import parse_params
    params = parse_params(params if params is not None else on, "mismatch")
    if samples < 1:
        raise SimulationError(f"--samples must be >= 1, got {samples}")
    levels = [float(v) for v in levels]
    models = [noise.make_model(kind, lv, domain=domain, on=params, gdc=gdc,
                               registers=registers, stuck_value=stuck_value,
                               granularity=granularity) for lv in levels]
    y = np.asarray(labels)
    accs = np.zeros((len(levels), samples))
    if cluster is not None:
        units = [(m, i) for i in range(samples) for m in models]
        shared = (cluster.put(image), cluster.put(payloads), cluster.put(y), seed)
        got = cluster.map(instance_accuracy, units, shared=shared, desc=kind,
                          kwargs={"batch": batch})
        for k, (i, li) in enumerate((i, li) for i in range(samples)
                                    for li in range(len(models))):
            accs[li, i] = got[k]
    else:
        with bar(len(levels) * samples, kind, unit="chip", enabled=progress) as pb:
            for i in range(samples):           # instance-major: one chip's pattern across levels
                for li, m in enumerate(models):
                    accs[li, i] = instance_accuracy(image, payloads, y, seed, m, i,
                                                    workers=workers, batch=batch)
                    pb.update(1)
    rows = []
    for li, lv in enumerate(levels):
        row = {"kind": kind, "level": lv, "label": level_label(kind, lv)}
        if kind == "mismatch":
            row.update(granularity=models[li].granularity, params=list(models[li].on),
                       domain=domain)
        row.update(_stats(accs[li]))
        row["accuracies"] = accs[li].tolist()
        rows.append(row)
    return rows


# --- worst-case weights ----------------------------------------------------------------------
def _kl(p_logits, q_logits):
    import torch
    p = torch.softmax(p_logits, 1)
    q = torch.softmax(q_logits, 1)
    return torch.mean(torch.sum(p * torch.log(p.clamp_min(1e-12) / q.clamp_min(1e-6)), 1))


class _Vars:
    """The variables of the adversarial-weight search: relative perturbations ``delta`` of the
    selected parameter kinds, one per cell/neuron ('cell') or per trained parameter / (layer,
    channel) ('parameter'), gathered onto the twin's weight entries and registers as
    ``x* = x0 (1 + delta[id])``."""

    def __init__(self, image, tw, params, granularity: str, seed: int, r: int, eps_init: float):
        import torch
        self.w0 = {k: v.detach().to(torch.float64) for k, v in tw.wvals().items()}
        self.params, self.granularity = params, granularity
        self.ids, self.base, self.delta = {}, {}, {}
        rng = noise.rng_for(seed, r, "worst-case")
        if granularity == "parameter":
            from runtime.lab.twin import bridge
            links = tw._links if tw._links is not None else bridge(image)
            cp = noise.cell_params(image)
            grp = noise.register_groups(image)
        if "weights" in params:
            if granularity == "cell":
                for k in sorted(self.w0):      # the draw order of the former weights-only search
                    n = rng.standard_normal(self.w0[k].numel())
                    self.ids[k] = None
                    self.delta[k] = torch.as_tensor(eps_init * np.sign(self.w0[k].numpy()) * n)
            else:
                n = rng.standard_normal(int(image.n_params))
                self.delta["weights"] = torch.as_tensor(eps_init * n)
                for k in sorted(self.w0):
                    lk = links[k]
                    pid = np.full(lk.indices.size, -1, np.int64)
                    pid[lk.inv] = cp[lk.off]
                    if np.any(pid < 0):
                        raise SimulationError(f"worst-case: weights of {k} hold no parameter")
                    self.ids[k] = torch.as_tensor(pid)
        self.regs0 = {}
        for kind, reg, key in (("bias", "bias", "bias"), ("threshold", "th_pos", "th")):
            if kind not in params:
                continue
            for li, L in enumerate(image.layers):
                glob = image.layer_neurons(li)
                x0 = np.asarray(getattr(image.regs(glob), reg), np.float64)
                self.regs0[(L["name"], key)] = torch.as_tensor(x0)
                if granularity == "cell":
                    self.ids[(L["name"], key)] = None
                    self.delta[(L["name"], key)] = torch.as_tensor(
                        eps_init * rng.standard_normal(glob.size))
                else:
                    g = grp[glob]
                    self.ids[(L["name"], key)] = torch.as_tensor(g)
                    if key not in self.delta:
                        self.delta[key] = torch.as_tensor(
                            eps_init * rng.standard_normal(int(grp.max()) + 1))

    def _slot(self, k):
        if self.granularity == "cell":
            return k
        return "weights" if k in self.w0 else k[1]

    def values(self, delta: dict):
        """(wvals, regs) of the twin at relative perturbations ``delta``."""
        wv, regs = {}, {}
        for k, i in self.ids.items():
            d = delta[self._slot(k)]
            d = d if i is None else d[i]
            if k in self.w0:
                wv[k] = self.w0[k] * (1.0 + d)
            else:
                regs[k] = self.regs0[k] * (1.0 + d)
        return wv, regs


def worst_case(image, payloads: np.ndarray, labels: np.ndarray, zeta: float, *,
               steps: int = 10, restarts: int = 1, loss: str = "kl", eps_init: float = 1e-3,
               seed: int = 0, surrogate: str = "atan", twin=None, workers: int | None = None,
               progress: bool = False, keep_instance: bool = False, params=None,
               granularity: str = "cell", project: bool = True) -> dict:
    """Adversarial parameters in the relative box ``|x* - x| <= zeta |x|`` (algorithms.md
    3.1/3.5) for the selected parameter kinds (``compiler.params``: weights, bias, threshold;
    default ``DEFAULT_PARAMS``, the same set as the random mismatch and the training objectives).

    The search runs on relative perturbations delta (x* = x (1 + delta)), one per cell and neuron
    (``granularity='cell'``) or one per trained parameter and per (layer, channel) of the
    registers ('parameter', Büchel et al.'s theta). Per restart r: delta_0 = eps_init N
    (seeded by (seed, r)); for ``steps`` steps delta += (zeta / steps) sign(grad L) (for a
    weight-only per-cell search this is x* += zeta |x| / steps sign(grad_x L)), then, with
    ``project`` (default), delta is clipped to [-zeta, zeta]; Büchel et al. do not project (the
    steps alone bound |delta| by zeta + |delta_0|). L is KL(softmax f(x) || softmax f(x*))
    ('kl', Buechel et al.) or the cross-entropy on the labels ('ce', "madry"), on the twin's
    logits for the whole set (one theta* for the whole test set, as Büchel's evaluation does).
    Every restart's final x* runs on the runtime as an analog instance (exact real values) and
    re-quantized (digital); the worst restart is reported.

    Returns:
        {zeta, params, granularity, project, accuracy (analog, worst restart),
        accuracy_digital, restarts: [{accuracy, accuracy_digital, loss: [per step, then the
        final value]}], seconds}; with ``keep_instance`` also 'instance': the worst restart's
        analog ChipInstance.
    """
    import torch

    from compiler.params import check_granularity, parse_params
    from runtime.lab.twin import Twin

    if loss not in ("kl", "ce"):
        raise SimulationError(f"worst-case loss must be 'kl' or 'ce', got '{loss}'")
    params = parse_params(params, "worst-case")
    granularity = check_granularity(granularity, "worst-case granularity")
    if "leak" in params:
        raise SimulationError("worst-case: the leak is not a parameter of the adversarial "
                              "search (the twin's leak rules have no gradient w.r.t. it)",
                              "use --mismatch-params weights,bias,threshold for --worst-case")
    t_start = time.perf_counter()
    tw = twin if twin is not None else Twin(image, surrogate=surrogate)
    x = torch.as_tensor(np.asarray(payloads, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    z = float(zeta)
    with torch.no_grad():
        p_clean = tw.logits(x)

    def objective(q):
        return _kl(p_clean, q) if loss == "kl" else torch.nn.functional.cross_entropy(q, y)

    out = {"zeta": z, "loss": loss, "steps": int(steps), "params": list(params),
           "granularity": granularity, "project": bool(project), "restarts": []}
    spec = image.spec
    for r in range(max(1, int(restarts))):
        V = _Vars(image, tw, params, granularity, seed, r, eps_init)
        delta = {k: (torch.clamp(d, -z, z) if project else d) for k, d in V.delta.items()}
        keys = sorted(delta, key=str)
        traj = []
        for _ in range(int(steps)):
            dv = {k: v.clone().requires_grad_(True) for k, v in delta.items()}
            wv, rg = V.values(dv)
            L = objective(tw.logits(x, wv, regs=rg))
            grads = torch.autograd.grad(L, [dv[k] for k in keys], allow_unused=True)
            traj.append(float(L.detach()))
            with torch.no_grad():
                for k, gk in zip(keys, grads):
                    if gk is None:
                        continue
                    d = delta[k] + (z / steps) * torch.sign(gk)
                    delta[k] = torch.clamp(d, -z, z) if project else d
            if progress:
                note(f"  worst-case zeta={zeta:g} restart {r} step {len(traj)}: "
                     f"{loss} {traj[-1]:.4g}")
        with torch.no_grad():
            wv, rg = V.values(delta)
            traj.append(float(objective(tw.logits(x, wv, regs=rg))))
        rows = tw.rows({k: v.numpy() for k, v in wv.items()}, np.float64) if wv else \
            noise.clean_instance(image).wrow.astype(np.float64)
        regs_a, regs_d = {}, {}
        for kind, reg, key, lo, hi in (("bias", "bias", "bias", *spec.bias_range),
                                       ("threshold", "th_pos", "th", 1.0, spec.threshold_max)):
            if kind not in params:
                continue
            full = np.asarray(getattr(noise._layout(image).regs, reg), np.float64).copy()
            for li, Ly in enumerate(image.layers):
                full[image.layer_neurons(li)] = rg[(Ly["name"], key)].numpy()
            regs_a[reg] = np.clip(full, lo, hi)
            regs_d[reg] = np.rint(regs_a[reg]).astype(np.int64)
        inst_a = noise.ChipInstance(rows, regs_a, True, f"worst-case {zeta:g}")
        inst_d = noise.ChipInstance(noise.quantize_weights(image, rows), regs_d, False,
                                    f"worst-case {zeta:g} (digital)")
        acc_a = accuracy(image, payloads, labels, inst_a, workers=workers)
        acc_d = accuracy(image, payloads, labels, inst_d, workers=workers)
        out["restarts"].append({"accuracy": acc_a, "accuracy_digital": acc_d, "loss": traj})
        if keep_instance and acc_a <= min(r["accuracy"] for r in out["restarts"]):
            out["instance"] = inst_a
    out["accuracy"] = min(r["accuracy"] for r in out["restarts"])
    out["accuracy_digital"] = min(r["accuracy_digital"] for r in out["restarts"])
    out["seconds"] = time.perf_counter() - t_start
    return out


# --- weight-loss landscape -------------------------------------------------------------------
def _ce(scores: np.ndarray, unit: np.ndarray, y: np.ndarray) -> float:
    z = scores / unit
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def landscape(image, payloads: np.ndarray, labels: np.ndarray, *, repeats: int = 5,
              std: float = 0.2, alphas=None, seed: int = 0, workers: int | None = None,
              progress: bool = False) -> dict:
    """Cross-entropy and accuracy of the runtime along random relative directions.

    Direction r: d_r = std |w| N (seeded by (seed, r)); point alpha: analog instance with
    weights w + alpha d_r (algorithms.md 8.1: 5 directions, std 0.2, alpha in [-2, 2]). The loss
    is the cross-entropy of the scores in output-spike units (score / (th * scale)).

    Flatness numbers: ``sharpness`` = mean over directions of (L(+1) + L(-1)) / 2 - L(0), the
    expected loss increase under relative Gaussian weight noise of std ``std``; ``curvature`` =
    d2L/dalpha2 of a quadratic least-squares fit of the mean curve over |alpha| <= 1.
    """
    from runtime.engines.tick import tables
    alphas = np.linspace(-2, 2, 21) if alphas is None else np.asarray(alphas, np.float64)
    if not np.any(alphas == 0):
        alphas = np.sort(np.append(alphas, 0.0))
    y = np.asarray(labels)
    tb = tables(image)
    unit = np.abs(tb.out_th.astype(np.float64) * tb.out_scale)
    unit = np.where(unit > 0, unit, 1.0)
    w = noise.clean_instance(image).wrow.astype(np.float64)
    base = run_payloads(image, payloads, workers=workers)
    L0, A0 = _ce(base.scores, unit, y), base.accuracy(y)
    loss = np.zeros((repeats, alphas.size))
    acc = np.zeros((repeats, alphas.size))
    for r in range(repeats):
        d = std * np.abs(w) * noise.rng_for(seed, r, "landscape").standard_normal(w.size)
        for j, a in enumerate(alphas):
            if a == 0:
                loss[r, j], acc[r, j] = L0, A0
                continue
            res = run_payloads(image, payloads, workers=workers,
                               instance=noise.ChipInstance(w + a * d, {}, True, f"a={a:g}"))
            loss[r, j], acc[r, j] = _ce(res.scores, unit, y), res.accuracy(y)
        if progress:
            note(f"  landscape direction {r + 1}/{repeats}")
    mean = loss.mean(axis=0)

    def at(a):
        return int(np.argmin(np.abs(alphas - a)))

    sharp = float(np.mean((loss[:, at(1.0)] + loss[:, at(-1.0)]) / 2) - L0)
    near = np.abs(alphas) <= 1.0 + 1e-12
    curv = float(2 * np.polyfit(alphas[near], mean[near], 2)[0]) if near.sum() >= 3 else \
        float("nan")
    return {"alphas": alphas.tolist(), "std": std, "repeats": repeats, "loss": loss.tolist(),
            "accuracy": acc.tolist(), "loss_mean": mean.tolist(),
            "accuracy_mean": acc.mean(axis=0).tolist(), "loss_clean": L0,
            "accuracy_clean": A0, "sharpness": sharp, "curvature": curv}


# --- CLI --------------------------------------------------------------------------------------


__all__ = ["sweep", "worst_case", "landscape", "accuracy", "instance_accuracy", "KIND_TITLES",
           "level_label"]
