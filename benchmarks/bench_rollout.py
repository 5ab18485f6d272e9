"""Rollout guardrail reaction: from a canary's error ratio going bad to the canary being gone.

A private dev stack (real `mlflow server` + moto_server), a real Prometheus
scraping a local exporter of Knative queue-proxy series every second, the fake
Kubernetes API (tests/fake_k8s_api.py) for the live InferenceService's revisions,
and `bridge rollout MODEL --watch` as a child process with a long bake (the abort
must come from the checks during the bake, not from the step's end). Each trial
starts a healthy canary, waits until the rollout has checked it, turns its error
ratio to 50 % and times until the canary alias is gone from the registry.

Goal: one evaluation interval (BRIDGE_ROLLOUT_INTERVAL) plus Prometheus' scrape
interval. Row: ``value`` = median seconds, with every trial and both intervals.
Trials: BENCH_ROLLOUT_TRIALS (default 5).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIALS = int(os.environ.get("BENCH_ROLLOUT_TRIALS", "5"))
INTERVAL = 1.0
SCRAPE = 1.0
NS = "bench"


def run() -> list[dict]:
    from mlflow import MlflowClient

    from bridge import devstack
    from tests.fake_k8s_api import FakeKubeAPI
    from tests.integration.prometheus_support import Exporter, prometheus_binary, start_prometheus

    binary = prometheus_binary()
    if not binary:
        print("   skipped: no prometheus binary (apt-get install -y prometheus)")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        stack, _ = devstack.up(tmpdir / "stack")
        kube = FakeKubeAPI().start()
        exporter = Exporter()
        server = exporter.serve()
        (tmpdir / "prom").mkdir()
        prom, prom_url = start_prometheus(binary, server.server_address[1], tmpdir / "prom")
        try:
            env = {
                **os.environ,
                **stack.env(),
                "BRIDGE_PROMETHEUS_URL": prom_url,
                "BRIDGE_NAMESPACE": NS,
                "BRIDGE_ROLLOUT_BAKE": "600",
                "BRIDGE_ROLLOUT_GRACE": "600",
                "BRIDGE_ROLLOUT_INTERVAL": str(INTERVAL),
                "BRIDGE_ROLLOUT_GUARDS": "error-ratio<0.01,min-requests>=10",
                "BRIDGE_PROMOTE_LOCK_SETTLE": "0.1",
                "KUBECONFIG": str(kube.write_kubeconfig(tmpdir / "kubeconfig")),
            }
            client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
            seconds = [_trial(i, client, kube, exporter, env) for i in range(TRIALS)]
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            server.shutdown()
            kube.stop()
            devstack.down(tmpdir / "stack")
    return [
        {
            "name": "rollout guard bad -> canary removed",
            "value": round(statistics.median(seconds), 2),
            "unit": "s",
            "trials": [round(s, 2) for s in seconds],
            "evaluation_interval_s": INTERVAL,
            "scrape_interval_s": SCRAPE,
            "goal_s": INTERVAL,
        }
    ]


def _trial(i: int, client, kube, exporter, env: dict) -> float:
    name = f"bench-rollout-{i}-{os.getpid()}"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, "s3://nowhere/model", run_id=None)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    rev1, rev2 = f"{name}-predictor-00001", f"{name}-predictor-00002"
    predictor = {"latestReadyRevision": rev2, "previousRolledoutRevision": rev1}
    kube.seed(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": NS},
            "status": {"components": {"predictor": predictor}},
        }
    )
    exporter.set(NS, name, rev1, rps=40)
    exporter.set(NS, name, rev2, rps=40)
    time.sleep(3 * SCRAPE)  # the canary's healthy series are in Prometheus
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "rollout", name, "--watch"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # wait until the rollout has judged the healthy canary once (guard values written)
        while '"last":[]' in client.get_registered_model(name).tags.get(
            "bridge.rollout", '"last":[]'
        ):
            if proc.poll() is not None:
                raise RuntimeError(f"bridge rollout exited with {proc.returncode}")
            time.sleep(0.1)
        exporter.set(NS, name, rev2, error_ratio=0.5)
        started = time.monotonic()
        while "challenger" in client.get_registered_model(name).aliases:
            time.sleep(0.05)
        took = time.monotonic() - started
        proc.wait(timeout=60)
        return took
    finally:
        if proc.poll() is None:
            proc.kill()
