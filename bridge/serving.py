"""Desired serving state -> KServe resources, as plain dicts (pure, no I/O).

One :class:`DesiredService` (a model, the version its approval alias points
at, optionally a newer canary version, and its resolved
:class:`~bridge.overrides.ServingSpec`) becomes one InferenceService; every
namespace that holds one also gets the ServiceAccount that carries the S3
credentials the way KServe's controller reads them (docs/serving.md, "Credentials"):

- access keys (MinIO, Ceph, AWS keys): the ServiceAccount lists a Secret; that Secret
  carries the keys *and* the ``serving.kserve.io/s3-*`` annotations (KServe's
  ``CredentialBuilder.mountSecretCredential`` reads them from the Secret, not from the
  ServiceAccount). Bridge emits the ServiceAccount; ``bridge credentials`` prints the
  Secret, so key values never land in a GitOps directory.
- IRSA: the ServiceAccount carries ``eks.amazonaws.com/role-arn`` and the ``s3-*``
  annotations (KServe reads them from the ServiceAccount only when that role annotation
  is present) and lists no Secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from bridge import keys
from bridge.keys import (
    ANNOTATION_PREFIX,
    CANARY_STATE_ANNOTATION,
    DEPLOYMENT_MODE_ANNOTATION,
    IRSA_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PART_OF_LABEL,
    S3_ANNOTATION_PREFIX,
)
from bridge.overrides import ServingSpec
from bridge.redact import strip_userinfo

API_VERSION = "serving.kserve.io/v1beta1"
# KServe's shipped inferenceservice-config (credentials.s3.s3AccessKeyIDName /
# s3SecretAccessKeyName); the controller's built-in fallback is awsAccessKeyID/awsSecretAccessKey.
DEFAULT_ACCESS_KEY_ID_NAME = "AWS_ACCESS_KEY_ID"
DEFAULT_SECRET_ACCESS_KEY_NAME = "AWS_SECRET_ACCESS_KEY"
PLACEHOLDER = "<replace-me>"


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
    # Is the champion known to be served (see champion_served)? Until it is, the canary
    # is left out: KServe gives a new InferenceService's first revision all traffic.
    champion_served: bool = False


@dataclass(frozen=True)
class ServingOptions:
    namespace: str
    service_account: str
    s3_secret_name: str = "mlflow-bridge-s3"
    s3_endpoint_url: str | None = None  # as the predictor pods reach it; None: AWS S3
    s3_region: str = "us-east-1"
    s3_verify_ssl: bool = True
    irsa_role_arn: str | None = None  # set: IRSA, the ServiceAccount carries the S3 settings
    access_key_id_name: str = DEFAULT_ACCESS_KEY_ID_NAME
    secret_access_key_name: str = DEFAULT_SECRET_ACCESS_KEY_NAME


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
        p + keys.VERSION_SUFFIX: v.version,
        p + keys.ALIAS_SUFFIX: alias,
        p + keys.SOURCE_URI_SUFFIX: v.source_uri,
        p + keys.CONTENT_DIGEST_SUFFIX: v.digest,
        p + keys.STORAGE_URI_SUFFIX: v.storage_uri,
    }
    if not prefix:
        annotations[p + keys.REGISTERED_MODEL_SUFFIX] = model_name
    if v.run_id:
        annotations[p + keys.RUN_ID_SUFFIX] = v.run_id
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


# The deployment mode that routes spec.canary (KServe >= 0.20 accepts it only under this
# name); every other mode routes a canary with canaryTrafficPercent (Knative).
STANDARD_MODE = "Standard"
RAW_MODES = (STANDARD_MODE, "RawDeployment")
# predictor.name of the canary in Standard mode: its Deployment is <isvc>-canary-predictor.
CANARY_PREDICTOR_NAME = "canary"


def waiting_note(canary_version: str) -> str:
    return f"waiting: canary version {canary_version} is added once the champion is served"


def inference_service(d: DesiredService, opts: ServingOptions) -> dict:
    spec = d.spec or ServingSpec(namespace=opts.namespace)
    canary = active_canary(d)
    annotations = lineage_annotations(d.model_name, d.alias, d.primary)
    if spec.deployment_mode:
        # Only a mode the user chose: without one the cluster's defaultDeploymentMode
        # applies, and no annotation is left to break when KServe renames modes again.
        annotations[DEPLOYMENT_MODE_ANNOTATION] = spec.deployment_mode
    predictor: dict = {
        "serviceAccountName": opts.service_account,
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
    }
    isvc_spec: dict = {"predictor": predictor}
    served = d.primary
    if canary is not None and not d.champion_served:
        # A fixed note: the object must not change from pass to pass while it waits.
        annotations[CANARY_STATE_ANNOTATION] = waiting_note(canary.version)
        canary = None
    if canary is not None:
        annotations.update(
            lineage_annotations(
                d.model_name, d.canary_alias or "", canary, prefix=keys.CANARY_PREFIX
            )
        )
        if spec.deployment_mode == STANDARD_MODE:
            # KServe >= 0.20: a second Deployment for the canary, weighted by the
            # Gateway API HTTPRoute; the stable predictor keeps the approved version.
            isvc_spec["canary"] = [
                {
                    "predictor": {
                        "name": CANARY_PREDICTOR_NAME,
                        "model": _model(canary, spec),
                    },
                    "trafficPercent": spec.canary_traffic_percent,
                }
            ]
        else:
            # Knative, or no mode chosen (KServe ships defaultDeploymentMode Serverless):
            # KServe rolls the new revision out to canaryTrafficPercent and keeps the
            # rest on the last revision that took 100% (the approved one).
            served = canary
            predictor["canaryTrafficPercent"] = spec.canary_traffic_percent
    predictor["model"] = _model(served, spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": d.k8s_name,
            "namespace": spec.namespace,
            "labels": labels(d.k8s_name),
            "annotations": annotations,
        },
        "spec": isvc_spec,
    }


def _model(served: ServedVersion, spec: ServingSpec) -> dict:
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
    return model


def champion_served(previous: dict | None, champion_uri: str, *, live: bool) -> str | None:
    """None when the champion is known to be served, so a canary may be added; else why not.

    ``previous`` is what bridge finds of the model's InferenceService: the live object
    (``live=True``: it must also be Ready for its current generation, and in Knative mode
    have a revision rolled out to 100 %, which is what KServe splits the canary against)
    or the file a previous GitOps pass wrote (``live=False``: emitted is all that can be
    known). An object that already carries a canary for this champion keeps it.
    """
    from bridge.kserve_status import read_status

    if (
        not isinstance(previous, dict)
        or ((previous.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL)
        != MANAGED_BY
    ):
        return "the InferenceService does not exist yet" if live else "it was not emitted yet"
    ann = (previous.get("metadata") or {}).get("annotations") or {}
    predictor = (previous.get("spec") or {}).get("predictor") or {}
    serves = ann.get(ANNOTATION_PREFIX + keys.STORAGE_URI_SUFFIX) or (
        predictor.get("model") or {}
    ).get("storageUri")
    if serves != champion_uri:
        return f"it serves {serves or 'nothing'}, not the champion's {champion_uri} yet"
    if ANNOTATION_PREFIX + keys.CANARY_PREFIX + keys.VERSION_SUFFIX in ann or not live:
        return None
    status = read_status(previous)
    if status is None:
        return "KServe has not reported its status yet"
    if not status.current:
        return "KServe has not reconciled its latest generation yet"
    if status.ready is None or status.ready.status != "True":
        return "it is not Ready yet" + (
            f" ({status.ready.reason})" if status.ready and status.ready.reason else ""
        )
    mode = ann.get(DEPLOYMENT_MODE_ANNOTATION)
    # No annotation: the cluster's default, which KServe ships as Serverless (Knative).
    if mode not in RAW_MODES and not status.latest_rolled_out:
        return "no revision has rolled out to 100 % yet"
    return None


def resources(spec: ServingSpec) -> dict:
    amounts: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpu:
        amounts[spec.gpu_resource] = str(spec.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def s3_annotations(opts: ServingOptions) -> dict[str, str]:
    """KServe's storage-initializer settings for the S3 store (no credentials), as
    ``BuildS3EnvVars`` (pkg/credentials/s3/utils.go) reads them."""
    annotations = {
        S3_ANNOTATION_PREFIX + "region": opts.s3_region,
        S3_ANNOTATION_PREFIX + "verifyssl": "1" if opts.s3_verify_ssl else "0",
    }
    if opts.s3_endpoint_url:
        url = urlsplit(opts.s3_endpoint_url)
        # host[:port][/path] only: never userinfo, which would put a credential in an annotation.
        host = strip_userinfo(url.netloc).lower()
        annotations[S3_ANNOTATION_PREFIX + "endpoint"] = host + url.path.rstrip("/")
        annotations[S3_ANNOTATION_PREFIX + "usehttps"] = "1" if url.scheme == "https" else "0"
    else:
        annotations[S3_ANNOTATION_PREFIX + "usehttps"] = "1"
    return annotations


def service_account(opts: ServingOptions, namespace: str) -> dict:
    """The predictors' ServiceAccount.

    With access keys it lists the Secret (by name only; ``bridge credentials`` prints it)
    and carries no S3 annotations: KServe ignores them there. With IRSA it carries the
    role and the S3 annotations, which KServe then reads from the ServiceAccount.
    """
    sa: dict = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": opts.service_account,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, PART_OF_LABEL: MANAGED_BY},
        },
    }
    if opts.irsa_role_arn:
        sa["metadata"]["annotations"] = {
            IRSA_ANNOTATION: opts.irsa_role_arn,
            **s3_annotations(opts),
        }
    else:
        sa["secrets"] = [{"name": opts.s3_secret_name}]
    return sa


@dataclass(frozen=True)
class AccessKeys:
    access_key_id: str = PLACEHOLDER
    secret_access_key: str = PLACEHOLDER


def credentials_secret(opts: ServingOptions, namespace: str, keys: AccessKeys) -> dict:
    """The Secret the ServiceAccount lists: the keys under the names KServe's credential
    config expects and the ``s3-*`` annotations KServe reads from it (``BuildSecretEnvs``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": opts.s3_secret_name,
            "namespace": namespace,
            "annotations": s3_annotations(opts),
        },
        "stringData": {
            opts.access_key_id_name: keys.access_key_id,
            opts.secret_access_key_name: keys.secret_access_key,
        },
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
    return yaml.dump(
        resource,
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),  # libyaml: ~10x faster
        sort_keys=True,
        default_flow_style=False,
        width=1000,
        allow_unicode=True,
    )
