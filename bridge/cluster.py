"""One pass on the cluster: apply what is desired, prune what bridge owns and no longer wants.

Talks to the API only through :class:`bridge.kube.KubeClient`. The rules:

- every write is a server-side apply under the fixed field manager;
- an object bridge does not own (no ``app.kubernetes.io/managed-by`` label of
  bridge) is never changed: an InferenceService of the same name is reported
  as a conflict, a ServiceAccount of the same name is left as the user made it;
- pruning lists InferenceServices by that label, in the namespaces this pass
  serves, and deletes exactly the owned ones that are not desired, not kept
  (a model that failed this pass, before or during its apply, keeps what it has)
  and in scope;
- a prune the mass-removal guard (:mod:`bridge.prune_guard`) refuses deletes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.errors import BridgeError, CheckFailed
from bridge.keys import MANAGED_BY, MANAGED_BY_LABEL
from bridge.kube import INFERENCE_SERVICE, Forbidden, KubeClient, kind_of
from bridge.prune_guard import RemovalPolicy

log = logging.getLogger(__name__)

OWNED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


@dataclass
class ClusterChange:
    applied: list[str] = field(default_factory=list)  # "<kind>/<namespace>/<name>"
    pruned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: dict[str, BridgeError] = field(default_factory=dict)  # InferenceService name -> error
    dry_run: str = "none"  # kubectl's modes: none, server, client
    held: list[str] = field(default_factory=list)  # stale, kept: the guard refused the prune
    refused: BridgeError | None = None


# Every (API group, resource) -> verbs the API server checks for what this module sends.
# A server-side apply is authorized as "patch", and, when the object does not exist yet,
# also as "create" (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go:
# createAuthorizerAttributes). manifests/base/role.yaml grants exactly these;
# tests/unit/test_manifests.py holds the two together.
VERBS_USED = {
    ("serving.kserve.io", "inferenceservices"): frozenset(
        {"get", "list", "patch", "create", "delete"}
    ),
    ("", "serviceaccounts"): frozenset({"get", "patch", "create"}),
}


def is_owned(obj: dict) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def _ref(obj: dict) -> str:
    m = obj["metadata"]
    return f"{obj['kind']}/{m['namespace']}/{m['name']}"


def reconcile_cluster(
    kube: KubeClient,
    desired: list[dict],
    *,
    namespaces: set[str],
    keep: set[str],
    in_scope: Callable[[str], bool],
    force: bool,
    dry_run: str,
    removal: RemovalPolicy | None = None,
) -> ClusterChange:
    """Apply ``desired`` (ServiceAccounts first), then prune stale owned InferenceServices.

    ``keep`` holds InferenceService names never to prune this pass; ``in_scope(name)``
    limits pruning to the models this pass looked at; ``removal`` (default: no guard)
    refuses a prune that would remove too much of what is served. ``dry_run`` is kubectl's:
    "server" sends every write with dryRun=All (the API server validates, admits and
    authorizes it, and keeps nothing), "client" reads but sends no write at all, "none".
    """
    change = ClusterChange(dry_run=dry_run)
    services = [o for o in desired if o["kind"] == INFERENCE_SERVICE.kind]
    others = [o for o in desired if o["kind"] != INFERENCE_SERVICE.kind]
    all_namespaces = sorted(namespaces | {o["metadata"]["namespace"] for o in desired})

    owned: dict[str, dict[str, dict]] = {}
    for ns in all_namespaces:
        try:
            items = kube.list(INFERENCE_SERVICE, ns, OWNED_SELECTOR)
        except Forbidden as exc:
            # Other failures (401, a missing CRD) stop the pass: nothing could work.
            log.warning("not applying or pruning in namespace %s: %s", ns, exc.one_line())
            for o in services:
                if o["metadata"]["namespace"] == ns:
                    change.errors[o["metadata"]["name"]] = exc
            continue
        # The label selector already filters; checking again costs nothing.
        owned[ns] = {i["metadata"]["name"]: i for i in items if is_owned(i)}

    failed_namespaces = {ns for ns in all_namespaces if ns not in owned}
    for obj in others:
        ns = obj["metadata"]["namespace"]
        if ns in failed_namespaces:
            continue
        try:
            live = kube.get(kind_of(obj), ns, obj["metadata"]["name"])
            if live is not None and not is_owned(live):
                log.info("%s exists and is not managed by bridge; left as it is", _ref(obj))
                change.skipped.append(_ref(obj))
                continue
            _apply(kube, obj, force=True, dry_run=dry_run)
            change.applied.append(_ref(obj))
        except BridgeError as exc:
            for o in services:
                if o["metadata"]["namespace"] == ns:
                    change.errors.setdefault(o["metadata"]["name"], exc)

    for obj in services:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if ns in failed_namespaces or name in change.errors:
            continue
        try:
            if name not in owned[ns]:
                live = kube.get(INFERENCE_SERVICE, ns, name)
                if live is not None:
                    raise CheckFailed(
                        f"InferenceService {ns}/{name} exists and is not managed by bridge "
                        f"(no {OWNED_SELECTOR} label); bridge will not change it",
                        hint="delete or rename that object, or rename the registered model",
                    )
            _apply(kube, obj, force=force, dry_run=dry_run)
            change.applied.append(_ref(obj))
        except BridgeError as exc:
            change.errors[name] = exc

    wanted = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in services}
    # A model whose apply failed (forbidden, invalid, conflict ...) keeps what served it,
    # wherever that is: its new object may be meant for another namespace.
    kept = keep | set(change.errors)
    stale = [
        (ns, name)
        for ns in sorted(owned)
        for name in sorted(owned[ns])
        if (ns, name) not in wanted and name not in kept and in_scope(name)
    ]
    served = sum(len(names) for names in owned.values())
    change.refused = (removal or RemovalPolicy(allowed=True)).check(
        served, len(stale), "the cluster"
    )
    if change.refused is not None:
        log.error("%s", change.refused.one_line())
        change.held = [f"{INFERENCE_SERVICE.kind}/{ns}/{name}" for ns, name in stale]
        return change
    for ns, name in stale:
        try:
            if dry_run != "client":
                kube.delete(INFERENCE_SERVICE, ns, name, dry_run=dry_run == "server")
            change.pruned.append(f"{INFERENCE_SERVICE.kind}/{ns}/{name}")
        except BridgeError as exc:
            change.errors[name] = exc
    return change


def _apply(kube: KubeClient, obj: dict, *, force: bool, dry_run: str) -> None:
    if dry_run != "client":  # a client dry run only reports what it would apply
        kube.apply(obj, force=force, dry_run=dry_run == "server")
