"""The components under Kubeflow Pipelines' own MLflow integration, against the real MLflow server.

KEP-12862 (kubeflow/pipelines, proposals/12862-mlflow-integration/README.md at commit
279ca1c4129863d50511f826c6d5b8fda8326f57, "End-to-End Flow" and Goals 2 and 6): the API
server creates a parent run per pipeline run, the driver creates a nested run per task
(child of the parent) and sets MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID and MLFLOW_RUN_ID
(the nested run) on the task's container. No KFP backend can run here, so the test makes
that run tree with MLflow's own client as the driver would, then runs the component code in
a fresh process with exactly those variables. Without them, the components make their own
run as before (tests/integration/test_kfp_pipeline.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bridge import keys

from .conftest import unique

pytestmark = pytest.mark.integration

TASK = """
import json, sys
from bridge import kfp_ops
from bridge.kfp_run import KfpLineage

lineage = KfpLineage.resolve(
    pipeline_name="churn", run_id="kfp-run-7", task_name="train-and-log", component="train-and-log"
)
trained = kfp_ops.train_and_log(experiment=sys.argv[1], lineage=lineage)
registered = kfp_ops.register_model(model_name=sys.argv[2], run_id=trained.run_id,
                                    model_uri=trained.model_uri)
print(json.dumps({"run_id": trained.run_id, "version": registered.version}))
"""


def _kfp_run_tree(client, name: str) -> tuple[str, str, str]:
    """(experiment id, parent run id, the train task's nested run id), as KFP makes them."""
    experiment_id = client.create_experiment(f"kfp-{name}")
    parent = client.create_run(experiment_id, run_name=f"pipeline-{name}").info.run_id
    task = client.create_run(
        experiment_id, run_name="train-and-log", tags={"mlflow.parentRunId": parent}
    ).info.run_id
    return experiment_id, parent, task


def _run_task(scope, env: dict[str, str], experiment: str, model: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", TASK, experiment, model],
        env={**os.environ, **scope.env, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_components_log_into_the_run_kfp_made_for_the_task(scope, client):
    name = unique("kfp-mlflow")
    experiment_id, parent, task_run = _kfp_run_tree(client, name)
    before = {r.info.run_id for r in client.search_runs([experiment_id])}
    out = _run_task(
        scope,
        {"MLFLOW_RUN_ID": task_run, "MLFLOW_EXPERIMENT_ID": experiment_id},
        experiment=f"own-{name}",
        model=name,
    )
    # The component logged into KFP's nested run: no run of its own, no experiment of its own.
    assert out["run_id"] == task_run
    assert {r.info.run_id for r in client.search_runs([experiment_id])} == before
    assert client.get_experiment_by_name(f"own-{name}") is None
    run = client.get_run(task_run)
    assert run.info.run_name == "train-and-log"  # KFP's name kept
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.metrics["accuracy"] > 0.8 and "C" in run.data.params
    # What KFP does not add: bridge's lineage tags, the registered version, the link to it.
    assert run.data.tags[keys.KFP_RUN_ID_TAG] == "kfp-run-7"
    assert run.data.tags[keys.KFP_PIPELINE_NAME_TAG] == "churn"
    version = client.get_model_version(name, out["version"])
    assert version.run_id == task_run
    assert version.tags[keys.SOURCE_RUN_TAG] == task_run
    assert version.tags[keys.KFP_RUN_ID_TAG] == "kfp-run-7"


def test_register_task_under_kfp_links_its_own_run_to_the_registry(scope, client):
    """The register task gets its own nested run from KFP; it records which version it made."""
    name = unique("kfp-mlflow-reg")
    experiment_id, parent, train_run = _kfp_run_tree(client, name)
    out = _run_task(
        scope,
        {"MLFLOW_RUN_ID": train_run, "MLFLOW_EXPERIMENT_ID": experiment_id},
        experiment="",
        model=name,
    )
    register_run = client.create_run(
        experiment_id, run_name="register-model", tags={"mlflow.parentRunId": parent}
    ).info.run_id
    code = (
        "import sys; from bridge import kfp_ops; "
        "print(kfp_ops.register_model(model_name=sys.argv[1], run_id=sys.argv[2]).version)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, name, out["run_id"]],
        env={**os.environ, **scope.env, "MLFLOW_RUN_ID": register_run},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    version = res.stdout.strip().splitlines()[-1]
    tags = client.get_run(register_run).data.tags
    assert tags[keys.REGISTERED_VERSION_TAG] == f"models:/{name}/{version}"


def test_without_kfps_integration_the_component_makes_its_own_run(scope, client):
    name = unique("kfp-own")
    out = _run_task(scope, {}, experiment=f"own-{name}", model=name)
    experiment = client.get_experiment_by_name(f"own-{name}")
    assert experiment is not None
    run = client.get_run(out["run_id"])
    assert run.info.experiment_id == experiment.experiment_id
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags[keys.KFP_RUN_ID_TAG] == "kfp-run-7"
