"""Serving as KServe really behaves, against the local HTTP fake of the Kubernetes API
(no real cluster or KServe controller can run here): the real MLflow server and
moto_server, the real `bridge` command line, and InferenceService ``.status`` written
into the fake the way KServe's controller writes it.

What the statuses below hold comes from kserve/kserve at
aaac4e294dae2c7b1aa1886447793f3aa1c30912: pkg/apis/serving/v1beta1/inference_service_status.go
(conditions Ready = PredictorReady + IngressReady; PropagateStatus copies the Knative
traffic and sets latestRolledoutRevision once the latest ready revision has 100 %;
UpdateModelRevisionStates sets targetModelState FailedToLoad with transitionStatus
BlockedByFailedLoad; PropagateModelStatus fills lastFailureInfo from the container's
termination message).
"""

from __future__ import annotations

import json

import pytest

from bridge.names import k8s_name
from bridge.status_html import render_html

from .conftest import unique

pytestmark = [pytest.mark.integration, pytest.mark.fake_k8s_api]

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/"


def knative_ready(url: str, revision: str) -> dict:
    """The status of a Knative-mode InferenceService whose predictor is Ready."""
    conditions = [
        "IngressReady",
        "LatestDeploymentReady",
        "PredictorConfigurationReady",
        "PredictorReady",
        "PredictorRouteReady",
        "Ready",
        "RoutesReady",
    ]
    return {
        "url": url,
        "address": {"url": url.replace("http://", "http://cluster.local.")},
        "conditions": [
            {"type": c, "status": "True", "lastTransitionTime": "2026-11-23T10:00:00Z"}
            for c in conditions
        ],
        "components": {
            "predictor": {
                "latestCreatedRevision": revision,
                "latestReadyRevision": revision,
                "latestRolledoutRevision": revision,
                "traffic": [{"latestRevision": True, "percent": 100, "revisionName": revision}],
                "url": url.replace("://", "://predictor-"),
            }
        },
        "modelStatus": {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "copies": {"failedCopies": 0, "totalCopies": 1},
        },
        "deploymentMode": "Serverless",
    }


def knative_rolling_out(revision: str) -> dict:
    """A new revision is being created: Ready is Unknown, nothing rolled out yet."""
    return {
        "conditions": [
            {"type": "PredictorReady", "status": "Unknown", "reason": "RevisionMissing"},
            {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"},
        ],
        "components": {"predictor": {"latestCreatedRevision": revision}},
        "modelStatus": {
            "transitionStatus": "InProgress",
            "states": {"activeModelState": "", "targetModelState": "Loading"},
        },
    }


def failed_to_load(message: str) -> dict:
    """The predictor container exited with an error while loading the model."""
    return {
        "conditions": [
            {
                "type": "PredictorReady",
                "status": "False",
                "reason": "RevisionFailed",
                "message": "Revision failed with message: container exited",
            },
            {"type": "Ready", "status": "False", "reason": "RevisionFailed"},
        ],
        "modelStatus": {
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message, "exitCode": 1},
        },
    }


def _env(k8s_api) -> dict[str, str]:
    return {"BRIDGE_KUBECONFIG": str(k8s_api.kubeconfig), "BRIDGE_NAMESPACE": "models"}


def test_canary_waits_until_the_live_champion_is_ready(scope, register, client, k8s_api):
    """Challenger set before the first sync: KServe would give the new object's first
    revision all traffic (reconcilers/knative/ksvc_reconciler.go line 134 splits only
    when ``lastRolledoutRevision != ""``), so bridge applies the champion alone, reads
    the live object on every pass, and adds the canary only once KServe says the
    champion's generation is Ready and rolled out."""
    model = unique("first-canary")
    v1, v2 = register(model, 2)
    client.set_registered_model_alias(model, scope.alias, v1)
    client.set_registered_model_alias(model, scope.alias + "-canary", v2)
    name, env = k8s_name(model), _env(k8s_api)
    champion_uri = f"{scope.target_uri}/{name}/{v1}/"

    def sync() -> tuple[dict, dict, str]:
        res = scope.run("sync", "--once", "--apply", "--output", "json", env=env)
        assert res.returncode == 0, res.stderr
        [r] = json.loads(res.stdout)
        return r, k8s_api.objects()[ISVC + name], res.stderr

    r, live, err = sync()
    predictor = live["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == champion_uri
    assert "canaryTrafficPercent" not in predictor
    assert "does not exist yet" in r["canary_state"]
    assert "canary waits for the champion" in err

    # Applied, but KServe has not reported yet: still the champion alone.
    r, live, _ = sync()
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]
    assert "has not reported its status yet" in r["canary_state"]

    # The first revision is still rolling out: still waiting.
    k8s_api.set_inference_service_status(
        "models", name, knative_rolling_out(f"{name}-predictor-00001")
    )
    r, live, _ = sync()
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]
    assert "not Ready yet" in r["canary_state"]

    # Ready and rolled out to 100 %: the canary is added.
    url = f"http://{name}.models.example.com"
    k8s_api.set_inference_service_status(
        "models", name, knative_ready(url, f"{name}-predictor-00001")
    )
    r, live, _ = sync()
    predictor = live["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == f"{scope.target_uri}/{name}/{v2}/"
    assert r["canary_state"] == "routed"
    ann = live["metadata"]["annotations"]
    assert ann["mlflow-kubeflow-bridge.io/storage-uri"] == champion_uri
    assert "mlflow-kubeflow-bridge.io/canary-state" not in ann

    # While the canary's revision rolls out the object is not Ready: the canary stays.
    k8s_api.set_inference_service_status(
        "models", name, knative_rolling_out(f"{name}-predictor-00002")
    )
    r, live, _ = sync()
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert r["canary_state"] == "routed"


def test_status_reports_serving_not_ready_and_failed_to_load_with_the_url(
    scope, register, client, k8s_api
):
    """`bridge status` reads the live object's .status (cluster view): serving with the
    URL (exit 0), not_ready and failed_to_load with KServe's reasons (exit 1), in the
    JSON, the table and the HTML page; `state` keeps comparing registry, store and spec."""
    model = unique("serving-state")
    [v] = register(model, 1)
    client.set_registered_model_alias(model, scope.alias, v)
    name, env = k8s_name(model), {**_env(k8s_api), "BRIDGE_APPLY": "true"}
    assert scope.run("sync", "--once", env=env).returncode == 0

    def status() -> tuple[int, dict, str]:
        res = scope.run("status", "--model", model, "--output", "json", env=env)
        table = scope.run("status", "--model", model, env=env)
        assert res.returncode == table.returncode, (res.stderr, table.stderr)
        [row] = json.loads(res.stdout)
        return res.returncode, row, table.stdout

    # No controller has written a status: applied, but not known to serve.
    code, row, _ = status()
    assert (code, row["state"], row["serving"]) == (1, "in_sync", "not_ready")
    assert any("reported no status yet" in r for r in row["serving_reasons"])

    url = f"http://{name}.models.example.com"
    k8s_api.set_inference_service_status(
        "models", name, knative_ready(url, f"{name}-predictor-00001")
    )
    code, row, table = status()
    assert (code, row["state"], row["serving"], row["url"]) == (0, "in_sync", "serving", url)
    assert row["live"]["active_model_state"] == "Loaded"
    assert row["live"]["traffic"][0]["percent"] == 100
    assert "SERVING" in table and "URL" in table and url in table and " serving " in table
    html = render_html([row])
    assert 'class="state serving"' in html and f'href="{url}"' in html

    k8s_api.set_inference_service_status(
        "models", name, failed_to_load("ModuleNotFoundError: No module named 'sklearn'")
    )
    code, row, table = status()
    assert (code, row["state"], row["serving"], row["url"]) == (
        1,
        "in_sync",
        "failed_to_load",
        None,
    )
    assert any("No module named 'sklearn'" in r for r in row["serving_reasons"])
    assert "failed_to_load" in table and "No module named 'sklearn'" in table
    assert 'class="state failed_to_load"' in render_html([row])

    # A status for an older generation is not news about the current spec.
    k8s_api.set_inference_service_status(
        "models", name, knative_ready(url, f"{name}-predictor-00001"), generation=0
    )
    code, row, _ = status()
    assert (code, row["serving"]) == (1, "not_ready")
    assert any("older generation" in r for r in row["serving_reasons"])
