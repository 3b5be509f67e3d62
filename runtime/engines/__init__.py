"""Execution engines for chip images (docs/runtime.md).

:mod:`~runtime.engines.tick` is the cycle-level tick engine, the living definition of what the chip
does (bit-exact with compiler/reference.py, with per-tick latency, busy cycles and link loads).
"""

from runtime.engines.tick import RunResult, run, run_payloads

__all__ = ["RunResult", "run", "run_payloads"]
