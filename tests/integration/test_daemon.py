"""`bridge serve` against a real MLflow server (webhooks on) and a real S3 endpoint.

This module runs its own private stack (started with bridge.devstack), because
its outage test stops and restarts both servers; the shared session stack is
never disturbed. MLflow caches "which webhooks want this event" for
MLFLOW_WEBHOOK_CACHE_TTL seconds (default 60); the private MLflow runs with 1 s
so that a webhook registered by a test is called at once.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time

import pytest
import yaml

from bridge import devstack
from bridge.names import k8s_name
from bridge.webhook import sign

from .conftest import unique
from .daemon_helpers import alias_event, signed, start_daemon, wait_until, webhook_stack

pytestmark = pytest.mark.integration

SECRET = "daemon-test-secret"


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory):
    yield from webhook_stack(tmp_path_factory.mktemp("daemon-stack"))


@pytest.fixture
def denv(private_stack, tmp_path, monkeypatch):
    """Environment of one daemon on the private stack, with its own alias and target."""
    env = {
        **private_stack.env(),
        "BRIDGE_ALIAS": unique("champ"),
        "BRIDGE_TARGET_URI": f"s3://{devstack.TARGET_BUCKET}/{unique('t')}",
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_POLL_INTERVAL": "600",  # only webhooks can sync within a test, unless it says so
        "BRIDGE_MLFLOW_MAX_RETRIES": "0",
        "BRIDGE_S3_MAX_ATTEMPTS": "1",
        "BRIDGE_MAX_BACKOFF": "2",
        "BRIDGE_LEADER_ELECTION": "false",
        # These daemons retire the only model they serve: a mass removal, confirmed here
        # (the guard itself is tested in test_safety_prune).
        "BRIDGE_ALLOW_MASS_REMOVAL": "true",
    }
    env["BRIDGE_CANARY_ALIAS"] = env["BRIDGE_ALIAS"] + "-canary"
    for k, v in private_stack.env().items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def log_model(private_stack, iris, trained_models, monkeypatch):
    import mlflow

    for k, v in private_stack.env().items():
        monkeypatch.setenv(k, v)
    mlflow.set_tracking_uri(private_stack.mlflow_url)

    def _log(name: str) -> str:
        import sklearn

        mlflow.set_experiment("bridge-daemon-tests")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                trained_models[0],
                name="model",
                registered_model_name=name,
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "mlflow"],
            )
        return str(info.registered_model_version)

    return _log


@pytest.fixture
def mlflow_client(private_stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=private_stack.mlflow_url)


def _register_webhook(env, url):
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "webhook",
            "register",
            "--url",
            url,
            "--name",
            unique("wh"),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "webhook" in res.stdout and SECRET not in res.stdout + res.stderr


def test_alias_set_reaches_the_output_through_the_mlflow_webhook(
    denv, tmp_path, log_model, mlflow_client
):
    out = tmp_path / "out"
    daemon = start_daemon(denv, tmp_path, "--output-dir", str(out))
    try:
        _register_webhook(denv, daemon.url + "/webhooks/mlflow")
        model = unique("wh-model")
        version = log_model(model)
        wait_until(lambda: daemon.metric("bridge_syncs_total") >= 1, 60, "no first pass", daemon)
        polls = daemon.metric("bridge_syncs_total", trigger="poll")

        mlflow_client.set_registered_model_alias(model, denv["BRIDGE_ALIAS"], version)
        manifest = out / f"{k8s_name(model)}.yaml"
        wait_until(manifest.exists, 60, "the webhook did not lead to a manifest", daemon)

        isvc = yaml.safe_load(manifest.read_text())
        assert isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/version"] == version
        assert daemon.metric("bridge_webhook_requests_total", outcome="accepted") >= 1
        # It was the webhook, not the poll loop (which runs every 600 s here).
        assert daemon.metric("bridge_syncs_total", trigger="poll") == polls
        assert daemon.metric("bridge_syncs_total", trigger="webhook", result="ok") >= 1
        assert daemon.metric("bridge_bytes_copied_total") > 0

        # The same view as `bridge status`, as JSON and as a page.
        code, body = daemon.get("/status")
        assert code == 200
        [row] = [r for r in json.loads(body) if r["name"] == model]
        assert row["state"] == "in_sync"
        code, page = daemon.get("/")
        assert code == 200 and "<html" in page.lower() and model in page and "<script" not in page

        # Alias deleted: the manifest goes, again through the webhook.
        mlflow_client.delete_registered_model_alias(model, denv["BRIDGE_ALIAS"])
        wait_until(lambda: not manifest.exists(), 60, "manifest not removed", daemon)
        assert SECRET not in daemon.log()
    finally:
        assert daemon.terminate() == 0


def test_bad_deliveries_are_refused_without_syncing(denv, tmp_path):
    daemon = start_daemon(denv, tmp_path, "--output-dir", str(tmp_path / "out"))
    try:
        wait_until(lambda: daemon.metric("bridge_syncs_total") >= 1, 60, "no first pass", daemon)
        before = daemon.metric("bridge_syncs_total", trigger="webhook")
        model = unique("nobody")
        path = "/webhooks/mlflow"

        body, headers = signed("wrong-secret", alias_event(model, "a", "1"))
        assert daemon.post(path, body, headers)[0] == 401
        body, headers = signed(SECRET, alias_event(model, "a", "1"))
        assert daemon.post(path, body + b" ", headers)[0] == 401  # body changed after signing
        assert daemon.post(path, body, {"Content-Type": "application/json"})[0] == 401
        body, headers = signed(SECRET, alias_event(model, "a", "1"), ts=int(time.time()) - 3600)
        assert daemon.post(path, body, headers)[0] == 401  # stale: outside the replay window
        garbage = b"\x00\xffnot json"
        body, headers = signed(SECRET, {}, delivery_id="g1")
        headers["X-MLflow-Signature"] = sign(SECRET, "g1", headers["X-MLflow-Timestamp"], garbage)
        assert daemon.post(path, garbage, headers)[0] == 400
        body, headers = signed(
            SECRET, {"entity": "experiment", "action": "deleted", "data": {"name": model}}
        )
        assert daemon.post(path, body, headers)[0] == 422
        # Oversized: refused from the Content-Length alone, before the body is read.
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {2 * 1024 * 1024}\r\n\r\n{{".encode()
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
        assert daemon.get(path)[0] == 405
        assert daemon.get("/nope")[0] == 404

        # One valid delivery is accepted once; the same delivery again is a replay.
        body, headers = signed(SECRET, alias_event(model, "a", "1"))
        assert daemon.post(path, body, headers)[0] == 202
        assert daemon.post(path, body, headers)[0] == 409
        wait_until(
            lambda: daemon.metric("bridge_syncs_total", trigger="webhook") == before + 1,
            60,
            "the valid delivery did not run",
            daemon,
        )

        # 1,000 bad requests in a row on one keep-alive connection.
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        statuses = set()
        for i in range(1000):
            body, headers = signed(SECRET, alias_event(model, "a", str(i)))
            headers["X-MLflow-Signature"] = "v1,Zm9yZ2Vk"
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses.add(resp.status)
        conn.close()
        assert statuses == {401}
        assert (
            daemon.metric("bridge_webhook_requests_total", outcome="rejected_bad_signature") >= 1001
        )
        assert daemon.get("/healthz") == (200, "ok\n")
        assert daemon.get("/readyz")[0] == 200
        # No sync beyond the one valid delivery (its model does not exist, so that pass
        # is counted as result="model_gone" and handed over to one full pass).
        time.sleep(0.5)
        assert daemon.metric("bridge_syncs_total", trigger="webhook") == before + 1
        assert daemon.proc.poll() is None
    finally:
        assert daemon.terminate() == 0


def _restart_s3(stack) -> None:
    """Start a fresh S3 server on the same port (its data is gone, like a wiped MinIO)."""
    env = {**os.environ, **{k: v for k, v in stack.env().items() if k.startswith("AWS_")}}
    env.pop("AWS_ENDPOINT_URL", None)
    stack.s3_pid = devstack._spawn(
        [devstack._bin("moto_server"), "-H", "127.0.0.1", "-p", str(stack.s3_port)],
        stack.state_dir / "s3.log",
        env,
    )
    devstack._wait_http(f"{stack.s3_url}/moto-api/", 60, "S3", stack.state_dir / "s3.log")
    devstack._create_buckets(stack)
    _save(stack)


def _restart_mlflow(stack) -> None:
    """Restart MLflow on the same port with the same database (the registry survives)."""
    env = {
        **os.environ,
        **{k: v for k, v in stack.env().items() if k.startswith("AWS_")},
        "MLFLOW_S3_ENDPOINT_URL": stack.s3_url,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": devstack._encryption_key(stack.state_dir),
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    stack.mlflow_pid = devstack._spawn(
        [
            devstack._bin("mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{stack.state_dir / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{devstack.ARTIFACT_BUCKET}/",
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.mlflow_port),
            "--workers",
            "1",
        ],
        stack.state_dir / "mlflow.log",
        env,
    )
    devstack._wait_http(f"{stack.mlflow_url}/health", 120, "MLflow", stack.state_dir / "mlflow.log")
    _save(stack)


def _save(stack) -> None:
    (stack.state_dir / devstack.STATE_FILE).write_text(json.dumps(stack.to_json()))


def test_daemon_survives_s3_and_mlflow_outages_and_converges(
    denv, private_stack, tmp_path, log_model, mlflow_client
):
    """Runs last in this module: it stops and restarts the private stack's servers."""
    stack = private_stack
    denv = {**denv, "BRIDGE_POLL_INTERVAL": "2"}
    out = tmp_path / "out"
    daemon = start_daemon(denv, tmp_path, "--output-dir", str(out))
    try:
        wait_until(
            lambda: daemon.metric("bridge_syncs_total", result="ok") >= 1, 60, "no pass", daemon
        )

        # S3 goes down: passes fail as temporary errors, the daemon stays up and healthy.
        devstack._stop(stack.s3_pid, "moto")
        wait_until(
            lambda: daemon.metric("bridge_errors_total", kind="temporary") >= 2,
            60,
            "S3 outage not reported in /metrics",
            daemon,
        )
        assert daemon.get("/healthz")[0] == 200
        _restart_s3(stack)
        model = unique("outage")
        version = log_model(model)  # the new S3 server holds the new artifacts
        mlflow_client.set_registered_model_alias(model, denv["BRIDGE_ALIAS"], version)
        manifest = out / f"{k8s_name(model)}.yaml"
        wait_until(manifest.exists, 90, "no convergence after the S3 outage", daemon)

        # MLflow goes down: the same, then it comes back with its registry intact.
        errors = daemon.metric("bridge_errors_total", kind="temporary")
        devstack._stop(stack.mlflow_pid, "mlflow")
        wait_until(
            lambda: daemon.metric("bridge_errors_total", kind="temporary") > errors,
            90,
            "MLflow outage not reported in /metrics",
            daemon,
        )
        assert daemon.get("/healthz")[0] == 200 and daemon.proc.poll() is None
        _restart_mlflow(stack)
        mlflow_client.delete_registered_model_alias(model, denv["BRIDGE_ALIAS"])
        wait_until(
            lambda: not manifest.exists(), 90, "no convergence after the MLflow outage", daemon
        )
        assert daemon.metric("bridge_syncs_total", result="ok") >= 3
        # Backoff, not a busy loop: far fewer passes than one per 100 ms of outage.
        assert daemon.metric("bridge_syncs_total") < 200
    finally:
        assert daemon.terminate() == 0
