"""Bridge's own MLflow requests read and write what MLflow's client does, on the real server.

``bridge.mlflow_rest.RestClient`` and ``bridge.mlflow_artifacts.ProxyRepo`` stand in for
``MlflowClient`` and ``MlflowArtifactsRepository`` (mlflow 3.17.2 as installed:
mlflow/store/model_registry/rest_store.py, mlflow/store/tracking/rest_store.py,
mlflow/store/artifact/mlflow_artifacts_repo.py and http_artifact_repo.py) so that a
sync never imports MLflow. Each test puts the same question to both against the
session's real ``mlflow server`` (artifacts proxied to moto_server) and compares.
"""

from __future__ import annotations

import pytest

from bridge.mlflow_artifacts import ProxyRepo, resolve_uri
from bridge.mlflow_http import RestError, lean_refusal
from bridge.mlflow_rest import RestClient
from bridge.registry import (
    NotFound,
    Registry,
    _model_info,
    _run_info,
    _version_info,
    uses_own_requests,
)
from bridge.settings import load_settings

from .conftest import unique
from .transfer_support import create_version, model_files

pytestmark = pytest.mark.integration


@pytest.fixture
def rest(stack_env) -> RestClient:
    return RestClient(stack_env["MLFLOW_TRACKING_URI"])


def test_models_versions_and_download_uris_match_mlflows_client(scope, client, s3, rest):
    name = unique("rest")
    v1 = create_version(client, s3, name, model_files(big=64, small=2))
    v2 = create_version(client, s3, name, model_files(big=64, small=1, seed=2), scheme="s3")
    client.set_registered_model_alias(name, scope.alias, v1)
    client.set_registered_model_tag(name, "team", "a b")
    client.set_model_version_tag(name, v2, "note", "ünï\n'q'")

    assert _model_info(rest.get_registered_model(name)) == _model_info(
        client.get_registered_model(name)
    )
    for v in (v1, v2):
        ours, theirs = rest.get_model_version(name, v), client.get_model_version(name, v)
        assert _version_info(ours, "") == _version_info(theirs, "")
        assert ours.current_stage == theirs.current_stage
        assert rest.get_model_version_download_uri(
            name, v
        ) == client.get_model_version_download_uri(name, v)

    page = rest.search_model_versions(f"name = '{name}'", max_results=1)
    assert len(page) == 1 and page.token  # one per page: the server's token leads on
    rest_all = list(page) + list(rest.search_model_versions(f"name = '{name}'", 1, page.token))
    theirs = client.search_model_versions(f"name = '{name}'")
    by_version = {m.version: _version_info(m, "") for m in rest_all}
    assert by_version == {m.version: _version_info(m, "") for m in theirs}
    assert set(by_version) == {v1, v2}


def test_alias_and_tag_writes_are_what_mlflows_client_reads_back(client, s3, rest):
    name = unique("rest-write")
    v = create_version(client, s3, name, model_files(big=64, small=1))
    rest.set_registered_model_alias(name, "champion", v)
    rest.set_registered_model_tag(name, "bridge.history", '[{"v": "1"}]')
    got = client.get_registered_model(name)
    assert got.aliases == {"champion": v}
    assert got.tags == {"bridge.history": '[{"v": "1"}]'}
    rest.delete_registered_model_alias(name, "champion")
    rest.delete_registered_model_tag(name, "bridge.history")
    got = client.get_registered_model(name)
    assert got.aliases == {} and got.tags == {}


def test_runs_experiments_and_logged_models_match_mlflows_client(client, s3, rest):
    name = unique("rest-run")
    v = create_version(client, s3, name, model_files(big=64, small=1))
    run_id = client.get_model_version(name, v).run_id
    client.log_metric(run_id, "auc", 0.5)
    client.log_metric(run_id, "auc", 0.91)
    client.set_tag(run_id, "kfp.run_id", "r-1")
    ours, theirs = rest.get_run(run_id), client.get_run(run_id)
    assert _run_info(ours) == _run_info(theirs)
    assert ours.info.artifact_uri == theirs.info.artifact_uri
    assert ours.data.metrics == theirs.data.metrics == {"auc": 0.91}
    exp_id = theirs.info.experiment_id
    assert (
        rest.get_experiment(exp_id).artifact_location
        == client.get_experiment(exp_id).artifact_location
    )

    logged = client.create_logged_model(exp_id)
    assert rest.get_logged_model(logged.model_id).experiment_id == logged.experiment_id

    experiments = rest.search_experiments(max_results=1000)
    assert exp_id in {e.experiment_id for e in experiments}
    found = rest.search_runs([exp_id], f"attributes.run_id IN ('{run_id}')", max_results=10)
    assert [_run_info(r) for r in found] == [_run_info(theirs)]


def test_errors_carry_mlflows_codes_and_become_bridge_errors(scope, rest):
    with pytest.raises(RestError) as err:
        rest.get_registered_model(unique("rest-missing"))
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert err.value.get_http_status_code() == 404
    registry = Registry(load_settings())
    assert registry.lean
    with pytest.raises(NotFound):
        registry.model_version(unique("rest-missing"), "1")
    with pytest.raises(RestError) as err:
        rest.search_model_versions("name LIKE ((")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_the_artifact_proxy_lists_and_reads_what_mlflow_does(scope, client, s3, stack_env):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    name = unique("rest-art")
    files = {"MLmodel": b"flavors: {}\n", "sub/dir/w.bin": b"x" * 1000, "sub/a b%.txt": b"odd"}
    v = create_version(client, s3, name, files)
    uri = client.get_model_version_download_uri(name, v)
    tracking = stack_env["MLFLOW_TRACKING_URI"]
    theirs = get_artifact_repository(uri)
    ours = ProxyRepo(resolve_uri(uri, tracking))
    assert ours.artifact_uri == theirs.artifact_uri

    def walk(repo, path=None):
        out = []
        for f in repo.list_artifacts(path):
            out.extend(walk(repo, f.path) if f.is_dir else [(f.path, f.file_size)])
        return out

    assert (
        sorted(walk(ours)) == sorted(walk(theirs)) == sorted((p, len(b)) for p, b in files.items())
    )
    for path, data in files.items():
        with ours.get(path) as resp:
            assert resp.status_code == 200 and resp.content == data
    assert ours._is_multipart_download_enabled() == theirs._is_multipart_download_enabled()


def test_what_only_mlflows_client_does_is_left_to_it(monkeypatch):
    assert lean_refusal("http://mlflow:5000") is None
    assert "not an http(s)" in lean_refusal("databricks")
    assert "not an http(s)" in lean_refusal("http://mlflow:5000", "sqlite:///r.db")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "bearer-token-file")
    assert lean_refusal("https://mlflow") is None
    for var, value in [
        ("MLFLOW_TRACKING_AUTH", "kubernetes"),
        ("MLFLOW_TRACKING_AWS_SIGV4", "true"),
        ("MLFLOW_WORKSPACE", "team-a"),
    ]:
        with monkeypatch.context() as m:
            m.setenv(var, value)
            assert var in lean_refusal("https://mlflow")
    settings = load_settings({"tracking_uri": "http://mlflow:5000", "mlflow_client": "mlflow"})
    assert not uses_own_requests(settings)
    assert uses_own_requests(load_settings({"tracking_uri": "http://mlflow:5000"}))
