"""Serving output on the real local stack: tags, canary, runtime fit, GitOps dir, cluster apply."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import yaml

from bridge.names import k8s_name
from tests.unit.kserve_strict import inference_service as strict_isvc

from .conftest import unique

pytestmark = pytest.mark.integration


def _doc(out, model):
    return yaml.safe_load((out / f"{k8s_name(model)}.yaml").read_text())


def _snapshot(out):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir())}


def _register_same(client, model, version, new_name, tags=None):
    """Register ``new_name`` version 1 from the logged model behind ``model`` ``version``."""
    mv = client.get_model_version(model, version)
    client.create_registered_model(new_name, tags=tags or {})
    client.create_model_version(
        new_name,
        mv.source,
        run_id=mv.run_id,
        model_id=mv.model_id or mv.source.rsplit("/", 1)[-1],
    )


def test_gitops_dir_with_canary_overrides_and_bad_tags(scope, register, client):
    plain, gpu, neg, quantity, runtime = (
        unique("plain"),
        unique("gpu"),
        unique("neg-replicas"),
        unique("bad-memory"),
        unique("bad-runtime"),
    )
    v1, v2 = register(plain, 2)
    client.set_registered_model_alias(plain, scope.alias, v1)
    client.set_registered_model_alias(plain, scope.alias + "-canary", v2)
    # The other models are real registry entries for the same logged model (what
    # `mlflow.register_model` does), so nothing is trained twice.
    for name, tags in (
        (gpu, {"bridge.gpu": "1", "bridge.cpu": "2", "bridge.namespace": "team-x"}),
        (neg, {"bridge.min-replicas": "-1"}),
        (quantity, {"bridge.memory": "4GB"}),
        (runtime, {"bridge.runtime": "triton"}),
    ):
        _register_same(client, plain, v1, name, tags)
        client.set_registered_model_alias(name, scope.alias, "1")
    out = scope.output_dir
    # The gpu model's bridge.namespace tag asks for team-x, which must be allowed.
    scope.env["BRIDGE_ALLOWED_NAMESPACES"] = "team-x"

    first = scope.run("sync", "--once", "--output-dir", str(out), "--output", "json")
    # Two models have bad tags: the pass says no (exit 1) but the others synced.
    assert first.returncode == 1, first.stderr
    results = {r["name"]: r for r in json.loads(first.stdout)}
    assert results[plain]["state"] == "synced" and results[plain]["canary_version"] == v2
    assert results[gpu]["state"] == "synced"
    assert results[neg]["state"] == "failed"
    assert (
        f"model {neg!r}: tag 'bridge.min-replicas' has invalid value '-1'" in results[neg]["error"]
    )
    assert f"model {quantity!r}: tag 'bridge.memory' has invalid value '4GB'" in first.stderr
    assert (
        f"model {runtime!r}: tag 'bridge.runtime' has invalid value 'triton': unknown runtime"
        in (results[runtime]["error"])
    )
    assert not (out / f"{k8s_name(neg)}.yaml").exists()
    assert not (out / f"{k8s_name(runtime)}.yaml").exists()
    assert not (out / f"{k8s_name(quantity)}.yaml").exists()

    # The runtime-fit check warns (default): these models were logged with MLflow 3 on
    # Python 3.11, the default kserve-mlserver profile has MLflow 2 on Python 3.10.
    assert any("Python" in w or "runtime image" in w for w in results[plain]["warnings"])
    assert "may not load in the auto-selected runtime" in first.stderr

    # The challenger was set before the first sync: the first pass emits the champion
    # alone (KServe would give a new object's first revision all traffic); the canary
    # is added once a previous pass has emitted the champion.
    first_doc = _doc(out, plain)
    assert "canaryTrafficPercent" not in first_doc["spec"]["predictor"]
    assert first_doc["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{v1}/")
    assert "it was not emitted yet" in results[plain]["canary_state"]
    again = scope.run("sync", "--once", "--output-dir", str(out), "--output", "json")
    assert again.returncode == 1, again.stderr
    assert {r["name"]: r for r in json.loads(again.stdout)}[plain]["canary_state"] == "routed"

    canary = _doc(out, plain)
    predictor = canary["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == f"{scope.target_uri}/{k8s_name(plain)}/{v2}/"
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}  # MLflow 3: no runtime lists "3"
    ann = canary["metadata"]["annotations"]
    assert ann["mlflow-kubeflow-bridge.io/version"] == v1
    assert ann["mlflow-kubeflow-bridge.io/canary-version"] == v2
    assert ann["mlflow-kubeflow-bridge.io/storage-uri"].endswith(f"/{v1}/")
    gpu_doc = _doc(out, gpu)
    assert gpu_doc["metadata"]["namespace"] == "team-x"
    assert gpu_doc["spec"]["predictor"]["model"]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "2Gi",
        "nvidia.com/gpu": "1",
    }
    for doc in (canary, gpu_doc):
        strict_isvc(doc)
    accounts = sorted(p.name for p in out.glob("*.serviceaccount.yaml"))
    assert accounts == [
        "mlflow-bridge-models.default.serviceaccount.yaml",
        "mlflow-bridge-models.team-x.serviceaccount.yaml",
    ]
    sa = yaml.safe_load((out / accounts[0]).read_text())
    endpoint = scope.env["BRIDGE_TARGET_ENDPOINT_URL"].split("://")[1]
    assert sa["secrets"] == [{"name": "mlflow-bridge-s3"}]
    assert "annotations" not in sa["metadata"]  # KServe reads the s3-* ones from the Secret
    printed = scope.run("credentials", "-n", "default")
    assert printed.returncode == 0, printed.stderr
    secret = yaml.safe_load(printed.stdout)
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == endpoint
    assert scope.env["AWS_SECRET_ACCESS_KEY"] not in "".join(p.read_text() for p in out.iterdir())

    # `bridge render` prints exactly what sync wrote for a model without a canary.
    rendered = scope.run("render", gpu, "--version", "1")
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == (out / f"{k8s_name(gpu)}.yaml").read_text()

    built = subprocess.run(
        ["kubectl", "kustomize", str(out)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    assert len(list(yaml.safe_load_all(built.stdout))) == 4

    # A second pass with nothing changed rebuilds the directory byte for byte.
    before = _snapshot(out)
    second = scope.run("sync", "--once", "--output-dir", str(out))
    assert second.returncode == 1, second.stderr
    assert _snapshot(out) == before

    # The canary is promoted: the canary rollout goes away.
    client.set_registered_model_alias(plain, scope.alias, v2)
    third = scope.run("sync", "--once", "--output-dir", str(out), "--model", plain)
    assert third.returncode == 0, third.stderr
    promoted = _doc(out, plain)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert promoted["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{v2}/")
    assert not any("canary" in k for k in promoted["metadata"]["annotations"])

    # Refusing models that do not fit the runtime image skips them, with the reason.
    refused = scope.run(
        "sync",
        "--once",
        "--model",
        plain,
        "--output",
        "json",
        env={"BRIDGE_RUNTIME_FIT": "refuse"},
    )
    assert refused.returncode == 1
    [r] = json.loads(refused.stdout)
    assert r["state"] == "failed" and "may not load" in r["error"]
    # ... and with the image described as having what the model needs (here: `pip freeze`
    # of this environment, which logged the model), it passes.
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    image = scope.output_dir.parent / "runtime-image.txt"
    image.write_text(f"python=={platform.python_version()}\n{freeze}")
    fits = scope.run(
        "sync",
        "--once",
        "--model",
        plain,
        "--output",
        "json",
        env={"BRIDGE_RUNTIME_FIT": "refuse", "BRIDGE_RUNTIME_PACKAGES_FILE": str(image)},
    )
    assert fits.returncode == 0, fits.stderr
    [r] = json.loads(fits.stdout)
    assert r["state"] == "unchanged" and r["warnings"] == []


@pytest.mark.fake_k8s_api
def test_apply_and_prune_cli_fake_k8s_api(scope, register, client, k8s_api):
    a, b = unique("apply-a"), unique("apply-b")
    [v] = register(a, 1)
    client.set_registered_model_alias(a, scope.alias, v)
    _register_same(client, a, v, b)
    client.set_registered_model_alias(b, scope.alias, "1")
    foreign = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "hand-made", "namespace": "models", "labels": {"team": "x"}},
    }
    stale = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "retired-model",
            "namespace": "models",
            "labels": {"app.kubernetes.io/managed-by": "mlflow-kubeflow-bridge"},
        },
    }
    k8s_api.seed(foreign, stale)
    env = {"BRIDGE_KUBECONFIG": str(k8s_api.kubeconfig), "BRIDGE_NAMESPACE": "models"}

    # The first pass replaces the only model served (retired-model): a mass removal,
    # confirmed here (the guard itself is tested in test_safety_prune).
    dry = scope.run("sync", "--once", "--apply", "--dry-run", "--allow-mass-removal", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "cluster (server dry run): 3 applied, 1 pruned" in dry.stdout
    assert len(k8s_api.objects()) == 2  # nothing changed

    res = scope.run("sync", "--once", "--apply", "--allow-mass-removal", env=env)
    assert res.returncode == 0, res.stderr
    patches = [r for r in k8s_api.requests("PATCH") if "dryRun" not in r.query]
    assert {r.path.rsplit("/", 1)[1] for r in patches} == {
        "mlflow-bridge-models",
        k8s_name(a),
        k8s_name(b),
    }
    assert all(
        r.content_type == "application/apply-patch+yaml"
        and r.query["fieldManager"] == "mlflow-kubeflow-bridge"
        for r in patches
    )
    deletes = [r for r in k8s_api.requests("DELETE") if "dryRun" not in r.query]
    assert [r.path.rsplit("/", 1)[1] for r in deletes] == ["retired-model"]
    names = {p.rsplit("/", 1)[1] for p in k8s_api.objects("InferenceService")}
    assert names == {"hand-made", k8s_name(a), k8s_name(b)}
    live = k8s_api.objects()[
        f"/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/{k8s_name(a)}"
    ]
    strict_isvc({k: v for k, v in live.items()})

    # b's alias is removed: the next pass prunes exactly b.
    client.delete_registered_model_alias(b, scope.alias)
    res = scope.run("sync", "--once", "--apply", env=env)
    assert res.returncode == 0, res.stderr
    names = {p.rsplit("/", 1)[1] for p in k8s_api.objects("InferenceService")}
    assert names == {"hand-made", k8s_name(a)}

    # RBAC denial and a missing CRD: one clear line, exit 2.
    k8s_api.state.forbidden_namespaces.add("models")
    denied = scope.run("sync", "--once", "--apply", env=env)
    assert denied.returncode == 2
    assert "forbidden by RBAC (403)" in denied.stderr and "Traceback" not in denied.stderr
    k8s_api.state.forbidden_namespaces.clear()
    k8s_api.state.missing_crd = True
    missing = scope.run("sync", "--once", "--apply", env=env)
    assert missing.returncode == 2
    [line] = [ln for ln in missing.stderr.splitlines() if ln.startswith("error:")]
    assert "is the CRD installed?" in line
