"""Serving as KServe really behaves, on the real local stack (MLflow server, moto_server,
KServe's own kserve-storage): first-deploy canaries in the GitOps directory, 0-byte files,
and approval by MLflow 2 stages. The cluster parts are in test_kserve_serving_fake_k8s_api.py.
"""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from bridge.names import k8s_name

from .conftest import kserve_download, unique

pytestmark = pytest.mark.integration


def _doc(out, model):
    return yaml.safe_load((out / f"{k8s_name(model)}.yaml").read_text())


@pytest.fixture
def log_with_empty_file(stack_env, trained_models, iris, tmp_path, monkeypatch):
    """log(name) -> version: a real sklearn model whose code/ package has an empty
    ``__init__.py`` (the most common 0-byte file in a logged model)."""
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    import mlflow
    import sklearn

    mlflow.set_tracking_uri(stack_env["MLFLOW_TRACKING_URI"])
    pkg = tmp_path / "features"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "scale.py").write_text("FACTOR = 1.0\n")

    def _log(name: str) -> str:
        mlflow.set_experiment("bridge-tests")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                trained_models[0],
                name="model",
                registered_model_name=name,
                code_paths=[str(pkg)],
                input_example=iris[0].head(3),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "mlflow"],
            )
        return str(info.registered_model_version)

    return _log


def test_empty_file_is_named_warned_once_per_version_and_refused(
    scope, client, log_with_empty_file, tmp_path, caplog
):
    """KServe's S3 downloader skips 0-byte objects: kserve_storage.py line 711,
    ``if obj.key.endswith("/") or obj.size == 0: ... continue`` (kserve/kserve
    python/storage/kserve_storage/kserve_storage.py at aaac4e294dae2c7b1aa1886447793f3aa1c30912,
    the same line in the installed kserve-storage 0.21.0). Bridge names the file at sync
    time: a warning (logged once per version, not once per pass) or, with
    BRIDGE_RUNTIME_FIT=refuse, no manifest at all."""
    from bridge.runner import build_reconciler
    from bridge.settings import load_settings

    model = unique("empty-file")
    v = log_with_empty_file(model)
    client.set_registered_model_alias(model, scope.alias, v)
    empty = "code/features/__init__.py"

    # The real downloader proves the premise: the published file is not downloaded.
    first = scope.run("sync", "--once", "--output-dir", str(scope.output_dir), "--output", "json")
    assert first.returncode == 0, first.stderr
    [r] = json.loads(first.stdout)
    assert any(f"{empty} is empty (0 bytes)" in w for w in r["warnings"]), r["warnings"]
    storage_uri = _doc(scope.output_dir, model)["spec"]["predictor"]["model"]["storageUri"]
    dest = tmp_path / "mnt-models"
    kserve_download(storage_uri, dest, scope.env)
    assert (dest / "MLmodel").exists() and (dest / "code/features/scale.py").exists()
    assert not (dest / empty).exists()

    # A long-lived reconciler (the daemon) logs the warning once, not on every pass.
    reconciler = build_reconciler(load_settings())
    with caplog.at_level(logging.INFO, logger="bridge"):
        for _ in range(3):
            report = reconciler.run_once([model], str(scope.output_dir))
            assert report.exit_code == 0
            assert any(empty in w for w in report.results[0].warnings)
    lines = [rec.getMessage() for rec in caplog.records if empty in rec.getMessage()]
    assert len(lines) == 1, lines
    assert f"model {model!r} version {v} may not load" in lines[0]

    # refuse: the model fails with the file named, and its manifest is not emitted.
    out = tmp_path / "refused"
    refused = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(out),
        "--model",
        model,
        "--output",
        "json",
        env={"BRIDGE_RUNTIME_FIT": "refuse"},
    )
    assert refused.returncode == 1
    [r] = json.loads(refused.stdout)
    assert r["state"] == "failed" and f"{empty} is empty (0 bytes)" in r["error"]
    assert "give each empty file content" in refused.stderr
    assert not (out / f"{k8s_name(model)}.yaml").exists()


def test_gitops_canary_comes_after_the_champion_was_emitted(scope, register, client):
    """GitOps cannot see the cluster: the champion counts as served once a previous pass
    emitted it. A challenger set before the first sync waits one pass; when the champion
    moves while a challenger is set, the new champion is emitted alone first (KServe would
    split the canary against the old champion's revision: ksvc_reconciler.go line 134 at
    aaac4e294dae2c7b1aa1886447793f3aa1c30912 uses the last revision rolled out to 100 %)."""
    model = unique("gitops-canary")
    v1, v2, v3 = register(model, 3)
    client.set_registered_model_alias(model, scope.alias, v1)
    client.set_registered_model_alias(model, scope.alias + "-canary", v3)
    out, name = scope.output_dir, k8s_name(model)

    def sync() -> tuple[dict, dict]:
        res = scope.run("sync", "--once", "--output-dir", str(out), "--output", "json")
        assert res.returncode == 0, res.stderr
        [r] = json.loads(res.stdout)
        return r, _doc(out, model)

    def served(doc) -> tuple[str, int | None]:
        p = doc["spec"]["predictor"]
        return p["model"]["storageUri"].rsplit("/", 2)[-2], p.get("canaryTrafficPercent")

    r, doc = sync()
    assert served(doc) == (v1, None) and "it was not emitted yet" in r["canary_state"]
    note = doc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/canary-state"]
    assert note == f"waiting: canary version {v3} is added once the champion is served"
    r, doc = sync()
    assert served(doc) == (v3, 10) and r["canary_state"] == "routed"

    # The champion moves to v2 with the challenger still on v3: v2 alone, then the canary.
    client.set_registered_model_alias(model, scope.alias, v2)
    r, doc = sync()
    assert served(doc) == (v2, None)
    assert f"not the champion's {scope.target_uri}/{name}/{v2}/ yet" in r["canary_state"]
    r, doc = sync()
    assert served(doc) == (v3, 10)
    assert doc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/version"] == v2


def test_stage_approval_for_registries_still_on_mlflow_2_stages(scope, register, client, caplog):
    """MLflow 3 still has stages (deprecated since 2.9): ``MlflowClient.
    transition_model_version_stage`` in mlflow/tracking/client.py, and the registry returns
    each stage's latest version with the registered model (``latest_versions``, built in
    mlflow/store/model_registry/dbmodels/models.py SqlRegisteredModel.to_mlflow_entity;
    MLflow 3.17.2 as installed). A model in stage Production with no alias was ignored
    silently: now it is named once, and BRIDGE_STAGE approves it; the alias wins."""
    import warnings

    from bridge.runner import build_reconciler
    from bridge.settings import load_settings

    model = unique("staged")
    v1, v2 = register(model, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own deprecation warning of stages
        client.transition_model_version_stage(model, v1, "Production")
        client.transition_model_version_stage(model, v2, "Staging")
    out = scope.output_dir

    # Without BRIDGE_STAGE: not served, and said so once per model (not once per pass).
    reconciler = build_reconciler(load_settings())
    with caplog.at_level(logging.INFO, logger="bridge"):
        for _ in range(2):
            assert reconciler.run_once([model], str(out)).results == []
    hints = [r.getMessage() for r in caplog.records if "BRIDGE_STAGE" in r.getMessage()]
    assert len(hints) == 1, hints
    assert f"model {model!r} has version {v1} in stage 'Production'" in hints[0]
    assert f"no alias {scope.alias!r}" in hints[0]

    # BRIDGE_STAGE=production (any case): the latest version in that stage is served.
    res = scope.run(
        "sync", "--once", "--output-dir", str(out), "--output", "json",
        env={"BRIDGE_STAGE": "production"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    [r] = json.loads(res.stdout)
    assert (r["version"], r["approved_by"]) == (v1, "stage Production")
    assert _doc(out, model)["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{v1}/")
    status = scope.run(
        "status", "--model", model, "--output-dir", str(out), "--output", "json",
        env={"BRIDGE_STAGE": "Production"},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert (row["state"], row["version"]) == ("in_sync", v1)

    # The alias wins over the stage.
    client.set_registered_model_alias(model, scope.alias, v2)
    res = scope.run(
        "sync", "--once", "--output-dir", str(out), "--output", "json",
        env={"BRIDGE_STAGE": "Production"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    [r] = json.loads(res.stdout)
    assert (r["version"], r["approved_by"]) == (v2, None)

    # A bad stage is a usage error (exit 2), one line.
    bad = scope.run("sync", "--once", env={"BRIDGE_STAGE": "Archived"})
    assert bad.returncode == 2 and "expected Staging or Production" in bad.stderr
