"""What KServe's controller does between an InferenceService and the predictor pod,
ported to Python from KServe's own source so tests can compute it without a cluster.

Ported from kserve/kserve at commit aaac4e294dae2c7b1aa1886447793f3aa1c30912
(python/VERSION 0.20.0; the kserve / kserve-storage packages pinned in constraints.txt
are 0.21.0). Each function names the Go file and function it ports; only the branches
that apply to a single-model S3 InferenceService with the default storage initializer are
ported (no ModelMesh, multi-node, OCI/modelcar, PVC, local model cache, CA bundles).

Not ported, and why it does not matter here: Kubernetes itself resolves ``secretKeyRef``
env vars when it starts a container; :func:`resolve_env` does that from the Secret dict.
With IRSA, ``AWS_ROLE_ARN`` / ``AWS_WEB_IDENTITY_TOKEN_FILE`` are injected by EKS's
pod-identity webhook, not by KServe; :func:`irsa_pod_identity_env` stands for it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

# --- pkg/constants/constants.go ---
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
LEGACY_SERVERLESS, KNATIVE = "Serverless", "Knative"
LEGACY_RAW_DEPLOYMENT, STANDARD = "RawDeployment", "Standard"
MODEL_MESH = "ModelMesh"
DEFAULT_DEPLOYMENT = STANDARD  # ParseDeploymentMode("")
DEFAULT_MODEL_LOCAL_MOUNT_PATH = "/mnt/models"
STORAGE_INITIALIZER_CONTAINER_NAME = "storage-initializer"
MODEL_CLASS_LABEL = "modelClass"
SERVER_TYPE_ANNOTATION = "serving.kserve.io/server-type"
MLSERVER_MODEL_NAME_ENV = "MLSERVER_MODEL_NAME"
MLSERVER_MODEL_URI_ENV = "MLSERVER_MODEL_URI"
MLSERVER_LOAD_MODELS_STARTUP_ENV = "MLSERVER_LOAD_MODELS_AT_STARTUP"
MLSERVER_MODEL_CLASSES = {
    "xgboost": "mlserver_xgboost.XGBoostModel",
    "lightgbm": "mlserver_lightgbm.LightGBMModel",
    "mlflow": "mlserver_mlflow.MLflowRuntime",
}
MLSERVER_MODEL_CLASS_SKLEARN = "mlserver_sklearn.SKLearnModel"
PROTOCOL_PRIORITY = {"v1": 1, "v2": 2, "grpc-v1": 3, "grpc-v2": 4}  # GetProtocolVersionInt
PROTOCOL_UNKNOWN = 5

# --- pkg/credentials/service_account_credentials.go, pkg/credentials/s3/s3_secret.go ---
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
GO_DEFAULT_ACCESS_KEY_ID_NAME = "awsAccessKeyID"  # when the credential config is empty
GO_DEFAULT_SECRET_ACCESS_KEY_NAME = "awsSecretAccessKey"
_S3 = "serving.kserve.io/s3-"


@dataclass
class S3Config:
    """``credentials.s3`` of the ``inferenceservice-config`` ConfigMap. The defaults are
    those of config/configmap/inferenceservice.yaml as KServe ships it (key names
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, everything else empty)."""

    s3_access_key_id_name: str = "AWS_ACCESS_KEY_ID"
    s3_secret_access_key_name: str = "AWS_SECRET_ACCESS_KEY"
    s3_endpoint: str = ""
    s3_use_https: str = ""
    s3_region: str = ""
    s3_verify_ssl: str = ""
    s3_use_virtual_bucket: str = ""
    s3_use_accelerate: str = ""
    s3_use_anonymous_credential: str = ""
    s3_ca_bundle_configmap: str = ""
    s3_ca_bundle: str = ""


@dataclass
class DeployConfig:
    """``deploy`` of the shipped inferenceservice-config: defaultDeploymentMode Serverless."""

    default_deployment_mode: str = LEGACY_SERVERLESS


# ---------------------------------------------------------------- deployment mode


def parse_deployment_mode(mode: str) -> str:
    """pkg/constants/constants.go ParseDeploymentMode."""
    if mode == "":
        return DEFAULT_DEPLOYMENT
    return {LEGACY_RAW_DEPLOYMENT: STANDARD, LEGACY_SERVERLESS: KNATIVE}.get(mode, mode)


def default_deployment_mode(isvc: dict, deploy: DeployConfig) -> dict:
    """pkg/apis/serving/v1beta1/inference_service_defaults.go
    (*InferenceService).DefaultInferenceService, its deployment-mode part: a legacy
    annotation value is rewritten to the current name; with no annotation, only a
    Standard/ModelMesh cluster default is written onto the object."""
    isvc = copy.deepcopy(isvc)
    annotations = isvc["metadata"].setdefault("annotations", {})
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if mode == LEGACY_RAW_DEPLOYMENT:
        annotations[DEPLOYMENT_MODE_ANNOTATION] = STANDARD
    elif mode == LEGACY_SERVERLESS:
        annotations[DEPLOYMENT_MODE_ANNOTATION] = KNATIVE
    if mode is None and deploy.default_deployment_mode in (MODEL_MESH, STANDARD):
        annotations[DEPLOYMENT_MODE_ANNOTATION] = deploy.default_deployment_mode
    return isvc


def effective_deployment_mode(isvc: dict, deploy: DeployConfig, status_mode: str = "") -> str:
    """pkg/controller/v1beta1/inferenceservice/utils/utils.go GetDeploymentMode: the mode
    in the status, else a valid annotation (legacy names normalised), else the config
    default as written there (not normalised, as in Go)."""
    if status_mode:
        return parse_deployment_mode(status_mode)
    annotations = isvc["metadata"].get("annotations", {})
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    mode = {LEGACY_RAW_DEPLOYMENT: STANDARD, LEGACY_SERVERLESS: KNATIVE}.get(mode, mode)
    if mode in (STANDARD, KNATIVE, MODEL_MESH):
        return mode
    return deploy.default_deployment_mode


def validate_deployment_mode_update(new: dict, old_status_mode: str) -> None:
    """pkg/apis/serving/v1beta1/inference_service_validation.go validateDeploymentMode
    (runs after the defaulter): a new annotation must equal the normalised mode the old
    object's status recorded."""
    if not old_status_mode:
        return
    status_mode = parse_deployment_mode(old_status_mode)
    annotation = new["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE_ANNOTATION)
    if annotation is not None and annotation != status_mode:
        raise ValueError(
            f"update rejected: deploymentMode cannot be changed from '{status_mode}' to '{annotation}'"
        )


# ---------------------------------------------------------------- runtime selection


def _format_label(model: dict) -> str:
    """predictor_model.go (*ModelSpec).getModelFormatLabel."""
    fmt = model["modelFormat"]
    return f"mt:{fmt['name']}:{fmt['version']}" if fmt.get("version") else f"mt:{fmt['name']}"


def runtime_supports_model(model: dict, runtime_spec: dict) -> bool:
    """predictor_model.go (*ModelSpec).RuntimeSupportsModel and
    getServingRuntimeSupportedModelFormatLabelSet: without an explicit runtime only
    formats with autoSelect count."""
    labels = set()
    for f in runtime_spec.get("supportedModelFormats", []):
        if model.get("runtime") or f.get("autoSelect"):
            labels.add(f"mt:{f['name']}")
            if f.get("version"):
                labels.add(f"mt:{f['name']}:{f['version']}")
    return _format_label(model) in labels


def _protocol_supported(runtime_spec: dict, protocol: str) -> bool:
    """servingruntime_types.go (*ServingRuntimeSpec).IsProtocolVersionSupported."""
    versions = runtime_spec.get("protocolVersions") or []
    return not protocol or not versions or protocol in versions


def _priority(runtime_spec: dict, format_name: str) -> int | None:
    """servingruntime_types.go (*ServingRuntimeSpec).GetPriority: the first entry of that name."""
    for f in runtime_spec.get("supportedModelFormats", []):
        if f["name"] == format_name:
            return f.get("priority")
    return None


def protocol_version_priority(protocols: list[str]) -> int:
    """predictor_model.go GetProtocolVersionPriority."""
    if not protocols:
        return PROTOCOL_UNKNOWN
    return min(PROTOCOL_PRIORITY[p] for p in protocols)


def supporting_cluster_runtimes(model: dict, cluster_runtimes: list[dict]) -> list[dict]:
    """predictor_model.go (*ModelSpec).GetSupportingRuntimes, ClusterServingRuntimes only
    (no namespaced ServingRuntimes here): sortClusterServingRuntimeList (protocol priority,
    then name; creation times are equal here), filter (enabled, single-model, supports the
    format, the protocol, not multi-node), then sortSupportedRuntimeByPriority (stable,
    higher priority first, runtimes without one last)."""
    protocol = model.get("protocolVersion") or "v1"  # (*ModelSpec).GetProtocol
    ordered = sorted(
        cluster_runtimes,
        key=lambda r: (
            protocol_version_priority(r["spec"].get("protocolVersions") or []),
            r["metadata"]["name"],
        ),
    )
    found = [
        r
        for r in ordered
        if not r["spec"].get("disabled")
        and not r["spec"].get("multiModel")
        and runtime_supports_model(model, r["spec"])
        and _protocol_supported(r["spec"], protocol)
        and r["spec"].get("workerSpec") is None
    ]
    name = model["modelFormat"]["name"]
    with_priority = [r for r in found if _priority(r["spec"], name) is not None]
    without = [r for r in found if _priority(r["spec"], name) is None]
    with_priority.sort(key=lambda r: -_priority(r["spec"], name))  # sort is stable
    return with_priority + without


def select_runtime(isvc: dict, cluster_runtimes: list[dict]) -> dict:
    """pkg/controller/v1beta1/inferenceservice/components/predictor.go
    (*Predictor).findSupportingRuntime: the named runtime (which must support the
    model) or the first supporting one."""
    model = isvc["spec"]["predictor"]["model"]
    if model.get("runtime"):
        by_name = {r["metadata"]["name"]: r for r in cluster_runtimes}
        runtime = by_name.get(model["runtime"])
        if runtime is None or not runtime_supports_model(model, runtime["spec"]):
            raise LookupError(f"specified runtime {model['runtime']} does not support the model")
        return runtime
    found = supporting_cluster_runtimes(model, cluster_runtimes)
    if not found:
        raise LookupError(f"no runtime found to support model type {model['modelFormat']}")
    return found[0]


def set_runtime_defaults(isvc: dict, runtime: dict) -> dict:
    """inference_service_defaults.go (*InferenceService).SetRuntimeDefaults and
    SetMlServerDefaults: for an mlserver runtime, protocol v2, MLSERVER_MODEL_NAME /
    MLSERVER_MODEL_URI in the model's env, and the ``modelClass`` label."""
    isvc = copy.deepcopy(isvc)
    server_type = runtime["metadata"].get("annotations", {}).get(SERVER_TYPE_ANNOTATION)
    if server_type != "mlserver":
        return isvc
    model = isvc["spec"]["predictor"]["model"]
    model.setdefault("protocolVersion", "v2")
    env = model.setdefault("env", [])
    if model.get("storageUri") is None and model.get("storage") is None:
        extra = [{"name": MLSERVER_LOAD_MODELS_STARTUP_ENV, "value": "false"}]
    else:
        extra = [
            {"name": MLSERVER_MODEL_NAME_ENV, "value": isvc["metadata"]["name"]},
            {"name": MLSERVER_MODEL_URI_ENV, "value": DEFAULT_MODEL_LOCAL_MOUNT_PATH},
        ]
    names = {e["name"] for e in env}
    env.extend(e for e in extra if e["name"] not in names)  # utils.AppendEnvVarIfNotExists
    fmt = model["modelFormat"]["name"]
    isvc["metadata"].setdefault("labels", {})[MODEL_CLASS_LABEL] = MLSERVER_MODEL_CLASSES.get(
        fmt, MLSERVER_MODEL_CLASS_SKLEARN
    )
    return isvc


def predictor_container_env(isvc: dict, runtime: dict) -> dict[str, str]:
    """The kserve-container's env: the runtime container's env with the model's env merged
    over it (isvcutils.MergeServingRuntimeAndInferenceServiceSpecs) and ``{{.Labels.*}}``
    placeholders filled from the InferenceService (isvcutils.ReplacePlaceholders)."""
    [container] = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env.update({e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"].get("env", [])})
    labels = isvc["metadata"].get("labels", {})
    for name, value in env.items():
        for key, label in labels.items():
            value = value.replace("{{.Labels." + key + "}}", label)
        env[name] = value
    return env


# ---------------------------------------------------------------- credentials


def _env_value(
    annotations: dict, secret_data: dict | None, annotation: str, key: str, default: str
):
    """pkg/credentials/s3/utils.go getEnvValue: annotation, else Secret data, else config."""
    if annotation in annotations:
        return annotations[annotation]
    if secret_data is not None and key in secret_data:
        return secret_data[key]
    return default


def build_s3_env_vars(annotations: dict, secret_data: dict | None, cfg: S3Config) -> list[dict]:
    """pkg/credentials/s3/utils.go BuildS3EnvVars and getEndpointConfiguration."""
    envs: list[dict] = []
    endpoint = _env_value(
        annotations, secret_data, _S3 + "endpoint", "S3_ENDPOINT", cfg.s3_endpoint
    )
    if endpoint:
        endpoint = endpoint.strip()
        if endpoint.lower().startswith("https://"):
            use_https, host, url = "1", endpoint[8:], endpoint
        elif endpoint.lower().startswith("http://"):
            use_https, host, url = "0", endpoint[7:], endpoint
        else:
            use_https = _env_value(
                annotations, secret_data, _S3 + "usehttps", "S3_USE_HTTPS", cfg.s3_use_https
            )
            host = endpoint
            url = ("http://" if use_https == "0" else "https://") + endpoint
        if use_https:
            envs.append({"name": "S3_USE_HTTPS", "value": use_https})
        envs.append({"name": "S3_ENDPOINT", "value": host})
        envs.append({"name": "AWS_ENDPOINT_URL", "value": url})
    for annotation, key, env_name, default in (
        ("verifyssl", "S3_VERIFY_SSL", "S3_VERIFY_SSL", cfg.s3_verify_ssl),
        (
            "useanoncredential",
            "awsAnonymousCredential",
            "awsAnonymousCredential",
            cfg.s3_use_anonymous_credential,
        ),
        ("region", "AWS_DEFAULT_REGION", "AWS_DEFAULT_REGION", cfg.s3_region),
        (
            "usevirtualbucket",
            "S3_USER_VIRTUAL_BUCKET",
            "S3_USER_VIRTUAL_BUCKET",
            cfg.s3_use_virtual_bucket,
        ),
        ("useaccelerate", "S3_USE_ACCELERATE", "S3_USE_ACCELERATE", cfg.s3_use_accelerate),
        ("cabundle", "AWS_CA_BUNDLE", "AWS_CA_BUNDLE", cfg.s3_ca_bundle),
        (
            "cabundle-configmap",
            "AWS_CA_BUNDLE_CONFIGMAP",
            "AWS_CA_BUNDLE_CONFIGMAP",
            cfg.s3_ca_bundle_configmap,
        ),
    ):
        value = _env_value(annotations, secret_data, _S3 + annotation, key, default)
        if value:
            envs.append({"name": env_name, "value": value})
    return envs


def _secret_data(secret: dict) -> dict[str, str]:
    """A Secret's data as the API server stores it: ``stringData`` merged into ``data``."""
    import base64

    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    data.update(secret.get("stringData", {}))
    return data


def build_secret_envs(secret: dict, cfg: S3Config) -> list[dict]:
    """pkg/credentials/s3/s3_secret.go BuildSecretEnvs: the keys as secretKeyRefs,
    then the S3 settings from the Secret's annotations."""
    name = secret["metadata"]["name"]
    id_key = cfg.s3_access_key_id_name or GO_DEFAULT_ACCESS_KEY_ID_NAME
    secret_key = cfg.s3_secret_access_key_name or GO_DEFAULT_SECRET_ACCESS_KEY_NAME
    return [
        {"name": AWS_ACCESS_KEY_ID, "valueFrom": {"secretKeyRef": {"name": name, "key": id_key}}},
        {
            "name": AWS_SECRET_ACCESS_KEY,
            "valueFrom": {"secretKeyRef": {"name": name, "key": secret_key}},
        },
        *build_s3_env_vars(secret["metadata"].get("annotations", {}), _secret_data(secret), cfg),
    ]


def merge_envs(base: list[dict], override: list[dict]) -> list[dict]:
    """pkg/utils/utils.go MergeEnvs (copies only ``value`` onto an existing name, as Go does)."""
    base = copy.deepcopy(base)
    extra = []
    for o in override:
        for b in base:
            if b["name"] == o["name"]:
                b["value"] = o.get("value", "")
                break
        else:
            extra.append(o)
    return base + extra


def credential_envs(
    service_account: dict | None, secrets: dict[str, dict], cfg: S3Config
) -> list[dict]:
    """pkg/credentials/service_account_credentials.go (*CredentialBuilder)
    CreateSecretVolumeAndEnv -> CreateSecretVolumeAndEnvFromServiceAccount ->
    mountSecretCredential, for S3: the ServiceAccount's ``s3-*`` annotations count only
    with the IRSA annotation; every listed Secret holding the secret-key name adds
    its keys and its own ``s3-*`` annotations. A missing ServiceAccount adds nothing
    (logged, not an error); a missing listed Secret is an error."""
    if service_account is None:
        return []
    env: list[dict] = []
    annotations = service_account["metadata"].get("annotations", {})
    if IRSA_ANNOTATION in annotations:
        env += build_s3_env_vars(annotations, None, cfg)  # s3.BuildServiceAccountEnvs
    for ref in service_account.get("secrets", []):
        secret = secrets.get(ref["name"])
        if secret is None:
            raise LookupError(f"secret {ref['name']!r} not found")
        key = cfg.s3_secret_access_key_name or GO_DEFAULT_SECRET_ACCESS_KEY_NAME
        if key in _secret_data(secret):
            env = merge_envs(env, build_secret_envs(secret, cfg))
    return env


# ---------------------------------------------------------------- storage initializer


@dataclass
class InitContainer:
    args: list[str]
    env: list[dict] = field(default_factory=list)


def hugging_face_default_env(env: list[dict]) -> list[dict]:
    """pkg/utils/storage.go AddDefaultHuggingFaceEnvVars (only those not already set)."""
    defaults = [{"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"},
                {"name": "HF_XET_HIGH_PERFORMANCE", "value": "1"},
                {"name": "HF_XET_NUM_CONCURRENT_RANGE_GETS", "value": "8"}]  # fmt: skip
    names = {e["name"] for e in env}
    return env + [d for d in defaults if d["name"] not in names]


def storage_initializer(
    isvc: dict, service_account: dict | None, secrets: dict[str, dict], cfg: S3Config
) -> InitContainer:
    """pkg/webhook/admission/pod/storage_initializer_injector.go
    (*StorageInitializerInjector).InjectStorageInitializer -> CommonStorageInitialization,
    the single-URI (legacy) branch: args ``[storageUri, /mnt/models]``
    (utils.CreateInitContainerWithConfig), credentials from the predictor's
    ServiceAccount (``default`` when unnamed) since no storage spec is set, then the
    Hugging Face defaults."""
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    if model.get("storage"):
        raise NotImplementedError("the storage spec path is not ported")
    init = InitContainer(args=[model["storageUri"], DEFAULT_MODEL_LOCAL_MOUNT_PATH])
    init.env = credential_envs(service_account, secrets, cfg)
    init.env = hugging_face_default_env(init.env)
    return init


def resolve_env(env: list[dict], secrets: dict[str, dict]) -> dict[str, str]:
    """What the kubelet does: ``value`` as is, ``secretKeyRef`` read from the Secret
    (a missing key fails the container start, as it would on a cluster)."""
    out: dict[str, str] = {}
    for e in env:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            out[e["name"]] = e.get("value", "")
            continue
        data = _secret_data(secrets[ref["name"]])
        if ref["key"] not in data:
            raise LookupError(f"couldn't find key {ref['key']} in Secret {ref['name']}")
        out[e["name"]] = data[ref["key"]]
    return out


def irsa_pod_identity_env(role_arn: str, token_file: str) -> dict[str, str]:
    """Stand-in for EKS's pod-identity webhook (not KServe): what it adds to every
    container of a pod whose ServiceAccount carries ``eks.amazonaws.com/role-arn``."""
    return {
        "AWS_ROLE_ARN": role_arn,
        "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
        "AWS_STS_REGIONAL_ENDPOINTS": "regional",
    }
