"""Turning runtime and lab results into text tables, Markdown, JSON and matplotlib figures.

One module per result kind: :mod:`~runtime.reports.run` (a plain run),
:mod:`~runtime.reports.attack` (attack sweeps), :mod:`~runtime.reports.noise` (device-noise
sweeps, worst case, certificates),
:mod:`~runtime.reports.compare` (``snnrun compare``). The lab computes and returns data; only this
package and the CLIs (runtime/cli) format or draw it.
"""

from runtime.reports.run import markdown, run_table, write_report

__all__ = ["run_table", "markdown", "write_report"]
