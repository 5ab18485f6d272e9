"""Webhook verification: exactly what MLflow's own delivery code signs."""

from __future__ import annotations

import json
import time

import pytest

from bridge import webhook
from bridge.webhook import DeliveryLog, Rejected, parse, sign, verify

SECRET = "s3cr3t-for-tests"


def _delivery(body: dict | bytes, *, ts: int | None = None, secret: str = SECRET):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = str(int(time.time()) if ts is None else ts)
    headers = {
        webhook.DELIVERY_ID_HEADER: "d-1",
        webhook.TIMESTAMP_HEADER: ts,
        webhook.SIGNATURE_HEADER: sign(secret, "d-1", ts, raw),
    }
    return headers, raw


ALIAS_SET = {
    "entity": "model_version_alias",
    "action": "created",
    "timestamp": "2026-01-01T00:00:00+00:00",
    "data": {"name": "fraud", "alias": "champion", "version": "3"},
}


def test_signature_matches_mlflows_own_signer():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    payload = json.dumps(ALIAS_SET)
    ours = sign(SECRET, "abc", "1700000000", payload.encode())
    assert ours == _generate_hmac_signature(SECRET, "abc", "1700000000", payload)


def test_valid_delivery_verifies_and_parses():
    headers, raw = _delivery(ALIAS_SET)
    verify(headers, raw, SECRET, now=time.time(), replay_window=300)
    event = parse(raw, "d-1")
    assert (event.event, event.model) == ("model_version_alias.created", "fraud")


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda h, b: ({**h, webhook.SIGNATURE_HEADER: "v1,AAAA"}, b), "bad_signature"),
        (lambda h, b: (h, b + b" "), "bad_signature"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != webhook.SIGNATURE_HEADER}, b),
            "unsigned",
        ),
        (lambda h, b: ({**h, webhook.TIMESTAMP_HEADER: "yesterday"}, b), "bad_timestamp"),
        (lambda h, b: ({**h, webhook.DELIVERY_ID_HEADER: "d-2"}, b), "bad_signature"),
    ],
)
def test_tampered_deliveries_are_refused(mutate, reason):
    headers, raw = mutate(*_delivery(ALIAS_SET))
    with pytest.raises(Rejected) as err:
        verify(headers, raw, SECRET, now=time.time(), replay_window=300)
    assert (err.value.status, err.value.reason) == (401, reason)


def test_wrong_secret_is_refused():
    headers, raw = _delivery(ALIAS_SET, secret="other")
    with pytest.raises(Rejected, match="does not match"):
        verify(headers, raw, SECRET, now=time.time(), replay_window=300)


@pytest.mark.parametrize("age", [-400, 301, 10_000])
def test_stale_or_future_timestamps_are_refused(age):
    now = time.time()
    headers, raw = _delivery(ALIAS_SET, ts=int(now) - age)
    with pytest.raises(Rejected) as err:
        verify(headers, raw, SECRET, now=now, replay_window=300)
    assert err.value.reason == "stale"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe", 400),
        (json.dumps({"entity": "model_version_alias", "action": "created"}).encode(), 400),
        (json.dumps({**ALIAS_SET, "data": {"alias": "x"}}).encode(), 400),
        (json.dumps({**ALIAS_SET, "entity": "experiment", "action": "deleted"}).encode(), 422),
    ],
)
def test_unusable_bodies_are_refused(body, status):
    with pytest.raises(Rejected) as err:
        parse(body, "d")
    assert err.value.status == status


def test_prompt_events_are_acknowledged_and_ignored():
    body = json.dumps({**ALIAS_SET, "entity": "prompt_alias"}).encode()
    assert parse(body, "d") is None


def test_every_handled_event_is_one_mlflow_defines():
    from typing import get_args

    from mlflow.entities.webhook import WebhookEventStr

    assert webhook.EVENTS | webhook.IGNORED_EVENTS == set(get_args(WebhookEventStr))


def test_delivery_log_refuses_replays_within_the_window():
    log = DeliveryLog(window=300, limit=10)
    log.check_and_add("a", now=1000)
    with pytest.raises(Rejected) as err:
        log.check_and_add("a", now=1100)
    assert err.value.status == 409
    log.check_and_add("a", now=1400)  # outside the window the timestamp check refuses it anyway
    for i in range(50):  # bounded memory
        log.check_and_add(f"x{i}", now=2000 + i)
    assert len(log._seen) <= 10
