"""Deprecated location: the tick engine is :mod:`runtime.engines.tick` (run, run_payloads)."""

import warnings

from runtime.engines.tick import *  # noqa: F401,F403
from runtime.engines.tick import RunResult, dense_rows, run, run_payloads, tables  # noqa: F401

warnings.warn("runtime.simulator is deprecated; use runtime.engines (or snnc.run)",
              DeprecationWarning, stacklevel=2)
