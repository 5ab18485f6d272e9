"""An MLflow server behind Kubernetes service-account authentication, for the tests.

The server-side plugin Kubeflow uses for this (mlflow-kubernetes-plugins) is not on the
package index this project installs from, so this stands in for it: a reverse proxy in
front of the real `mlflow server` that, like the plugin the issue and Kubeflow's KEP-897
describe, authenticates each request's bearer token with a TokenReview and authorizes it
with a SubjectAccessReview (verb from the HTTP method, namespace from the
X-MLFLOW-WORKSPACE header), both asked of the Kubernetes API (here tests/fake_k8s_api.py),
and only then forwards it. Everything behind it is the real MLflow server.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.fake_k8s_api import TOKEN as API_TOKEN

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization"}


class KubernetesAuthProxy:
    def __init__(self, upstream: str, kube_api: str):
        self.upstream = urlsplit(upstream)
        self.kube_api = kube_api.rstrip("/")
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, user or None)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def users(self) -> set[str | None]:
        with self.lock:
            return {user for _, _, user in self.seen}

    def _review(self, kind: str, body: dict) -> dict:
        group = "authentication" if kind == "tokenreviews" else "authorization"
        req = urllib.request.Request(
            f"{self.kube_api}/apis/{group}.k8s.io/v1/{kind}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["status"]

    def _user(self, headers, method: str) -> tuple[int, str | None]:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return 401, None
        review = self._review(
            "tokenreviews", {"kind": "TokenReview", "spec": {"token": auth[7:].strip()}}
        )
        if not review.get("authenticated"):
            return 401, None
        user = review["user"]["username"]
        verb = "get" if method in ("GET", "HEAD") else "update"
        access = self._review(
            "subjectaccessreviews",
            {
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "resourceAttributes": {
                        "namespace": headers.get("X-MLFLOW-WORKSPACE", "default"),
                        "verb": verb,
                        "group": "mlflow.kubeflow.org",
                        "resource": "experiments",
                    },
                },
            },
        )
        return (200 if access.get("allowed") else 403), user

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(code)
                for k, v in headers:
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                code, user = proxy._user(self.headers, self.command)
                with proxy.lock:
                    proxy.seen.append((self.command, self.path, user))
                if code != 200:
                    error = "UNAUTHENTICATED" if code == 401 else "PERMISSION_DENIED"
                    body = json.dumps({"error_code": error, "message": f"{code} from auth"})
                    self._reply(code, body.encode(), [("Content-Type", "application/json")])
                    return
                up = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=120
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                up.request(self.command, self.path, body=data, headers=headers)
                resp = up.getresponse()
                body = resp.read()
                self._reply(resp.status, body, resp.getheaders())
                up.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        return Handler
