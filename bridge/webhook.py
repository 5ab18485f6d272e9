"""Verify MLflow webhook deliveries (MLflow >= 3.3). Pure logic: no I/O.

MLflow signs each delivery the Standard Webhooks way: it sends
``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` (Unix seconds) and
``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` where the HMAC key is the
webhook's secret and the signed content is ``"{delivery_id}.{timestamp}.{body}"``.
We recompute it and compare in constant time, reject timestamps outside the
replay window, bodies over the size limit, bodies that are not a JSON object,
bodies that are not declared and parsed as a JSON object (nor nested deeper than
MLflow ever nests), and events we do not handle. A verified event names one
registered model.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
# MLflow's payloads are a few levels deep; anything far deeper is not one of them.
MAX_JSON_DEPTH = 32

# The model registry events that can change what should be served.
EVENTS = frozenset(
    {
        "registered_model.created",
        "model_version.created",
        "model_version_tag.set",
        "model_version_tag.deleted",
        "model_version_alias.created",
        "model_version_alias.deleted",
    }
)
# Events MLflow also sends that do not concern serving: acknowledged, ignored.
IGNORED_EVENTS = frozenset(
    {
        "prompt.created",
        "prompt_version.created",
        "prompt_tag.set",
        "prompt_tag.deleted",
        "prompt_version_tag.set",
        "prompt_version_tag.deleted",
        "prompt_alias.created",
        "prompt_alias.deleted",
        "budget_policy.exceeded",
    }
)


class Rejected(Exception):
    """A delivery we refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason  # short, for the metrics label
        super().__init__(message)


@dataclass(frozen=True)
class WebhookEvent:
    event: str  # "entity.action"
    model: str
    delivery_id: str
    data: dict


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature header value MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


def verify(
    headers,
    body: bytes,
    secret: str,
    *,
    now: float,
    replay_window: float,
) -> None:
    """Raise Rejected(401) unless the headers carry a valid, fresh signature of ``body``."""
    signature = headers.get(SIGNATURE_HEADER)
    delivery_id = headers.get(DELIVERY_ID_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    if not signature or not delivery_id or not timestamp:
        raise Rejected(401, "unsigned", "missing X-MLflow-Signature, -Delivery-Id or -Timestamp")
    try:
        ts = int(timestamp)
    except ValueError:
        raise Rejected(401, "bad_timestamp", "X-MLflow-Timestamp is not a Unix time") from None
    expected = sign(secret, delivery_id, timestamp, body)
    # Several signatures may be sent, space-separated (secret rotation).
    candidates = signature.split()
    if not any(hmac.compare_digest(c.encode(), expected.encode()) for c in candidates):
        raise Rejected(401, "bad_signature", "signature does not match")
    if abs(now - ts) > replay_window:
        raise Rejected(401, "stale", f"timestamp is {now - ts:.0f}s away from now")


def check_content_type(headers) -> None:
    """Rejected(415) unless the body is declared JSON, as MLflow declares it."""
    declared = headers.get("Content-Type") or ""
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise Rejected(
            415,
            "content_type",
            f"Content-Type must be application/json, got {declared[:80]!r}",
        )


def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse(body: bytes, delivery_id: str) -> WebhookEvent | None:
    """The event of a verified body (None: an event we acknowledge and ignore).

    Rejected(400) for a body that is not the JSON MLflow sends (also one nested
    deeper than any MLflow payload), (422) for an event MLflow does not define."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "malformed", "body is not JSON") from None
    except RecursionError:  # nested deeper than the interpreter's recursion limit
        raise Rejected(400, "malformed", f"JSON nested deeper than {MAX_JSON_DEPTH}") from None
    if _depth(payload) > MAX_JSON_DEPTH:
        raise Rejected(400, "malformed", f"JSON nested deeper than {MAX_JSON_DEPTH}")
    if not isinstance(payload, dict):
        raise Rejected(400, "malformed", "body is not a JSON object")
    entity, action = payload.get("entity"), payload.get("action")
    data = payload.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise Rejected(400, "malformed", "body lacks entity, action or data")
    event = f"{entity}.{action}"
    if event in IGNORED_EVENTS:
        return None
    if event not in EVENTS:
        raise Rejected(422, "unknown_event", f"event {event!r} is not handled")
    model = data.get("name")
    if not isinstance(model, str) or not model or len(model) > 512:
        raise Rejected(400, "malformed", "data.name is missing or not a model name")
    return WebhookEvent(event, model, delivery_id, data)


class DeliveryLog:
    """Delivery ids seen within the replay window: a replayed delivery is refused."""

    def __init__(self, window: float, limit: int = 100_000):
        self.window = window
        self.limit = limit
        self._seen: dict[str, float] = {}

    def check_and_add(self, delivery_id: str, now: float) -> None:
        if len(self._seen) >= self.limit:
            self._seen = {k: t for k, t in self._seen.items() if now - t <= self.window}
            if len(self._seen) >= self.limit:
                self._seen.pop(next(iter(self._seen)))
        if delivery_id in self._seen and now - self._seen[delivery_id] <= self.window:
            raise Rejected(409, "replayed", "delivery was already received")
        self._seen[delivery_id] = now
