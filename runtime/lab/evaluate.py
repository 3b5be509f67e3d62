"""Robustness metrics shared by adversarial attacks and device-noise instances (docs/attacks.md).

All functions are plain numpy on runtime outputs, so a "perturbed" run can be an adversarial input
or a noisy chip instance. With ``y`` the labels, ``clean``/``adv`` two ``RunResult`` (or anything
with ``predictions``, ``layer_spikes`` [B, n_layers], ``counts_all`` [B, N] when recorded):

* accuracy = mean(prediction == y); accuracy_loss = clean_accuracy - adv_accuracy.
* ASR (algorithms.md §4.2) = (clean_accuracy - adv_accuracy) / clean_accuracy (0 when the clean
  accuracy is 0). ``flip_rate`` = fraction of clean-correct samples that the perturbation makes
  wrong (the per-sample success rate), reported next to it.
* spike-activity change per layer = (S_adv - S_clean) / S_clean with S the layer's total spike
  count over the batch (signed; NaN when S_clean = 0); the scalar is the mean over layers of its
  absolute value.
* NSR per layer (algorithms.md §8.2) = sum_b ||r_adv - r_clean||^2 / sum_b ||r_clean||^2 on the
  time-averaged firing rates r = counts / T of the layer's neurons (also in dB, 10 log10); the
  scalar is the mean over layers with a nonzero clean signal.
* perturbation norms of x_adv - x per sample on [0, 1] inputs: L0 (count of changed values), L2,
  Linf; reported as means (and the L0 median).
"""

from __future__ import annotations

import math

import numpy as np


def accuracy(pred, y) -> float:
    pred, y = np.asarray(pred), np.asarray(y)
    return float(np.mean(pred == y)) if y.size else float("nan")


def asr(clean_acc: float, adv_acc: float) -> float:
    """Attack success rate (acc - adv_acc) / acc (algorithms.md §4.2); 0 if acc is 0."""
    return (clean_acc - adv_acc) / clean_acc if clean_acc > 0 else 0.0


def flip_rate(clean_pred, adv_pred, y) -> float:
    """Fraction of clean-correct samples that the perturbation misclassifies."""
    ok = np.asarray(clean_pred) == np.asarray(y)
    if not ok.any():
        return 0.0
    return float(np.mean(np.asarray(adv_pred)[ok] != np.asarray(y)[ok]))


def layer_counts(result, image) -> dict[str, np.ndarray]:
    """Per-layer spike counts [B, n] from a ``record=True`` RunResult (layer-local order)."""
    if result.counts_all is None:
        raise ValueError("per-neuron counts need run_payloads(..., record=True)")
    return {L["name"]: result.counts_all[:, image.layer_neurons(li)]
            for li, L in enumerate(image.layers)}


def spike_activity_change(clean_spikes, adv_spikes, names) -> dict:
    """Relative change of each layer's total spike count: {'per_layer', 'mean_abs', 'total'}."""
    c = np.asarray(clean_spikes, np.float64).sum(axis=0)
    a = np.asarray(adv_spikes, np.float64).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(c > 0, (a - c) / np.where(c > 0, c, 1), np.nan)
    per = {n: float(rel[i]) for i, n in enumerate(names)}
    fin = rel[np.isfinite(rel)]
    tot_c, tot_a = c.sum(), a.sum()
    return {"per_layer": per, "mean_abs": float(np.mean(np.abs(fin))) if fin.size else float("nan"),
            "total": float((tot_a - tot_c) / tot_c) if tot_c > 0 else float("nan")}


def nsr(clean_rates: dict, noisy_rates: dict) -> dict:
    """Per-layer NSR of rates: {'per_layer': {name: {'nsr', 'db'}}, 'mean', 'mean_db'}."""
    per, vals = {}, []
    for k, r0 in clean_rates.items():
        r0 = np.asarray(r0, np.float64)
        r1 = np.asarray(noisy_rates[k], np.float64)
        sig = float(np.sum(r0 * r0))
        noise = float(np.sum((r1 - r0) ** 2))
        v = noise / sig if sig > 0 else float("nan")
        per[k] = {"nsr": v, "db": _db(v)}
        if math.isfinite(v):
            vals.append(v)
    m = float(np.mean(vals)) if vals else float("nan")
    return {"per_layer": per, "mean": m, "mean_db": _db(m)}


def _db(v: float) -> float:
    if not math.isfinite(v):
        return float("nan")
    return 10.0 * math.log10(v) if v > 0 else float("-inf")


def perturbation_norms(x, x_adv) -> dict:
    """L0/L2/Linf of ``x_adv - x`` per sample (flattened), as means (+ L0 median)."""
    d = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    if d.shape[0] == 0:
        return {"l0": float("nan"), "l0_median": float("nan"), "l2": float("nan"),
                "linf": float("nan")}
    l0 = np.count_nonzero(np.abs(d) > 1e-12, axis=1)
    return {"l0": float(l0.mean()), "l0_median": float(np.median(l0)),
            "l2": float(np.linalg.norm(d, axis=1).mean()),
            "linf": float(np.abs(d).max(axis=1).mean())}


def compare_runs(clean, adv, y, image=None, timesteps: int | None = None) -> dict:
    """All metrics of a perturbed run against the clean one (see the module docstring).

    ``clean``/``adv``: RunResults of the same samples; with ``image`` and recorded runs the NSR
    is computed per layer.
    """
    ca, aa = accuracy(clean.predictions, y), accuracy(adv.predictions, y)
    names = list(getattr(clean, "layer_names", [])) or [str(i) for i in
                                                         range(clean.layer_spikes.shape[1])]
    sac = spike_activity_change(clean.layer_spikes, adv.layer_spikes, names)
    out = {
        "clean_accuracy": ca, "adv_accuracy": aa, "accuracy_loss": ca - aa, "asr": asr(ca, aa),
        "flip_rate": flip_rate(clean.predictions, adv.predictions, y),
        "spike_activity_change": sac["mean_abs"],
        "spike_activity_change_total": sac["total"],
        "spike_activity_change_per_layer": sac["per_layer"],
    }
    if image is not None and clean.counts_all is not None and adv.counts_all is not None:
        T = timesteps or clean.timesteps
        rc = {k: v / T for k, v in layer_counts(clean, image).items()}
        ra = {k: v / T for k, v in layer_counts(adv, image).items()}
        n = nsr(rc, ra)
        out.update({"nsr": n["mean"], "nsr_db": n["mean_db"], "nsr_per_layer": n["per_layer"]})
    else:
        out.update({"nsr": float("nan"), "nsr_db": float("nan"), "nsr_per_layer": {}})
    return out


__all__ = ["accuracy", "asr", "flip_rate", "layer_counts", "spike_activity_change", "nsr",
           "perturbation_norms", "compare_runs"]
