"""Desired serving state -> KServe resources, as plain dicts (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from bridge import MANAGED_BY

API_VERSION = "serving.kserve.io/v1beta1"
ANNOTATION_PREFIX = "mlflow-kubeflow-bridge.io/"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class ServedVersion:
    version: str
    storage_uri: str
    digest: str
    run_id: str | None
    source_uri: str


@dataclass(frozen=True)
class DesiredService:
    model_name: str  # the MLflow registered model name, as it is
    k8s_name: str
    alias: str
    primary: ServedVersion


@dataclass(frozen=True)
class ServingOptions:
    namespace: str
    service_account: str


def labels(k8s_name: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/part-of": MANAGED_BY,
        "app.kubernetes.io/name": k8s_name,
    }


def lineage_annotations(model_name: str, alias: str, v: ServedVersion) -> dict[str, str]:
    p = ANNOTATION_PREFIX
    annotations = {
        p + "registered-model": model_name,
        p + "version": v.version,
        p + "alias": alias,
        p + "source-uri": v.source_uri,
        p + "content-digest": v.digest,
    }
    if v.run_id:
        annotations[p + "run-id"] = v.run_id
    return annotations


def inference_service(d: DesiredService, opts: ServingOptions) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": d.k8s_name,
            "namespace": opts.namespace,
            "labels": labels(d.k8s_name),
            "annotations": lineage_annotations(d.model_name, d.alias, d.primary),
        },
        "spec": {
            "predictor": {
                "serviceAccountName": opts.service_account,
                "model": {
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": d.primary.storage_uri,
                },
            }
        },
    }


def to_yaml(resource: dict) -> str:
    """Byte-stable YAML: sorted keys, block style, no timestamps."""
    return yaml.safe_dump(resource, sort_keys=True, default_flow_style=False, width=1000)
