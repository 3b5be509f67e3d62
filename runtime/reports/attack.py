"""Tables and figures of attack results (runtime/lab/attacks.py)."""

from __future__ import annotations

import math


def _fmt(v, pct=True, digits=2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:.{digits}f}%" if pct else f"{v:.{digits}f}"


def eps_label(eps) -> str:
    if eps is None:
        return "-"
    k = eps * 255
    return f"{k:g}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def results_table(out: dict) -> str:
    """A readable text table of an attack result dict."""
    from compiler.cliutil import table
    rows = []
    for r in out["results"]:
        row = [eps_label(r.get("eps")), _fmt(r["clean_accuracy"]), _fmt(r["adv_accuracy"]),
               _fmt(r["accuracy_loss"]), _fmt(r["asr"]),
               _fmt(r["spike_activity_change"]), _fmt(r.get("nsr_db"), False, 1)]
        if out["attack"] == "sda":
            row += [_fmt(r.get("sda_success_rate")), _fmt(r.get("l0_mean"), False, 1),
                    _fmt(r.get("l0_median"), False, 0)]
        else:
            row += [_fmt(r.get("l2"), False, 3), _fmt(r.get("linf"), False, 4)]
        if "source_adv_accuracy" in r:
            row += [_fmt(r["source_adv_accuracy"])]
        rows.append(row)
    head = ["eps", "clean acc", "adv acc", "acc loss", "ASR", "spike chg", "NSR dB"]
    head += ["SDA success", "L0 mean", "L0 median"] if out["attack"] == "sda" else ["L2", "Linf"]
    if out["results"] and "source_adv_accuracy" in out["results"][0]:
        head += ["float adv acc"]
    title = (f"{out['attack'].upper()} ({out['level']} level, encoding {out['encoding']}, "
             f"surrogate {out['surrogate']}, T={out['timesteps']}, n={out['n']})")
    return title + "\n" + table(rows, head)


def plot_accuracy_vs_eps(runs: list[dict], path) -> str:
    """Accuracy vs eps, one line per (encoding, attack, label) run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for out in runs:
        rs = [r for r in out["results"] if r.get("eps") is not None]
        if not rs:
            continue
        xs = [0.0] + [r["eps"] * 255 for r in rs]
        ys = [rs[0]["clean_accuracy"] * 100] + [r["adv_accuracy"] * 100 for r in rs]
        lab = out.get("label") or f"{out['attack']} {out['encoding']}"
        ax.plot(xs, ys, marker="o", label=lab)
    ax.set_xlabel("eps (x 1/255)")
    ax.set_ylabel("chip accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def markdown_results(out: dict) -> str:
    t = results_table(out).splitlines()
    lines = [f"# {t[0]}", "", "```", *t[1:], "```", ""]
    return "\n".join(lines)
