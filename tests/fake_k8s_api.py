"""A small local HTTP fake of the Kubernetes API server (no real cluster can run here).

It serves just what bridge uses, on namespaced REST paths: list (with an
equality label selector), get, server-side apply (``PATCH`` with
``application/apply-patch+yaml``; needs ``fieldManager``, honours ``force`` and
``dryRun``) and delete; and, for leader election, coordination.k8s.io Leases:
get, create (409 if it exists) and update with optimistic concurrency on
``metadata.resourceVersion`` (409 on a stale write), every write logged with its
own clock; a Lease time that is not a MicroTime as the API server parses it
(RFC 3339 with exactly six fractional digits: kubernetes/kubernetes
staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/micro_time.go, ``UnmarshalJSON``,
``time.Parse(RFC3339Micro, str)``) is refused with 400. Every request is recorded. Switches make it answer like
a real server does when RBAC denies (403), credentials are wrong (401), the
KServe CRDs are missing (404 without details), a namespace is missing (404 on
``namespaces``) or another field manager owns a field (409 without ``force``).

Authorization works like the real API server's, given a :class:`Policy` (RBAC rules;
none set: everything is allowed). Each request is first authorized with the verb its
method and path map to (GET on a name ``get``, on a collection ``list``, POST
``create`` with no name, PUT ``update``, PATCH ``patch``, DELETE ``delete``), as
the authorization filter does. A server-side apply of an object that does not exist
yet is then authorized once more, as ``create`` *with* the object's name, dry run
included: kubernetes/kubernetes
staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (commit
00f7534700c03146d83def73a4cfa9aadd527faa), ``createAuthorizerAttributes`` (Verb
"create", Name: name) wrapped by ``withAuthorization`` around the create validation
that ``forceAllowCreate`` (set for apply patches) reaches when the object is missing.
Rules match as RBAC's ``RuleAllows`` does (plugin/pkg/auth/authorizer/rbac/rbac.go):
verb, API group, resource, and ``resourceNames`` only when the request names one, so
such a rule never allows ``list`` or a POST ``create``. A denied create-on-apply
answers like ``withAuthorization``: ``<resource> "<name>" is forbidden: `` with RBAC's
empty reason. ``Policy.shipped_role`` reads the rules from manifests/base/role.yaml,
so the Role that ships is the one tested.

Started once per test session on a free port (``fake_k8s_api`` fixture); the
``k8s_api`` fixture resets it for each test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

TOKEN = "fake-k8s-token-0123456789"
ROLE_FILE = Path(__file__).resolve().parents[1] / "manifests" / "base" / "role.yaml"
USER = "system:serviceaccount:mlops:mlflow-bridge"
# Go's RFC3339Micro layout, "2006-01-02T15:04:05.000000Z07:00", as time.Parse reads it.
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    def allows(self, group: str, resource: str, verb: str, name: str) -> bool:
        def has(values: frozenset[str], value: str) -> bool:
            return "*" in values or value in values

        return (
            has(self.verbs, verb)
            and has(self.api_groups, group)
            and has(self.resources, resource)
            and (not self.resource_names or name in self.resource_names)
        )


@dataclass(frozen=True)
class Policy:
    """RBAC rules, each bound in one namespace (a Role + RoleBinding) or in all (None)."""

    bindings: tuple[tuple[str | None, Rule], ...]

    def allows(self, group: str, resource: str, verb: str, ns: str, name: str) -> bool:
        return any(
            bound in (None, ns) and rule.allows(group, resource, verb, name)
            for bound, rule in self.bindings
        )

    @classmethod
    def from_roles(cls, text: str, namespaces: dict[str, str] | None = None) -> Policy:
        """Every Role in ``text`` (YAML), bound in ``namespaces[role name]`` (default: all)."""
        bindings = []
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "Role":
                continue
            bound = (namespaces or {}).get(doc["metadata"]["name"])
            for r in doc.get("rules") or []:
                rule = Rule(
                    frozenset(r.get("apiGroups") or ()),
                    frozenset(r.get("resources") or ()),
                    frozenset(r.get("verbs") or ()),
                    frozenset(r.get("resourceNames") or ()),
                )
                bindings.append((bound, rule))
        return cls(tuple(bindings))

    @classmethod
    def shipped_role(cls, target_namespace: str, lease_namespace: str) -> Policy:
        """manifests/base/role.yaml as the kustomization binds it: the InferenceService
        Role in the target namespace, the leader-election Role in the daemon's."""
        return cls.from_roles(
            ROLE_FILE.read_text(),
            {
                "mlflow-bridge-inferenceservices": target_namespace,
                "mlflow-bridge-leader-election": lease_namespace,
            },
        )


@dataclass(frozen=True)
class Check:
    """One authorization decision the fake made."""

    group: str
    resource: str
    verb: str
    namespace: str
    name: str
    allowed: bool


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: dict | None
    authorization: str


@dataclass
class FakeState:
    objects: dict[str, dict] = field(default_factory=dict)  # REST path of the object -> object
    requests: list[Request] = field(default_factory=list)
    forbidden_namespaces: set[str] = field(default_factory=set)
    missing_namespaces: set[str] = field(default_factory=set)
    conflict_names: set[str] = field(default_factory=set)
    missing_crd: bool = False
    unauthorized: bool = False
    resource_version: int = 0
    lease_writes: list[tuple[float, str, str | None]] = field(default_factory=list)
    policy: Policy | None = None  # None: every request is allowed
    checks: list[Check] = field(default_factory=list)
    # TokenReview / SubjectAccessReview (what an MLflow server with Kubernetes auth asks):
    # service-account token -> user name, and user name -> the verbs it may use.
    reviewed_tokens: dict[str, str] = field(default_factory=dict)
    review_verbs: dict[str, set[str]] = field(default_factory=dict)


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def _split(path: str):
    """(api group or '', version, namespace, plural, name or None) of a namespaced path."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[1:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[2:]
    else:
        return None
    if len(rest) < 4 or rest[1] != "namespaces":
        return None
    version, ns, plural = rest[0], rest[2], rest[3]
    name = rest[4] if len(rest) > 4 else None
    return group, version, ns, plural, name


def _keep_status(before: dict | None, obj: dict) -> None:
    """As a real API server does for a CRD with the status subresource (KServe's
    InferenceService has one): an apply of the object never writes ``.status``, and
    ``metadata.generation`` counts the changes of ``.spec``."""
    obj.pop("status", None)
    generation = ((before or {}).get("metadata") or {}).get("generation", 0)
    if before is None or before.get("spec") != obj.get("spec"):
        generation += 1
    obj["metadata"]["generation"] = generation
    if before is not None and "status" in before:
        obj["status"] = before["status"]


def _verb(method: str, name: str | None) -> str:
    """The Kubernetes (RBAC) verb of a request."""
    if method == "GET":
        return "get" if name else "list"
    return {"POST": "create", "PUT": "update"}.get(method, method.lower())


def _matches(obj: dict, selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubeAPI:
    def __init__(self):
        self.state = FakeState()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> FakeKubeAPI:
        with self.lock:
            self.state = FakeState()
        return self

    def write_kubeconfig(self, path: Path, context: str = "fake") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- seeding and inspection ------------------------------------------------
    @staticmethod
    def path_of(obj: dict) -> str:
        api = obj["apiVersion"]
        base = f"/apis/{api}" if "/" in api else f"/api/{api}"
        plural = {"InferenceService": "inferenceservices", "ServiceAccount": "serviceaccounts"}[
            obj["kind"]
        ]
        meta = obj["metadata"]
        return f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"

    def seed(self, *objs: dict) -> None:
        with self.lock:
            for obj in objs:
                self.state.objects[self.path_of(obj)] = json.loads(json.dumps(obj))

    def objects(self, kind: str | None = None) -> dict[str, dict]:
        with self.lock:
            return {
                p: o for p, o in self.state.objects.items() if kind is None or o["kind"] == kind
            }

    def requests(self, method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.state.requests if method is None or r.method == method]

    def verbs(self) -> set[str]:
        """The Kubernetes verbs of every request so far (what RBAC would have to allow)."""
        with self.lock:
            return {_verb(r.method, (_split(r.path) or [None] * 5)[4]) for r in self.state.requests}

    def checks(self) -> list[Check]:
        """Every authorization decision so far (verb as the real API server checks it)."""
        with self.lock:
            return list(self.state.checks)

    def set_inference_service_status(
        self, ns: str, name: str, status: dict, *, generation: int | None = None
    ) -> None:
        """Write an InferenceService's ``.status`` as KServe's controller would (fake:
        no controller runs here). ``observedGeneration`` is the object's generation
        unless ``generation`` says otherwise (a controller that has not caught up)."""
        path = f"/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
        with self.lock:
            obj = self.state.objects[path]
            current = obj["metadata"].get("generation", 1)
            obj["status"] = {
                **json.loads(json.dumps(status)),
                "observedGeneration": current if generation is None else generation,
            }

    def lease(self, ns: str, name: str) -> dict | None:
        with self.lock:
            return self.state.objects.get(
                f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
            )

    def holder(self, ns: str, name: str) -> str | None:
        lease = self.lease(ns, name)
        return lease["spec"].get("holderIdentity") if lease else None

    def lease_writes(self) -> list[tuple[float, str, str | None]]:
        """(time, "create" or "update", holder) of every Lease write."""
        with self.lock:
            return list(self.state.lease_writes)

    # -- the server ------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                req = Request(
                    self.command,
                    url.path,
                    query,
                    self.headers.get("Content-Type", ""),
                    body,
                    self.headers.get("Authorization", ""),
                )
                with fake.lock:
                    fake.state.requests.append(req)
                    code, resp = fake._respond(req)
                self._send(code, resp)

            do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _handle

        return Handler

    def _respond(self, req: Request) -> tuple[int, dict]:
        s = self.state
        if req.authorization != f"Bearer {TOKEN}" or s.unauthorized:
            return 401, _status(401, "Unauthorized", "Unauthorized")
        review = self._review(req)
        if review is not None:
            return review
        parsed = _split(req.path)
        if parsed is None:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        group, version, ns, plural, name = parsed
        resource = f"{plural}.{group}" if group else plural
        verb = _verb(req.method, name)
        if not self._authorize(group, plural, verb, ns, name or ""):
            return 403, _status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "{USER}" cannot {verb} resource "{plural}" '
                f'in API group "{group}" in the namespace "{ns}"',
                {"group": group, "kind": plural},
            )
        if ns in s.forbidden_namespaces:
            return 403, _status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "system:serviceaccount:bridge:bridge" cannot '
                f'{verb} resource "{plural}" in API group "{group}" in the namespace "{ns}"',
                {"group": group, "kind": plural},
            )
        if s.missing_crd and group == "serving.kserve.io":
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if plural == "leases":
            return self._lease(req, ns, name)
        collection = req.path if name is None else req.path.rsplit("/", 1)[0]
        kind_name = {"inferenceservices": "InferenceService", "serviceaccounts": "ServiceAccount"}[
            plural
        ]
        if req.method == "GET" and name is None:
            selector = req.query.get("labelSelector", "")
            items = [
                o
                for p, o in sorted(s.objects.items())
                if p.rsplit("/", 1)[0] == collection and _matches(o, selector)
            ]
            return 200, {"kind": kind_name + "List", "metadata": {}, "items": items}
        not_found = _status(
            404,
            "NotFound",
            f'{resource} "{name}" not found',
            {"name": name, "group": group, "kind": plural},
        )
        if req.method == "GET":
            obj = s.objects.get(req.path)
            return (200, obj) if obj is not None else (404, not_found)
        dry_run = req.query.get("dryRun") == "All"
        if req.method == "DELETE":
            if req.path not in s.objects:
                return 404, not_found
            if not dry_run:
                del s.objects[req.path]
            return 200, {"kind": "Status", "status": "Success", "details": {"name": name}}
        if req.method == "PATCH":
            if req.content_type != "application/apply-patch+yaml":
                return 415, _status(415, "UnsupportedMediaType", "only server-side apply here")
            manager = req.query.get("fieldManager")
            if not manager:
                return 422, _status(422, "Invalid", "fieldManager is required for apply")
            if ns in s.missing_namespaces:
                return 404, _status(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"},
                )
            if name in s.conflict_names and req.query.get("force") != "true":
                return 409, _status(
                    409,
                    "Conflict",
                    'Apply failed with 1 conflict: conflict with "kubectl-edit" using '
                    f"{group}/{version}: .spec.predictor.minReplicas",
                )
            body = req.body or {}
            meta = body.get("metadata") or {}
            if (
                meta.get("name") != name
                or meta.get("namespace") != ns
                or body.get("kind") != kind_name
            ):
                return 400, _status(
                    400, "BadRequest", "name, namespace or kind do not match the URL"
                )
            existed = req.path in s.objects
            if not existed and not self._authorize(group, plural, "create", ns, name):
                # patch.go: withAuthorization -> errors.NewForbidden(gr, name, reason);
                # RBAC gives no reason when no rule matches.
                return 403, _status(
                    403,
                    "Forbidden",
                    f'{resource} "{name}" is forbidden: ',
                    {"name": name, "group": group, "kind": plural},
                )
            obj = json.loads(json.dumps(body))
            obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply"}]
            if kind_name == "InferenceService":
                _keep_status(s.objects.get(req.path), obj)
            if not dry_run:
                s.objects[req.path] = obj
            return (200 if existed else 201), obj
        return 405, _status(405, "MethodNotAllowed", f"{req.method} is not supported here")

    def _review(self, req: Request) -> tuple[int, dict] | None:
        """POST tokenreviews / subjectaccessreviews, answered as the API server does
        (authentication.k8s.io/v1 TokenReview, authorization.k8s.io/v1 SubjectAccessReview:
        the request's spec comes back with a status)."""
        s = self.state
        body = req.body or {}
        spec = body.get("spec") or {}
        if req.method == "POST" and req.path == "/apis/authentication.k8s.io/v1/tokenreviews":
            user = s.reviewed_tokens.get(spec.get("token", ""))
            status = {"authenticated": user is not None}
            if user is not None:
                status["user"] = {"username": user, "groups": ["system:serviceaccounts"]}
            return 201, {**body, "status": status}
        if (
            req.method == "POST"
            and req.path == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        ):
            verb = (spec.get("resourceAttributes") or {}).get("verb", "")
            allowed = verb in s.review_verbs.get(spec.get("user", ""), set())
            return 201, {**body, "status": {"allowed": allowed}}
        return None

    def _authorize(self, group: str, resource: str, verb: str, ns: str, name: str) -> bool:
        s = self.state
        allowed = s.policy is None or s.policy.allows(group, resource, verb, ns, name)
        s.checks.append(Check(group, resource, verb, ns, name, allowed))
        return allowed

    def _lease(self, req: Request, ns: str, name: str | None) -> tuple[int, dict]:
        s = self.state
        body = req.body or {}
        if req.method == "POST":
            name = (body.get("metadata") or {}).get("name")
            path = f"{req.path.rstrip('/')}/{name}"
        else:
            path = req.path
        current = s.objects.get(path)
        if req.method == "POST" and current is not None:
            return 409, _status(409, "AlreadyExists", f'leases "{name}" already exists')
        if req.method in ("GET", "PUT") and current is None:
            return 404, _status(404, "NotFound", f'leases "{name}" not found')
        if req.method == "GET":
            return 200, current
        if req.method not in ("POST", "PUT"):
            return 405, _status(405, "MethodNotAllowed", f"{req.method} is not supported here")
        for time_field in ("acquireTime", "renewTime"):
            value = (body.get("spec") or {}).get(time_field)
            if value is not None and not MICRO_TIME.fullmatch(str(value)):
                return 400, _status(
                    400,
                    "BadRequest",
                    f'Lease in version "v1" cannot be handled as a Lease: parsing time '
                    f'"{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse',
                )
        if req.method == "PUT" and (
            body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]
        ):
            return 409, _status(409, "Conflict", "the object has been modified")
        s.resource_version += 1
        body.setdefault("apiVersion", "coordination.k8s.io/v1")
        body.setdefault("kind", "Lease")
        body["metadata"].update(namespace=ns, name=name, resourceVersion=str(s.resource_version))
        s.objects[path] = body
        verb = _verb(req.method, name)
        s.lease_writes.append((time.time(), verb, body.get("spec", {}).get("holderIdentity")))
        return (201 if req.method == "POST" else 200), body


@pytest.fixture(scope="session")
def fake_k8s_api():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


@pytest.fixture
def k8s_api(fake_k8s_api, tmp_path):
    """The session's fake API, reset, with a kubeconfig pointing at it in ``.kubeconfig``."""
    fake_k8s_api.reset()
    fake_k8s_api.kubeconfig = fake_k8s_api.write_kubeconfig(tmp_path / "kubeconfig")
    return fake_k8s_api


def controller_status(
    isvc: dict,
    *,
    ready: bool = True,
    url: str | None = None,
    deployment_mode: str = "Knative",
    cluster_runtime: str = "kserve-mlserver",
) -> dict:
    """FAKE: the ``.status`` KServe's controller would write on ``isvc`` (no controller runs
    here). Field names and values follow pkg/apis/serving/v1beta1/inference_service_status.go
    of kserve/kserve at aaac4e294dae2c7b1aa1886447793f3aa1c30912: duck-typed conditions
    (PredictorReady, IngressReady, Ready), ``url``, ``components.predictor``,
    ``modelStatus`` (transitionStatus UpToDate/InProgress, states Loaded/Pending),
    ``deploymentMode`` (normalised name) and ``clusterServingRuntimeName``. Seed the
    returned object with :meth:`FakeKubeAPI.seed`; timestamps are fixed, not real."""
    meta = isvc["metadata"]
    url = url or f"http://{meta['name']}.{meta['namespace']}.example.com"
    status_word = "True" if ready else "False"
    conditions = [
        {"type": t, "status": status_word, "lastTransitionTime": "2026-01-01T00:00:00Z"}
        for t in ("IngressReady", "PredictorReady", "Ready")
    ]
    if not ready:
        for c in conditions:
            c["reason"] = "PredictorNotReady"
    status = {
        "observedGeneration": meta.get("generation", 1),
        "conditions": conditions,
        "deploymentMode": deployment_mode,
        "clusterServingRuntimeName": cluster_runtime,
        "modelStatus": {
            "transitionStatus": "UpToDate" if ready else "InProgress",
            "states": {
                "activeModelState": "Loaded" if ready else "Pending",
                "targetModelState": "Loaded",
            },
            "copies": {"failedCopies": 0, "totalCopies": 1},
        },
        "components": {"predictor": {"url": url}},
    }
    if ready:
        status["url"] = url
        status["address"] = {"url": url}
    return {**isvc, "status": status}
