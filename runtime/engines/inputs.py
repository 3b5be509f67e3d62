"""Input checks shared by the engines: what ``run_payloads`` accepts (stage: runtime)."""

from __future__ import annotations

import numpy as np

from compiler.errors import SimulationError
from runtime.validate import MAX_TIMESTEPS


def check_payloads(image, payloads) -> np.ndarray:
    """``payloads`` as uint8 [T, B, n_in] for ``image``, refused with a SimulationError when the
    shape, the value range or T (1..MAX_TIMESTEPS) is wrong."""
    p = np.asarray(payloads)
    if p.ndim != 3 or p.shape[2] != image.n_inputs:
        raise SimulationError(f"payloads must have shape [T, B, {image.n_inputs}], got "
                              f"{list(p.shape)}")
    if p.dtype != np.uint8:
        if p.size and (p.min() < 0 or p.max() > 255):
            raise SimulationError("payloads must be integers in 0..255")
        p = p.astype(np.uint8)
    T = p.shape[0]
    if T < 1:
        raise SimulationError("need at least one timestep")
    if T > MAX_TIMESTEPS:
        raise SimulationError(f"{T} timesteps is more than the limit of {MAX_TIMESTEPS}")
    return p
