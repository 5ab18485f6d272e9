"""The whole journey, the Kubeflow way, with nothing set by hand in between.

A KFP pipeline (kfp.local, this interpreter) trains, logs and registers a model with the
project's own components → `bridge promote` gates it (JUnit out) → MLflow's webhook (the
real MLflow server delivers it) reaches the real `bridge serve` process, which copies the
version and applies its InferenceService → `bridge status -o json` shows the model in_sync
with the KFP run and task that produced it → a second pipeline run gives version 2, promoted
→ `bridge rollback` → the live object serves version 1 again → `bridge history` shows the
three moves.

Real: the MLflow server (a private one: MLflow caches its webhook list for
MLFLOW_WEBHOOK_CACHE_TTL seconds, set to 1 here), moto_server as S3, kfp.local, every bridge
command as a process. Fake: only the Kubernetes API server (tests/fake_k8s_api.py; none can
run here), and KServe's controller, whose one visible act here is writing the live object's
`.status` once bridge applied it (the test does that, as the controller would).
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bridge import devstack, keys
from bridge.names import k8s_name
from tests.fake_k8s_api import FakeKubeAPI

from .conftest import unique
from .daemon_helpers import start_daemon, wait_until, webhook_stack
from .test_kserve_serving_fake_k8s_api import knative_ready

pytestmark = [pytest.mark.integration, pytest.mark.fake_k8s_api]

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import kfp_pipeline as example  # noqa: E402

NS = "models"
SECRET = "journey-webhook-secret"
PIPELINE = "journey-train-register"


@pytest.fixture(scope="module")
def journey_stack(tmp_path_factory):
    yield from webhook_stack(tmp_path_factory.mktemp("journey-stack"))


@pytest.fixture
def journey(journey_stack, tmp_path, monkeypatch):
    """The environment every step shares: the stack, the cluster, bridge's settings."""
    from kfp import local

    api = FakeKubeAPI().start()
    env = {
        **journey_stack.env(),
        "BRIDGE_TARGET_URI": f"s3://{devstack.TARGET_BUCKET}/{unique('journey')}",
        "BRIDGE_NAMESPACE": NS,
        "BRIDGE_APPLY": "true",
        "BRIDGE_KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_POLL_INTERVAL": "600",  # only the webhook can sync within this test
        "BRIDGE_LEADER_ELECTION": "false",
        "BRIDGE_PROGRESS": "never",
    }
    for key, value in env.items():  # the pipeline's tasks run in this interpreter's env
        monkeypatch.setenv(key, value)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
    )
    yield env, api
    api.stop()


def _bridge(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _pipeline_run(model: str) -> str:
    """One KFP pipeline run: train-and-log, then register-model. Returns the new version."""
    from kfp import dsl

    @dsl.pipeline(name=PIPELINE)
    def train_register(model_name: str) -> str:
        train = example._wire(
            example.train_and_log(experiment=model_name, **example.lineage_inputs(PIPELINE))
        )
        register = example._wire(
            example.register_model(
                model_name=model_name,
                run_id=train.outputs["run_id"],
                model_uri=train.outputs["model_uri"],
            )
        )
        return register.outputs["version"]

    return train_register(model_name=model).output


def _served_version(api: FakeKubeAPI, name: str) -> str | None:
    obj = api.objects().get(
        f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{name}"
    )
    annotations = (obj or {}).get("metadata", {}).get("annotations", {})
    return annotations.get(keys.ANNOTATION_PREFIX + keys.VERSION_SUFFIX)


def _promote(env: dict, model: str, version: str, junit: Path) -> None:
    res = _bridge(
        env,
        "promote",
        model,
        "--version",
        version,
        "--require",
        "accuracy>=0.8",
        "--reason",
        f"pipeline gave version {version}",
        "--junit",
        str(junit),
        "-o",
        "json",
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["promoted"] and result["version"] == version, result
    cases = ET.parse(junit).getroot().iter("testcase")
    assert [c.get("name") for c in cases if c.find("failure") is None], junit.read_text()


def test_pipeline_to_promote_to_serve_to_status_to_rollback(journey, tmp_path, client):
    env, api = journey
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    model = unique("journey")
    name = k8s_name(model)
    timings: dict[str, float] = {}
    daemon = start_daemon(env, tmp_path)
    try:
        res = _bridge(env, "webhook", "register", "--url", daemon.url + "/webhooks/mlflow")
        assert res.returncode == 0, res.stderr

        # 1. A pipeline run trains, logs and registers version 1.
        t0 = time.monotonic()
        v1 = _pipeline_run(model)
        timings["pipeline run 1"] = time.monotonic() - t0

        # 2. The gate promotes it; MLflow's webhook makes bridge serve copy and apply it.
        t0 = time.monotonic()
        _promote(env, model, v1, tmp_path / "promote-1.xml")
        timings["bridge promote 1 (gates, lock, alias)"] = time.monotonic() - t0
        wait_until(lambda: _served_version(api, name) == v1, 120, "v1 never applied", daemon)
        timings["promote 1 start -> v1 applied (webhook)"] = time.monotonic() - t0
        assert daemon.metric("bridge_syncs_total", trigger="webhook", result="ok") >= 1
        # KServe's controller reports the predictor Ready.
        api.set_inference_service_status(
            NS, name, knative_ready(f"http://{name}.{NS}.example.com", f"{name}-predictor-00001")
        )

        # 3. Status: in sync, serving, and traced to the KFP run and task that trained it.
        t0 = time.monotonic()
        res = _bridge(env, "status", "--model", model, "-o", "json")
        timings["status"] = time.monotonic() - t0
        assert res.returncode == 0, res.stdout + res.stderr
        [row] = json.loads(res.stdout)
        assert row["state"] == "in_sync", row["reasons"]
        assert row["version"] == v1
        training_run = mlflow.get_run(mlflow.get_model_version(model, v1).run_id)
        lineage = row["lineage"]
        assert lineage["run_id"] == training_run.info.run_id
        assert lineage["kfp_pipeline_name"] == PIPELINE
        assert lineage["kfp_task_name"] == "train-and-log"
        kfp_run_1 = lineage["kfp_pipeline_run_id"]
        assert kfp_run_1 and "{{" not in kfp_run_1, lineage
        assert kfp_run_1 == training_run.data.tags[keys.KFP_RUN_ID_TAG]

        # 4. A second pipeline run gives version 2, promoted and served.
        t0 = time.monotonic()
        v2 = _pipeline_run(model)
        timings["pipeline run 2"] = time.monotonic() - t0
        assert v2 != v1
        t0 = time.monotonic()
        _promote(env, model, v2, tmp_path / "promote-2.xml")
        wait_until(lambda: _served_version(api, name) == v2, 120, "v2 never applied", daemon)
        timings["promote 2 start -> v2 applied (webhook)"] = time.monotonic() - t0
        run_2 = mlflow.get_run(mlflow.get_model_version(model, v2).run_id)
        assert run_2.data.tags[keys.KFP_RUN_ID_TAG] not in ("", kfp_run_1)

        # 5. Rollback: the live object serves version 1 again.
        t0 = time.monotonic()
        res = _bridge(env, "rollback", model, "--reason", "journey test rolls back")
        assert res.returncode == 0, res.stderr
        wait_until(lambda: _served_version(api, name) == v1, 60, "rollback never served", daemon)
        timings["rollback start -> v1 served"] = time.monotonic() - t0

        # 6. History: the three moves, who and why.
        res = _bridge(env, "history", model, "-o", "json")
        assert res.returncode == 0, res.stderr
        moves = [(e["action"], e.get("from"), e["to"]) for e in json.loads(res.stdout)]
        assert moves == [("promote", None, v1), ("promote", v1, v2), ("rollback", v2, v1)], moves
    finally:
        daemon.terminate()
        print("journey timings (s): " + json.dumps({k: round(v, 2) for k, v in timings.items()}))
