"""Rollout guardrail reaction: from a canary's error ratio going bad to the canary being gone.

A private dev stack (real `mlflow server` + moto_server), a real Prometheus
scraping a local exporter of Knative queue-proxy series every second, the fake
Kubernetes API (tests/fake_k8s_api.py) for the live InferenceService's revisions,
and `bridge rollout MODEL --watch` as a child process with a long bake (the abort
must come from the checks during the bake, not from the step's end). Each trial
starts a healthy canary, waits until the rollout has checked it, turns its error
ratio to 50 % and waits until the canary alias is gone from the registry.

What is timed starts when the guard turned bad, not when the exporter did:
Prometheus cannot know a value before it has scraped it, so the start is the
first instant at which Prometheus, evaluating bridge's own guard query, returns a
failing value (found afterwards with ``query_range`` at 20 ms resolution). It
ends when the challenger alias is gone (polled every 50 ms).

Goal: one evaluation interval (BRIDGE_ROLLOUT_INTERVAL). Row: ``value`` = median
seconds, ``ratio`` = interval / median (>= 1 meets the goal). Baseline in the same
run: Prometheus' own rule engine, evaluating the same error ratio as an alerting
rule at the same 1 s interval; its ``activeAt`` minus the same start is what an
alert-driven rollback could at best react in (detection only, nothing removed).
Trials: BENCH_ROLLOUT_TRIALS (default 5).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

from bridge import guards as gd

TRIALS = int(os.environ.get("BENCH_ROLLOUT_TRIALS", "5"))
INTERVAL = 1.0
SCRAPE = 1.0
NS = "bench"
GUARDS = "error-ratio<0.01,min-requests>=10"
BAKE = 600
# The baseline: Prometheus itself judging the canary's error ratio, per revision.
RULES = f"""groups:
  - name: canary
    rules:
      - alert: CanaryErrorRatio
        expr: >-
          sum by (revision_name) (rate(revision_app_request_count{{response_code_class="5xx"}}[{BAKE}s]))
          / sum by (revision_name) (rate(revision_app_request_count[{BAKE}s])) >= 0.01
"""


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
        prom, prom_url = start_prometheus(
            binary, server.server_address[1], tmpdir / "prom", rules=RULES
        )
        try:
            env = {
                **os.environ,
                **stack.env(),
                "BRIDGE_PROMETHEUS_URL": prom_url,
                "BRIDGE_NAMESPACE": NS,
                "BRIDGE_ROLLOUT_BAKE": str(BAKE),
                "BRIDGE_ROLLOUT_GRACE": "600",
                "BRIDGE_ROLLOUT_INTERVAL": str(INTERVAL),
                "BRIDGE_ROLLOUT_GUARDS": GUARDS,
                "BRIDGE_PROMOTE_LOCK_SETTLE": "0.1",
                "KUBECONFIG": str(kube.write_kubeconfig(tmpdir / "kubeconfig")),
            }
            client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
            trials = [_trial(i, client, kube, exporter, env, prom_url) for i in range(TRIALS)]
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            server.shutdown()
            kube.stop()
            devstack.down(tmpdir / "stack")
    bridge = [t["bridge_s"] for t in trials]
    rule = [t["prometheus_rule_s"] for t in trials]
    median = statistics.median(bridge)
    return [
        {
            "name": "rollout guard bad -> canary removed",
            "value": round(median, 2),
            "unit": "s",
            "ratio": round(INTERVAL / median, 2),
            "trials": [round(s, 2) for s in bridge],
            "max_s": round(max(bridge), 2),
            "baseline": "Prometheus alerting rule, same expression, same interval (detection only)",
            "baseline_median_s": round(statistics.median(rule), 2),
            "baseline_trials": [round(s, 2) for s in rule],
            "exporter_to_guard_bad_s": [round(t["scrape_s"], 2) for t in trials],
            "evaluation_interval_s": INTERVAL,
            "scrape_interval_s": SCRAPE,
            "goal_s": INTERVAL,
        }
    ]


def _trial(i: int, client, kube, exporter, env: dict, prom_url: str) -> dict:
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
        flipped = time.time()
        while "challenger" in client.get_registered_model(name).aliases:
            time.sleep(0.05)
        gone = time.time()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    bad = _guard_turned_bad(prom_url, gd.Revisions(NS, name, rev2, rev1), flipped, gone)
    fired = _rule_fired(prom_url, rev2)
    return {"bridge_s": gone - bad, "prometheus_rule_s": fired - bad, "scrape_s": bad - flipped}


def _guard_turned_bad(prom_url: str, rev, start: float, end: float) -> float:
    """The first instant Prometheus evaluates bridge's error-ratio guard as failing."""
    guard = next(g for g in gd.parse_guards(GUARDS) if g.name == "error-ratio")
    query = gd.render(guard, rev, BAKE)
    data = requests.get(
        f"{prom_url}/api/v1/query_range",
        params={"query": query, "start": start, "end": end, "step": 0.02},
        timeout=30,
    ).json()["data"]["result"]
    for t, v in data[0]["values"] if data else []:
        if not gd.OPS[guard.op](float(v), guard.threshold):
            return float(t)
    raise RuntimeError(f"the guard never turned bad between {start} and {end}: {query}")


def _rule_fired(prom_url: str, revision: str) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for alert in requests.get(f"{prom_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]:
            if alert["labels"].get("revision_name") == revision:
                return _epoch(alert["activeAt"])
        time.sleep(0.2)
    raise RuntimeError(f"Prometheus' rule never fired for {revision}")


def _epoch(rfc3339: str) -> float:
    """Prometheus writes nanoseconds ("...:05.123456789Z"); datetime reads microseconds."""
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head + "+00:00").timestamp()
    return whole + (float("0." + frac) if frac else 0.0)
