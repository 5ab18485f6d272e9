"""A small local HTTP fake of the Kubernetes API server: only coordination.k8s.io/v1 Leases.

No API server can run here, so leader election is tested against this fake.
It implements what a real API server guarantees for Leases and what the
election relies on: get, create (409 if it exists) and update with optimistic
concurrency on metadata.resourceVersion (409 on a stale write). It records
every successful write with its own clock, for assertions.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_PATH = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/?]+))?")


class FakeLeaseAPI:
    def __init__(self):
        self.leases: dict[tuple[str, str], dict] = {}
        self.writes: list[tuple[float, str, str | None]] = []  # (time, verb, holder)
        self.requests: list[tuple[str, str]] = []  # (verb, path)
        self._rv = 0
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str):
                self._reply(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def _route(self, verb: str):
                m = _PATH.match(self.path)
                if not m:
                    return self._status(404, "NotFound", f"no route {self.path}")
                ns, name = m.group(1), m.group(2)
                api.requests.append((verb, self.path))
                with api._lock:
                    return getattr(self, f"_{verb}")(ns, name)

            def do_GET(self):
                self._route("get")

            def do_POST(self):
                self._route("create")

            def do_PUT(self):
                self._route("update")

            def _get(self, ns, name):
                lease = api.leases.get((ns, name))
                if lease is None:
                    return self._status(404, "NotFound", f'leases "{name}" not found')
                self._reply(200, lease)

            def _create(self, ns, _name):
                body = self._body()
                name = body["metadata"]["name"]
                if (ns, name) in api.leases:
                    return self._status(409, "AlreadyExists", f'leases "{name}" already exists')
                self._store(ns, name, body, "create")
                self._reply(201, api.leases[(ns, name)])

            def _update(self, ns, name):
                body = self._body()
                current = api.leases.get((ns, name))
                if current is None:
                    return self._status(404, "NotFound", f'leases "{name}" not found')
                if (
                    body["metadata"].get("resourceVersion")
                    != current["metadata"]["resourceVersion"]
                ):
                    return self._status(409, "Conflict", "the object has been modified")
                self._store(ns, name, body, "update")
                self._reply(200, api.leases[(ns, name)])

            def _store(self, ns, name, body, verb):
                api._rv += 1
                body.setdefault("apiVersion", "coordination.k8s.io/v1")
                body.setdefault("kind", "Lease")
                body["metadata"].update(namespace=ns, name=name, resourceVersion=str(api._rv))
                api.leases[(ns, name)] = body
                api.writes.append((time.time(), verb, body.get("spec", {}).get("holderIdentity")))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeLeaseAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def holder(self, ns: str, name: str) -> str | None:
        lease = self.leases.get((ns, name))
        return lease["spec"].get("holderIdentity") if lease else None

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path
