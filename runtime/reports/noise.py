"""Tables, Markdown and figures of noise sweeps (runtime/lab/sweep.py, noise.py, certify.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from runtime.lab.sweep import KIND_TITLES


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
    from runtime.reports.run import _plt
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
