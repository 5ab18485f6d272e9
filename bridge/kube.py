"""The Kubernetes API edge: server-side apply, list by label, get, delete.

Only this module imports ``kubernetes`` (inside functions, so the CLI starts
fast without it). Requests are plain dicts on REST paths; every write is a
server-side apply (``PATCH`` with ``application/apply-patch+yaml``) under one
fixed field manager. API failures leave as bridge errors with one clear line:
401 and 403 name the identity problem and the RBAC rule to grant, 404 tells a
missing namespace from a missing InferenceService CRD, 409 names the conflict,
5xx and network failures are temporary.

The ``kubernetes`` client was chosen over lightkube because it is already the
``kube`` extra, the KServe SDK (used to prove compatibility) depends on it,
and its config loader handles in-cluster tokens and kubeconfig contexts
(exec plugins, OIDC) as kubectl does.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError, CheckFailed, PermanentError, TemporaryError, UsageError
from bridge.keys import MANAGED_BY
from bridge.log import redact

log = logging.getLogger(__name__)

FIELD_MANAGER = MANAGED_BY
RBAC_HINT = "grant the rules in docs/serving.md#rbac"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str, name: str | None = None) -> str:
        base = (
            f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        )
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{path}/{name}" if name else path

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


INFERENCE_SERVICE = Kind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices")
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
KINDS = {k.kind: k for k in (INFERENCE_SERVICE, SERVICE_ACCOUNT)}


def kind_of(obj: dict) -> Kind:
    return KINDS[obj["kind"]]


def load_api_client(kubeconfig: str | None = None, context: str | None = None):
    """In-cluster config when running in a pod (and no kubeconfig is set), else kubeconfig."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise UsageError(
            "--apply needs the Kubernetes client, which is not installed",
            hint="pip install 'mlflow-kubeflow-bridge[kube]'",
        ) from None

    try:
        if not kubeconfig and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError) as exc:
        raise UsageError(
            f"no usable Kubernetes configuration: {redact(' '.join(str(exc).split()))}",
            hint="run in a pod with a ServiceAccount, or set BRIDGE_KUBECONFIG / KUBECONFIG "
            "and BRIDGE_KUBE_CONTEXT",
        ) from None


class KubeClient:
    """A few REST calls on an authenticated ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client):
        self.api = api_client
        self.host = redact(api_client.configuration.host)

    @classmethod
    def from_settings(cls, settings) -> KubeClient:
        return cls(load_api_client(settings.kubeconfig, settings.kube_context))

    def apply(self, obj: dict, *, force: bool, dry_run: bool) -> dict:
        """Server-side apply ``obj`` (created if missing) as the bridge field manager."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        try:
            return self._call(
                "PATCH",
                kind.path(meta["namespace"], meta["name"]),
                f"apply {kind.kind} {meta['namespace']}/{meta['name']}",
                kind,
                query=query,
                body=obj,
                content_type="application/apply-patch+yaml",
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
                "GET", kind.path(namespace, name), f"get {kind.kind} {namespace}/{name}", kind
            )
        except _ObjectNotFound:
            return None

    def list(self, kind: Kind, namespace: str, label_selector: str) -> list[dict]:
        items: list[dict] = []
        token = None
        while True:
            query = [("labelSelector", label_selector), ("limit", "500")]
            if token:
                query.append(("continue", token))
            page = self._call(
                "GET",
                kind.path(namespace),
                f"list {kind.resource} in {namespace}",
                kind,
                query=query,
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def delete(self, kind: Kind, namespace: str, name: str, *, dry_run: bool) -> None:
        query = [("propagationPolicy", "Background")]
        if dry_run:
            query.append(("dryRun", "All"))
        try:
            self._call(
                "DELETE",
                kind.path(namespace, name),
                f"delete {kind.kind} {namespace}/{name}",
                kind,
                query=query,
            )
        except _ObjectNotFound:
            pass  # already gone: deleting is idempotent

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        kind: Kind,
        *,
        query: list | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            data = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=(5, 30),
            )
        except ApiException as exc:
            raise translate_api_error(exc.status, exc.body, what, kind, self.host) from None
        except HTTPError as exc:
            raise TemporaryError(
                f"{what}: cannot reach the Kubernetes API at {self.host}: {type(exc).__name__}"
            ) from None
        return data if isinstance(data, dict) else {}


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
