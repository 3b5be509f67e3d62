"""snnc runtime: execution of chip.bin images (engines), encodings, the robustness lab, reports.

    image = runtime.load("chip.bin")
    result = runtime.run(image, x, timesteps=8, encoding="direct")
    result.accuracy(y), result.summary()

    tuned, report = runtime.train(image, x, y, epochs=3)    # on-chip fine-tuning

Users import :mod:`snnc` (the public facade); these names stay for compatibility. This package
``__init__`` is a namespace of re-exports: the execution modules below it (image, engines,
kernels) never import the lab, but ``runtime.train`` re-exports the lab's on-chip training.
"""

from runtime.engines import RunResult, run, run_payloads
from runtime.image import ChipImage, load


def train(image, x, y, x_test=None, y_test=None, config=None, **kw):
    """On-chip fine-tuning of ``image`` -> ``(tuned ChipImage, report)``: see
    :func:`runtime.lab.onchip.train` (options: :class:`runtime.lab.onchip.OnChipConfig`)."""
    from runtime.lab.onchip import train as _train
    return _train(image, x, y, x_test, y_test, config, **kw)


__all__ = ["ChipImage", "load", "run", "run_payloads", "RunResult", "train"]
