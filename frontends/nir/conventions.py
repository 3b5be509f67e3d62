"""Per-producer NIR conventions: how each framework discretises, resets and spikes.

See frontends/nir/__init__.py for the table and sources.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Convention:
    """How one producer discretises and resets (see the module docstring's table)."""

    name: str
    dt: float | None            # default dt (None: required)
    decay: str                  # 'euler': beta = 1 - dt/tau | 'exact': beta = exp(-dt/tau)
    lif_gain: str               # 'r*dt/tau' | 'dt/tau' | '1'
    if_gain: str                # 'r*dt' | 'r' | '1' | '1/r'
    predicate: str              # '>' | '>='
    reset: str                  # 'to_value' | 'subtract' | 'zero' | 'metadata'
    timing: str                 # 'same' | 'next_reset' | 'next_spike'
    if_floor: bool = False      # IF membrane floored at -threshold (sinabs)


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("nir", None, "euler", "r*dt/tau", "r*dt", ">", "to_value", "same"),
    Convention("snnc", None, "euler", "r*dt/tau", "r*dt", ">=", "metadata", "same"),
    Convention("snntorch", 1e-4, "euler", "r*dt/tau", "1/r", ">", "subtract", "next_reset"),
    Convention("norse", 1e-3, "euler", "dt/tau", "1", ">", "to_value", "same"),
    Convention("sinabs", 1.0, "exact", "1", "1", ">=", "subtract", "same", if_floor=True),
    Convention("rockpool", 1e-3, "exact", "1", "1", ">=", "subtract", "same"),
    Convention("spyx", None, "euler", "dt/tau", "1", ">", "subtract", "next_spike"),
    Convention("lava", 1e-4, "euler", "dt/tau", "1/r", ">", "zero", "same"),
)}
CONVENTION_NAMES = tuple(CONVENTIONS)
CUBALIF_MODES = ("error", "lif")
GAIN_RTOL = 1e-6      # r*dt/tau within float32 rounding of 1 is 1 (no Scale node)
CONVENTION_HINT = ("NIR leaves dt, the reset and the spike predicate open: pass "
                   "--nir-convention " + "|".join(CONVENTION_NAMES) + " (the framework that "
                   "exported the file; 'nir' = the NIR spec read literally) and --dt when the "
                   "convention has no default")
