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
        w0 = res["worst_case"][0]
        box = " in" if w0.get("project", True) else ", not projected into,"
        out += ["", f"worst-case {'+'.join(w0.get('params', ['weights']))} per "
                    f"{w0.get('granularity', 'cell')} (PGA{box} the box zeta|x|) vs random "
                    "mismatch of the same zeta (analog):"]
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
        kinds = c0.get("params") or (["weights", "threshold"] if c0["thresholds"] else ["weights"])
        out += ["", f"certified accuracy (IBP over the box of {'+'.join(kinds)}, "
                    f"{c0['arithmetic']} chips; sound for both granularities):"]
        out.append(table([[f"{c['zeta']:g}", _pct(c["certified"]), c["n_certified"], c["n"]]
                          for c in res["certify"]], ["zeta", "certified", "count", "n"]))
    if res.get("timing"):
        out += ["", "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["timing"].items())]
    return "\n".join(out)


def markdown_report(res: dict) -> str:
    from runtime.reports.run import warnings_markdown
    lines = ["# Robustness report", "", *warnings_markdown(res.get("warnings")),
             f"- clean accuracy: {_pct(res['clean_accuracy'])}",
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
        w0 = res["worst_case"][0]
        lines += [f"## Worst-case {'+'.join(w0.get('params', ['weights']))} per "
                  f"{w0.get('granularity', 'cell')}"
                  f"{'' if w0.get('project', True) else ' (not projected)'}", "",
                  "| zeta | worst-case | worst (digital) | "
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
        kinds = res["certify"][0].get("params") or ["weights"]
        lines += [f"## Certified accuracy (IBP, box of {'+'.join(kinds)})", "",
                  "| zeta | certified | count |",
                  "|---|---|---|"]
        lines += [f"| {c['zeta']:g} | {_pct(c['certified'])} | {c['n_certified']}/{c['n']} |"
                  for c in res["certify"]]
        lines.append("")
    from runtime.reports.provenance import markdown as prov_md
    prov = prov_md(res.get("provenance"))
    return "\n".join(lines) + ("\n" + prov if prov else "")


def sweep_caption(res: dict, kind: str, rows: list[dict]) -> str:
    """The settings line of a noise-sweep figure."""
    opts = res.get("options", {}).get(kind, "")
    return (f"{KIND_TITLES.get(kind, kind)}{' (' + opts + ')' if opts else ''}; "
            f"{rows[0]['n']} chip instances per level (box: quartiles, whiskers 1.5 IQR, dots: "
            f"every instance, line: mean); data {res.get('data')} n = {res.get('n_test')}, "
            f"T = {res.get('timesteps')}, {res.get('encoding')} encoding, seed {res.get('seed')}; "
            f"clean chip accuracy {_pct(res.get('clean_accuracy'))}")


def _chance(res: dict) -> float | None:
    k = res.get("classes")
    return 1.0 / k if k else None


def plot_sweep(ax, res: dict, kind: str, rows: list[dict], worst_case=None) -> None:
    """Accuracy over chip instances per level as distributions (box + every instance)."""
    from runtime.reports import figures as F
    pos = np.arange(len(rows), dtype=np.float64)
    F.distribution(ax, pos, [r["accuracies"] for r in rows], label="chip instances")
    ax.plot(pos, [100 * r["mean"] for r in rows], color="#d62728", marker="D", ms=5,
            markerfacecolor="none", lw=1.2, label="mean", zorder=4)
    ax.axhline(100 * res["clean_accuracy"], color="#2ca02c", lw=1.0, ls="-.",
               label=f"clean ({100 * res['clean_accuracy']:.1f}%)", zorder=1)
    if worst_case:
        lv = [r["level"] for r in rows]
        for w in worst_case:
            if w["zeta"] in lv:
                ax.plot(lv.index(w["zeta"]), 100 * w["accuracy"], "kx", ms=9, mew=2,
                        label="worst case (PGA)" if w is worst_case[0] else None, zorder=5)
    ax.set_xticks(pos)
    ax.set_xticklabels([r["label"] for r in rows])
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(KIND_TITLES.get(kind, kind))
    F.accuracy_axis(ax, _chance(res))
    F.legend_outside(ax)


def plot_report(d: Path, res: dict, fmt: str = "png") -> list[str]:
    """Per kind: accuracy distributions over chip instances per level (+ worst case); worst case
    vs random, landscape, certificates."""
    from runtime.reports import figures as F
    plt = F.plt()
    files = []
    clean = res["clean_accuracy"]
    kinds = []
    for r in res["sweep"]:
        if r["kind"] not in kinds:
            kinds.append(r["kind"])
    for k in kinds:
        rows = [r for r in res["sweep"] if r["kind"] == k]
        fig, ax = plt.subplots(figsize=(7.0, 4.0))
        plot_sweep(ax, res, k, rows, res.get("worst_case") if k == "mismatch" else None)
        opts = res.get("options", {}).get(k, "")
        ax.set_title(f"Chip accuracy under {KIND_TITLES.get(k, k)}"
                     + (f"\n({opts})" if opts else ""), fontsize=10)
        files.append(F.save(fig, d / f"sweep_{k}.{fmt}", fmt, sweep_caption(res, k, rows)))
    cap = (f"data {res.get('data')} n = {res.get('n_test')}, T = {res.get('timesteps')}, "
           f"{res.get('encoding')} encoding, seed {res.get('seed')}")
    if res.get("worst_case") and "mismatch" not in kinds:
        wc = res["worst_case"]
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        z = [w["zeta"] for w in wc]
        ax.plot(z, [100 * w["random"]["mean"] for w in wc], label="random mismatch: mean",
                **F.style(0))
        ax.plot(z, [100 * w["random"]["min"] for w in wc], label="random mismatch: min",
                **F.style(1))
        ax.plot(z, [100 * w["accuracy"] for w in wc], label="worst case (PGA)", **F.style(2))
        ax.set_xlabel("relative weight perturbation zeta (|dw| <= zeta |w|)")
        F.accuracy_axis(ax, _chance(res))
        ax.set_title("Worst-case vs random weight perturbation", fontsize=10)
        ax.legend(fontsize=7)
        files.append(F.save(fig, d / f"worst_case.{fmt}", fmt,
                            cap + f"; random: {wc[0]['random']['n']} instances per zeta"))
    if res.get("landscape"):
        ls = res["landscape"]
        al = np.asarray(ls["alphas"])
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        for i, c in enumerate(ls["loss"]):
            ax.plot(al, c, color="#1f77b4", alpha=0.3, lw=0.8,
                    label="one random direction" if i == 0 else None)
        ax.plot(al, ls["loss_mean"], color="#1f77b4", lw=2, label="mean")
        ax.set_xlabel(f"alpha (weights w + alpha d, d = {ls['std']:g} |w| N(0, 1))")
        ax.set_ylabel("cross-entropy (nats)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Weight-loss landscape: sharpness {ls['sharpness']:.3f}, curvature "
                     f"{ls['curvature']:.3f}", fontsize=10)
        ax.legend(fontsize=7)
        files.append(F.save(fig, d / f"landscape.{fmt}", fmt,
                            cap + f"; {ls['repeats']} directions"))
    if res.get("certify"):
        c = res["certify"]
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        ax.plot([r["zeta"] for r in c], [100 * r["certified"] for r in c],
                label="certified (IBP)", **F.style(0))
        ax.axhline(100 * clean, color="#2ca02c", lw=1.0, ls="-.",
                   label=f"clean ({100 * clean:.1f}%)")
        ax.set_xscale("log")
        ax.set_xlabel("relative weight perturbation zeta")
        F.accuracy_axis(ax, _chance(res), "certified accuracy (%)")
        ax.set_title("Certified accuracy over the weight box", fontsize=10)
        ax.legend(fontsize=7)
        files.append(F.save(fig, d / f"certify.{fmt}", fmt,
                            cap + f"; {c[0]['arithmetic']} chips"
                            + (", thresholds perturbed too" if c[0]["thresholds"] else "")))
    return files
