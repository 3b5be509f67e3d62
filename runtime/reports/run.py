"""Tables (text, JSON, Markdown) and figures (matplotlib) of runtime results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compiler.cliutil import jsonable, table


def run_table(summary: dict) -> str:
    rows = []
    if summary.get("accuracy") is not None:
        rows.append(["accuracy", f"{100 * summary['accuracy']:.2f}%"])
    rows += [
        ["samples", summary["n"]],
        ["timesteps (T) / latency L", f"{summary['timesteps']} / {summary['latency_ticks']} ticks"],
        ["encoding", summary["encoding"]],
        ["SOPs / sample", f"{summary['sops_per_sample']:.0f}"],
        ["one-bit SOPs / sample", f"{summary['sops_1bit_per_sample']:.0f}"],
        ["spikes / sample", f"{summary['spikes_per_sample']:.0f}"],
        ["packets / hops / inter-chip hops",
         f"{summary['packets_per_sample']:.0f} / {summary['hops_per_sample']:.0f} / "
         f"{summary['interchip_hops_per_sample']:.0f}"],
        ["energy / sample", f"{summary['energy_uj_per_sample']:.4f} uJ"],
        ["energy at 2.64 pJ/SOP only", f"{summary['energy_sop_headline_uj']:.4f} uJ"],
        ["chip latency / sample",
         f"{summary['latency_us_per_sample']:.2f} us"
         if summary.get("latency_us_per_sample") is not None
         else "n/a (per-tick; run with --engine tick)"],
        ["engine", summary.get("engine", "tick")],
        ["simulator throughput", f"{summary['samples_per_s']:.1f} samples/s"],
    ]
    if "bit_exact" in summary:
        rows.append(["bit-exact vs reference", str(summary["bit_exact"])])
    out = table(rows, ["metric", "value"])
    rates = [[k, f"{v:.4f}"] for k, v in summary["layer_rates"].items()]
    energy = [[k, f"{v:.4f}"] for k, v in summary["energy_breakdown_uj"].items()]
    return (out + "\n\n" + table(rates, ["layer", "spikes/neuron/step"]) + "\n\n"
            + table(energy, ["energy part", "uJ/sample"])
            + "\n(latency L: ticks a spike needs to cross the pipeline; T steps take T + L "
              "ticks)")


def markdown(summary: dict, title: str = "snnrun report") -> str:
    from runtime.reports.provenance import markdown as prov_md
    lines = [f"# {title}", ""]
    lines += warnings_markdown(summary.get("warnings"))
    lines += ["| metric | value |", "|---|---|"]
    for k, v in summary.items():
        if isinstance(v, (dict, list)):
            continue
        lines.append(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |")
    lines += ["", "## Per-layer firing rates", "", "| layer | spikes/neuron/step |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in summary["layer_rates"].items()]
    lines += ["", "## Energy breakdown (uJ/sample)", "", "| part | uJ |", "|---|---|"]
    lines += [f"| {k} | {v:.6f} |" for k, v in summary["energy_breakdown_uj"].items()]
    prov = prov_md(summary.get("provenance"))
    return "\n".join(lines) + "\n" + ("\n" + prov if prov else "")


def warnings_markdown(warnings) -> list[str]:
    """A Markdown block of result warnings (lines; empty when there are none)."""
    if not warnings:
        return []
    return ["> **Warning**", ">"] + [f"> - {w}" for w in warnings] + [""]


def write_report(out_dir: str | Path, summary: dict, result=None, image=None,
                 plots: bool = False, fmt: str = "png") -> list[str]:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "report.json").write_text(json.dumps(jsonable(summary), indent=2))
    (d / "report.md").write_text(markdown(summary))
    files = [str(d / "report.json"), str(d / "report.md")]
    if plots and result is not None and image is not None:
        cap = (f"data {summary.get('data')} n = {summary.get('n')}, T = "
               f"{summary.get('timesteps')}, {summary.get('encoding')} encoding, latency L = "
               f"{summary.get('latency_ticks')} ticks; chip {image.spec.name}, "
               f"{image.n_cores} cores on {image.chips} chip(s); cycle-level tick engine")
        files += plot_run(d, result, image, fmt=fmt, caption=cap)
    return files


def _plt():
    from runtime.reports.figures import plt
    return plt()


def plot_run(d: Path, result, image, fmt: str = "png", caption: str | None = None) -> list[str]:
    """Per-layer firing rates, core activity per chip, NoC link load (captions: the run)."""
    from runtime.reports import figures as F
    plt = F.plt()
    files = []
    rates = result.layer_rates()
    fig, ax = plt.subplots(figsize=(max(4.6, 0.8 * len(rates) + 2.4), 3.4))
    ax.bar(list(rates), list(rates.values()), color="#1f77b4", edgecolor="k", lw=0.6)
    ax.set_ylabel("spikes / neuron / step")
    ax.set_ylim(bottom=0)
    ax.set_title("Per-layer firing rates on the chip", fontsize=10)
    ax.tick_params(axis="x", rotation=45)
    files.append(F.save(fig, d / f"layer_rates.{fmt}", fmt, caption))
    spec = image.spec
    a = image.a
    busy = result.core_busy / max(result.n, 1)
    for chip in range(image.chips):
        grid = np.full((spec.mesh_y, spec.mesh_x), np.nan)
        sel = np.flatnonzero(a["core_chip"] == chip)
        grid[a["core_y"][sel], a["core_x"][sel]] = busy[sel]
        fig, ax = plt.subplots(figsize=(5.0, 4.4))
        im = ax.imshow(grid, cmap="viridis", vmin=0)
        fig.colorbar(im, ax=ax, label="busy cycles / sample")
        ax.set_title(f"Core activity, chip {chip} (blank: unused core)", fontsize=10)
        ax.set_xlabel("mesh x")
        ax.set_ylabel("mesh y")
        F.integer_ticks(ax, "x")
        F.integer_ticks(ax, "y")
        files.append(F.save(fig, d / f"core_activity_chip{chip}.{fmt}", fmt, caption))
    cw, ch = image.meta["board"]["grid"]
    W, H = cw * spec.mesh_x, ch * spec.mesh_y
    load = result.link_load[: W * H * 4].reshape(H, W, 4).sum(axis=2) / max(result.n, 1)
    fig, ax = plt.subplots(figsize=(max(5.0, W / 3), max(4.4, H / 3)))
    im = ax.imshow(load, cmap="magma", vmin=0)
    fig.colorbar(im, ax=ax, label="flits leaving the router / sample")
    ax.set_title("NoC link load (board)", fontsize=10)
    ax.set_xlabel("board x")
    ax.set_ylabel("board y")
    F.integer_ticks(ax, "x")
    F.integer_ticks(ax, "y")
    files.append(F.save(fig, d / f"link_load.{fmt}", fmt, caption))
    return files
