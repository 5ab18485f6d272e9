"""Promotion latency of `bridge serve`: alias set -> manifest written.

Through the MLflow webhook (target: under 1 s for a small model) versus through
the poll fallback alone (a daemon with webhooks off, polling every
POLL_INTERVAL seconds). Runs its own local stack (real MLflow with webhooks on,
real S3 endpoint). ratio = poll latency / webhook latency (higher is better).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bridge import devstack
from bridge.names import k8s_name
from tests.integration.daemon_helpers import start_daemon, wait_until

RUNS = 5
POLL_INTERVAL = 5.0
SECRET = "bench-secret"


def _log_models(prefix: str, n: int) -> list[tuple[str, str]]:
    import mlflow
    import sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=300).fit(X, y)
    mlflow.set_experiment("bridge-bench-daemon")
    out = []
    for i in range(n):
        name = f"{prefix}-{i}-{uuid.uuid4().hex[:6]}"
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                clf,
                name="model",
                registered_model_name=name,
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "mlflow"],
            )
        out.append((name, str(info.registered_model_version)))
    return out


def _latency(client, daemon, alias: str, out: Path, model: str, version: str):
    """(seconds from alias set to manifest written, seconds the reconcile pass itself took)."""
    # Let passes triggered by the model's registration finish first.
    wait_until(lambda: daemon.metric("bridge_work_queue_models") == 0, 60, "busy", daemon)
    time.sleep(0.3)
    pass_time = daemon.metric("bridge_sync_duration_seconds_sum")
    manifest = out / f"{k8s_name(model)}.yaml"
    started = time.monotonic()
    client.set_registered_model_alias(model, alias, version)
    wait_until(manifest.exists, 120, f"{model} never synced", daemon, step=0.005)
    latency = time.monotonic() - started
    time.sleep(0.2)  # the pass records its duration just after writing the manifest
    return latency, daemon.metric("bridge_sync_duration_seconds_sum") - pass_time


def _measure(stack, tmp: Path, label: str, extra_env: dict[str, str]) -> list[tuple]:
    from mlflow import MlflowClient

    alias = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    out = tmp / f"out-{label}"
    env = {
        **stack.env(),
        "BRIDGE_ALIAS": alias,
        "BRIDGE_CANARY_ALIAS": alias + "-canary",
        "BRIDGE_TARGET_URI": f"s3://{devstack.TARGET_BUCKET}/bench-{uuid.uuid4().hex[:6]}",
        "BRIDGE_LEADER_ELECTION": "false",
        **extra_env,
    }
    daemon = start_daemon(env, tmp, "--output-dir", str(out))
    try:
        if "BRIDGE_WEBHOOK_SECRET" in env:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "webhook",
                    "register",
                    "--name",
                    alias,
                    "--url",
                    daemon.url + "/webhooks/mlflow",
                ],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
                timeout=120,
            )
        models = _log_models(label, RUNS)
        client = MlflowClient(tracking_uri=stack.mlflow_url)
        return [_latency(client, daemon, alias, out, m, v) for m, v in models]
    finally:
        daemon.terminate()


def run() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ["MLFLOW_WEBHOOK_CACHE_TTL"] = "1"
        try:
            stack, _ = devstack.up(tmp / "stack")
        finally:
            del os.environ["MLFLOW_WEBHOOK_CACHE_TTL"]
        saved = {k: os.environ.get(k) for k in stack.env()}
        os.environ.update(stack.env())
        try:
            import mlflow

            mlflow.set_tracking_uri(stack.mlflow_url)
            webhook = _measure(
                stack,
                tmp,
                "webhook",
                {"BRIDGE_WEBHOOK_SECRET": SECRET, "BRIDGE_POLL_INTERVAL": "600"},
            )
            poll = _measure(stack, tmp, "poll", {"BRIDGE_POLL_INTERVAL": str(POLL_INTERVAL)})
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            devstack.down(tmp / "stack")
    wh = statistics.median(lat for lat, _ in webhook)
    pl = statistics.median(lat for lat, _ in poll)
    wh_pass = statistics.median(p for _, p in webhook)
    return [
        {
            "name": "promotion_latency_webhook_vs_poll",
            "ratio": round(pl / wh, 2),
            "webhook_median_s": round(wh, 3),
            "webhook_max_s": round(max(lat for lat, _ in webhook), 3),
            # The reconcile pass itself (registry reads, copy, verify, write); the
            # rest of the webhook latency is MLflow's delivery plus the daemon's queue.
            "webhook_pass_median_s": round(wh_pass, 3),
            "webhook_overhead_median_s": round(wh - wh_pass, 3),
            "poll_median_s": round(pl, 3),
            "poll_interval_s": POLL_INTERVAL,
            "runs": RUNS,
        },
        {
            "name": "promotion_latency_webhook",
            "value": round(wh, 3),
            "unit": "s",
            "target": "< 1 s",
            "met": wh < 1.0,
        },
    ]
