"""Settings for the temporary Prefect server a sweep starts: no telemetry, time for a first start."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import prefect.context
import pytest
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    Settings,
    get_current_settings,
    temporary_settings,
)

from prefect_hpo.temporary_server import STARTUP_TIMEOUT_S, temporary_server_settings
from tests.conftest import ROOT
from tests.processes import left_behind


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Prefect's settings as a user has them who set neither setting nor PREFECT_API_URL."""
    for name in (
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
        "PREFECT_API_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    context = prefect.context.get_settings_context()
    with prefect.context.SettingsContext(profile=context.profile, settings=Settings()):
        yield


@pytest.mark.usefixtures("defaults")
def test_a_temporary_server_gets_no_telemetry_and_a_longer_start() -> None:
    with temporary_server_settings():
        # what Prefect hands the server process it starts (SubprocessASGIServer's environment)
        env = get_current_settings().to_environment_variables(exclude_unset=True)
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "False"
        assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == str(STARTUP_TIMEOUT_S)


@pytest.mark.usefixtures("defaults")
def test_what_the_user_set_is_kept() -> None:
    updates = {PREFECT_SERVER_ANALYTICS_ENABLED: True, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 7}
    with temporary_settings(updates=updates), temporary_server_settings():
        settings = get_current_settings()
        assert settings.server.analytics_enabled is True
        assert settings.server.ephemeral.startup_timeout_seconds == 7


@pytest.mark.usefixtures("defaults")
def test_a_configured_server_is_left_alone() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}), temporary_server_settings():
        assert "analytics_enabled" not in get_current_settings().server.model_fields_set


SLOW_START = """
from prefect_hpo import Budget, Float, sweep

def train(config):
    return config["x"]

if __name__ == "__main__":
    sweep(train, {"x": Float(0, 1)}, budget=Budget(max_trials=2), storage=STORAGE, name="slow-start")
"""


def test_a_server_that_starts_too_slowly_is_named_with_the_setting(tmp_path: Path) -> None:
    """A temporary server that does not answer in time ends the script with one line that names the setting
    giving it longer (and the alternative), no traceback, and nothing of the script left running."""
    script = tmp_path / "slow_start.py"
    script.write_text(SLOW_START.replace("STORAGE", repr(f"sqlite:///{tmp_path / 'hpo.db'}")))
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    env.update(PYTHONPATH=str(ROOT), SLOW_START_MARKER=marker)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in done.stderr and "PREFECT_API_URL" in done.stderr
    assert "did not answer within 1 s" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert left_behind("SLOW_START_MARKER", marker, within=10.0) == []
