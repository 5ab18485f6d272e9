"""KFP components run for real with kfp.local (SubprocessRunner, this environment)
against the real local MLflow server and S3 endpoint."""

import sys

import pytest
import yaml

from bridge import __version__
from bridge.names import k8s_name

from .conftest import unique

pytestmark = pytest.mark.integration

ROOT_DIR = __import__("pathlib").Path(__file__).resolve().parents[2]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from examples import kfp_pipeline as example  # noqa: E402


@pytest.fixture
def kfp_local(scope, tmp_path):
    """kfp.local in this interpreter: no containers, no pip installs at run time."""
    from kfp import local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
    )
    return scope


def _only_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _assert_lineage(run, pipeline_name: str):
    tags = run.data.tags
    assert tags["kfp.pipeline_name"] == pipeline_name
    assert tags["kfp.task_name"] == "train-and-log"
    assert tags["kfp.component"] == "train-and-log"
    assert tags["kfp.component_version"] == __version__
    for key in ("kfp.run_id", "kfp.run_name"):
        assert tags[key] and "{{" not in tags[key], (key, tags[key])


def test_train_register_fetch_deploy_with_lineage(kfp_local, client):
    """Every step except promotion: the run, its lineage, the version, the artifact, the YAML."""
    from kfp import dsl

    scope = kfp_local
    model, experiment = unique("kfp-rest"), unique("kfp-exp")

    @dsl.pipeline(name="bridge-kfp-rest")
    def rest(model_name: str, experiment: str) -> dsl.Artifact:
        train = example._wire(
            example.train_and_log(
                experiment=experiment, **example.lineage_inputs("bridge-kfp-rest")
            )
        )
        register = example._wire(
            example.register_model(
                model_name=model_name,
                run_id=train.outputs["run_id"],
                model_uri=train.outputs["model_uri"],
            )
        )
        fetch = example._wire(
            example.fetch_model(model_name=model_name, version=register.outputs["version"])
        )
        deploy = example._wire(
            example.deploy_model(model_name=model_name, version=fetch.outputs["version"]),
            serving=True,
        )
        return deploy.outputs["manifest"]

    task = rest(model_name=model, experiment=experiment)

    run = _only_run(client, experiment)
    assert run.info.status == "FINISHED"
    _assert_lineage(run, "bridge-kfp-rest")
    assert run.data.params["dataset"] == "iris"
    assert run.data.metrics["accuracy"] > 0.8

    [version] = client.search_model_versions(f"name='{model}'")
    assert version.run_id == run.info.run_id
    assert version.tags["bridge.source_run_id"] == run.info.run_id
    assert version.tags["kfp.run_id"] == run.data.tags["kfp.run_id"]
    assert version.tags["kfp.pipeline_name"] == "bridge-kfp-rest"

    isvc = yaml.safe_load(open(task.output.path).read())
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["name"] == k8s_name(model)
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri == f"{scope.target_uri}/{k8s_name(model)}/{version.version}/"


def test_fetch_model_outputs_a_model_artifact_for_an_alias(kfp_local, register, client):
    from components.fetch_model.component import fetch_model

    model = unique("kfp-fetch")
    _, v2 = register(model, 2)
    client.set_registered_model_alias(model, kfp_local.alias, v2)

    task = fetch_model(model_name=f"{model}@{kfp_local.alias}")

    assert task.outputs["version"] == v2
    assert task.outputs["model_uri"] == f"models:/{model}/{v2}"
    artifact = task.outputs["model"]
    assert (__import__("pathlib").Path(artifact.path) / "MLmodel").is_file()
    assert artifact.metadata["registered_model"] == model
    assert artifact.metadata["version"] == v2


def test_failing_task_leaves_its_mlflow_run_failed(kfp_local, client):
    """A task that raises inside the run: KFP reports failure, and so does MLflow."""
    from components.train_and_log.component import train_and_log

    experiment = unique("kfp-fail")
    with pytest.raises(RuntimeError, match="FAILURE"):
        # C must be > 0: scikit-learn raises at fit time, after the run started.
        train_and_log(experiment=experiment, C=-1.0, kfp_pipeline_name="bridge-kfp-fail")

    run = _only_run(client, experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["kfp.pipeline_name"] == "bridge-kfp-fail"
    assert run.data.tags["kfp.component"] == "train-and-log"
    assert "InvalidParameterError" in run.data.tags["bridge.kfp.failure"]
    assert run.data.params["C"] == "-1.0"


def test_example_pipeline_end_to_end_promotes(kfp_local, client):
    """The example pipeline as a user runs it: train, log, register, gate + promote
    (`bridge promote`), fetch `name@alias`, render the InferenceService."""
    scope = kfp_local
    model, experiment = unique("kfp-e2e"), unique("kfp-e2e-exp")
    has_promote = scope.run("promote", "--help")
    assert has_promote.returncode == 0, (
        "the promote-model step needs the `bridge promote` command (DESIGN.md contract): "
        + has_promote.stderr.strip()
    )

    task = example.pipeline(model_name=model, experiment=experiment, alias=scope.alias)

    run = _only_run(client, experiment)
    assert run.info.status == "FINISHED"
    _assert_lineage(run, example.PIPELINE_NAME)
    [version] = client.search_model_versions(f"name='{model}'")
    assert version.run_id == run.info.run_id
    promoted = client.get_model_version_by_alias(model, scope.alias)
    assert promoted.version == version.version
    isvc = yaml.safe_load(open(task.output.path).read())
    assert isvc["metadata"]["name"] == k8s_name(model)
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{version.version}/")


def test_deploy_refuses_to_apply_a_version_the_alias_does_not_point_at(scope, register, client):
    """apply=True publishes what the approval alias serves, so it must be this version."""
    from bridge.errors import CheckFailed
    from bridge.kfp_ops import deploy_model

    model = unique("kfp-deploy")
    v1, v2 = register(model, 2)
    client.set_registered_model_alias(model, scope.alias, v1)

    rendered = deploy_model(model_name=model, version=v2)
    assert rendered.applied is False and rendered.isvc_name == k8s_name(model)
    assert f"/{k8s_name(model)}/{v2}/" in rendered.manifest
    with pytest.raises(CheckFailed, match=f"@{scope.alias} points at {v1}"):
        deploy_model(model_name=model, version=v2, apply=True)
