"""The kustomize base and overlays build, validate against the Kubernetes schemas,
and grant no more than the code uses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bridge.cluster import VERBS_USED
from bridge.lease import LEASE_VERBS

ROOT = Path(__file__).resolve().parents[2]
KUBE_VERSION = "1.32.0"
TARGETS = [
    "manifests/base",
    "manifests/overlays/servicemonitor",
    "manifests/overlays/kubeflow-mlflow-auth",
]


def build(target: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the kustomizations"
    res = subprocess.run(
        [kubectl, "kustomize", str(ROOT / target)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.mark.parametrize("target", TARGETS)
def test_kustomization_builds_and_every_object_validates(target):
    docs = build(target)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= kinds
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            # A CRD: no schema ships with kubernetes-validate; checked below instead.
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_validation_can_fail():
    [deployment] = [d for d in build("manifests/base") if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def _by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_deployment_is_hardened():
    docs = build("manifests/base")
    [dep] = _by_kind(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [c] = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(c["resources"]) == {"requests", "limits"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in c["env"]}
    for secret_var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_TOKEN"):
        assert "secretKeyRef" in env[secret_var]["valueFrom"]
    [cm] = _by_kind(docs, "ConfigMap")
    assert not any("SECRET" in k or "TOKEN" in k or "PASSWORD" in k for k in cm["data"])
    assert pod["serviceAccountName"] == _by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"].items()
    [svc] = _by_kind(docs, "Service")
    assert svc["spec"]["selector"].items() <= pod_labels
    [netpol] = _by_kind(docs, "NetworkPolicy")
    assert netpol["spec"]["podSelector"]["matchLabels"]  # never every pod of the namespace
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels
    [pdb] = _by_kind(docs, "PodDisruptionBudget")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_rbac_grants_no_verbs_beyond_what_the_code_uses():
    docs = build("manifests/base")
    assert not _by_kind(docs, "ClusterRole") and not _by_kind(docs, "ClusterRoleBinding")
    granted: dict[tuple[str, str], set[str]] = {}
    for role in _by_kind(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == {
        ("coordination.k8s.io", "leases"): set(LEASE_VERBS),
        **{key: set(verbs) for key, verbs in VERBS_USED.items()},
    }
    # InferenceServices are granted in the target namespace, Leases in the daemon's.
    [cm] = _by_kind(docs, "ConfigMap")
    roles = {r["metadata"]["name"]: r for r in _by_kind(docs, "Role")}
    isvc_role = next(
        r for r in roles.values() if r["rules"][0]["resources"] == ["inferenceservices"]
    )
    assert isvc_role["metadata"]["namespace"] == cm["data"]["BRIDGE_NAMESPACE"]
    sa = _by_kind(docs, "ServiceAccount")[0]["metadata"]
    for binding in _by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        role = roles[binding["roleRef"]["name"]]
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
        ]


def test_rbac_names_the_objects_it_can_and_only_where_rbac_can_match_a_name():
    """resourceNames come from the ConfigMap the daemon reads (one value decides both),
    and never sit on a rule granting list or a POST create: RBAC matches a rule with
    resourceNames only when the request names an object, which a list and a create by
    POST do not (Kubernetes docs, RBAC "Referring to resources")."""
    docs = build("manifests/base")
    [cm] = _by_kind(docs, "ConfigMap")
    named = {}
    for role in _by_kind(docs, "Role"):
        for rule in role["rules"]:
            if rule.get("resourceNames"):
                assert not {"list", "watch", "deletecollection"} & set(rule["verbs"]), rule
                for resource in rule["resources"]:
                    named[resource] = (rule["resourceNames"], set(rule["verbs"]))
    assert named["leases"] == ([cm["data"]["BRIDGE_LEASE_NAME"]], {"get", "update"})
    # The ServiceAccount is created by server-side apply (a PATCH on its name), so even
    # its create is narrowed; a Lease is created by POST, so its create is not.
    assert named["serviceaccounts"] == (
        [cm["data"]["BRIDGE_SERVICE_ACCOUNT"]],
        {"get", "patch", "create"},
    )
    assert "inferenceservices" not in named


def test_lease_code_sends_only_the_granted_verbs():
    """The lightkube Client methods LeaseLock calls map onto LEASE_VERBS (get, create,
    replace=update; lightkube/core/client.py 1.0.1: replace sends a PUT)."""
    import inspect
    import re

    from bridge import lease

    source = inspect.getsource(lease.LeaseLock)
    verb_of = {
        "get": "get",
        "list": "list",
        "watch": "watch",
        "create": "create",
        "replace": "update",
        "patch": "patch",
        "apply": "patch",
        "delete": "delete",
        "deletecollection": "deletecollection",
    }
    called = set(re.findall(r"self\.api\.(\w+)\(", source))
    assert called <= set(verb_of), called
    assert {verb_of[m] for m in called} == lease.LEASE_VERBS == {"get", "create", "update"}


def test_servicemonitor_scrapes_the_service_metrics_port():
    docs = build("manifests/overlays/servicemonitor")
    [sm] = _by_kind(docs, "ServiceMonitor")
    [svc] = _by_kind(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def _stages(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """ARG defaults, and each stage's (FROM image, lines)."""
    args, stages, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith("ARG ") and "=" in line and current is None:
            k, v = line[4:].split("=", 1)
            args[k.strip()] = v.strip()
        elif line.startswith("FROM "):
            parts = line.split()
            image = parts[1]
            for k, v in args.items():
                image = image.replace("${" + k + "}", v)
            current = parts[3] if len(parts) > 3 else image
            stages[current] = [image]
        elif current is not None:
            stages[current].append(line)
    return args, stages


def test_dockerfile_targets_are_pinned_and_non_root():
    """Both images (daemon, the default target, and components) come from a pinned base,
    install from this checkout under constraints.txt and run as uid 10001."""
    text = (ROOT / "Dockerfile").read_text()
    _, stages = _stages(text)
    for name, (image, *_lines) in stages.items():
        assert image in stages or "@sha256:" in image or image.count(".") >= 2, (name, image)
    assert list(stages)[-1] == "daemon"  # a plain `docker build .` gives the daemon
    for target in ("daemon", "components"):
        assert "USER 10001:10001" in stages[target], target
    assert 'pip install -c constraints.txt ".[daemon,mlflow-k8s-auth]"' in text
    assert 'pip install -c constraints.txt ".[kfp]"' in text


def test_kubeflow_mlflow_auth_overlay_sends_the_service_account_token():
    """MLFLOW_TRACKING_AUTH=kubernetes on the daemon; its token is mounted (the client reads
    /var/run/secrets/kubernetes.io/serviceaccount/token, mlflow's
    tracking/request_auth/kubernetes_request_auth_provider.py)."""
    docs = build("manifests/overlays/kubeflow-mlflow-auth")
    [deployment] = _by_kind(docs, "Deployment")
    [sa] = _by_kind(docs, "ServiceAccount")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLFLOW_TRACKING_AUTH"] == "kubernetes"
    assert sa.get("automountServiceAccountToken") is True
