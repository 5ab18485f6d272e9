"""`bridge serve` survives slow and odd clients (issue 13.8): a real daemon process,
real sockets over loopback, the session's real MLflow and S3 servers.

MLflow delivers webhooks with ``Content-Type: application/json``
(mlflow/webhooks/delivery.py, the headers of ``_send_webhook_request``, MLflow 3.17.2),
so anything else on the webhook route is refused with 415.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from .conftest import unique
from .daemon_helpers import alias_event, signed, start_daemon

pytestmark = pytest.mark.integration

SECRET = "http-safety-secret"
PATH = "/webhooks/mlflow"
REQUEST_TIMEOUT = 3


@pytest.fixture
def daemon_env(scope):
    return {
        **scope.env,
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_POLL_INTERVAL": "600",
        "BRIDGE_LEADER_ELECTION": "false",
        "BRIDGE_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
    }


class SlowClient:
    """Sends ``head``, then one byte of ``drip`` every ``every`` seconds, for at most ``limit``."""

    def __init__(self, port: int, head: bytes, drip: bytes = b"X", every=0.5, limit=20.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=limit + 30)
        self.sock.sendall(head)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, args=(drip, every, limit), daemon=True)
        self._thread.start()

    def _drip(self, drip: bytes, every: float, limit: float) -> None:
        end = time.monotonic() + limit
        i = 0
        while not self._stop.wait(every) and time.monotonic() < end:
            try:
                self.sock.send(drip[i % len(drip) : i % len(drip) + 1])
            except OSError:
                return
            i += 1

    def reply(self) -> bytes:
        """Everything the server sends until it closes (or the socket's bound runs out)."""
        data = b""
        try:
            while chunk := self.sock.recv(4096):
                data += chunk
        except OSError:
            pass
        self._stop.set()
        self.sock.close()
        return data

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_slow_clients_get_408_while_healthz_still_answers(daemon_env, tmp_path):
    daemon = start_daemon(daemon_env, tmp_path, "--output-dir", str(tmp_path / "out"))
    slow = []
    try:
        # Headers that never end, and a body that never completes.
        for _ in range(4):
            slow.append(
                SlowClient(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n")
            )
        body_head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{"
        ).encode()
        for _ in range(2):
            slow.append(SlowClient(daemon.port, body_head, b" "))
        for _ in range(3):
            assert daemon.get("/healthz") == (200, "ok\n")
        for client in slow:
            reply = client.reply()
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert f"within {REQUEST_TIMEOUT}s".encode() in reply
        assert daemon.get("/healthz") == (200, "ok\n")
        assert daemon.metric("bridge_errors_total", kind="timeout", source="http") == len(slow)
        assert daemon.proc.poll() is None
    finally:
        for client in slow:
            client.close()
        assert daemon.terminate() == 0


def test_connections_beyond_the_cap_get_503_then_service_resumes(daemon_env, tmp_path):
    env = {**daemon_env, "BRIDGE_HTTP_MAX_CONNECTIONS": "3", "BRIDGE_HTTP_REQUEST_TIMEOUT": "60"}
    daemon = start_daemon(env, tmp_path, "--output-dir", str(tmp_path / "out"))
    holders = []
    try:
        holders = [
            SlowClient(daemon.port, b"GET /healthz HTTP/1.1\r\n", b"X-a: b\r\n", limit=60)
            for _ in range(3)
        ]
        for h in holders:  # each holder's first bytes reached its handler thread
            h.sock.sendall(b"X-b: c\r\n")
        extra = SlowClient(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", limit=0)
        reply = extra.reply()
        assert reply.startswith(b"HTTP/1.1 503 ") and b"too many connections" in reply, reply
        for h in holders:
            h.close()
        deadline = time.monotonic() + 30  # the slots come back once the holders are gone
        while daemon.get("/healthz")[0] != 200:
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.2)
        assert daemon.metric("bridge_errors_total", kind="busy", source="http") >= 1
    finally:
        for h in holders:
            h.close()
        assert daemon.terminate() == 0


def _nested(depth: int):
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def test_odd_but_signed_bodies_are_client_errors_not_500(daemon_env, tmp_path):
    daemon = start_daemon(daemon_env, tmp_path, "--output-dir", str(tmp_path / "out"))
    try:
        model = unique("odd")
        # Deeper than the interpreter's recursion limit: json.loads raises RecursionError.
        body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        _, headers = signed(SECRET, {}, delivery_id="deep-1")
        from bridge.webhook import sign

        headers["X-MLflow-Signature"] = sign(SECRET, "deep-1", headers["X-MLflow-Timestamp"], body)
        code, text = daemon.post(PATH, body, headers)
        assert code == 400 and "nested deeper" in text, (code, text)

        # A real event with a deep but parseable extra field.
        event = alias_event(model, "a", "1")
        event["data"]["extra"] = _nested(200)
        body, headers = signed(SECRET, event)
        code, text = daemon.post(PATH, body, headers)
        assert code == 400 and "nested deeper" in text, (code, text)

        # Signed, well-formed, but not declared as JSON.
        body, headers = signed(SECRET, alias_event(model, "a", "1"))
        headers["Content-Type"] = "text/plain"
        code, text = daemon.post(PATH, body, headers)
        assert code == 415 and "application/json" in json.loads(text)["error"], (code, text)
        del headers["Content-Type"]
        req_headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
        assert daemon.post(PATH, body, req_headers)[0] == 202  # parameters are fine

        assert daemon.metric("bridge_errors_total", kind="internal", source="http") == 0
        assert daemon.get("/healthz") == (200, "ok\n")
    finally:
        assert daemon.terminate() == 0
