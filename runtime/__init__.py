"""snnc runtime: cycle-level execution of chip.bin images, robustness evaluation, reports.

    image = runtime.load("chip.bin")
    result = runtime.run(image, x, timesteps=8, encoding="direct")
    result.accuracy(y), result.summary()
"""

from runtime.image import ChipImage, load
from runtime.simulator import RunResult, run, run_payloads

__all__ = ["ChipImage", "load", "run", "run_payloads", "RunResult"]
