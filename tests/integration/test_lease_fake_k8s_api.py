"""LeaderElector / LeaseLock against the local fake Lease API (no cluster can run here).

In-process and fast: bridge's lightkube client over real HTTP, racing writers.
"""

from __future__ import annotations

import threading
import time

import pytest

from bridge.keys import LEADER_URL_ANNOTATION
from bridge.lease import LeaderElector, LeaseLock
from tests.fake_k8s_api import FakeKubeAPI

pytestmark = pytest.mark.fake_k8s_api

NS, NAME = "mlops", "race"


@pytest.fixture
def fake_api():
    # its own server: a test stops it to play an API server outage
    api = FakeKubeAPI().start()
    yield api
    api.stop()


def _lock(fake_api, tmp_path) -> LeaseLock:
    from bridge.kube import load_api_client

    kubeconfig = fake_api.write_kubeconfig(tmp_path / "kc")
    return LeaseLock(NAME, NS, api=load_api_client(str(kubeconfig), None))


def test_racing_candidates_elect_exactly_one_fake_k8s_api(fake_api, tmp_path):
    electors = [
        LeaderElector(
            _lock(fake_api, tmp_path),
            f"replica-{i}",
            lease_duration=30,
            leader_url=f"http://10.0.0.{i}:8080",
        )
        for i in range(4)
    ]
    barrier = threading.Barrier(len(electors))
    results = {}

    def run(e):
        barrier.wait()
        results[e.identity] = e.try_acquire_or_renew()

    threads = [threading.Thread(target=run, args=(e,)) for e in electors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [name for name, won in results.items() if won]
    assert len(winners) == 1
    assert [e.identity for e in electors if e.is_leader] == winners
    assert fake_api.holder(NS, NAME) == winners[0]
    lease = fake_api.lease(NS, NAME)
    assert lease["metadata"]["annotations"][LEADER_URL_ANNOTATION].startswith("http://10.0.0.")
    # The others learn where to forward webhooks; renewing keeps the winner in place.
    loser = next(e for e in electors if not e.is_leader)
    assert loser.try_acquire_or_renew() is False
    assert loser.leader_url_seen() == lease["metadata"]["annotations"][LEADER_URL_ANNOTATION]
    winner = next(e for e in electors if e.is_leader)
    assert winner.try_acquire_or_renew() is True
    assert fake_api.lease(NS, NAME)["spec"]["leaseTransitions"] == 0


def test_takeover_only_after_expiry_and_release_hands_over_fake_k8s_api(fake_api, tmp_path):
    a = LeaderElector(_lock(fake_api, tmp_path), "a", lease_duration=2)
    b = LeaderElector(_lock(fake_api, tmp_path), "b", lease_duration=2)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False  # a's lease is fresh
    time.sleep(2.2)  # a stops renewing (crashed); its lease expires
    assert a.is_leader is False  # a steps down on its own once its lease ran out
    assert b.try_acquire_or_renew() is True
    assert fake_api.lease(NS, NAME)["spec"]["leaseTransitions"] == 1
    # b shuts down cleanly: the lease is released and a takes it at once.
    b.release()
    assert fake_api.holder(NS, NAME) is None
    assert a.try_acquire_or_renew() is True


def test_api_server_down_is_a_temporary_error_fake_k8s_api(fake_api, tmp_path):
    from bridge.errors import TemporaryError

    lock = _lock(fake_api, tmp_path)
    fake_api.stop()
    e = LeaderElector(lock, "a", lease_duration=2)
    with pytest.raises(TemporaryError, match="cannot reach the API server"):
        e.try_acquire_or_renew()
    assert e.is_leader is False


def test_a_lease_renewed_on_a_whole_second_is_accepted_fake_k8s_api(
    fake_api, tmp_path, monkeypatch
):
    """A renewTime with a zero fraction still goes out with six digits: the API server
    parses a MicroTime with Go's RFC3339Micro layout and refuses "…:00Z" or "…:00+00:00"
    (what msgspec and isoformat() write for a whole second); the fake does the same."""
    from datetime import UTC, datetime

    from bridge import lease

    whole_second = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(lease, "_now", lambda: whole_second)
    e = LeaderElector(_lock(fake_api, tmp_path), "a", lease_duration=30)
    assert e.try_acquire_or_renew() is True  # create
    spec = fake_api.lease(NS, NAME)["spec"]
    assert spec["renewTime"] == spec["acquireTime"] == "2026-01-01T12:00:00.000000Z"
    assert e.try_acquire_or_renew() is True  # update
    assert fake_api.lease(NS, NAME)["spec"]["renewTime"] == "2026-01-01T12:00:00.000000Z"
    assert e.lock.read().renew_time == whole_second
