"""`bridge serve`: the in-cluster sync daemon around :class:`bridge.sync.Reconciler`.

Three threads and one HTTP server:

- the **HTTP server** (stdlib ``ThreadingHTTPServer``) answers ``POST
  /webhooks/mlflow``, ``/metrics``, ``/healthz``, ``/readyz``, ``/status`` (JSON)
  and ``/`` (the status page, :mod:`bridge.status_html`); routes live in one
  table, so another page is one ``add_route`` call;
- the **worker** takes work from a coalescing queue and runs one reconcile at a
  time: a verified webhook enqueues its model, the poll timer enqueues a full
  pass; a burst of deliveries for the same model becomes one pass;
- the **poll timer** enqueues a full pass every ``poll_interval`` seconds
  (webhooks are fire-and-forget, so polling is what guarantees convergence);
- optionally the **leader elector** (:mod:`bridge.lease`): only the leader
  reconciles; a non-leader that receives a verified webhook forwards it,
  unchanged, to the URL the leader advertises in the Lease. If that fails it
  answers 503 (MLflow retries 5xx), and the leader's next poll picks the change up.

When a pass fails because MLflow, S3 or the API server is down, the work is put
back and the worker waits with exponential backoff and jitter (capped at
``max_backoff``) before trying again: never a crash loop, never a busy loop.
"""

from __future__ import annotations

import io
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bridge import webhook
from bridge.errors import BridgeError, TemporaryError, UsageError
from bridge.log import redact
from bridge.retry import backoff_delay
from bridge.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/mlflow"
# `/status` and `/` read MLflow and S3; one read serves all requests for this long.
STATUS_CACHE_SECONDS = 5.0
FORWARDED_HEADER = "X-Bridge-Forwarded"
FULL = None  # the work item that means "every model"


# --------------------------------------------------------------------------- queue
class WorkQueue:
    """A set of pending models (or a full pass), coalesced, handed out after a short debounce."""

    def __init__(self, debounce: float):
        self.debounce = debounce
        self._models: set[str] = set()
        self._full = False
        self._since = 0.0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, model: str | None) -> None:
        with self._cond:
            if not self._pending():
                self._since = time.monotonic()
            if model is FULL:
                self._full = True
            else:
                self._models.add(model)
            self._cond.notify_all()

    def _pending(self) -> bool:
        return self._full or bool(self._models)

    def __len__(self) -> int:
        with self._cond:
            return (1 if self._full else 0) + len(self._models)

    def get(self, timeout: float) -> tuple[bool, set[str]] | None:
        """(full, models) once work has waited ``debounce`` seconds; None on timeout/close."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._pending() and now >= self._since + self.debounce:
                    item = (self._full, self._models)
                    self._full, self._models = False, set()
                    return item
                wait = deadline - now
                if self._pending():
                    wait = min(wait, self._since + self.debounce - now)
                if wait <= 0 and not self._pending():
                    return None
                self._cond.wait(max(wait, 0.001))
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# --------------------------------------------------------------------------- http
@dataclass
class Request:
    method: str
    path: str
    headers: object  # email.message.Message: case-insensitive .get()
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data) -> Response:
        return cls(status, json.dumps(data).encode() + b"\n", "application/json")

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode() + b"\n")


Handler = Callable[[Request], Response]


def _raw_response(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for when no request was parsed."""
    body = text.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _DeadlineReader(socket.SocketIO):
    """The connection's raw reader: no single receive may run past the request's deadline.

    A per-read timeout alone lets a client that sends one byte every few seconds
    hold a thread forever; here the clock starts at the first byte of a request
    and every receive waits only for what is left of ``request_timeout``.
    """

    def __init__(self, sock: socket.socket, handler: _HTTPHandler):
        super().__init__(sock, "rb")
        self._handler = handler

    def readinto(self, b) -> int:
        h = self._handler
        if h.deadline is None:
            self._sock.settimeout(h.timeout)  # idle between requests
        else:
            left = h.deadline - time.monotonic()
            if left <= 0:
                h.timed_out = True
                raise TimeoutError("request deadline passed")
            self._sock.settimeout(left)
        try:
            n = super().readinto(b)
        except TimeoutError:
            h.timed_out = h.deadline is not None
            raise
        if n and h.deadline is None:
            h.deadline = time.monotonic() + h.server.request_timeout  # type: ignore[attr-defined]
        return n

    def close(self) -> None:
        # Not made by socket.makefile(), so it holds no reference on the socket to drop.
        io.RawIOBase.close(self)


class _HTTPHandler(BaseHTTPRequestHandler):
    server_version = "mlflow-kubeflow-bridge"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds an idle keep-alive connection stays open
    deadline: float | None = None
    timed_out = False

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        self.deadline, self.timed_out, self.responded = None, False, False
        super().handle_one_request()  # closes the connection on TimeoutError
        if self.timed_out and not self.responded:
            daemon: Daemon = self.server.daemon  # type: ignore[attr-defined]
            daemon.metrics.errors.labels("timeout", "http").inc()
            limit = self.server.request_timeout  # type: ignore[attr-defined]
            try:
                self.wfile.write(
                    _raw_response(408, "Request Timeout", f"request not received within {limit:g}s")
                )
            except OSError:
                pass  # the client is gone; nothing to tell it

    def _dispatch(self) -> None:
        daemon: Daemon = self.server.daemon  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        handler = daemon.routes.get((self.command, path))
        if handler is None:
            known = any(p == path for _, p in daemon.routes)
            resp = Response.text(
                405 if known else 404, "method not allowed" if known else "not found"
            )
            self._send(resp, close=True)
            return
        body = b""
        if self.command == "POST":
            length = self.headers.get("Content-Length")
            try:
                size = int(length) if length is not None else -1
            except ValueError:
                size = -1
            if size < 0:
                daemon.metrics.webhooks.labels("rejected_no_length").inc()
                self._send(Response.text(411, "Content-Length required"), close=True)
                return
            if size > daemon.max_body:
                daemon.metrics.webhooks.labels("rejected_too_large").inc()
                self._send(
                    Response.text(413, f"body larger than {daemon.max_body} bytes"), close=True
                )
                return
            body = self.rfile.read(size)
        try:
            resp = handler(Request(self.command, path, self.headers, body))
        except Exception:  # noqa: BLE001 - one bad request must not kill the server
            log.exception("handler for %s %s failed", self.command, path)
            daemon.metrics.errors.labels("internal", "http").inc()
            resp = Response.text(500, "internal error")
        self._send(resp)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    def _send(self, resp: Response, close: bool = False) -> None:
        self.responded = True
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bounded number of handler threads.

    Connections beyond ``max_connections`` get an immediate 503 (MLflow retries
    5xx) instead of a thread each; connections arriving faster than they are
    accepted wait in the kernel's listen backlog.
    """

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's default is 5)

    def __init__(self, address, daemon: Daemon, *, max_connections: int, request_timeout: float):
        self.daemon = daemon
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _HTTPHandler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.daemon.metrics.errors.labels("busy", "http").inc()
            try:
                request.settimeout(1.0)
                request.sendall(
                    _raw_response(503, "Service Unavailable", "too many connections; retry")
                )
            except OSError:
                pass  # the client is gone; nothing to tell it
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


# --------------------------------------------------------------------------- daemon
@dataclass
class DaemonOptions:
    host: str = "0.0.0.0"
    port: int = 8080
    output_dir: str | None = None
    webhook_secret: str | None = None


class Daemon:
    def __init__(
        self,
        settings: Settings,
        options: DaemonOptions,
        reconciler_factory: Callable[[], object],
        *,
        elector=None,
    ):
        from bridge.metrics import Metrics

        self.settings = settings
        self.options = options
        self.reconciler_factory = reconciler_factory
        self.elector = elector
        self.metrics = Metrics()
        self.max_body = settings.webhook_max_body
        self.queue = WorkQueue(settings.webhook_debounce)
        self.deliveries = webhook.DeliveryLog(settings.webhook_replay_window)
        self._deliveries_lock = threading.Lock()
        self.stopping = threading.Event()
        self._reconciler = None
        self._busy = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self.routes: dict[tuple[str, str], Handler] = {}
        self.add_route("GET", "/healthz", self.healthz)
        self.add_route("GET", "/readyz", self.readyz)
        self.add_route("GET", "/metrics", self.metrics_page)
        self.add_route("GET", "/status", self.status_json)
        self.add_route("GET", "/", self.status_page)
        self._status_lock = threading.Lock()
        self._status_cache: tuple[float, list[dict]] | None = None
        if options.webhook_secret:
            self.add_route("POST", WEBHOOK_PATH, self.receive_webhook)
        else:
            log.warning(
                "no webhook secret configured (BRIDGE_WEBHOOK_SECRET or --webhook-secret-file): "
                "webhooks are off, changes are picked up by polling every %.0fs",
                settings.poll_interval,
            )

    # -- routes --------------------------------------------------------------
    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler
        if method == "GET":
            self.routes[("HEAD", path)] = handler

    def healthz(self, _req: Request) -> Response:
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead and not self.stopping.is_set():
            return Response.text(500, f"thread(s) stopped: {', '.join(dead)}")
        return Response.text(200, "ok")

    def readyz(self, _req: Request) -> Response:
        if self.stopping.is_set():
            return Response.text(503, "shutting down")
        return Response.text(200, "leader" if self.is_leader else "standby")

    def metrics_page(self, _req: Request) -> Response:
        self.metrics.queue_depth.set(len(self.queue))
        self.metrics.leader.set(1 if self.is_leader else 0)
        body, ctype = self.metrics.exposition()
        return Response(200, body, ctype)

    def _status_rows(self) -> list[dict]:
        """`bridge status` as data; cached briefly so page reloads cannot hammer MLflow and S3."""
        from bridge.status import status_report

        with self._status_lock:
            now = time.monotonic()
            if self._status_cache is None or now - self._status_cache[0] > STATUS_CACHE_SECONDS:
                rows = status_report(self.settings, output_dir=self.options.output_dir)
                self._status_cache = (time.monotonic(), rows)
            return self._status_cache[1]

    def status_json(self, _req: Request) -> Response:
        try:
            return Response.json(200, self._status_rows())
        except BridgeError as exc:
            return Response.json(503, {"error": redact(exc.one_line())})

    def status_page(self, _req: Request) -> Response:
        from bridge.status_html import render_html

        try:
            page = render_html(self._status_rows())
        except BridgeError as exc:
            return Response.text(503, f"status unavailable: {redact(exc.one_line())}")
        return Response(200, page.encode(), "text/html; charset=utf-8")

    def receive_webhook(self, req: Request) -> Response:
        now = time.time()
        try:
            webhook.check_content_type(req.headers)
            webhook.verify(
                req.headers,
                req.body,
                self.options.webhook_secret or "",
                now=now,
                replay_window=self.settings.webhook_replay_window,
            )
            delivery_id = req.headers.get(webhook.DELIVERY_ID_HEADER)
            event = webhook.parse(req.body, delivery_id)
        except webhook.Rejected as exc:
            self.metrics.webhooks.labels(f"rejected_{exc.reason}").inc()
            log.info("webhook rejected (%s): %s", exc.status, exc)
            return Response.json(exc.status, {"error": str(exc)})
        if event is None:
            self.metrics.webhooks.labels("ignored").inc()
            return Response.json(200, {"ignored": True})
        if self.stopping.is_set():
            return Response.json(503, {"error": "shutting down"})
        if not self.is_leader and not req.headers.get(FORWARDED_HEADER):
            return self._forward(req, event)
        with self._deliveries_lock:
            try:
                self.deliveries.check_and_add(event.delivery_id, now)
            except webhook.Rejected as exc:
                self.metrics.webhooks.labels(f"rejected_{exc.reason}").inc()
                return Response.json(exc.status, {"error": str(exc)})
        if not self.is_leader:
            # Forwarded to us, but we lost the lease meanwhile: the new leader's poll covers it.
            self.metrics.webhooks.labels("not_leader").inc()
            return Response.json(503, {"error": "not the leader"})
        self.queue.put(event.model)
        self.metrics.webhooks.labels("accepted").inc()
        log.info("webhook %s for model %r queued", event.event, event.model)
        return Response.json(202, {"queued": event.model})

    def _forward(self, req: Request, event: webhook.WebhookEvent) -> Response:
        url = self.elector.leader_url_seen() if self.elector else None
        if not url:
            self.metrics.webhooks.labels("no_leader").inc()
            return Response.json(503, {"error": "no leader known yet; retry"})
        headers = {
            k: req.headers.get(k)
            for k in (
                webhook.SIGNATURE_HEADER,
                webhook.DELIVERY_ID_HEADER,
                webhook.TIMESTAMP_HEADER,
                "Content-Type",
            )
            if req.headers.get(k)
        }
        headers[FORWARDED_HEADER] = "1"
        fwd = urllib.request.Request(
            url.rstrip("/") + WEBHOOK_PATH, data=req.body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(fwd, timeout=5) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            self.metrics.webhooks.labels("forward_failed").inc()
            log.warning("could not forward webhook for %r to the leader: %s", event.model, exc)
            return Response.json(503, {"error": "leader unreachable; retry"})
        self.metrics.webhooks.labels("forwarded").inc()
        return Response(status, body, "application/json")

    # -- leadership ------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def fence(self) -> None:
        """Stop the pass under way as soon as this replica is no longer the leader,
        so that it copies and publishes nothing more once another one may be."""
        if not self.is_leader:
            from bridge.lease import LostLeadership

            raise LostLeadership("this replica lost the lease")

    def _on_leadership(self, leader: bool) -> None:
        if leader:
            self.queue.put(FULL)  # a new leader catches up on what it missed

    # -- worker ----------------------------------------------------------------
    def _reconciler_instance(self):
        if self._reconciler is None:
            self._reconciler = self.reconciler_factory()
            publisher = getattr(self._reconciler, "publisher", None)
            if publisher is not None and self.elector is not None:
                publisher.fence = self.fence
        return self._reconciler

    def run_pass(self, full: bool, models: set[str], trigger: str) -> bool:
        """One reconcile; True when it finished without a temporary failure."""
        from bridge.lease import LostLeadership
        from bridge.registry import NotFound

        started = time.monotonic()
        scope = None if full else sorted(models)
        try:
            reconciler = self._reconciler_instance()
            report = reconciler.run_once(scope, self.options.output_dir)
        except NotFound:
            # A model named by a webhook is gone: a full pass prunes what it left.
            self.metrics.syncs.labels(trigger, "model_gone").inc()
            self.queue.put(FULL)
            return True
        except LostLeadership:
            # The new leader's first pass covers everything; nothing to retry here.
            self.metrics.observe_pass_error("lost_lease", trigger, time.monotonic() - started)
            log.warning("%s pass stopped: this replica lost the lease mid-pass", trigger)
            return True
        except BridgeError as exc:
            self.metrics.observe_pass_error(exc.kind, trigger, time.monotonic() - started)
            log.error("%s pass failed: %s", trigger, exc.one_line())
            return not isinstance(exc, TemporaryError)
        except Exception:  # noqa: BLE001 - logged with its traceback, counted, retried
            # A bug or an untranslated client error must not kill the only worker.
            self.metrics.observe_pass_error("internal", trigger, time.monotonic() - started)
            log.exception("%s pass failed unexpectedly", trigger)
            return False
        self.metrics.observe_report(report, trigger, time.monotonic() - started, full=full)
        for r in report.results:
            if r.error is not None:  # the other models of the pass went on
                log.warning("%r: failed: %s", r.name, r.error.one_line())
            elif r.state in ("synced", "removed"):
                log.info("%s: %s (version %s)", r.name, r.state, r.version)
        return not any(isinstance(e, TemporaryError) for e in report.errors)

    def _work(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            item = self.queue.get(timeout=1.0)
            if item is None:
                continue
            full, models = item
            if not self.is_leader:
                continue  # the leader does the work; this replica only forwards
            self._busy.set()
            try:
                ok = self.run_pass(full, models, "poll" if full else "webhook")
            finally:
                self._busy.clear()
            if ok:
                failures = 0
                continue
            failures += 1
            for m in [FULL] if full else models:
                self.queue.put(m)
            delay = backoff_delay(failures, 1.0, self.settings.max_backoff, least=0.5)
            log.warning("retrying in %.1fs (attempt %d failed)", delay, failures)
            self.stopping.wait(delay)

    def _poll(self) -> None:
        while not self.stopping.wait(self.settings.poll_interval * random.uniform(0.9, 1.0)):
            if self.is_leader:
                self.queue.put(FULL)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        try:
            self._server = _Server(
                (self.options.host, self.options.port),
                self,
                max_connections=self.settings.http_max_connections,
                request_timeout=self.settings.http_request_timeout,
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {self.options.host}:{self.options.port}: {exc.strerror}",
                hint="pick another --port or stop what uses it",
            ) from None
        self.options.port = self._server.server_address[1]
        if self.elector is not None:
            self.elector.on_change = self._on_leadership
            self.elector.start()
        else:
            self.queue.put(FULL)
        loops = [("http", self._server.serve_forever), ("worker", self._work), ("poll", self._poll)]
        if self.settings.rollout_auto:  # canary steps with guardrails (docs/rollout.md)
            from bridge.rollout_daemon import RolloutLoop

            self.rollouts = RolloutLoop(self)
            loops.append(("rollout", self.rollouts.run))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info(
            "serving on http://%s:%d (webhooks at %s, poll every %.0fs, leader election %s)",
            self.options.host,
            self.options.port,
            WEBHOOK_PATH if self.options.webhook_secret else "off",
            self.settings.poll_interval,
            "on" if self.elector else "off",
        )

    def stop(self) -> None:
        """Stop taking work, let the current pass finish (up to the grace period), release."""
        self.stopping.set()
        self.queue.close()
        deadline = time.monotonic() + self.settings.shutdown_grace
        worker = next((t for t in self._threads if t.name == "worker"), None)
        if worker is not None:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                # The copy is abandoned: its version has no marker, so nothing points at
                # it and the next pass copies it again.
                log.warning("shutdown grace period over; abandoning the current copy")
        if self.elector is not None:
            self.elector.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        log.info("stopped")

    def serve_until_signalled(self) -> int:
        import signal

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        while not stop.wait(1.0):
            pass
        log.info("signal received; shutting down")
        self.stop()
        return 0
