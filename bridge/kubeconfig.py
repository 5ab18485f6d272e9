"""Which cluster, and as whom: the pod's ServiceAccount or a kubeconfig, as kubectl reads them.

In a pod (``KUBERNETES_SERVICE_HOST`` set) with neither a kubeconfig nor a context
chosen, the ServiceAccount's token (re-read when the API server answers 401: the
kubelet rotates it) and CA. Otherwise the kubeconfig: ``--kubeconfig`` /
``BRIDGE_KUBECONFIG`` / ``KUBECONFIG`` (a list of files joined by ``:``, merged as
kubectl merges them), else ``~/.kube/config``; its current context unless
``--context`` / ``BRIDGE_KUBE_CONTEXT`` names another.

The merge follows client-go (kubernetes/kubernetes
staging/src/k8s.io/client-go/tools/clientcmd/loader.go at commit
f183e4a1ede3f59d1c6b172c3dedd8cca7577332, ``ClientConfigLoadingRules.Load`` and
``ResolveLocalPaths``): missing files in the list are skipped, the first file to name
a cluster, user or context wins, the first ``current-context`` set wins, and relative
file paths are resolved against the directory of the file that holds them.

lightkube (imported here, only when a cluster is reached) turns the chosen context
into an HTTP client: token, token file, exec plugin, client certificate, basic auth;
a legacy ``auth-provider`` entry is refused with one line (kubectl's own gcp/azure
providers are gone since Kubernetes 1.26: use their exec plugins).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from bridge.errors import UsageError
from bridge.log import redact

DEFAULT_KUBECONFIG = "~/.kube/config"
CONFIG_HINT = (
    "run in a pod with a ServiceAccount, or set BRIDGE_KUBECONFIG / KUBECONFIG and "
    "BRIDGE_KUBE_CONTEXT"
)

# Fields that name files (client-go GetClusterFileReferences / GetAuthInfoFileReferences).
_CLUSTER_FILES = ("certificate-authority",)
_USER_FILES = ("client-certificate", "client-key", "tokenFile")


def _absolute(base: Path, value: str | None) -> str | None:
    if not value or os.path.isabs(value):
        return value
    return str(base / value)


def _resolved(entry: dict, key: str, base: Path) -> dict:
    """A named cluster or user with its relative file paths made absolute."""
    body = dict(entry.get(key) or {})
    for field in _CLUSTER_FILES if key == "cluster" else _USER_FILES:
        if field in body:
            body[field] = _absolute(base, body[field])
    exec_ = body.get("exec")
    if key == "user" and isinstance(exec_, dict) and os.sep in (exec_.get("command") or ""):
        body["exec"] = {**exec_, "command": _absolute(base, exec_["command"])}
    return {**entry, key: body}


def merge_kubeconfigs(files: list[tuple[Path, dict]]) -> dict:
    """One kubeconfig from several, in order: the first to set a name (or the current
    context) wins; file paths in each are absolute afterwards."""
    merged: dict = {"clusters": [], "users": [], "contexts": [], "current-context": None}
    for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
        seen: set[str] = set()
        for path, doc in files:
            base = path.resolve().parent
            for entry in doc.get(section) or []:
                name = entry.get("name")
                if name in seen:
                    continue
                seen.add(name)
                merged[section].append(_resolved(entry, key, base) if key != "context" else entry)
    merged["current-context"] = next(
        (doc["current-context"] for _, doc in files if doc.get("current-context")), None
    )
    return merged


def read_kubeconfigs(paths: str | None) -> list[tuple[Path, dict]]:
    """The kubeconfig files of ``paths`` (``:``-joined, as KUBECONFIG) that exist, parsed."""
    names = [p for p in (paths or DEFAULT_KUBECONFIG).split(os.pathsep) if p]
    files = []
    for name in names:
        path = Path(name).expanduser()
        if not path.is_file():
            continue  # as client-go: a missing file of the list is skipped
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise UsageError(f"kubeconfig {name} is not a kubeconfig (a YAML mapping)")
        files.append((path, doc))
    if not files:
        raise UsageError(
            f"no usable Kubernetes configuration: kubeconfig {', '.join(names)} not found",
            hint=CONFIG_HINT,
        )
    return files


def load_config(kubeconfig: str | None, context: str | None):
    """``(lightkube SingleConfig, proxy URL or None)`` of the cluster to reach."""
    from lightkube import ConfigError
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.config.models import User

    try:
        if not kubeconfig and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return KubeConfig.from_service_account().get(), None
        merged = merge_kubeconfigs(read_kubeconfigs(kubeconfig))
        chosen = KubeConfig.from_dict(merged).get(context)
    except UsageError:
        raise
    except (ConfigError, OSError, KeyError, ValueError, TypeError, yaml.YAMLError) as exc:
        detail = f"no such entry {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UsageError(
            f"no usable Kubernetes configuration: {redact(' '.join(detail.split()))}",
            hint=CONFIG_HINT,
        ) from None
    if chosen.user is None:
        chosen = chosen._replace(user=User())  # a context without a user: no credentials
    if chosen.user.auth_provider:
        raise UsageError(
            f"no usable Kubernetes configuration: context {chosen.context_name!r} uses an "
            "auth-provider entry, which bridge does not run",
            hint="use the provider's exec credential plugin (kubelogin, gke-gcloud-auth-plugin, "
            "aws eks get-token) in the kubeconfig",
        )
    cluster = next(c for c in merged["clusters"] if c.get("name") == chosen.context.cluster)
    return chosen, (cluster.get("cluster") or {}).get("proxy-url")
