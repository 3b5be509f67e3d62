"""Per-producer NIR conventions: how each framework discretises, resets and spikes.

NIR leaves the time step, the discretisation, the spike predicate and the reset open, so every
producer's file means something slightly different (see frontends/nir/read.py's docstring and
docs/frontends.md for the table with producer versions and sources). A :class:`Convention`
names one producer's answers; :func:`detect` reads what a file itself says about its producer
version and time step where that is unambiguous (Rockpool's dt in r, Spyx 1.0's r = beta, Norse
1.1's tau = dt * tau_mem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convention:
    """How one producer discretises and resets (see docs/frontends.md's table)."""

    name: str
    dt: float | None            # default dt (None: required)
    decay: str                  # 'euler': beta = 1 - dt/tau | 'exact': beta = exp(-dt/tau)
    lif_gain: str               # 'r*dt/tau' | 'dt/tau' | '1'
    if_gain: str                # 'r*dt' | 'r' | '1' | '1/r'
    predicate: str              # '>' | '>='
    reset: str                  # 'to_value' | 'subtract' | 'zero' | 'metadata'
    timing: str                 # 'same' | 'next_reset' (subtract one step late, after the leak)
    if_floor: bool = False      # IF membrane floored at -threshold (sinabs)
    late_spike: bool = False    # the producer emits the spike one step after the crossing
    multispike: bool = False    # the producer may emit several spikes per step
    cuba: str = "w_in"          # CubaLIF DC gain: 'w_in'|'tau_syn/dt'|'exp'|'exp_pre'
    dt_from: str | None = None  # how the file carries dt: 'rockpool' (r) | 'spyx' (r = beta)
    producer: str = ""          # the release this convention reproduces


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("nir", None, "euler", "r*dt/tau", "r*dt", ">", "to_value", "same",
               producer="the NIR 1.0 spec read literally"),
    Convention("snnc", None, "euler", "r*dt/tau", "r*dt", ">=", "metadata", "same",
               producer="snnc"),
    Convention("snntorch", 1e-4, "euler", "r*dt/tau", "1/r", ">", "subtract", "next_reset",
               producer="snnTorch 1.0 (reset_mechanism='subtract')"),
    Convention("snntorch-zero", 1e-4, "euler", "r*dt/tau", "1/r", ">", "zero", "same",
               producer="snnTorch 1.0 (reset_mechanism='zero')"),
    Convention("norse", 1e-3, "euler", "dt/tau", "1", ">", "to_value", "same",
               cuba="tau_syn/dt", producer="Norse 1.1"),
    Convention("sinabs", 1.0, "exact", "1", "1", ">=", "subtract", "same", if_floor=True,
               multispike=True, cuba="exp", producer="Sinabs 3.1"),
    Convention("rockpool", 1e-3, "exact", "1", "1", ">=", "subtract", "same", multispike=True,
               cuba="exp_pre", dt_from="rockpool", producer="Rockpool 3.1"),
    Convention("spyx", 1.0, "euler", "1", "1", ">", "subtract", "next_reset", late_spike=True,
               cuba="tau_syn/dt", dt_from="spyx", producer="Spyx 1.0"),
    Convention("spyx-0", None, "euler", "dt/tau", "1", ">", "subtract", "same", late_spike=True,
               producer="Spyx before 1.0 (the NIR paper's files)"),
    Convention("lava", 1e-4, "euler", "dt/tau", "1/r", ">", "zero", "same",
               producer="lava-dl/Lava via the NIR paper's nir_to_lava.py"),
)}
CONVENTION_NAMES = tuple(CONVENTIONS)
CUBALIF_MODES = ("error", "lif")
GAIN_RTOL = 1e-6      # r*dt/tau within float32 rounding of 1 is 1 (no Scale node)
DT_RTOL = 1e-3        # dt read back from several neurons must agree this well (float32 files)
CONVENTION_HINT = ("NIR leaves dt, the reset and the spike predicate open: pass "
                   "--nir-convention " + "|".join(CONVENTION_NAMES) + " (the framework that "
                   "exported the file; 'nir' = the NIR spec read literally) and --dt when the "
                   "convention has no default")
NORSE_TAU_BUG = ("Norse 1.1's exporter (norse.torch.to_nir) writes tau = dt / tau_mem_inv, i.e. "
                 "dt * tau_mem instead of tau_mem")


def _lambertw(y: np.ndarray) -> np.ndarray:
    """Principal branch of W (x e^x = y) for y > 0, by Newton iterations (no scipy needed)."""
    w = np.log1p(y)
    for _ in range(60):
        ew = np.exp(w)
        w = w - (w * ew - y) / (ew * (w + 1.0))
    return w


def _agree(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    if not v.size or np.any(v <= 0):
        return None
    m = float(np.median(v))
    return m if np.all(np.abs(v - m) <= DT_RTOL * m) else None


def rockpool_dt(taus: list[np.ndarray], rs: list[np.ndarray]) -> float | None:
    """Rockpool 3.1 writes r = tau * exp(-dt/tau) / dt; solve for dt (dt/tau = W(1/r))."""
    if not taus:
        return None
    tau = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in taus])
    r = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in rs])
    tau, r = np.broadcast_arrays(tau, r)
    if np.any(r <= 0) or np.any(tau <= 0) or not np.all(np.isfinite(r * tau)):
        return None
    dt = tau * _lambertw(1.0 / r)
    # r = 1 everywhere is a generic file (W(1) * tau); only trust r that encodes a dt
    if np.allclose(r, 1.0):
        return None
    return _agree(dt)


def spyx_dt(taus: list[np.ndarray], rs: list[np.ndarray]) -> float | None:
    """Spyx 1.0 writes tau = dt / (1 - beta) and r = beta: dt = tau * (1 - r), 0 < r < 1."""
    if not taus:
        return None
    tau = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in taus])
    r = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in rs])
    tau, r = np.broadcast_arrays(tau, r)
    if np.any(r <= 0) or np.any(r >= 1) or np.any(tau <= 0):
        return None
    return _agree(tau * (1.0 - r))


def finite_dt(dt, where: str):
    """``dt`` as a positive finite float, or a FrontendError saying what was given."""
    from compiler.errors import FrontendError
    if dt is None:
        return None
    try:
        a = np.asarray(dt)
        if a.dtype.kind in "SUO":
            raise ValueError
        v = float(a.reshape(-1)[0]) if a.size == 1 else float("nan")
    except (TypeError, ValueError):
        raise FrontendError(f"{where}: dt must be a number (seconds), got {dt!r}",
                            "pass --dt or fix metadata['dt'] in the file") from None
    if not (v > 0 and math.isfinite(v)):
        raise FrontendError(f"{where}: dt must be finite and > 0, got {v!r}",
                            "pass --dt or fix metadata['dt'] in the file")
    return v
