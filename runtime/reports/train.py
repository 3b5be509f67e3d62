"""Tables and figures of ``snnrun train`` (on-chip training, runtime/lab/onchip.py)."""

from __future__ import annotations

import json
from pathlib import Path

from compiler.cliutil import jsonable


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _eng(v: float, unit: str = "") -> str:
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {p}{unit}"
    return f"{v:.0f} {unit}".strip()


def summary_rows(rep: dict) -> list[tuple[str, str]]:
    c = rep["cost"]
    rows = [
        ("accuracy before (runtime)", _pct(rep["accuracy_before"]) + " %"),
        ("accuracy after (runtime)", _pct(rep["accuracy_after"]) + " %"),
        ("epochs", str(rep["epochs"])),
        ("workers (chips)", str(rep["workers"])),
        ("rounds", "-" if rep["rounds"] is None else str(rep["rounds"])),
        ("trainable synapses", f"{rep['trainable_synapses']:,}"),
        ("weights changed", f"{rep['weights_changed']:,}"),
        ("cycles (FP / BP / WG / DRAM)",
         f"{_eng(c['cycles'])} ({_eng(c['fp_cycles'])} / {_eng(c['bp_cycles'])} / "
         f"{_eng(c['wg_cycles'])} / {_eng(c['dram_cycles'])})"),
        ("time at clock", f"{c['time_s'] * 1e3:.2f} ms"),
        ("energy", f"{c['energy_uj']:.1f} uJ"),
        ("FP16 FLOPs", _eng(c["flops"], "FLOP")),
        ("DRAM bytes (chip)", _eng(c["dram_bytes"], "B")),
        ("DRAM bytes (GPU dense BPTT model)", _eng(c["gpu_dram_bytes_estimate"], "B")),
        ("input event density", "-" if c["input_event_density"] is None
         else f"{c['input_event_density']:.3f}"),
        ("nonzero surrogate derivatives", "-" if c["derivative_density"] is None
         else f"{c['derivative_density']:.3f}"),
    ]
    if "communication_bytes" in c:
        rows.append(("communication per round", _eng(c["communication_bytes_per_round"], "B")))
    return rows


def train_table(rep: dict) -> str:
    rows = summary_rows(rep)
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def markdown(rep: dict) -> str:
    out = ["# On-chip training report", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in summary_rows(rep)]
    out += ["", "## History (runtime accuracy after each epoch or round)", "",
            "| step | loss | accuracy % |", "|---|---|---|"]
    for h in rep["history"]:
        k = f"round {h['round']}" if "round" in h else f"epoch {h['epoch']}"
        out.append(f"| {k} | {h['loss']:.4f} | {_pct(h['accuracy'])} |")
    return "\n".join(out) + "\n"


def plot_history(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h = rep["history"]
    xs = [0] + [x.get("round", x.get("epoch")) for x in h]
    ys = [100 * rep["accuracy_before"]] + [100 * x["accuracy"] for x in h]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel("round" if rep["rounds"] is not None else "epoch")
    ax.set_ylabel("runtime accuracy (%)")
    ax.set_title("on-chip training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_cost(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = rep["cost"]
    fig, axs = plt.subplots(1, 3, figsize=(10, 3.2))
    names = ["FP", "BP", "WG", "DRAM"]
    axs[0].bar(names, [c["fp_cycles"], c["bp_cycles"], c["wg_cycles"], c["dram_cycles"]],
               color=["C0", "C1", "C2", "C3"])
    axs[0].set_title("cycles per engine")
    e = c["energy_breakdown_uj"]
    axs[1].bar(names, [e["fp"], e["bp"], e["wg"], e["dram"]], color=["C0", "C1", "C2", "C3"])
    axs[1].set_title("energy (uJ)")
    axs[2].bar(["chip", "GPU model"], [c["dram_bytes"], c["gpu_dram_bytes_estimate"]],
               color=["C0", "C7"])
    axs[2].set_title("DRAM bytes")
    for ax in axs:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(directory, rep: dict, plots: bool = False) -> list[Path]:
    """report.json, report.md and (plots) accuracy.png, cost.png into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = [d / "report.json", d / "report.md"]
    out[0].write_text(json.dumps(jsonable(rep), indent=1) + "\n")
    out[1].write_text(markdown(rep))
    if plots:
        plot_history(rep, d / "accuracy.png")
        plot_cost(rep, d / "cost.png")
        out += [d / "accuracy.png", d / "cost.png"]
    return out
