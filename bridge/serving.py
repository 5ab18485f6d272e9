"""Desired serving state -> KServe resources, as plain dicts (pure, no I/O).

One :class:`DesiredService` (a model, the version its approval alias points
at, optionally a newer canary version, and its resolved
:class:`~bridge.overrides.ServingSpec`) becomes one InferenceService; every
namespace that holds one also gets the ServiceAccount that carries the S3
credentials (a reference to a user-provided Secret, never its values).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from bridge import MANAGED_BY
from bridge.overrides import ServingSpec
from bridge.redact import strip_userinfo

API_VERSION = "serving.kserve.io/v1beta1"
ANNOTATION_PREFIX = "mlflow-kubeflow-bridge.io/"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"


@dataclass(frozen=True)
class ServedVersion:
    version: str
    storage_uri: str
    digest: str
    run_id: str | None
    source_uri: str
    format_version: str | None = None  # modelFormat.version, only one a runtime lists


@dataclass(frozen=True)
class DesiredService:
    model_name: str  # the MLflow registered model name, as it is
    k8s_name: str
    alias: str
    primary: ServedVersion
    spec: ServingSpec | None = None  # None: defaults in the options' namespace
    canary: ServedVersion | None = None
    canary_alias: str | None = None


@dataclass(frozen=True)
class ServingOptions:
    namespace: str
    service_account: str
    s3_secret_name: str = "mlflow-bridge-s3"
    s3_endpoint_url: str | None = None  # as the predictor pods reach it; None: AWS S3
    s3_region: str = "us-east-1"
    s3_verify_ssl: bool = True


def labels(k8s_name: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        PART_OF_LABEL: MANAGED_BY,
        "app.kubernetes.io/name": k8s_name,
    }


def lineage_annotations(
    model_name: str, alias: str, v: ServedVersion, prefix: str = ""
) -> dict[str, str]:
    p = ANNOTATION_PREFIX + prefix
    annotations = {
        p + "version": v.version,
        p + "alias": alias,
        p + "source-uri": v.source_uri,
        p + "content-digest": v.digest,
        p + "storage-uri": v.storage_uri,
    }
    if not prefix:
        annotations[p + "registered-model"] = model_name
    if v.run_id:
        annotations[p + "run-id"] = v.run_id
    return annotations


def active_canary(d: DesiredService) -> ServedVersion | None:
    """The canary version, when it is newer than the approved one."""
    c = d.canary
    if c is None or c.version == d.primary.version:
        return None
    try:
        newer = int(c.version) > int(d.primary.version)
    except ValueError:
        newer = False
    return c if newer else None


def inference_service(d: DesiredService, opts: ServingOptions) -> dict:
    spec = d.spec or ServingSpec(namespace=opts.namespace)
    canary = active_canary(d)
    annotations = lineage_annotations(d.model_name, d.alias, d.primary)
    annotations[DEPLOYMENT_MODE_ANNOTATION] = spec.deployment_mode
    predictor: dict = {
        "serviceAccountName": opts.service_account,
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
    }
    served = d.primary
    if canary is not None:
        annotations.update(
            lineage_annotations(d.model_name, d.canary_alias or "", canary, prefix="canary-")
        )
        if spec.deployment_mode == "Serverless":
            # KServe rolls the new revision out to canaryTrafficPercent and keeps
            # the rest on the last revision that took 100% (the approved one).
            served = canary
            predictor["canaryTrafficPercent"] = spec.canary_traffic_percent
        else:
            # RawDeployment has no traffic split: keep serving the approved version.
            annotations[ANNOTATION_PREFIX + "canary-state"] = (
                "published, not routed: RawDeployment mode has no canaryTrafficPercent"
            )
    model_format: dict = {"name": "mlflow"}
    if served.format_version:
        model_format["version"] = served.format_version
    model: dict = {
        "modelFormat": model_format,
        "protocolVersion": "v2",
        "storageUri": served.storage_uri,
        "resources": resources(spec),
    }
    if spec.runtime:
        model["runtime"] = spec.runtime
    predictor["model"] = model
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": d.k8s_name,
            "namespace": spec.namespace,
            "labels": labels(d.k8s_name),
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def resources(spec: ServingSpec) -> dict:
    amounts: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpu:
        amounts[spec.gpu_resource] = str(spec.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def s3_annotations(opts: ServingOptions) -> dict[str, str]:
    """KServe's storage-initializer settings for the S3 store (no credentials)."""
    annotations = {
        "serving.kserve.io/s3-region": opts.s3_region,
        "serving.kserve.io/s3-verifyssl": "1" if opts.s3_verify_ssl else "0",
    }
    if opts.s3_endpoint_url:
        url = urlsplit(opts.s3_endpoint_url)
        # Never the user:password@ of the URL: the annotation is readable by anyone who can
        # read the ServiceAccount, and KServe takes the keys from the Secret anyway.
        host = strip_userinfo(url.netloc)
        annotations["serving.kserve.io/s3-endpoint"] = host + url.path.rstrip("/")
        annotations["serving.kserve.io/s3-usehttps"] = "1" if url.scheme == "https" else "0"
    else:
        annotations["serving.kserve.io/s3-usehttps"] = "1"
    return annotations


def service_account(opts: ServingOptions, namespace: str) -> dict:
    """The predictors' ServiceAccount: S3 settings as annotations, the Secret by name only."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": opts.service_account,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, PART_OF_LABEL: MANAGED_BY},
            "annotations": s3_annotations(opts),
        },
        "secrets": [{"name": opts.s3_secret_name}],
    }


def file_name(resource: dict) -> str:
    """GitOps file of a resource: ``<name>.yaml`` for InferenceServices (their names are
    DNS-1035 labels, without dots), ``<name>.<namespace>.serviceaccount.yaml`` otherwise."""
    meta = resource["metadata"]
    if resource["kind"] == "InferenceService":
        return f"{meta['name']}.yaml"
    return f"{meta['name']}.{meta['namespace']}.{resource['kind'].lower()}.yaml"


def to_yaml(resource: dict) -> str:
    """Byte-stable YAML: sorted keys, block style, no timestamps."""
    return yaml.safe_dump(
        resource, sort_keys=True, default_flow_style=False, width=1000, allow_unicode=True
    )
