"""Fuzz profiles: short by default (runs in `make test`), long with SNNC_FUZZ=long (`make fuzz`)."""

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("SNNC_FUZZ") == "long"
settings.register_profile("fuzz-short", derandomize=True, deadline=None, max_examples=30,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("fuzz-long", deadline=None, max_examples=3000,
                          suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile("fuzz-long" if LONG else "fuzz-short")
