"""`bridge dev up|env|down` as a user runs them (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bridge import devstack

pytestmark = pytest.mark.integration


def _bridge(*args, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "BRIDGE_"))}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kw,
    )


def test_second_up_reports_the_running_stack(stack):
    res = _bridge("dev", "up", "--state-dir", str(stack.state_dir))
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stderr and str(stack.mlflow_pid) in res.stderr
    assert f"export MLFLOW_TRACKING_URI={stack.mlflow_url}" in res.stdout
    env = _bridge("dev", "env", "--state-dir", str(stack.state_dir))
    assert env.returncode == 0 and env.stdout == res.stdout


def test_env_without_a_stack_is_a_usage_error(tmp_path):
    res = _bridge("dev", "env", "--state-dir", str(tmp_path))
    assert (
        res.returncode == 2
        and "no dev stack is running" in res.stderr
        and "bridge dev up" in res.stderr
    )


def test_down_stops_exactly_what_up_started(tmp_path):
    up = _bridge("dev", "up", "--state-dir", str(tmp_path))
    assert up.returncode == 0, up.stderr
    stack = devstack.read_state(tmp_path)
    assert stack.is_running()
    down = _bridge("dev", "down", "--state-dir", str(tmp_path))
    assert down.returncode == 0 and str(stack.mlflow_pid) in down.stderr
    assert not devstack._alive(stack.mlflow_pid, "mlflow") and not devstack._alive(
        stack.s3_pid, "moto"
    )
    assert devstack.read_state(tmp_path) is None
    again = _bridge("dev", "down", "--state-dir", str(tmp_path))
    assert again.returncode == 0 and "no dev stack was running" in again.stderr
