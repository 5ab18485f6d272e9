"""The KFP run context against the real MLflow server: a terminated or timed-out task
leaves its MLflow run FAILED, never RUNNING or FINISHED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import unique

pytestmark = pytest.mark.integration

# A KFP task body: starts the run, says so, then works "forever".
TASK = """
import pathlib, sys, time
from bridge.kfp_run import KfpLineage, mlflow_run

experiment, marker, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
lineage = KfpLineage.resolve(component="sleeper", task_name="sleep-task")
with mlflow_run(experiment=experiment, lineage=lineage, deadline_seconds=deadline) as run:
    run.log_params({"work": "sleep"})
    pathlib.Path(marker).write_text(run.run_id)
    while True:
        time.sleep(0.1)
"""


def _start(scope, tmp_path, experiment: str, deadline: float):
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", TASK, experiment, str(marker), str(deadline)],
        env={**os.environ, **scope.env, "KFP_POD_NAME": "sleeper-pod-1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait (bounded) until the run exists; this bounds the test, it asserts no timing.
    for _ in range(1200):
        if marker.exists() and marker.read_text() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert marker.exists(), proc.communicate(timeout=60)
    return proc, marker.read_text()


def test_sigterm_marks_the_run_failed(scope, client, tmp_path):
    proc, run_id = _start(scope, tmp_path, unique("kfp-term"), deadline=0)
    assert client.get_run(run_id).info.status == "RUNNING"

    proc.send_signal(signal.SIGTERM)  # what Kubernetes sends when a run is cancelled
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode != 0
    run = client.get_run(run_id)
    assert run.info.status == "FAILED", stderr
    assert "TaskTerminated" in run.data.tags["bridge.kfp.failure"]
    assert run.data.tags["kfp.pod_name"] == "sleeper-pod-1"
    assert run.data.tags["kfp.task_name"] == "sleep-task"


def test_deadline_marks_the_run_failed(scope, client, tmp_path):
    proc, run_id = _start(scope, tmp_path, unique("kfp-deadline"), deadline=10)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode != 0
    assert "did not finish within its deadline of 10s" in stderr
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "DeadlineExceeded" in run.data.tags["bridge.kfp.failure"]
