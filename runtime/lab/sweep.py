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
    "mismatch": "relative weight mismatch zeta",
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
          seed: int = 0, *, domain: str = "digital", on=("weights",), gdc: bool = True,
          registers: bool = False, stuck_value: int | None = None, workers: int | None = None,
          batch: int = 256, progress: bool = False, cluster=None) -> list[dict]:
    """Accuracy over ``samples`` chip instances at each level of one noise ``kind``.

    Args:
        kind: 'mismatch' (level = zeta), 'pcm' (seconds after programming), 'bitflip' (rate),
            'stuck-at' (rate) or 'dead-cores' (number of cores).
        domain, on: mismatch options (``runtime.lab.noise.Mismatch``); gdc: PCM drift
            compensation; registers: bit flips in neuron registers too; stuck_value: 0, 1 or
            None (half each).
        cluster: a :class:`runtime.lab.cluster.Cluster`: the (instance, level) units run on Ray;
            the numbers are identical to the local run (instance i is seeded by (seed, i)).
    Returns:
        one row per level: kind, level, label, mean, std, min, max, median, n, accuracies.
    """
    if samples < 1:
        raise SimulationError(f"--samples must be >= 1, got {samples}")
    levels = [float(v) for v in levels]
    models = [noise.make_model(kind, lv, domain=domain, on=tuple(on), gdc=gdc,
                               registers=registers, stuck_value=stuck_value) for lv in levels]
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


def worst_case(image, payloads: np.ndarray, labels: np.ndarray, zeta: float, *,
               steps: int = 10, restarts: int = 1, loss: str = "kl", eps_init: float = 1e-3,
               seed: int = 0, surrogate: str = "atan", twin=None, workers: int | None = None,
               progress: bool = False, keep_instance: bool = False) -> dict:
    """Adversarial weights in the relative box ``|w* - w| <= zeta |w|`` (algorithms.md 3.1/3.5).

    Per restart r: w*_0 = w + eps_init |w| N (seeded by (seed, r)); for ``steps`` steps
    w* += (zeta |w| / steps) sign(grad L) and w* is clipped back into the box, where L is
    KL(softmax f(w) || softmax f(w*)) ('kl', Buechel et al.) or the cross-entropy on the labels
    ('ce', "madry"), on the twin's logits for the whole set. Every restart's final w* runs on the
    runtime as an analog instance (exact real weights) and re-quantized (digital); the worst
    restart is reported.

    Returns:
        {zeta, accuracy (analog, worst restart), accuracy_digital, restarts: [{accuracy,
        accuracy_digital, loss: [per step, then the final value]}], seconds}; with
        ``keep_instance`` also 'instance': the worst restart's analog ChipInstance.
    """
    import torch

    from runtime.lab.twin import Twin

    if loss not in ("kl", "ce"):
        raise SimulationError(f"worst-case loss must be 'kl' or 'ce', got '{loss}'")
    t_start = time.perf_counter()
    tw = twin if twin is not None else Twin(image, surrogate=surrogate)
    x = torch.as_tensor(np.asarray(payloads, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    w0 = {k: v.detach().to(torch.float64) for k, v in tw.wvals().items()}
    rad = {k: float(zeta) * v.abs() for k, v in w0.items()}
    with torch.no_grad():
        p_clean = tw.logits(x)
    out = {"zeta": float(zeta), "loss": loss, "steps": int(steps), "restarts": []}
    for r in range(max(1, int(restarts))):
        rng = noise.rng_for(seed, r, "worst-case")
        ws = {}
        for k in sorted(w0):
            n = torch.as_tensor(rng.standard_normal(w0[k].numel()))
            ws[k] = torch.clamp(w0[k] + eps_init * w0[k].abs() * n, w0[k] - rad[k],
                                w0[k] + rad[k])
        traj = []
        for _ in range(int(steps)):
            wv = {k: v.clone().requires_grad_(True) for k, v in ws.items()}
            q = tw.logits(x, wv)
            L = _kl(p_clean, q) if loss == "kl" else torch.nn.functional.cross_entropy(q, y)
            grads = torch.autograd.grad(L, [wv[k] for k in sorted(wv)])
            traj.append(float(L.detach()))
            with torch.no_grad():
                for k, gk in zip(sorted(wv), grads):
                    ws[k] = torch.clamp(ws[k] + (rad[k] / steps) * torch.sign(gk),
                                        w0[k] - rad[k], w0[k] + rad[k])
            if progress:
                note(f"  worst-case zeta={zeta:g} restart {r} step {len(traj)}: "
                     f"{loss} {traj[-1]:.4g}")
        rows = tw.rows({k: v.numpy() for k, v in ws.items()}, np.float64)
        inst_a = noise.ChipInstance(rows, {}, True, f"worst-case {zeta:g}")
        inst_d = noise.ChipInstance(noise.quantize_weights(image, rows), {}, False,
                                    f"worst-case {zeta:g} (digital)")
        acc_a = accuracy(image, payloads, labels, inst_a, workers=workers)
        acc_d = accuracy(image, payloads, labels, inst_d, workers=workers)
        with torch.no_grad():
            q = tw.logits(x, ws)
            traj.append(float(_kl(p_clean, q) if loss == "kl"
                              else torch.nn.functional.cross_entropy(q, y)))
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
