"""`bridge rollout`: canary steps judged by guards in a real Prometheus, end to end.

Real components: the session's `mlflow server` (registry), a real Prometheus
server (Debian's ``prometheus``) scraping a local exporter of Knative queue-proxy
series (see tests/integration/prometheus_support.py), and `bridge rollout` run as
a child process. The live InferenceService, from which the driver reads the
canary's and the champion's revisions, is served by the local fake Kubernetes API
(tests/fake_k8s_api.py), because no API server can run here. Its ``.status``
follows KServe's ``ComponentStatusSpec`` (latestReadyRevision,
previousRolledoutRevision) in pkg/apis/serving/v1beta1/inference_service_status.go
at kserve commit aaac4e294dae2c7b1aa1886447793f3aa1c30912.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from bridge.keys import ANNOTATION_PREFIX
from bridge.names import k8s_name
from tests.fake_k8s_api import controller_status
from tests.integration import prometheus_support
from tests.integration.conftest import unique
from tests.integration.daemon_helpers import start_daemon, wait_until

# the session's Prometheus and exporter fixtures, used by name below
exporter, prometheus = prometheus_support.exporter, prometheus_support.prometheus

NS = "rollout-test"


@pytest.fixture
def canary(scope, client, k8s_api, exporter, prometheus):
    """A model with champion v1 and canary v2, its live InferenceService and healthy series."""
    name = unique("ro")
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, "s3://nowhere/model", run_id=None)
    return _wire(scope, client, k8s_api, exporter, prometheus, name)


def _isvc(name, served_percent=None):
    """The live InferenceService mid-canary, as KServe's controller leaves it."""
    rev1, rev2 = f"{name}-predictor-00001", f"{name}-predictor-00002"
    predictor = {"model": {"modelFormat": {"name": "mlflow"}}}
    if served_percent is not None:
        predictor["canaryTrafficPercent"] = served_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"predictor": predictor},
        "status": {
            "components": {
                "predictor": {
                    "latestReadyRevision": rev2,
                    "latestCreatedRevision": rev2,
                    "previousRolledoutRevision": rev1,
                    "latestRolledoutRevision": rev1,
                }
            }
        },
    }


def _wire(scope, client, k8s_api, exporter, prometheus, name):
    client.set_registered_model_alias(name, scope.alias, "1")
    client.set_registered_model_alias(name, scope.alias + "-canary", "2")
    rev1, rev2 = f"{name}-predictor-00001", f"{name}-predictor-00002"
    k8s_api.seed(_isvc(name))
    exporter.set(NS, name, rev1, rps=40, latency_ms=50)
    exporter.set(NS, name, rev2, rps=40, latency_ms=50)
    env = {
        "BRIDGE_PROMETHEUS_URL": prometheus,
        "BRIDGE_NAMESPACE": NS,
        "BRIDGE_ROLLOUT_BAKE": "3",
        "BRIDGE_ROLLOUT_GRACE": "3",
        "BRIDGE_ROLLOUT_INTERVAL": "0.5",
        "BRIDGE_ROLLOUT_GUARDS": "error-ratio<0.01,latency-p95-ratio<=1.2,min-requests>=10",
        "BRIDGE_PROMOTE_LOCK_SETTLE": "0.1",
        "KUBECONFIG": str(k8s_api.kubeconfig),
    }
    return type("Canary", (), {"name": name, "rev1": rev1, "rev2": rev2, "env": env})


def _model(client, name):
    rm = client.get_registered_model(name)
    return rm.aliases, rm.tags


def _history(client, name):
    return json.loads(client.get_registered_model(name).tags["bridge.history"])["entries"]


def _start(scope, c, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "rollout", c.name, "--watch", *extra],
        env={**os.environ, **scope.env, **c.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_percent(client, name, percent: str, proc, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if client.get_registered_model(name).tags.get("bridge.canary-traffic-percent") == percent:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"the canary never reached {percent}%")


def test_healthy_canary_walks_10_50_then_becomes_champion(scope, client, canary):
    r = scope.run("rollout", canary.name, "--watch", env=canary.env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any("step 1/3 10%" in line for line in lines), r.stdout
    assert any("step 2/3 50%" in line for line in lines), r.stdout
    assert "complete" in lines[-1]
    aliases, tags = _model(client, canary.name)
    assert aliases.get(scope.alias) == "2"
    assert scope.alias + "-canary" not in aliases
    assert "bridge.canary-traffic-percent" not in tags
    last = _history(client, canary.name)[-1]
    assert (last["action"], last["alias"], last["from"], last["to"]) == (
        "rollout-complete",
        scope.alias,
        "1",
        "2",
    )
    assert json.loads(tags["bridge.rollout"])["status"] == "complete"


@pytest.mark.parametrize(
    "guard, bad",
    [("error-ratio", {"error_ratio": 0.3}), ("latency-p95-ratio", {"latency_ms": 900})],
)
def test_failing_guard_aborts_at_the_first_step(scope, client, canary, exporter, guard, bad):
    exporter.set(NS, canary.name, canary.rev2, **bad)
    r = scope.run("rollout", canary.name, "--watch", env=canary.env, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    aliases, tags = _model(client, canary.name)
    assert aliases.get(scope.alias) == "1"
    assert scope.alias + "-canary" not in aliases
    assert "bridge.canary-traffic-percent" not in tags
    last = _history(client, canary.name)[-1]
    assert last["action"] == "rollout-abort" and last["percent"] == 10
    failed = [g for g in last["guards"] if not g["passed"]]
    assert [g["guard"] for g in failed] == [guard]
    assert failed[0]["query"] and failed[0]["value"] is not None and "threshold" in failed[0]
    assert guard in last["reason"]


def test_canary_that_turns_bad_aborts_at_the_step_where_it_fails(scope, client, canary, exporter):
    canary.env["BRIDGE_ROLLOUT_BAKE"] = "5"  # Prometheus scrapes every 1s: room for late scrapes
    proc = _start(scope, canary)
    _wait_for_percent(client, canary.name, "50", proc)
    exporter.set(NS, canary.name, canary.rev2, error_ratio=0.5)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err, _model(client, canary.name)[1].get("bridge.rollout"))
    last = _history(client, canary.name)[-1]
    assert last["action"] == "rollout-abort" and last["percent"] == 50, last
    assert _model(client, canary.name)[0].get(scope.alias) == "1"


def test_missing_data_aborts_after_the_grace_period(scope, client, canary, exporter):
    exporter.set(NS, canary.name, canary.rev2, rps=0)  # the canary gets no traffic
    r = scope.run("rollout", canary.name, "--watch", env=canary.env, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    last = _history(client, canary.name)[-1]
    assert last["action"] == "rollout-abort"
    assert "no data" in last["reason"] and "min-requests" in last["reason"]
    assert _model(client, canary.name)[0].get(scope.alias) == "1"


def test_killed_rollout_resumes_its_step_without_double_promoting(scope, client, canary):
    """SIGKILL the `bridge rollout` child while step 2 bakes; a new one finishes the job
    from step 2 (its state is the registry tag), and the champion moves once."""
    canary.env["BRIDGE_ROLLOUT_BAKE"] = "8"  # room to kill it before step 2 ends
    proc = _start(scope, canary)
    _wait_for_percent(client, canary.name, "50", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = json.loads(client.get_registered_model(canary.name).tags["bridge.rollout"])
    assert state["status"] == "running" and state["step"] == 1
    r = scope.run("rollout", canary.name, "--watch", env=canary.env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "started" not in r.stdout and "step 1/3" not in r.stdout, r.stdout
    entries = _history(client, canary.name)
    assert [e["action"] for e in entries].count("rollout-complete") == 1
    assert _model(client, canary.name)[0].get(scope.alias) == "2"


def test_manual_rollback_during_a_rollout_wins(scope, client, canary):
    canary.env["BRIDGE_ROLLOUT_BAKE"] = "120"  # the rollback lands while step 1 bakes
    proc = _start(scope, canary)
    _wait_for_percent(client, canary.name, "10", proc)
    r = scope.run(
        "rollback", canary.name, "--alias", scope.alias + "-canary", env=canary.env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "overridden" in out and "removed outside the rollout" in out
    actions = [e["action"] for e in _history(client, canary.name)]
    assert actions == ["canary-abort"]
    aliases, tags = _model(client, canary.name)
    assert aliases.get(scope.alias) == "1"
    assert json.loads(tags["bridge.rollout"])["status"] == "overridden"


def test_unknown_metric_in_a_custom_guard_is_a_config_error(scope, canary, tmp_path):
    guards = tmp_path / "guards.yaml"
    guards.write_text(
        "guards:\n  - name: queue-depth\n"
        "    query: max(revison_queue_depth{{{canary}}})\n    op: '<'\n    threshold: 10\n"
    )
    env = {**canary.env, "BRIDGE_ROLLOUT_GUARDS_FILE": str(guards), "BRIDGE_ROLLOUT_BAKE": "0.1"}
    r = scope.run("rollout", canary.name, env=env, timeout=60)  # starts: step 1
    assert r.returncode == 0, r.stderr
    time.sleep(0.2)
    r = scope.run("rollout", canary.name, env=env, timeout=60)  # judges: checks metrics first
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "revison_queue_depth" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_daemon_steps_the_gitops_output_and_a_new_daemon_resumes_after_sigkill(
    scope,
    client,
    register,
    k8s_api,
    exporter,
    prometheus,
    tmp_path,
):
    """`bridge serve` with BRIDGE_ROLLOUT_AUTO: the leader steps the canary and its sync
    passes rewrite the GitOps file (canaryTrafficPercent 10, then 50); SIGKILLed while
    step 2 bakes, a new daemon resumes at step 2 and makes the canary champion once."""
    name = unique("ro-d")
    assert register(name, 2) == ["1", "2"]
    c = _wire(scope, client, k8s_api, exporter, prometheus, name)
    env = {
        **scope.env,
        **c.env,
        "BRIDGE_ROLLOUT_AUTO": "true",
        "BRIDGE_ROLLOUT_BAKE": "4",
        "BRIDGE_POLL_INTERVAL": "30",
        "BRIDGE_LEADER_ELECTION": "false",
    }
    out = tmp_path / "out"
    manifest = out / f"{k8s_name(name)}.yaml"

    def percent():
        if not manifest.exists():
            return None
        doc = yaml.safe_load(manifest.read_text())
        return doc["spec"]["predictor"].get("canaryTrafficPercent")

    first = start_daemon(env, tmp_path, "--output-dir", str(out))
    try:
        wait_until(lambda: percent() == 10, 120, "the GitOps file never showed 10%", first)
        wait_until(lambda: percent() == 50, 120, "the GitOps file never showed 50%", first)
        assert first.metric("bridge_rollout_traffic_percent", model=name) == 50
    finally:
        first.kill()
    state = json.loads(client.get_registered_model(name).tags["bridge.rollout"])
    assert state["status"] == "running" and state["step"] == 1

    second = start_daemon(env, tmp_path, "--output-dir", str(out))
    try:
        wait_until(
            lambda: client.get_registered_model(name).aliases.get(scope.alias) == "2",
            120,
            "the resumed daemon did not complete the rollout",
            second,
        )
        wait_until(lambda: percent() is None, 60, "the GitOps file kept a canary", second)
        assert second.metric("bridge_rollout_transitions_total", decision="start") == 0
        assert second.metric("bridge_rollout_transitions_total", decision="complete") == 1
    finally:
        second.terminate()
    doc = yaml.safe_load(manifest.read_text())
    assert doc["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{k8s_name(name)}/2/")
    actions = [e["action"] for e in _history(client, name)]
    assert actions.count("rollout-complete") == 1

    r = scope.run("status", "--model", name, "--output", "json", "--output-dir", str(out))
    (row,) = json.loads(r.stdout)
    assert row["rollout"]["status"] == "complete" and row["rollout"]["version"] == "2"


def test_a_step_is_judged_only_once_the_inference_service_serves_it(scope, client, canary, k8s_api):
    """GitOps: the live InferenceService still serves 10% after the rollout set 50%
    (the commit is not synced yet): the rollout keeps restarting step 2's bake instead
    of judging it, and completes once the live object serves 50%."""
    k8s_api.seed(_isvc(canary.name, served_percent=10))
    canary.env["BRIDGE_ROLLOUT_BAKE"] = "2"
    proc = _start(scope, canary)
    _wait_for_percent(client, canary.name, "50", proc)

    def step_started():
        return json.loads(client.get_registered_model(canary.name).tags["bridge.rollout"])[
            "step_started"
        ]

    first = step_started()
    wait_until(lambda: step_started() > first, 60, "the bake was not restarted")
    assert proc.poll() is None
    assert client.get_registered_model(canary.name).aliases.get(scope.alias) == "1"
    k8s_api.seed(_isvc(canary.name, served_percent=50))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert "waiting for the InferenceService to serve 50% (it serves 10%)" in out
    assert client.get_registered_model(canary.name).aliases.get(scope.alias) == "2"


def _live_champion(scope, client, register, k8s_api, exporter, prometheus):
    """Champion v1 applied to the fake API and Ready with its first revision rolled out
    (the status KServe's controller writes: the champion-first gate lets a canary in),
    then canary v2 set: the start of an apply-mode rollout."""
    name = unique("ro-a")
    assert register(name, 2) == ["1", "2"]
    c = _wire(scope, client, k8s_api, exporter, prometheus, name)
    client.delete_registered_model_alias(name, scope.alias + "-canary")
    k8s_api.reset()  # _wire's hand-made object is not bridge's: let `sync --apply` create it
    c.env.update({"BRIDGE_ROLLOUT_BAKE": "2", "BRIDGE_ROLLOUT_GRACE": "2"})
    r = scope.run("sync", "--once", "--apply", "--model", name, env=c.env, timeout=120)
    assert r.returncode == 0, r.stderr
    kname = k8s_name(name)
    isvc = _live(k8s_api, kname)
    status = controller_status(isvc)["status"]
    status["components"]["predictor"].update(
        {"latestReadyRevision": c.rev1, "latestRolledoutRevision": c.rev1}
    )
    k8s_api.set_inference_service_status(NS, kname, status)
    client.set_registered_model_alias(name, scope.alias + "-canary", "2")
    c.kname, c.status = kname, status
    return c


def _live(k8s_api, kname):
    return next(
        o
        for o in k8s_api.objects("InferenceService").values()
        if o["metadata"]["name"] == kname and o["metadata"]["namespace"] == NS
    )


def _split(k8s_api, c):
    """KServe's controller once the canary's revision is ready: traffic is split between
    latestReadyRevision (the canary) and previousRolledoutRevision (the champion)."""
    status = json.loads(json.dumps(c.status))
    status["components"]["predictor"].update(
        {
            "latestReadyRevision": c.rev2,
            "latestCreatedRevision": c.rev2,
            "previousRolledoutRevision": c.rev1,
        }
    )
    k8s_api.set_inference_service_status(NS, c.kname, status)


def test_apply_mode_rollout_patches_the_live_inference_service_step_by_step(
    scope, client, register, k8s_api, exporter, prometheus
):
    """`bridge rollout --watch --apply` (no daemon, no `bridge sync`): each step's sync
    pass applies the InferenceService, so the fake API's object shows
    canaryTrafficPercent 10, then 50, then no canary with v2 as the champion."""
    c = _live_champion(scope, client, register, k8s_api, exporter, prometheus)
    proc = _start(scope, c, "--apply")
    seen = []

    def served():
        predictor = _live(k8s_api, c.kname)["spec"]["predictor"]
        percent = predictor.get("canaryTrafficPercent")
        if not seen or seen[-1] != percent:
            seen.append(percent)
            if percent == 10:
                _split(k8s_api, c)
        return percent

    try:
        wait_until(lambda: served() == 10, 60, "the live object never showed 10%")
        wait_until(lambda: served() == 50, 60, "the live object never showed 50%")
        wait_until(lambda: served() is None, 60, "the live object kept its canary")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    assert seen[-3:] == [10, 50, None], seen
    predictor = _live(k8s_api, c.kname)["spec"]["predictor"]
    assert predictor["model"]["storageUri"].endswith(f"/{c.kname}/2/")
    annotations = _live(k8s_api, c.kname)["metadata"].get("annotations") or {}
    assert ANNOTATION_PREFIX + "canary-version" not in annotations, annotations
    assert client.get_registered_model(c.name).aliases.get(scope.alias) == "2"


def test_apply_mode_abort_removes_the_canary_from_the_live_inference_service(
    scope, client, register, k8s_api, exporter, prometheus
):
    c = _live_champion(scope, client, register, k8s_api, exporter, prometheus)
    exporter.set(NS, c.name, c.rev2, error_ratio=0.3)
    proc = _start(scope, c, "--apply")
    try:
        wait_until(
            lambda: _live(k8s_api, c.kname)["spec"]["predictor"].get("canaryTrafficPercent") == 10,
            60,
            "the live object never showed 10%",
        )
        _split(k8s_api, c)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, (out, err)
    live = _live(k8s_api, c.kname)
    assert "canaryTrafficPercent" not in live["spec"]["predictor"], live["spec"]
    assert live["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{c.kname}/1/")
    assert _history(client, c.name)[-1]["action"] == "rollout-abort"


@pytest.mark.parametrize(
    "manual, why",
    [
        (("--from-alias", "{canary}"), "became champion outside the rollout"),
        (("--version", "2", "--canary", "30"), "canary traffic set to 30% outside the rollout"),
    ],
)
def test_manual_promote_during_a_rollout_wins(
    scope, client, register, k8s_api, exporter, prometheus, manual, why
):
    """A person's `bridge promote` while step 1 bakes: the rollout records `overridden`
    with what it saw, exits 1, and does not undo or repeat the promotion (real model
    versions: promote checks their artifacts)."""
    name = unique("ro-p")
    assert register(name, 2) == ["1", "2"]
    canary = _wire(scope, client, k8s_api, exporter, prometheus, name)
    canary.env["BRIDGE_ROLLOUT_BAKE"] = "120"  # the promote lands while step 1 bakes
    proc = _start(scope, canary)
    _wait_for_percent(client, canary.name, "10", proc)
    args = [a.format(canary=scope.alias + "-canary") for a in manual]
    r = scope.run("promote", canary.name, *args, env=canary.env, timeout=120)
    assert r.returncode == 0, r.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "overridden" in out and why in out, out
    tags = _model(client, canary.name)[1]
    state = json.loads(tags["bridge.rollout"])
    assert state["status"] == "overridden" and why in state["reason"]
    actions = [e["action"] for e in _history(client, canary.name)]
    assert not [a for a in actions if a.startswith("rollout-")], actions
    if manual[0] == "--from-alias":
        assert _model(client, canary.name)[0].get(scope.alias) == "2"
    else:
        assert tags["bridge.canary-traffic-percent"] == "30"
