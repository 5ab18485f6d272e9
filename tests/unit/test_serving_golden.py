"""Golden files for representative models; every resource validated offline.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_serving_golden.py``
and review the diff.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bridge.gitops import KUSTOMIZATION, OutputDir
from bridge.names import k8s_name
from bridge.overrides import ServingSpec, resolve
from bridge.serving import (
    AccessKeys,
    DesiredService,
    ServedVersion,
    ServingOptions,
    credentials_secret,
    file_name,
    inference_service,
    service_account,
    to_yaml,
)

from .kserve_strict import UnknownField
from .kserve_strict import inference_service as strict_isvc

GOLDEN = Path(__file__).parent / "golden"
RUNTIMES = {"kserve-mlserver": ("1", "2"), "mlserver-gpu": ("2",)}
OPTS = ServingOptions(
    namespace="models",
    service_account="mlflow-bridge-models",
    s3_secret_name="mlflow-bridge-s3",
    s3_endpoint_url="http://minio.minio.svc:9000",
    s3_region="us-east-1",
    s3_verify_ssl=True,
)
AWS_OPTS = ServingOptions(namespace="prod", service_account="models-sa", s3_region="eu-west-1")
IRSA_OPTS = ServingOptions(
    namespace="prod",
    service_account="models-sa",
    s3_region="eu-west-1",
    irsa_role_arn="arn:aws:iam::123456789012:role/kserve-models",
)
DEFAULTS = ServingSpec(namespace="models")


def version(
    model: str, n: str, fmt: str | None = "2", run: str | None = "0f3c9a7e"
) -> ServedVersion:
    key = k8s_name(model)
    return ServedVersion(
        version=n,
        storage_uri=f"s3://bridge-models/prod/{key}/{n}/",
        digest="sha256:" + (n * 64)[:64],
        run_id=f"{run}{n}" if run else None,
        source_uri=f"mlflow-artifacts:/1/models/m-{n}/artifacts",
        format_version=fmt,
    )


def desired(
    model: str,
    n: str,
    tags: dict | None = None,
    canary: str | None = None,
    served: bool = True,
    **kw,
):
    spec = resolve(model, tags or {}, DEFAULTS, RUNTIMES)
    return DesiredService(
        model_name=model,
        k8s_name=k8s_name(model),
        alias="champion",
        primary=version(model, n, **kw),
        spec=spec,
        canary=version(model, canary, **kw) if canary else None,
        canary_alias="challenger" if canary else None,
        champion_served=served,
    )


CASES = {
    "plain": lambda: inference_service(desired("iris-classifier", "3"), OPTS),
    "canary": lambda: inference_service(
        desired("fraud-detector", "4", {"bridge.canary-traffic-percent": "20"}, canary="5"), OPTS
    ),
    "canary-raw": lambda: inference_service(
        desired("churn-raw", "4", {"bridge.deployment-mode": "RawDeployment"}, canary="5"),
        OPTS,
    ),
    # The champion is not served yet (a first deployment): the canary waits.
    "canary-first-deploy": lambda: inference_service(
        desired("fraud-first", "4", canary="5", served=False), OPTS
    ),
    # KServe >= 0.20, Standard mode: spec.canary, a second Deployment weighted by the HTTPRoute.
    "canary-standard": lambda: inference_service(
        desired(
            "churn-std",
            "4",
            {"bridge.canary-traffic-percent": "20", "bridge.deployment-mode": "Standard"},
            canary="5",
        ),
        OPTS,
    ),
    "canary-knative": lambda: inference_service(
        desired("churn-kn", "4", {"bridge.deployment-mode": "Serverless"}, canary="5"), OPTS
    ),
    "gpu-overrides": lambda: inference_service(
        desired(
            "llm-reranker",
            "12",
            {
                "bridge.gpu": "1",
                "bridge.cpu": "4",
                "bridge.memory": "16Gi",
                "bridge.min-replicas": "0",
                "bridge.max-replicas": "2",
                "bridge.runtime": "mlserver-gpu",
                "bridge.namespace": "gpu-models",
            },
            fmt=None,
            run=None,
        ),
        OPTS,
    ),
    "odd-name": lambda: inference_service(desired("Fraud Model v2.1 (EU) / déjà vu", "1"), OPTS),
    "serviceaccount-minio": lambda: service_account(OPTS, "models"),
    "serviceaccount-aws": lambda: service_account(AWS_OPTS, "prod"),
    "serviceaccount-irsa": lambda: service_account(IRSA_OPTS, "prod"),
    "secret-minio": lambda: credentials_secret(OPTS, "models", AccessKeys()),
}
CORE_KINDS = sorted(c for c in CASES if c.startswith(("serviceaccount", "secret")))


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    text = to_yaml(CASES[case]())
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"{path.name} changed; rerun with UPDATE_GOLDEN=1 and review"


@pytest.mark.parametrize("case", sorted(set(CASES) - set(CORE_KINDS)))
def test_kserve_sdk_accepts_without_unknown_fields(case):
    resource = CASES[case]()
    isvc = strict_isvc(resource)
    model = isvc.spec.predictor.model
    assert model.model_format.name == "mlflow" and model.protocol_version == "v2"
    assert model.storage_uri.endswith("/")
    assert isvc.spec.predictor.service_account_name == OPTS.service_account
    if model.model_format.version is not None:
        assert model.model_format.version in ("1", "2")
    # The SDK's own serialiser gives back what bridge emitted, plus the one default the
    # SDK class fills in (the container name of V1beta1ModelSpec, '').
    from kserve.api_client import ApiClient

    expected = copy.deepcopy(resource)
    expected["spec"]["predictor"]["model"]["name"] = ""
    for canary in expected["spec"].get("canary", []):
        canary["predictor"]["model"]["name"] = ""
    assert ApiClient().sanitize_for_serialization(isvc) == expected


def test_strict_check_can_fail():
    resource = CASES["plain"]()
    resource["spec"]["predictor"]["model"]["storageURI"] = "s3://typo/"
    with pytest.raises(UnknownField, match="storageURI"):
        strict_isvc(resource)


@pytest.mark.parametrize("case", CORE_KINDS)
def test_core_kinds_pass_schema_validation(case):
    import kubernetes_validate

    kubernetes_validate.validate(CASES[case](), desired_version="1.30", strict=True)


def test_schema_validation_can_fail():
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    sa = CASES["serviceaccount-minio"]()
    sa["secrets"] = "mlflow-bridge-s3"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(sa, desired_version="1.30", strict=True)


def test_s3_settings_sit_where_kserve_reads_them():
    """KServe reads the s3-* annotations from the Secret the ServiceAccount lists, and
    from the ServiceAccount only with IRSA (pkg/credentials/service_account_credentials.go
    at kserve/kserve aaac4e294dae2c7b1aa1886447793f3aa1c30912)."""
    sa = CASES["serviceaccount-minio"]()
    assert sa["secrets"] == [{"name": "mlflow-bridge-s3"}]
    assert "annotations" not in sa["metadata"]
    secret = CASES["secret-minio"]()
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "minio.minio.svc:9000",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": "us-east-1",
        "serving.kserve.io/s3-verifyssl": "1",
    }
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "<replace-me>",
        "AWS_SECRET_ACCESS_KEY": "<replace-me>",
    }
    aws = credentials_secret(AWS_OPTS, "prod", AccessKeys())["metadata"]["annotations"]
    assert "serving.kserve.io/s3-endpoint" not in aws
    assert aws["serving.kserve.io/s3-usehttps"] == "1"
    irsa = CASES["serviceaccount-irsa"]()
    assert "secrets" not in irsa
    assert irsa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("kserve-models")
    assert irsa["metadata"]["annotations"]["serving.kserve.io/s3-region"] == "eu-west-1"


def test_canary_goes_away_when_promoted():
    # Both aliases on one version, an older canary, or no canary alias: no canary rollout.
    same = desired("fraud-detector", "5", canary="5")
    older = desired("fraud-detector", "5", canary="4")
    gone = desired("fraud-detector", "5")
    docs = [inference_service(d, OPTS) for d in (same, older, gone)]
    for doc in docs:
        assert "canaryTrafficPercent" not in doc["spec"]["predictor"]
        assert doc["spec"]["predictor"]["model"]["storageUri"].endswith("/fraud-detector/5/")
        assert not any("canary" in k for k in doc["metadata"]["annotations"])
    assert to_yaml(docs[0]) == to_yaml(docs[2])


def test_canary_serves_the_new_version_and_records_both():
    doc = CASES["canary"]()
    predictor = doc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"].endswith("/fraud-detector/5/")
    ann = doc["metadata"]["annotations"]
    assert ann["mlflow-kubeflow-bridge.io/version"] == "4"
    assert ann["mlflow-kubeflow-bridge.io/canary-version"] == "5"
    raw = CASES["canary-raw"]()
    assert "canaryTrafficPercent" not in raw["spec"]["predictor"]
    assert raw["spec"]["predictor"]["model"]["storageUri"].endswith("/churn-raw/4/")
    # RawDeployment is read as its current name, Standard: the canary goes to spec.canary.
    assert raw["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert raw["spec"]["canary"][0]["predictor"]["model"]["storageUri"].endswith("/churn-raw/5/")


def test_first_deployment_emits_the_champion_alone():
    """KServe gives a new InferenceService's first revision all traffic: the Knative
    reconciler splits only ``if componentExtension.CanaryTrafficPercent != nil &&
    lastRolledoutRevision != ""`` (kserve/kserve pkg/controller/v1beta1/inferenceservice/
    reconcilers/knative/ksvc_reconciler.go line 134 at aaac4e294dae2c7b1aa1886447793f3aa1c30912),
    else 100 % to the latest revision. Until the champion is served, no canary is emitted."""
    doc = CASES["canary-first-deploy"]()
    predictor = doc["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor and "canary" not in doc["spec"]
    assert predictor["model"]["storageUri"].endswith("/fraud-first/4/")
    ann = doc["metadata"]["annotations"]
    assert not any(
        k.startswith("mlflow-kubeflow-bridge.io/canary-")
        and k != ("mlflow-kubeflow-bridge.io/canary-state")
        for k in ann
    )
    assert ann["mlflow-kubeflow-bridge.io/canary-state"].startswith("waiting: canary version 5")


def test_standard_mode_canary_uses_spec_canary():
    """KServe >= 0.20 (pkg/apis/serving/v1beta1/inference_service.go ``Canary []CanarySpec``,
    validated in inference_service_validation.go validateCanarySpecs: Standard mode only,
    predictor.name required, no maxReplicas; routed by the HTTPRoute in
    reconcilers/ingress/httproute_reconciler.go applyCanaryWeights, at
    aaac4e294dae2c7b1aa1886447793f3aa1c30912): the stable predictor keeps the champion."""
    doc = CASES["canary-standard"]()
    assert doc["spec"]["predictor"]["model"]["storageUri"].endswith("/churn-std/4/")
    assert "canaryTrafficPercent" not in doc["spec"]["predictor"]
    [canary] = doc["spec"]["canary"]
    assert canary["trafficPercent"] == 20
    assert canary["predictor"]["name"] == "canary"
    assert canary["predictor"]["model"]["storageUri"].endswith("/churn-std/5/")
    assert not {"maxReplicas", "minReplicas"} & set(canary["predictor"])
    assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def _write(dir_: Path) -> dict[str, bytes]:
    # What bridge writes to a GitOps directory: never the Secret; one ServiceAccount per name.
    resources = [
        CASES[c]() for c in sorted(CASES) if c not in ("secret-minio", "serviceaccount-irsa")
    ]
    files = {file_name(r): to_yaml(r) for r in resources}
    assert len(files) == len(resources), "two resources map to one file name"
    OutputDir(dir_).reconcile(files, lambda _n: True)
    return {p.name: p.read_bytes() for p in sorted(dir_.iterdir())}


def test_gitops_dir_builds_with_kubectl_kustomize_and_is_byte_stable(tmp_path):
    out = tmp_path / "gitops"
    first = _write(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _write(out) == first
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    kustomization = yaml.safe_load(first[KUSTOMIZATION])
    assert kustomization["resources"] == sorted(n for n in first if n != KUSTOMIZATION)

    built = subprocess.run(
        ["kubectl", "kustomize", str(out)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = list(yaml.safe_load_all(built.stdout))
    kinds = sorted((d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs)
    assert kinds.count(("ServiceAccount", "models", "mlflow-bridge-models")) == 1
    assert len([k for k in kinds if k[0] == "InferenceService"]) == 8
    assert ("InferenceService", "gpu-models", "llm-reranker") in kinds


def test_gitops_never_touches_files_that_only_mention_the_label(tmp_path):
    out = tmp_path / "gitops"
    out.mkdir()
    policy = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: allow-models, namespace: models}\nspec:\n  podSelector:\n"
        "    matchLabels:\n      app.kubernetes.io/managed-by: mlflow-kubeflow-bridge\n"
    )
    (out / "allow-models.yaml").write_text(policy)
    (out / "multi.yaml").write_text(
        "a: 1\n---\nb: 2\n# app.kubernetes.io/managed-by: mlflow-kubeflow-bridge\n"
    )
    first = _write(out)
    change = OutputDir(out).reconcile({}, lambda _n: True)
    assert sorted(change.removed) == sorted(
        n for n in first if n not in (KUSTOMIZATION, "allow-models.yaml", "multi.yaml")
    )
    assert (out / "allow-models.yaml").read_text() == policy
    assert yaml.safe_load((out / KUSTOMIZATION).read_text())["resources"] == []
