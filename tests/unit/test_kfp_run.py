"""The KFP run context on a real (sqlite) MLflow store, no server: end states and tags."""

from __future__ import annotations

import os

import pytest

from bridge import __version__
from bridge.kfp_run import KfpLineage, mlflow_run
from bridge.settings import load_settings


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store; the process-wide MLflow URI and environment are restored after."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    saved = dict(os.environ)
    yield load_settings(env={"MLFLOW_TRACKING_URI": f"sqlite:///{path}"})
    mlflow.set_tracking_uri(None)
    os.environ.clear()
    os.environ.update(saved)


def _runs(settings, experiment):
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


def test_context_manager_finishes_and_tags(store):
    lineage = KfpLineage.resolve(pipeline_name="p", task_name="t", component="c", env={})
    with mlflow_run(experiment="cm", lineage=lineage, settings=store) as run:
        run.log_params({"a": 1})
        run.log_metrics({"m": 0.5})
    [r] = _runs(store, "cm")
    assert r.info.run_id == run.run_id
    assert r.info.status == "FINISHED"
    assert r.info.run_name == "t"
    assert r.data.params == {"a": "1"} and r.data.metrics == {"m": 0.5}
    assert r.data.tags["kfp.pipeline_name"] == "p"
    assert r.data.tags["kfp.component_version"] == __version__


def test_decorator_ends_failed_when_the_task_raises(store):
    @mlflow_run(experiment="deco", settings=store, lineage=KfpLineage.resolve(env={}))
    def task(x):
        import mlflow

        mlflow.log_param("x", x)
        raise ValueError(f"bad input {x}")

    with pytest.raises(ValueError, match="bad input 7"):
        task(7)
    [r] = _runs(store, "deco")
    assert r.info.status == "FAILED"
    assert r.data.tags["bridge.kfp.failure"] == "ValueError: bad input 7"
    assert r.data.params == {"x": "7"}


def test_missing_tracking_uri_is_a_usage_error():
    from bridge.errors import UsageError

    with pytest.raises(UsageError, match="tracking-uri is not set"):
        with mlflow_run(settings=load_settings(env={})):
            pass
