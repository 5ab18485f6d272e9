"""The Kubernetes API edge: server-side apply, list by label, get, delete.

Only this module and :mod:`bridge.lease` talk to the API, through lightkube
(imported inside functions, so the CLI and GitOps-only runs start without it;
:mod:`bridge.kubeconfig` chooses the cluster). Requests are plain dicts; every
write is a server-side apply (``PATCH`` with ``application/apply-patch+yaml``)
under one fixed field manager. API failures leave as bridge errors with one
clear line: 401 and 403 name the identity problem and the RBAC rule to grant,
404 tells a missing namespace from a missing InferenceService CRD, 409 names
the conflict, 5xx and network failures are temporary.

lightkube rather than the ``kubernetes`` client: it is a fraction of the
memory (the daemon stays resident for weeks; see docs/daemon.md, "Memory") and
its one ``patch(..., PatchType.APPLY)`` call is the apply path. The
InferenceService is a lightkube generic resource (a CRD has no model there);
the ServiceAccount is lightkube's own model.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError, CheckFailed, PermanentError, TemporaryError, UsageError
from bridge.keys import MANAGED_BY
from bridge.kubeconfig import CONFIG_HINT, load_config
from bridge.log import redact

log = logging.getLogger(__name__)

FIELD_MANAGER = MANAGED_BY
RBAC_HINT = "grant the rules in docs/serving.md#rbac"
# connect, then everything else (read, write, pool), in seconds
TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


INFERENCE_SERVICE = Kind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices")
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
KINDS = {k.kind: k for k in (INFERENCE_SERVICE, SERVICE_ACCOUNT)}


def kind_of(obj: dict) -> Kind:
    return KINDS[obj["kind"]]


@functools.cache
def resource_class(kind: Kind):
    """The lightkube resource class of ``kind``: its own model for a built-in kind,
    a generic (dict) resource for a custom one."""
    if not kind.group or kind.group.endswith(".k8s.io"):
        from lightkube.core.resource_registry import resource_registry

        return resource_registry.load(kind.api_version, kind.kind)
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(kind.group, kind.version, kind.kind, kind.plural)


def as_dict(obj: Any) -> dict:
    """A lightkube object (generic dict or typed model) as plain JSON data."""
    if obj is None:
        return {}
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def load_api_client(kubeconfig: str | None = None, context: str | None = None, *, timeout=TIMEOUT):
    """A lightkube ``Client`` for the chosen cluster (in-cluster or kubeconfig)."""
    try:
        import httpx2
        from lightkube import Client, ConfigError
    except ImportError:
        raise UsageError(
            "--apply needs the Kubernetes client (lightkube), which is not installed",
            hint="pip install 'mlflow-kubeflow-bridge[kube]'",
        ) from None

    config, proxy = load_config(kubeconfig, context)
    connect, other = timeout
    try:
        return Client(
            config,
            timeout=httpx2.Timeout(other, connect=connect),
            field_manager=FIELD_MANAGER,
            proxy=proxy,
        )
    except (ConfigError, OSError, ValueError) as exc:  # CA or client certificate unreadable
        raise UsageError(
            f"no usable Kubernetes configuration: {redact(' '.join(str(exc).split()))}",
            hint=CONFIG_HINT,
        ) from None


def api_host(api) -> str:
    return redact(api.config.cluster.server)


def label_pairs(selector: str) -> dict[str, str]:
    """``a=b,c=d`` (equality terms, the only ones bridge sends) as lightkube's labels."""
    pairs = {}
    for term in filter(None, selector.split(",")):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!"):
            raise ValueError(f"only equality label selectors are supported: {term!r}")
        pairs[key.strip()] = value.strip()
    return pairs


class KubeClient:
    """A few REST calls on an authenticated lightkube ``Client``."""

    def __init__(self, api):
        self.api = api
        self.host = api_host(api)

    @classmethod
    def from_settings(cls, settings) -> KubeClient:
        return cls(load_api_client(settings.kubeconfig, settings.kube_context))

    def apply(self, obj: dict, *, force: bool, dry_run: bool) -> dict:
        """Server-side apply ``obj`` (created if missing) as the bridge field manager."""
        from lightkube.types import PatchType

        kind = kind_of(obj)
        meta = obj["metadata"]
        try:
            return self._call(
                f"apply {kind.kind} {meta['namespace']}/{meta['name']}",
                kind,
                lambda: self.api.patch(
                    resource_class(kind),
                    meta["name"],
                    obj,
                    namespace=meta["namespace"],
                    patch_type=PatchType.APPLY,
                    field_manager=FIELD_MANAGER,
                    force=force,
                    dry_run=dry_run,
                ),
            )
        except Forbidden as exc:
            # The API server authorizes an apply as "patch", and as "create" when the
            # object is new; its 403 for the second names neither verb.
            raise Forbidden(
                exc.message,
                hint=f"server-side apply needs patch, and create for a new object, on "
                f"{kind.resource}; {RBAC_HINT}",
            ) from None

    def get(self, kind: Kind, namespace: str, name: str) -> dict | None:
        try:
            return self._call(
                f"get {kind.kind} {namespace}/{name}",
                kind,
                lambda: self.api.get(resource_class(kind), name, namespace=namespace),
            )
        except _ObjectNotFound:
            return None

    def list(self, kind: Kind, namespace: str, label_selector: str) -> list[dict]:
        labels = label_pairs(label_selector)
        return self._call(
            f"list {kind.resource} in {namespace}",
            kind,
            # lightkube follows the continue token page by page while the list is read
            lambda: [
                as_dict(item)
                for item in self.api.list(
                    resource_class(kind), namespace=namespace, chunk_size=500, labels=labels
                )
            ],
        )

    def delete(self, kind: Kind, namespace: str, name: str, *, dry_run: bool) -> None:
        from lightkube.types import CascadeType

        try:
            self._call(
                f"delete {kind.kind} {namespace}/{name}",
                kind,
                lambda: self.api.delete(
                    resource_class(kind),
                    name,
                    namespace=namespace,
                    cascade=CascadeType.BACKGROUND,
                    dry_run=dry_run,
                ),
            )
        except _ObjectNotFound:
            pass  # already gone: deleting is idempotent

    def _call(self, what: str, kind: Kind, request) -> Any:
        try:
            result = request()
        except api_failures() as exc:
            raise as_bridge_error(exc, what, kind, self.host) from None
        return result if isinstance(result, list) else as_dict(result)


def api_failures() -> tuple[type[BaseException], ...]:
    """What a lightkube call raises when the API (or the way to it) fails."""
    import httpx2
    from lightkube import ConfigError

    # httpx2.HTTPError: an HTTP status (lightkube's ApiError is one) or the transport;
    # ConfigError, FileNotFoundError, PermissionError: an exec credential plugin that is
    # missing or fails, a token file that is gone.
    return (httpx2.HTTPError, ConfigError, FileNotFoundError, PermissionError)


def as_bridge_error(exc: BaseException, what: str, kind: Kind, host: str) -> BridgeError:
    """The bridge error for one of :func:`api_failures`."""
    import httpx2

    if isinstance(exc, httpx2.HTTPStatusError):
        return translate_api_error(exc.response.status_code, exc.response.content, what, kind, host)
    if isinstance(exc, httpx2.HTTPError):  # connect, read, TLS, timeouts
        return TemporaryError(
            f"{what}: cannot reach the Kubernetes API at {host}: {type(exc).__name__}"
        )
    return UsageError(
        f"{what}: no usable Kubernetes credentials: {redact(' '.join(str(exc).split()))}",
        hint=CONFIG_HINT,
    )


class Forbidden(PermanentError):
    """403: the identity bridge runs as may not do this (RBAC)."""


class _ObjectNotFound(PermanentError):
    """404 for one named object that does not exist (not a missing API)."""


def _status(body: Any) -> dict:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        status = json.loads(body) if isinstance(body, str) else {}
    except ValueError:
        return {"message": " ".join(str(body).split())[:200]}
    return status if isinstance(status, dict) else {}


def translate_api_error(status: int, body: Any, what: str, kind: Kind, host: str) -> BridgeError:
    s = _status(body)
    message = redact(" ".join(str(s.get("message") or "").split()))
    details = s.get("details") or {}
    if status == 401:
        return PermanentError(
            f"{what}: the Kubernetes API at {host} rejected the credentials (401 Unauthorized)",
            hint="check BRIDGE_KUBECONFIG / BRIDGE_KUBE_CONTEXT or the pod's ServiceAccount token",
        )
    if status == 403:
        return Forbidden(
            f"{what}: forbidden by RBAC (403): {message or 'no reason given'}", hint=RBAC_HINT
        )
    if status == 404:
        if details.get("kind") == "namespaces":
            return PermanentError(
                f"{what}: namespace {details.get('name', '?')!r} does not exist (404)",
                hint="create it, or fix BRIDGE_NAMESPACE / the model's bridge.namespace tag",
            )
        if details.get("name") and s.get("reason") == "NotFound":
            return _ObjectNotFound(f"{what}: not found")
        if kind.group:
            return PermanentError(
                f"{what}: the API {kind.api_version} ({kind.kind}) is not served by "
                f"{host} (404): is the CRD installed?",
                hint="install KServe (its CRDs) in the cluster, or check the context",
            )
        return PermanentError(f"{what}: not found (404): {message}")
    if status == 409:
        return CheckFailed(
            f"{what}: conflict (409): {message or 'no reason given'}",
            hint="another field manager owns these fields; set BRIDGE_APPLY_FORCE=true to take "
            "them over, or change them back",
        )
    if status == 422:
        return PermanentError(f"{what}: the API server rejected the object (422): {message}")
    if status == 429 or status >= 500 or status == 0:
        return TemporaryError(f"{what}: Kubernetes API error {status}: {message}")
    return PermanentError(f"{what}: Kubernetes API error {status}: {message}")
