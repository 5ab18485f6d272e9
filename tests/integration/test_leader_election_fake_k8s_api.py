"""Two `bridge serve` replicas elect one leader through a Lease on a local fake API server.

No Kubernetes API server can run here: the Lease API is the small HTTP fake in
tests/fake_k8s_api.py (real HTTP, real kubernetes client, real optimistic concurrency).
MLflow and S3 are the real shared session servers.
"""

from __future__ import annotations

import pytest
import yaml

from bridge.lease import LEASE_VERBS
from bridge.names import k8s_name
from tests.fake_k8s_api import FakeKubeAPI

from .conftest import unique
from .daemon_helpers import alias_event, signed, start_daemon, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fake_k8s_api]

SECRET = "lease-test-secret"
NS, LEASE = "mlops", "bridge-test-lease"
DURATION = 4.0


@pytest.fixture
def fake_api():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


def _elect_env(scope, **kube: str) -> dict[str, str]:
    """A daemon that elects its leader through the Lease; ``kube``: how it finds the API."""
    return {
        **scope.env,
        **kube,
        "BRIDGE_LEADER_ELECTION": "true",
        "BRIDGE_LEASE_NAMESPACE": NS,
        "BRIDGE_LEASE_NAME": LEASE,
        "BRIDGE_LEASE_DURATION": str(DURATION),
        "BRIDGE_POLL_INTERVAL": "600",
        "BRIDGE_WEBHOOK_SECRET": SECRET,
    }


def _role(d) -> str:
    try:
        return d.get("/readyz")[1].strip()
    except OSError:
        return "down"


def test_two_replicas_one_leader_failover_and_release_fake_k8s_api(
    fake_api, scope, register, client, tmp_path
):
    env = _elect_env(scope, KUBECONFIG=str(fake_api.write_kubeconfig(tmp_path / "kubeconfig")))
    out = tmp_path / "out"
    a = start_daemon(env, tmp_path, "--output-dir", str(out), advertise=True)
    b = start_daemon(env, tmp_path, "--output-dir", str(out), advertise=True)
    daemons = [a, b]
    try:
        wait_until(
            lambda: sorted(_role(d) for d in daemons) == ["leader", "standby"],
            60,
            "no single leader emerged",
            a,
        )
        leader = next(d for d in daemons if _role(d) == "leader")
        standby = next(d for d in daemons if d is not leader)
        assert fake_api.holder(NS, LEASE) is not None
        assert leader.metric("bridge_leader") == 1 and standby.metric("bridge_leader") == 0

        # A webhook that reaches the standby is forwarded to the leader, which syncs.
        model = unique("lease-model")
        [v] = register(model, 1)
        client.set_registered_model_alias(model, scope.alias, v)
        body, headers = signed(SECRET, alias_event(model, scope.alias, v))
        status, _ = standby.post("/webhooks/mlflow", body, headers)
        assert status == 202
        manifest = out / f"{k8s_name(model)}.yaml"
        wait_until(manifest.exists, 120, "forwarded webhook did not sync", leader)
        assert yaml.safe_load(manifest.read_text())["metadata"]["name"] == k8s_name(model)
        assert standby.metric("bridge_webhook_requests_total", outcome="forwarded") == 1
        assert leader.metric("bridge_webhook_requests_total", outcome="accepted") == 1
        # Only the leader reconciles.
        assert standby.metric("bridge_syncs_total") == 0
        assert leader.metric("bridge_syncs_total") >= 1

        # The leader dies without releasing: the standby takes over once the Lease expires.
        old_holder = fake_api.holder(NS, LEASE)
        leader.kill()
        wait_until(lambda: _role(standby) == "leader", 60, "standby never took over", standby)
        new_holder = fake_api.holder(NS, LEASE)
        assert new_holder != old_holder
        last_renew = max(t for t, _, h in fake_api.lease_writes() if h == old_holder)
        taken = min(t for t, _, h in fake_api.lease_writes() if h == new_holder)
        gap = taken - last_renew
        # Never before the old Lease expired (no two leaders), and within the lease
        # duration plus one renew period of the standby (the protocol's bound).
        assert DURATION <= gap <= DURATION + DURATION / 3 + 2.0, gap

        # SIGTERM: graceful exit that gives the Lease up at once.
        assert standby.terminate() == 0
        assert fake_api.holder(NS, LEASE) is None
        assert "released lease" in standby.log()
        # The election used exactly the verbs the Role grants on leases.
        assert fake_api.verbs() <= LEASE_VERBS
    finally:
        for d in daemons:
            d.kill()


def test_lease_uses_bridge_kubeconfig_and_context_like_apply_fake_k8s_api(
    fake_api, scope, tmp_path
):
    """Leader election loads the cluster the way apply does (bridge.kube.load_api_client):
    BRIDGE_KUBECONFIG and BRIDGE_KUBE_CONTEXT win over KUBECONFIG and its current-context.
    Here KUBECONFIG and the file's current-context both name an unreachable server; only the
    context bridge is told to use reaches the fake API."""
    unreachable = {"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}}
    fake = yaml.safe_load(fake_api.write_kubeconfig(tmp_path / "fake-kc").read_text())
    both = {
        **fake,
        "clusters": [*fake["clusters"], unreachable],
        "contexts": [
            {"name": "dead", "context": {"cluster": "dead", "user": "fake"}},
            {"name": "lease-here", "context": {"cluster": "fake", "user": "fake"}},
        ],
        "current-context": "dead",
    }
    (tmp_path / "two-contexts").write_text(yaml.safe_dump(both))
    dead_only = {**both, "contexts": both["contexts"][:1]}
    (tmp_path / "dead-kc").write_text(yaml.safe_dump(dead_only))
    env = _elect_env(
        scope,
        KUBECONFIG=str(tmp_path / "dead-kc"),
        BRIDGE_KUBECONFIG=str(tmp_path / "two-contexts"),
        BRIDGE_KUBE_CONTEXT="lease-here",
    )
    d = start_daemon(env, tmp_path, "--output-dir", str(tmp_path / "out"))
    try:
        wait_until(lambda: _role(d) == "leader", 60, "the daemon did not take the Lease", d)
        assert fake_api.holder(NS, LEASE) is not None
    finally:
        d.kill()
