"""The sync core against the real local MLflow server and S3 endpoint."""

from __future__ import annotations

import json

import pytest
import yaml

from bridge.names import k8s_name

from .conftest import kserve_download, unique

pytestmark = pytest.mark.integration


def _manifest(scope, model):
    path = scope.output_dir / f"{k8s_name(model)}.yaml"
    return path, yaml.safe_load(path.read_text())


def _keys(s3, uri_prefix):
    bucket, _, prefix = uri_prefix[len("s3://") :].partition("/")
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :] for o in resp.get("Contents", [])}


def test_create_resync_move_remove_cycle(scope, register, client, s3):
    model = unique("cycle")
    v1, v2 = register(model, 2)
    client.set_registered_model_alias(model, scope.alias, v1)

    # create
    first = scope.run("sync", "--once", "--output-dir", str(scope.output_dir), "--output", "json")
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)
    assert result["state"] == "synced" and result["version"] == v1 and result["bytes_copied"] > 0
    path, isvc = _manifest(scope, model)
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri == f"{scope.target_uri}/{k8s_name(model)}/{v1}/"
    files = _keys(s3, storage_uri)
    assert {"MLmodel", ".bridge-manifest.json"} <= files
    marker = json.loads(
        s3.get_object(
            Bucket="bridge-models",
            Key=storage_uri.split("bridge-models/")[1] + ".bridge-manifest.json",
        )["Body"].read()
    )
    assert {f["path"] for f in marker["files"]} == files - {".bridge-manifest.json"}
    assert (
        isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/content-digest"]
        == marker["digest"]
    )
    assert isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/registered-model"] == model

    # re-sync with no registry change: nothing copied, nothing rewritten
    before = path.read_bytes(), path.stat().st_mtime_ns
    again = scope.run("sync", "--once", "--output-dir", str(scope.output_dir), "--output", "json")
    assert again.returncode == 0, again.stderr
    [result] = json.loads(again.stdout)
    assert result["state"] == "unchanged" and result["bytes_copied"] == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before

    # alias moved: the manifest follows
    client.set_registered_model_alias(model, scope.alias, v2)
    moved = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    assert moved.returncode == 0, moved.stderr
    _, isvc = _manifest(scope, model)
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{v2}/")
    assert isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/version"] == v2

    # alias removed: the manifest goes, other files stay (it is the only model served,
    # so removing it is a mass removal: confirmed here, refused without; see test_safety_prune)
    (scope.output_dir / "hand-written.yaml").write_text("kind: ConfigMap\n")
    client.delete_registered_model_alias(model, scope.alias)
    removed = scope.run(
        "sync", "--once", "--output-dir", str(scope.output_dir), "--allow-mass-removal"
    )
    assert removed.returncode == 0, removed.stderr
    assert not path.exists()
    assert (scope.output_dir / "hand-written.yaml").exists()
    kustomization = yaml.safe_load((scope.output_dir / "kustomization.yaml").read_text())
    assert kustomization["resources"] == []


def test_model_filter_limits_the_pass(scope, register, client):
    a, b = unique("only-a"), unique("only-b")
    for name in (a, b):
        [v] = register(name, 1)
        client.set_registered_model_alias(name, scope.alias, v)
    res = scope.run("sync", "--once", "--model", a, "--output-dir", str(scope.output_dir))
    assert res.returncode == 0, res.stderr
    assert (scope.output_dir / f"{k8s_name(a)}.yaml").exists()
    assert not (scope.output_dir / f"{k8s_name(b)}.yaml").exists()
    # A later scoped pass for b must not remove a's manifest.
    res = scope.run("sync", "--once", "--model", b, "--output-dir", str(scope.output_dir))
    assert res.returncode == 0, res.stderr
    assert (scope.output_dir / f"{k8s_name(a)}.yaml").exists()
    assert (scope.output_dir / f"{k8s_name(b)}.yaml").exists()


def test_kserve_storage_initializer_downloads_what_bridge_published(
    scope, register, client, tmp_path
):
    """KServe's own downloader (run as in its init container: a fresh process with the
    S3 endpoint in AWS_ENDPOINT_URL) fetches the storageUri, and pyfunc serves it."""

    import mlflow
    import numpy as np
    from mlflow.models import Model

    model = unique("kserve")
    [v] = register(model, 1)
    client.set_registered_model_alias(model, scope.alias, v)
    assert scope.run("sync", "--once", "--output-dir", str(scope.output_dir)).returncode == 0
    _, isvc = _manifest(scope, model)
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    dest = tmp_path / "mnt-models"
    kserve_download(storage_uri, dest, scope.env)
    example = Model.load(str(dest)).load_input_example(str(dest))
    served = mlflow.pyfunc.load_model(str(dest)).predict(example)
    original = mlflow.pyfunc.load_model(f"models:/{model}/{v}").predict(example)
    assert np.array_equal(np.asarray(served), np.asarray(original))
