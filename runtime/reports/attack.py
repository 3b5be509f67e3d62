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


def attack_caption(out: dict, data=None) -> str:
    """The settings line of an attack figure."""
    parts = [f"data {data}" if data else None, f"n = {out.get('n')}",
             f"T = {out.get('timesteps')}", f"encoding {out.get('encoding')}",
             f"surrogate {out.get('surrogate')}"]
    if out.get("attack") == "pgd":
        parts.append(f"PGD-{out.get('steps')} (alpha {out.get('alpha') or 'eps/4'})")
    if out.get("eot", 1) and out.get("eot", 1) > 1:
        parts.append(f"EOT {out['eot']}")
    parts.append("every example evaluated on the cycle-level chip runtime")
    return ", ".join(p for p in parts if p)


def plot_accuracy_vs_eps(runs: list[dict], path, *, title: str | None = None,
                         caption: str | None = None, chance: float | None = None,
                         fmt: str | None = None, ax=None) -> str | None:
    """Accuracy vs eps, one distinguishable line per (encoding, attack, label) run; y 0..100 %.

    With ``ax`` it draws into that axes and returns None (multi-panel figures)."""
    from runtime.reports import figures as F

    own = ax is None
    if own:
        fig, ax = F.plt().subplots(figsize=(6.8, 3.8))
    for i, out in enumerate(runs):
        rs = [r for r in out["results"] if r is not None and r.get("eps") is not None]
        if not rs:
            continue
        xs = [0.0] + [r["eps"] * 255 for r in rs]
        ys = [rs[0]["clean_accuracy"] * 100] + [r["adv_accuracy"] * 100 for r in rs]
        lab = out.get("label") or f"{out['attack']} {out['encoding']}"
        ax.plot(xs, ys, label=lab, **F.style(i))
    ax.set_xlabel("eps (x 1/255, L-inf)")
    F.accuracy_axis(ax, chance, "accuracy under attack (%)")
    if title:
        ax.set_title(title, fontsize=10)
    if not own:
        ax.legend(fontsize=7, loc="best", framealpha=0.7)
        return None
    F.legend_outside(ax)
    return F.save(fig, path, fmt, caption)


def markdown_results(out: dict) -> str:
    from runtime.reports.provenance import markdown as prov_md
    from runtime.reports.run import warnings_markdown
    t = results_table(out).splitlines()
    lines = [f"# {t[0]}", "", *warnings_markdown(out.get("warnings")), "```", *t[1:], "```", ""]
    prov = prov_md(out.get("provenance"))
    return "\n".join(lines) + ("\n" + prov if prov else "")
