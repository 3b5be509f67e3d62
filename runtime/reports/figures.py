"""Figure conventions for every snnc plot (runtime/reports/*): fit for a paper.

* a title that says what is plotted, and a caption line under the axes with the experiment's
  settings (data, n, T, encoding, instances, ...): a figure read alone is still interpretable;
* accuracy axes anchored at 0..100 % with chance drawn as a dashed line (a 2-point drop looks
  like a 2-point drop), counts on integer ticks;
* distributions that are not Gaussian (accuracy over chip instances) drawn as box plots with
  every instance as a point, not a +-std band;
* every series distinguishable in greyscale: its own marker, line style and (open) marker size,
  so overlapping lines stay visible;
* ``fmt``: png (150 dpi), pdf or svg (vector).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMATS = ("png", "pdf", "svg")
STYLES = [  # (marker, linestyle, marker size): distinguishable without colour, overlaps visible
    ("o", "-", 7), ("s", "--", 6), ("^", "-.", 8), ("D", ":", 5), ("v", "-", 8),
    ("P", "--", 7), ("X", "-.", 7), ("*", ":", 9), ("<", "-", 7), (">", "--", 7),
]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22"]


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as _plt
    return _plt


def style(i: int) -> dict:
    """Line kwargs of series ``i``: colour, marker, line style, open marker of its own size."""
    m, ls, ms = STYLES[i % len(STYLES)]
    c = COLORS[i % len(COLORS)]
    return dict(color=c, marker=m, linestyle=ls, markersize=ms, markerfacecolor="none",
                markeredgewidth=1.4, linewidth=1.5, zorder=3 + (len(STYLES) - i % len(STYLES)))


def accuracy_axis(ax, chance: float | None = None, label: str = "accuracy (%)") -> None:
    """y from 0 to 100 % (a little headroom), chance as a dashed grey line."""
    ax.set_ylim(0, 102)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, axis="y")
    if chance:
        ax.axhline(100 * chance, color="0.4", lw=0.9, ls=(0, (4, 3)), zorder=1,
                   label=f"chance ({100 * chance:.0f}%)")


def legend_outside(ax, fontsize: int = 7) -> None:
    """The legend right of the axes: it never hides data points."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False)


def integer_ticks(ax, axis: str = "x") -> None:
    from matplotlib.ticker import MaxNLocator
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def caption(fig, text: str | None) -> None:
    """Settings line under the axes (wrapped)."""
    if not text:
        return
    import textwrap
    w = max(60, int(fig.get_figwidth() * 19))
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text, w)), fontsize=7, color="0.25",
             ha="left", va="bottom")


def save(fig, path, fmt: str | None = None, caption_text: str | None = None) -> str:
    """Caption, tight layout leaving room for it, write ``path`` (suffix = fmt), close."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
    if fmt not in FORMATS:
        from compiler.errors import SnnError
        raise SnnError(f"unknown figure format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    path = path.with_suffix("." + fmt)
    lines = 0
    if caption_text:
        import textwrap
        lines = len(textwrap.wrap(caption_text, max(60, int(fig.get_figwidth() * 19))))
        caption(fig, caption_text)
    bottom = min(0.35, (0.03 + 0.028 * lines) * 4.0 / fig.get_figheight()) if lines else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=150 if fmt == "png" else None)
    plt().close(fig)
    return str(path)


def distribution(ax, positions, samples, *, color="#1f77b4", width=0.5, seed: int = 0,
                 label: str | None = None) -> None:
    """Box plot per position plus every sample as a jittered point (bimodal results show)."""
    rng = np.random.default_rng(seed)
    data = [np.asarray(s, np.float64) * 100 for s in samples]
    ax.boxplot(data, positions=positions, widths=width, showfliers=False, patch_artist=True,
               boxprops=dict(facecolor="none", edgecolor=color),
               medianprops=dict(color=color, lw=1.6), whiskerprops=dict(color=color),
               capprops=dict(color=color), manage_ticks=False)
    for k, (p, d) in enumerate(zip(positions, data)):
        jit = rng.uniform(-width * 0.35, width * 0.35, size=len(d))
        ax.scatter(p + jit, d, s=9, color=color, alpha=0.45, lw=0, zorder=2,
                   label=label if k == 0 else None)


__all__ = ["FORMATS", "style", "accuracy_axis", "legend_outside", "integer_ticks", "caption",
           "save", "distribution", "plt"]
