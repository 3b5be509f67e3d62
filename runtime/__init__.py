"""snnc runtime: execution of chip.bin images (engines), encodings, the robustness lab, reports.

    image = runtime.load("chip.bin")
    result = runtime.run(image, x, timesteps=8, encoding="direct")
    result.accuracy(y), result.summary()

Users import :mod:`snnc` (the public facade); these names stay for compatibility.
"""

from runtime.engines import RunResult, run, run_payloads
from runtime.image import ChipImage, load

__all__ = ["ChipImage", "load", "run", "run_payloads", "RunResult"]
