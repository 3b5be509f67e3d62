import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.append(str(Path(__file__).parent))  # tests/factories.py

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files.")


@pytest.fixture
def update_golden(request):
    return request.config.getoption("--update-golden")


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    """Tests run quiet (progress lines would mix into CliRunner's output); the progress tests
    turn it back on with monkeypatch.delenv("SNNC_QUIET")."""
    from compiler import progress
    monkeypatch.setenv("SNNC_QUIET", "1")
    progress.set_quiet(False)
