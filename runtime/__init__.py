"""snnc runtime: execution of chip.bin images (engines), encodings, the robustness lab, reports.

    image = runtime.load("chip.bin")
    result = runtime.run(image, x, timesteps=8, encoding="direct")
    result.accuracy(y), result.summary()

Users import :mod:`snnc` (the public facade); these names stay for compatibility.
"""

from runtime.engines import RunResult, run, run_payloads
from runtime.image import ChipImage, load


def train(image, x, y, x_test=None, y_test=None, config=None, **kw):
    """On-chip training of a deployed image -> ``(tuned ChipImage, report)``
    (:func:`runtime.lab.onchip.train`; docs/runtime.md 'On-chip training')."""
    from runtime.lab.onchip import train as _train
    return _train(image, x, y, x_test, y_test, config, **kw)


__all__ = ["ChipImage", "load", "run", "run_payloads", "RunResult", "train"]
