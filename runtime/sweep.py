"""Monte Carlo robustness of a deployed chip image, worst-case weights, landscape, the CLI mode.

In: a ChipImage, encoded payloads [T, B, n_in] and labels. Out: tables of rows (plain dicts).

* :func:`sweep`: for each level, ``samples`` frozen chip instances (``runtime.noise``; instance i
  seeded by (seed, i), so the same seed gives the same numbers and one instance keeps its noise
  pattern across levels), each running the whole dataset through ``run_payloads`` (the compiled
  kernels are reused; the samples of one instance are spread over the Numba threads). Rows:
  ``{kind, level, label, mean, std, min, max, median, n, accuracies}``: the accuracy over
  instances, the seed paper's Table-1 form (std with ddof=0, as numpy's default).
* :func:`worst_case`: projected sign-gradient ascent (algorithms.md 3.1/3.5) on the deployed
  weights inside the relative box ``|w* - w| <= zeta|w|``, through the differentiable twin
  (``runtime.twin``), evaluated on the runtime (analog float path, and re-quantized), next to
  random relative mismatch of the same zeta.
* :func:`landscape`: loss along random relative directions ``d = 0.2 |w| N`` (algorithms.md 8.1)
  on the runtime, with a flatness number.
* :func:`main_noise`: ``snnrun chip.bin --mismatch ... | --pcm-time ... | --bitflip ... |
  --stuck-at ... | --dead-cores ... | --worst-case ... | --landscape | --certify ...``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from compiler.errors import SimulationError
from runtime import noise
from runtime.simulator import run_payloads

KIND_TITLES = {
    "mismatch": "relative weight mismatch zeta",
    "pcm": "PCM inference time",
    "bitflip": "SRAM bit-flip rate",
    "stuck-at": "stuck-at cell rate",
    "dead-cores": "dead cores",
}


def _level_label(kind: str, level: float) -> str:
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


def sweep(image, payloads: np.ndarray, labels: np.ndarray, kind: str, levels, samples: int = 20,
          seed: int = 0, *, domain: str = "digital", on=("weights",), gdc: bool = True,
          registers: bool = False, stuck_value: int | None = None, workers: int | None = None,
          batch: int = 256, progress: bool = False) -> list[dict]:
    """Accuracy over ``samples`` chip instances at each level of one noise ``kind``.

    Args:
        kind: 'mismatch' (level = zeta), 'pcm' (seconds after programming), 'bitflip' (rate),
            'stuck-at' (rate) or 'dead-cores' (number of cores).
        domain, on: mismatch options (``runtime.noise.Mismatch``); gdc: PCM drift
            compensation; registers: bit flips in neuron registers too; stuck_value: 0, 1 or
            None (half each).
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
    pb = None
    if progress:
        from tqdm import tqdm
        pb = tqdm(total=len(levels) * samples, desc=kind, unit="chip", leave=False,
                  file=sys.stderr)
    for i in range(samples):               # instance-major: one chip's pattern across levels
        for li, m in enumerate(models):
            inst = noise.sample(image, m, seed, i)
            accs[li, i] = run_payloads(image, payloads, instance=inst, workers=workers,
                                       batch=batch).accuracy(y)
            if pb is not None:
                pb.update(1)
    if pb is not None:
        pb.close()
    rows = []
    for li, lv in enumerate(levels):
        row = {"kind": kind, "level": lv, "label": _level_label(kind, lv)}
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

    from runtime.twin import Twin

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
                print(f"  worst-case zeta={zeta:g} restart {r} step {len(traj)}: "
                      f"{loss} {traj[-1]:.4g}", file=sys.stderr)
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
    from runtime.simulator import tables
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
            print(f"  landscape direction {r + 1}/{repeats}", file=sys.stderr)
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
def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def sweep_table(rows: list[dict]) -> str:
    from compiler.cliutil import table
    return table([[r["label"], _pct(r["mean"]), f"{100 * r['std']:.2f}", _pct(r["min"]), r["n"]]
                  for r in rows], ["level", "mean acc", "std (pp)", "min", "n"])


def text_report(res: dict) -> str:
    from compiler.cliutil import table
    out = [f"clean accuracy: {_pct(res['clean_accuracy'])}  ({res['n_test']} samples of "
           f"'{res['data']}', T={res['timesteps']}, {res['encoding']}, seed {res['seed']})"]
    kinds = []
    for r in res["sweep"]:
        if r["kind"] not in kinds:
            kinds.append(r["kind"])
    for k in kinds:
        rows = [r for r in res["sweep"] if r["kind"] == k]
        opts = res.get("options", {}).get(k, "")
        out += ["", f"{KIND_TITLES.get(k, k)}{(' (' + opts + ')') if opts else ''}, "
                    f"{rows[0]['n']} chip instances per level:", sweep_table(rows)]
    if res.get("worst_case"):
        out += ["", "worst-case weights (PGA in the box zeta|w|) vs random mismatch of the same "
                    "zeta (analog):"]
        out.append(table([[f"{w['zeta']:g}", _pct(w["accuracy"]), _pct(w["accuracy_digital"]),
                           _pct(w["random"]["mean"]), f"{100 * w['random']['std']:.2f}",
                           _pct(w["random"]["min"]), w["random"]["n"]]
                          for w in res["worst_case"]],
                         ["zeta", "worst-case", "worst (digital)", "random mean", "std (pp)",
                          "random min", "n"]))
    if res.get("landscape"):
        ls = res["landscape"]
        out += ["", f"weight-loss landscape ({ls['repeats']} random relative directions, std "
                    f"{ls['std']:g}): sharpness {ls['sharpness']:.4f} nats (loss at alpha=+-1 "
                    f"minus {ls['loss_clean']:.4f}), curvature {ls['curvature']:.4f}"]
        al = np.asarray(ls["alphas"])
        pick = [i for i, a in enumerate(al) if abs(a * 2 - round(a * 2)) < 1e-9]
        out.append(table([[f"{al[i]:+g}", f"{ls['loss_mean'][i]:.4f}",
                           _pct(ls["accuracy_mean"][i])] for i in pick],
                         ["alpha", "mean CE", "mean acc"]))
    if res.get("certify"):
        c0 = res["certify"][0]
        out += ["", f"certified accuracy (IBP over the weight box"
                    f"{' and thresholds' if c0['thresholds'] else ''}, {c0['arithmetic']} chips):"]
        out.append(table([[f"{c['zeta']:g}", _pct(c["certified"]), c["n_certified"], c["n"]]
                          for c in res["certify"]], ["zeta", "certified", "count", "n"]))
    if res.get("timing"):
        out += ["", "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["timing"].items())]
    return "\n".join(out)


def markdown_report(res: dict) -> str:
    lines = ["# Robustness report", "", f"- clean accuracy: {_pct(res['clean_accuracy'])}",
             f"- data: {res['data']} ({res['n_test']} samples), T = {res['timesteps']}, "
             f"{res['encoding']} encoding, seed {res['seed']}", ""]
    kinds = []
    for r in res["sweep"]:
        if r["kind"] not in kinds:
            kinds.append(r["kind"])
    for k in kinds:
        rows = [r for r in res["sweep"] if r["kind"] == k]
        lines += [f"## {KIND_TITLES.get(k, k)} {res.get('options', {}).get(k, '')}", "",
                  "| level | mean acc | std (pp) | min | n |", "|---|---|---|---|---|"]
        lines += [f"| {r['label']} | {_pct(r['mean'])} | {100 * r['std']:.2f} | "
                  f"{_pct(r['min'])} | {r['n']} |" for r in rows]
        lines.append("")
    if res.get("worst_case"):
        lines += ["## Worst-case weights", "", "| zeta | worst-case | worst (digital) | "
                  "random mean | random std (pp) | random min |", "|---|---|---|---|---|---|"]
        lines += [f"| {w['zeta']:g} | {_pct(w['accuracy'])} | {_pct(w['accuracy_digital'])} | "
                  f"{_pct(w['random']['mean'])} | {100 * w['random']['std']:.2f} | "
                  f"{_pct(w['random']['min'])} |" for w in res["worst_case"]]
        lines.append("")
    if res.get("landscape"):
        ls = res["landscape"]
        lines += ["## Weight-loss landscape", "", f"sharpness {ls['sharpness']:.4f}, curvature "
                  f"{ls['curvature']:.4f} (clean CE {ls['loss_clean']:.4f})", ""]
    if res.get("certify"):
        lines += ["## Certified accuracy (IBP)", "", "| zeta | certified | count |",
                  "|---|---|---|"]
        lines += [f"| {c['zeta']:g} | {_pct(c['certified'])} | {c['n_certified']}/{c['n']} |"
                  for c in res["certify"]]
        lines.append("")
    return "\n".join(lines)


def plot_report(d: Path, res: dict) -> list[str]:
    """Accuracy vs level per kind (mean +- std band, min), worst case, landscape, certificates."""
    from runtime.report import _plt
    plt = _plt()
    files = []
    clean = res["clean_accuracy"]
    kinds = []
    for r in res["sweep"]:
        if r["kind"] not in kinds:
            kinds.append(r["kind"])
    for k in kinds:
        rows = [r for r in res["sweep"] if r["kind"] == k]
        x = np.array([r["level"] for r in rows], np.float64)
        m = np.array([r["mean"] for r in rows])
        s = np.array([r["std"] for r in rows])
        mn = np.array([r["min"] for r in rows])
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(x, 100 * m, "o-", color="#3b7dd8", label="mean")
        ax.fill_between(x, 100 * (m - s), 100 * np.minimum(m + s, 1), color="#3b7dd8",
                        alpha=0.25, label="mean +- std")
        ax.plot(x, 100 * mn, "v--", color="#d84b3b", label="min")
        ax.axhline(100 * clean, color="gray", lw=0.8, ls=":", label="clean")
        if k == "mismatch" and res.get("worst_case"):
            wz = [w["zeta"] for w in res["worst_case"]]
            ax.plot(wz, [100 * w["accuracy"] for w in res["worst_case"]], "kx", ms=8,
                    label="worst case")
        if k in ("pcm", "bitflip", "stuck-at") and np.all(x > 0):
            ax.set_xscale("log")
        if k == "pcm":
            ax.set_xticks(x)
            ax.set_xticklabels([r["label"] for r in rows])
        ax.set_xlabel(KIND_TITLES.get(k, k))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{k}: {rows[0]['n']} chip instances per level")
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = d / f"sweep_{k}.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(str(f))
    if res.get("worst_case") and "mismatch" not in kinds:
        wc = res["worst_case"]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        z = [w["zeta"] for w in wc]
        ax.plot(z, [100 * w["random"]["mean"] for w in wc], "o-", label="random mean")
        ax.plot(z, [100 * w["random"]["min"] for w in wc], "v--", label="random min")
        ax.plot(z, [100 * w["accuracy"] for w in wc], "kx-", label="worst case")
        ax.set_xlabel("zeta")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = d / "worst_case.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(str(f))
    if res.get("landscape"):
        ls = res["landscape"]
        al = np.asarray(ls["alphas"])
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for c in ls["loss"]:
            ax.plot(al, c, color="#3b7dd8", alpha=0.3, lw=0.8)
        ax.plot(al, ls["loss_mean"], color="#3b7dd8", lw=2, label="mean CE")
        ax.set_xlabel(f"alpha (weights w + alpha d, d = {ls['std']:g} |w| N)")
        ax.set_ylabel("cross-entropy")
        ax.set_title(f"sharpness {ls['sharpness']:.3f}, curvature {ls['curvature']:.3f}")
        fig.tight_layout()
        f = d / "landscape.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(str(f))
    if res.get("certify"):
        c = res["certify"]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot([r["zeta"] for r in c], [100 * r["certified"] for r in c], "o-")
        ax.axhline(100 * clean, color="gray", lw=0.8, ls=":", label="clean")
        ax.set_xscale("log")
        ax.set_xlabel("zeta")
        ax.set_ylabel("certified accuracy (%)")
        fig.tight_layout()
        f = d / "certify.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(str(f))
    return files


def _parse_times(text: str | None) -> list[float]:
    if not text:
        return []
    return [noise.parse_time(t) for t in text.split(",") if t.strip()]


def main_noise(ctx) -> None:
    """The snnrun noise mode (runtime/cli.py dispatches here; options in ``ctx.params``)."""
    import click

    from compiler.cliutil import echo_json, jsonable
    from runtime import encoding as enc
    from runtime.cli import parse_list

    P = ctx.params
    ds = ctx.dataset
    x = ds.x.reshape(len(ds.x), -1)
    y = np.asarray(ds.y)
    payloads = enc.encode(ctx.encoding, x, ctx.timesteps, seed=ctx.seed)
    samples = int(P.get("samples") or 20)
    seed = int(ctx.seed)
    progress = sys.stderr.isatty() and not ctx.as_json
    on = tuple(t.strip() for t in (P.get("mismatch_on") or "weights").split(",") if t.strip())
    domain = P.get("mismatch_domain") or "digital"
    kw = dict(workers=ctx.workers, batch=ctx.batch, progress=progress)
    timing = {}
    t0 = time.perf_counter()
    clean = accuracy(ctx.image, payloads, y, workers=ctx.workers, batch=ctx.batch)
    res = {"data": getattr(ds, "name", None) or P.get("data"), "n_test": int(len(y)),
           "timesteps": ctx.timesteps, "encoding": ctx.encoding, "seed": seed,
           "samples": samples, "clean_accuracy": clean, "sweep": [], "options": {}}
    jobs = [("mismatch", parse_list(P.get("mismatch"), "--mismatch"),
             f"{domain}, on {'+'.join(on)}"),
            ("pcm", _parse_times(P.get("pcm_time")),
             "no GDC" if P.get("no_gdc") else "with GDC"),
            ("bitflip", parse_list(P.get("bitflip"), "--bitflip"),
             "crossbar + registers" if P.get("bitflip_registers") else "crossbar"),
            ("stuck-at", parse_list(P.get("stuck_at"), "--stuck-at"), "half at 0, half at 1"),
            ("dead-cores", parse_list(P.get("dead_cores"), "--dead-cores"), "")]
    for kind, levels, opts in jobs:
        if not levels:
            continue
        if kind == "dead-cores" and any(v != int(v) for v in levels):
            raise click.BadParameter("--dead-cores takes whole numbers of cores")
        t = time.perf_counter()
        res["sweep"] += sweep(ctx.image, payloads, y, kind, levels, samples, seed, domain=domain,
                              on=on, gdc=not P.get("no_gdc"),
                              registers=bool(P.get("bitflip_registers")), **kw)
        res["options"][kind] = opts
        timing[kind] = time.perf_counter() - t
    wc_levels = parse_list(P.get("worst_case"), "--worst-case")
    if wc_levels:
        t = time.perf_counter()
        from runtime.twin import Twin
        tw = Twin(ctx.image, surrogate=P.get("surrogate") or "atan")
        rand = sweep(ctx.image, payloads, y, "mismatch", wc_levels, samples, seed,
                     domain="analog", on=("weights",), **kw)
        res["worst_case"] = []
        for z, rr in zip(wc_levels, rand):
            w = worst_case(ctx.image, payloads, y, z, steps=int(P.get("steps") or 10),
                           seed=seed, twin=tw, workers=ctx.workers, progress=progress)
            w["random"] = {k: rr[k] for k in ("mean", "std", "min", "max", "n")}
            w["hurts_more"] = bool(w["accuracy"] <= rr["mean"])
            res["worst_case"].append(w)
        timing["worst-case"] = time.perf_counter() - t
    if P.get("landscape"):
        t = time.perf_counter()
        res["landscape"] = landscape(ctx.image, payloads, y, seed=seed, workers=ctx.workers,
                                     progress=progress)
        timing["landscape"] = time.perf_counter() - t
    cz = parse_list(P.get("certify"), "--certify")
    if cz:
        from runtime.certify import certify
        t = time.perf_counter()
        res["certify"] = certify(ctx.image, payloads, y, cz, thresholds="thresholds" in on,
                                 arithmetic="float" if domain == "analog" else "digital")
        timing["certify"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    res["timing"] = timing
    if ctx.report_dir or ctx.plots:
        import json
        d = Path(ctx.report_dir or "robustness")
        d.mkdir(parents=True, exist_ok=True)
        (d / "robustness.json").write_text(json.dumps(jsonable(res), indent=2))
        (d / "robustness.md").write_text(markdown_report(res))
        files = [str(d / "robustness.json"), str(d / "robustness.md")]
        if ctx.plots:
            files += plot_report(d, res)
        res["files"] = files
    if ctx.as_json:
        echo_json(res)
    else:
        click.echo(text_report(res))
        if res.get("files"):
            click.echo(f"\nreport written to {Path(res['files'][0]).parent}/")


__all__ = ["sweep", "worst_case", "landscape", "accuracy", "main_noise", "sweep_table",
           "text_report", "markdown_report", "plot_report"]
