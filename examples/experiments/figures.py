"""The experiments' figures, drawn from their JSON (``<script>.py --replot`` redraws without
rerunning): the conventions of runtime/reports/figures.py (titles + settings captions, accuracy
axes 0..100 % with chance marked, distinguishable series, png/pdf/svg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.reports import figures as F

CHANCE = 0.1          # digits: 10 classes


def _caption(data: dict, extra: str = "") -> str:
    s = data.get("setup", "")
    return (s + (" " + extra if extra else "")).strip()


def mismatch(data: dict, out: Path, fmt: str = "png") -> str:
    """Mean chip accuracy vs mismatch per method (lines) and, when the JSON holds per-instance
    accuracies, their distribution per method and level (box + points) in small multiples."""
    raw = data["results"]
    # one row of panels per mismatch granularity ('rows': runs before granularities existed)
    by_g: dict = {}
    for name, r in raw.items():
        for g, rows in (r.get("granularity") or {"cell": r["rows"]}).items():
            by_g.setdefault(g, {})[name] = {"clean": r["clean"], "rows": rows}
    grans = list(by_g)
    per_instance = all("accuracies" in row for res in by_g.values() for r in res.values()
                       for row in r["rows"])
    plt = F.plt()
    res = by_g[grans[0]]
    n = len(res)
    cols = 3
    extra_rows = ((n + cols - 1) // cols) * len(grans) if per_instance else 0
    fig = plt.figure(figsize=(11, 4.0 * len(grans) + 3.0 * extra_rows))
    gs = fig.add_gridspec(len(grans) + extra_rows, 2)
    n_inst = next(iter(res.values()))["rows"][0]["n"]
    for gi, g in enumerate(grans):
        ax_m, ax_w = fig.add_subplot(gs[gi, 0]), fig.add_subplot(gs[gi, 1])
        for i, (name, r) in enumerate(by_g[g].items()):
            lv = [0.0] + [row["level"] for row in r["rows"]]
            mean = np.array([r["clean"]] + [row["mean"] for row in r["rows"]]) * 100
            mn = np.array([r["clean"]] + [row["min"] for row in r["rows"]]) * 100
            ax_m.plot(lv, mean, label=name, **F.style(i))
            ax_w.plot(lv, mn, label=name, **F.style(i))
        for ax, what in ((ax_m, f"mean over {n_inst} chip instances"),
                         (ax_w, f"worst of {n_inst} chip instances")):
            ax.set_xlabel("relative mismatch zeta (w -> w(1 + zeta N))")
            F.accuracy_axis(ax, CHANCE, "chip test accuracy (%)")
            ax.set_title(f"{what}, per-{g} mismatch" if len(grans) > 1 else what, fontsize=10)
        F.legend_outside(ax_w)
    fig.suptitle("Chip accuracy under weight mismatch, per training method", fontsize=11)
    if per_instance:
        gs2 = gs[len(grans):, :].subgridspec(extra_rows, cols)
        k0 = 0
        for g in grans:
            for k, (name, r) in enumerate(by_g[g].items()):
                a2 = fig.add_subplot(gs2[(k0 + k) // cols, (k0 + k) % cols])
                pos = np.arange(len(r["rows"]), dtype=float)
                F.distribution(a2, pos, [row["accuracies"] for row in r["rows"]],
                               color=F.style(k)["color"])
                a2.axhline(100 * r["clean"], color="#2ca02c", ls="-.", lw=1)
                a2.set_xticks(pos, [f"{row['level']:g}" for row in r["rows"]])
                F.accuracy_axis(a2, CHANCE, "accuracy (%)" if (k0 + k) % cols == 0 else "")
                a2.set_title(f"{name}" + (f" (per {g})" if len(grans) > 1 else "")
                             + ": every chip instance", fontsize=9)
                a2.set_xlabel("zeta")
            k0 += ((len(by_g[g]) + cols - 1) // cols) * cols
    extra = "" if per_instance else (
        "Per-instance accuracies were not stored in this run's JSON: the spread is in "
        "mismatch.md (std); rerun the script for box plots per level.")
    return F.save(fig, out / "mismatch", fmt, _caption(data, extra))


def quantization(data: dict, out: Path, fmt: str = "png") -> str:
    """PTQ vs QAT per bit width and scale granularity (grouped bars, values written on them),
    plus the BatchNorm / ShiftBN variants; the float model as a reference line."""
    rows = [r for r in data["rows"] if r["bits"] != "float"
            and r.get("chip_accuracy") is not None and np.isfinite(r["chip_accuracy"])]
    plain = [r for r in rows if r["model"] == "plain"]
    groups = list(dict.fromkeys((r["bits"], r["scales"]) for r in plain))
    other = [r for r in rows if r["model"] != "plain"]
    plt = F.plt()
    fig, ax = plt.subplots(figsize=(10.5, 4.6))
    w = 0.38
    x = np.arange(len(groups), dtype=float)
    kinds = [("PTQ", "PTQ (post-training)", dict(color="#9ecae1", hatch="///", edgecolor="k")),
             ("QAT", "QAT (quantization-aware)", dict(color="#ff7f0e", edgecolor="k"))]
    for j, (key, label, style) in enumerate(kinds):
        vals = []
        for g in groups:
            m = [r for r in plain if (r["bits"], r["scales"]) == g and
                 r["training"].startswith(key)]
            vals.append(100 * m[0]["chip_accuracy"] if m else np.nan)
        bars = ax.bar(x + (j - 0.5) * w, vals, w, label=label, lw=0.6, **style)
        ax.bar_label(bars, fmt="%.1f", fontsize=6.5, padding=1)
    labels = [f"{b}-bit\n{s}" for b, s in groups]
    xo = len(groups) + 0.2
    centers = [xo + 0.9 * k for k in range(len(other))]
    for c, r in zip(centers, other):
        is_q = not r["training"].startswith("PTQ")
        st = kinds[1][2] if is_q else kinds[0][2]
        b = ax.bar([c], [100 * r["chip_accuracy"]], w, lw=0.6, **st)
        ax.bar_label(b, fmt="%.1f", fontsize=6.5, padding=1)

    def short(r):
        m = {"BatchNorm (folded)": "BN folded", "ShiftBN (exported)": "ShiftBN"}.get(
            r["model"], r["model"])
        sc = {"per-channel": "per-ch."}.get(r["scales"], r["scales"])
        tr = r["training"].replace(" from scratch", "\n(scratch)")
        return f"{m}\n{r['bits']}-bit\n{sc}\n{tr}"
    ax.set_xticks(list(x) + centers, labels + [short(r) for r in other], fontsize=7)
    if other:
        ax.axvline(len(groups) - 0.4, color="0.6", lw=0.8)
    fl = data.get("float_accuracy")
    if fl:
        ax.axhline(100 * fl, color="k", ls="-", lw=0.8,
                   label=f"float model, plain ({100 * fl:.1f}%)")
    F.accuracy_axis(ax, CHANCE, "chip test accuracy (%)")
    ax.set_title("PTQ vs QAT on the chip: weight bits x scale granularity (left), batch-norm "
                 "variants (right)", fontsize=10)
    F.legend_outside(ax)
    return F.save(fig, out / "quantization", fmt, _caption(data))


def adversarial(data: dict, out: Path, fmt: str = "png") -> str:
    """FGSM: chip accuracy vs eps, one panel per encoding, one series per bit width / variant."""
    res = data["results"]
    encs = list(dict.fromkeys(r["encoding"] for r in res.values()))
    plt = F.plt()
    fig, axes = plt.subplots(1, len(encs), figsize=(4.2 * len(encs) + 1.6, 4.0), sharey=True,
                             squeeze=False)
    for ax, enc in zip(axes[0], encs):
        i = 0
        for r in res.values():
            if r["encoding"] != enc:
                continue
            keys = sorted(r["adv"], key=float)
            lab = f"{r['bits']}-bit" + (f", threshold {r['threshold']:g}"
                                        if r["threshold"] != 1 else "")
            ax.plot([float(k) for k in keys], [100 * r["adv"][k] for k in keys], label=lab,
                    **F.style(i))
            i += 1
        ax.set_xlabel("FGSM eps (x 1/255, L-inf)")
        F.accuracy_axis(ax, CHANCE, "chip accuracy under attack (%)")
        ax.set_title(f"{enc} encoding", fontsize=10)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.7)
    fig.suptitle("FGSM on the deployed chip: accuracy vs attack strength per encoding and "
                 "weight width", fontsize=10)
    return F.save(fig, out / "adversarial", fmt, _caption(data))


def conversion(data: dict, out: Path, fmt: str = "png") -> str:
    """Converted SNN accuracy on the chip vs T per method; the ANN as a same-colour line."""
    res = data["results"]
    plt = F.plt()
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    Ts = []
    for i, (name, r) in enumerate(res.items()):
        Ts = [x["timesteps"] for x in r["rows"]]
        st = F.style(i)
        ax.plot(Ts, [100 * x["snn_int_accuracy"] for x in r["rows"]],
                label=f"{name}: SNN on the chip", **st)
        if r.get("ann_accuracy") is not None:
            ax.axhline(100 * r["ann_accuracy"], color=st["color"], ls=(0, (2, 2)), lw=1,
                       label=f"{name}: ANN ({100 * r['ann_accuracy']:.1f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(t) for t in Ts])
    ax.set_xlabel("time steps T")
    F.accuracy_axis(ax, CHANCE, "test accuracy (%)")
    ax.set_title("ANN -> SNN conversion: chip accuracy vs time steps", fontsize=10)
    F.legend_outside(ax)
    return F.save(fig, out / "conversion", fmt, _caption(data))


PLOTS = {"mismatch": mismatch, "quantization": quantization, "adversarial": adversarial,
         "conversion": conversion}


def replot(name: str, out: Path, fmt: str = "png") -> str:
    """Redraw ``<out>/<name>.<fmt>`` from ``<out>/<name>.json``."""
    import json
    path = Path(out) / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the experiment first")
    f = PLOTS[name](json.loads(path.read_text()), Path(out), fmt)
    print(f"wrote {f}")
    return f


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="redraw the experiments' figures from their JSON")
    p.add_argument("names", nargs="*", default=list(PLOTS))
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs"
                   / "experiments")
    p.add_argument("--format", default="png", choices=F.FORMATS)
    a = p.parse_args()
    for n in a.names:
        replot(n, a.out, a.format)
