"""One typed settings object, read once.

Precedence: command-line flags > environment > config file (TOML) > defaults.
Every field documents its environment variable; ``bridge config`` prints the
effective values and the README's configuration table lists the same fields.
Secrets (MLflow tokens and passwords, AWS keys, webhook secrets) are never
settings: the MLflow and AWS clients read them from their own standard
variables, so they cannot leak through a settings dump.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge import keys
from bridge.errors import UsageError

# MLflow aliases: letters, digits, '_' and '-', not a version-like "v<digits>".
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _setting(default: Any, env: tuple[str, ...], help: str, parse: Callable[[str], Any] = str):
    return field(default=default, metadata={"env": env, "help": help, "parse": parse})


DRY_RUN_MODES = ("none", "server", "client")


def _parse_dry_run(value: str) -> str:
    """kubectl's --dry-run=server|client|none; true/false as before (server / none)."""
    v = value.strip().lower()
    if v in DRY_RUN_MODES:
        return v
    try:
        return "server" if _parse_bool(v) else "none"
    except ValueError:
        raise ValueError(f"{value!r} is not one of: server, client, none") from None


def _parse_mlflow_client(value: str) -> str:
    v = value.strip().lower()
    if v not in ("auto", "mlflow"):
        raise ValueError(f"{value!r} is not one of: auto, mlflow")
    return v


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_stage(value: str) -> str:
    """MLflow's stage names, in their canonical spelling (MLflow accepts any case)."""
    for stage in ("Staging", "Production"):
        if value.strip().lower() == stage.lower():
            return stage
    raise ValueError(f"expected Staging or Production, got {value!r}")


def _parse_positive_float(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return f


def _parse_fraction(value: str) -> float:
    f = float(value)
    if not 0 <= f <= 1:
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return f


def _parse_non_negative_int(value: str) -> int:
    i = int(value)
    if i < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")
    return i


def _parse_non_negative_float(value: str) -> float:
    f = float(value)
    if f < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")
    return f


def _parse_positive_int(value: str) -> int:
    i = int(value)
    if i < 1:
        raise ValueError(f"must be 1 or more, got {value!r}")
    return i


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """Bytes from '16777216', '16MiB', '16M' or '1GiB' (binary units)."""
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"expected a size like 16MiB, got {value!r}")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def _parse_part_size(value: str) -> int:
    size = parse_size(value)
    if not 5 * 1024**2 <= size <= 5 * 1024**3:
        raise ValueError(f"must be between 5MiB and 5GiB (S3 part limits), got {value!r}")
    return size


def _parse_copy_threshold(value: str) -> int:
    size = parse_size(value)
    if size > 5 * 1024**3:
        raise ValueError(f"S3 copies at most 5GiB in one CopyObject, got {value!r}")
    return size


def _parse_put_threshold(value: str) -> int:
    size = parse_size(value)
    if size > 5 * 1024**3:
        raise ValueError(f"S3 stores at most 5GiB with one PutObject, got {value!r}")
    return size


def _parse_concurrency(value: str) -> int:
    i = int(value)
    if not 1 <= i <= 64:
        raise ValueError(f"must be between 1 and 64, got {value!r}")
    return i


def _parse_source_prefixes(value: str) -> tuple[str, ...]:
    from bridge.sources import parse_prefixes

    return parse_prefixes(value)


@dataclass(frozen=True)
class Settings:
    tracking_uri: str | None = _setting(
        None, ("MLFLOW_TRACKING_URI",), "MLflow tracking server, e.g. http://mlflow:5000."
    )
    registry_uri: str | None = _setting(
        None, ("MLFLOW_REGISTRY_URI",), "MLflow Model Registry, if not the tracking server."
    )
    target_uri: str | None = _setting(
        None,
        ("BRIDGE_TARGET_URI",),
        "Where synced models go: s3://bucket/prefix. A version lands in <target>/<model>/<version>/.",
    )
    target_endpoint_url: str | None = _setting(
        None,
        ("BRIDGE_TARGET_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        "S3 endpoint of the target store (MinIO, Ceph ...); empty for AWS S3.",
    )
    target_region: str = _setting(
        "us-east-1",
        ("BRIDGE_TARGET_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        "Region of the target store.",
    )
    target_profile: str | None = _setting(
        None,
        ("BRIDGE_TARGET_PROFILE",),
        "AWS named profile (standard AWS config/credentials files) for the target store; "
        "empty: the default credential chain.",
    )
    alias: str = _setting(
        keys.DEFAULT_ALIAS, ("BRIDGE_ALIAS",), "Registry alias that approves a version."
    )
    canary_alias: str = _setting(
        keys.DEFAULT_CANARY_ALIAS, ("BRIDGE_CANARY_ALIAS",), "Registry alias of the canary version."
    )
    stage: str | None = _setting(
        None,
        ("BRIDGE_STAGE",),
        "For registries still on MLflow 2 stages: a model without the approval alias is "
        "approved by its latest version in this stage (Staging or Production); the alias wins.",
        _parse_stage,
    )
    namespace: str = _setting(
        "default", ("BRIDGE_NAMESPACE",), "Kubernetes namespace of emitted resources."
    )
    output_dir: str | None = _setting(
        None, ("BRIDGE_OUTPUT_DIR",), "GitOps directory the InferenceService YAML is written to."
    )
    max_removal_fraction: float = _setting(
        0.5,
        ("BRIDGE_MAX_REMOVAL_FRACTION",),
        "Most of the served models one pass may remove (0-1); removing more, or every one, "
        "is refused (exit 1) unless mass removal is allowed.",
        _parse_fraction,
    )
    allow_mass_removal: bool = _setting(
        False,
        ("BRIDGE_ALLOW_MASS_REMOVAL",),
        "Let a pass remove more than BRIDGE_MAX_REMOVAL_FRACTION of the served models "
        "(--allow-mass-removal for one run).",
        _parse_bool,
    )
    service_account: str = _setting(
        "mlflow-bridge-models",
        ("BRIDGE_SERVICE_ACCOUNT",),
        "ServiceAccount the predictors run as; it lists the S3 Secret (or carries the IRSA role).",
    )
    s3_secret_name: str = _setting(
        "mlflow-bridge-s3",
        ("BRIDGE_S3_SECRET_NAME",),
        "Secret with the S3 keys and settings KServe reads (bridge credentials prints it).",
    )
    mlflow_max_retries: int = _setting(
        3,
        ("BRIDGE_MLFLOW_MAX_RETRIES",),
        "Retries of one MLflow request before giving up (MLflow's own default retries for minutes).",
        _parse_non_negative_int,
    )
    mlflow_client: str = _setting(
        "auto",
        ("BRIDGE_MLFLOW_CLIENT",),
        "auto: bridge makes the registry and artifact-proxy requests of an http(s) MLflow "
        "server itself, by MLflow's rules, without importing MLflow; mlflow: always MLflow's "
        "client (it is used anyway for other registries and MLflow auth providers).",
        _parse_mlflow_client,
    )
    mlflow_timeout: float = _setting(
        15.0,
        ("BRIDGE_MLFLOW_TIMEOUT",),
        "Seconds one MLflow request may take.",
        _parse_positive_float,
    )
    s3_max_attempts: int = _setting(
        4,
        ("BRIDGE_S3_MAX_ATTEMPTS",),
        "Attempts of one S3 request (botocore standard retry mode, with backoff).",
        _parse_non_negative_int,
    )
    poll_interval: float = _setting(
        30.0,
        ("BRIDGE_POLL_INTERVAL",),
        "Seconds between reconcile passes when not run with --once.",
        _parse_positive_float,
    )
    log_format: str = _setting("human", ("BRIDGE_LOG_FORMAT",), "Log format: human or json.")
    log_level: str = _setting(
        "INFO", ("BRIDGE_LOG_LEVEL",), "Log level: DEBUG, INFO, WARNING, ERROR."
    )
    # promotion gate (bridge promote / rollback / history)
    promote_on_missing: str = _setting(
        "fail",
        ("BRIDGE_PROMOTE_ON_MISSING",),
        "What a missing signature or input example does to a promotion: fail or warn.",
    )
    promote_smoke_timeout: float = _setting(
        300.0,
        ("BRIDGE_PROMOTE_SMOKE_TIMEOUT",),
        "Seconds the --smoke gate may take to load the model and predict.",
        _parse_positive_float,
    )
    promote_lock_ttl: float = _setting(
        120.0,
        ("BRIDGE_PROMOTE_LOCK_TTL",),
        "Seconds after which a promotion lock left by a dead process is ignored.",
        _parse_positive_float,
    )
    promote_lock_settle: float = _setting(
        1.0,
        ("BRIDGE_PROMOTE_LOCK_SETTLE",),
        "Seconds between writing the promotion lock and re-reading it to confirm ownership.",
        _parse_positive_float,
    )
    promote_history_limit: int = _setting(
        200,
        ("BRIDGE_PROMOTE_HISTORY_LIMIT",),
        "Most entries kept in a model's bridge.history tag (oldest dropped first).",
        _parse_non_negative_int,
    )

    # --- daemon (bridge serve): webhooks, backoff, leader election ---
    webhook_replay_window: float = _setting(
        300.0,
        ("BRIDGE_WEBHOOK_REPLAY_WINDOW",),
        "Seconds a webhook's X-MLflow-Timestamp may differ from now; older deliveries are refused.",
        _parse_positive_float,
    )
    webhook_max_body: int = _setting(
        1024 * 1024,
        ("BRIDGE_WEBHOOK_MAX_BODY",),
        "Largest webhook body accepted, in bytes.",
        _parse_non_negative_int,
    )
    http_request_timeout: float = _setting(
        30.0,
        ("BRIDGE_HTTP_REQUEST_TIMEOUT",),
        "Seconds a client of `bridge serve` may take to send one whole request (headers and "
        "body); slower ones get 408.",
        _parse_positive_float,
    )
    http_max_connections: int = _setting(
        32,
        ("BRIDGE_HTTP_MAX_CONNECTIONS",),
        "Connections `bridge serve` handles at once; more get 503 at once.",
        _parse_positive_int,
    )
    webhook_debounce: float = _setting(
        0.05,
        ("BRIDGE_WEBHOOK_DEBOUNCE",),
        "Seconds the daemon waits to coalesce a burst of webhooks into one reconcile.",
        float,
    )
    max_backoff: float = _setting(
        60.0,
        ("BRIDGE_MAX_BACKOFF",),
        "Longest wait, in seconds, between retries while MLflow, S3 or the API server is down.",
        _parse_positive_float,
    )
    shutdown_grace: float = _setting(
        25.0,
        ("BRIDGE_SHUTDOWN_GRACE",),
        "Seconds a stopping daemon lets the current copy finish before abandoning it.",
        float,
    )
    leader_election: str = _setting(
        "auto",
        ("BRIDGE_LEADER_ELECTION",),
        "Elect one active replica through a Lease: true, false, or auto (on inside a pod).",
    )
    lease_name: str = _setting(
        "mlflow-kubeflow-bridge", ("BRIDGE_LEASE_NAME",), "Name of the leader-election Lease."
    )
    lease_namespace: str | None = _setting(
        None,
        ("BRIDGE_LEASE_NAMESPACE", "POD_NAMESPACE"),
        "Namespace of the Lease (default: the pod's namespace, else BRIDGE_NAMESPACE).",
    )
    lease_duration: float = _setting(
        15.0,
        ("BRIDGE_LEASE_DURATION",),
        "Seconds a leader's Lease is valid without renewal; a standby takes over after that.",
        _parse_positive_float,
    )
    advertise_url: str | None = _setting(
        None,
        ("BRIDGE_ADVERTISE_URL",),
        "URL other replicas forward webhooks to while this one leads, e.g. http://10.0.0.5:8080.",
    )

    # --- serving: KServe manifests, runtime fit, cluster apply (docs/serving.md) ---
    deployment_mode: str | None = _setting(
        None,
        ("BRIDGE_DEPLOYMENT_MODE",),
        "KServe deployment mode: Standard or Knative (canary traffic split); the legacy names "
        "RawDeployment / Serverless are accepted. Empty: no annotation, the cluster default applies.",
    )
    runtime: str | None = _setting(
        None,
        ("BRIDGE_RUNTIME",),
        "ServingRuntime for every model (tag bridge.runtime per model); empty: KServe auto-selects.",
    )
    runtimes: str = _setting(
        "kserve-mlserver=1,2",
        ("BRIDGE_RUNTIMES",),
        "Known runtimes and the modelFormat mlflow versions each lists: NAME=V[,V];NAME=V ...",
    )
    min_replicas: int = _setting(
        1, ("BRIDGE_MIN_REPLICAS",), "Default predictor minReplicas.", _parse_non_negative_int
    )
    max_replicas: int = _setting(
        3, ("BRIDGE_MAX_REPLICAS",), "Default predictor maxReplicas.", _parse_non_negative_int
    )
    cpu: str = _setting("1", ("BRIDGE_CPU",), "Default CPU request and limit per replica.")
    memory: str = _setting("2Gi", ("BRIDGE_MEMORY",), "Default memory request and limit.")
    gpu: int = _setting(0, ("BRIDGE_GPU",), "Default GPUs per replica.", _parse_non_negative_int)
    gpu_resource: str = _setting(
        "nvidia.com/gpu", ("BRIDGE_GPU_RESOURCE",), "Extended resource name of a GPU."
    )
    allowed_namespaces: str = _setting(
        "",
        ("BRIDGE_ALLOWED_NAMESPACES",),
        "Namespaces a bridge.namespace tag may choose, comma-separated; BRIDGE_NAMESPACE is "
        "always allowed (default: only it).",
    )
    tag_max_replicas: int = _setting(
        10,
        ("BRIDGE_TAG_MAX_REPLICAS",),
        "Highest min/max replicas a model's tags (and the defaults) may ask for.",
        _parse_non_negative_int,
    )
    tag_max_cpu: str = _setting(
        "8", ("BRIDGE_TAG_MAX_CPU",), "Highest CPU per replica a bridge.cpu tag may ask for."
    )
    tag_max_memory: str = _setting(
        "32Gi",
        ("BRIDGE_TAG_MAX_MEMORY",),
        "Highest memory per replica a bridge.memory tag may ask for.",
    )
    tag_max_gpu: int = _setting(
        1,
        ("BRIDGE_TAG_MAX_GPU",),
        "Highest GPUs per replica a bridge.gpu tag may ask for.",
        _parse_non_negative_int,
    )
    canary_traffic_percent: int = _setting(
        10,
        ("BRIDGE_CANARY_TRAFFIC_PERCENT",),
        "Percent of traffic the canary version gets (Knative canaryTrafficPercent, Standard spec.canary).",
        _parse_non_negative_int,
    )
    # --- progressive delivery: `bridge rollout`, the daemon's rollouts (docs/rollout.md) ---
    prometheus_url: str | None = _setting(
        None,
        ("BRIDGE_PROMETHEUS_URL",),
        "Prometheus the rollout guards query, e.g. http://prometheus.monitoring:9090.",
    )
    rollout_auto: bool = _setting(
        False,
        ("BRIDGE_ROLLOUT_AUTO",),
        "The daemon's leader drives every canary through the rollout steps.",
        _parse_bool,
    )
    rollout_steps: str = _setting(
        "10,50,100",
        ("BRIDGE_ROLLOUT_STEPS",),
        "Canary traffic steps, ending at 100 (tag bridge.rollout-steps per model).",
    )
    rollout_bake: float = _setting(
        600.0,
        ("BRIDGE_ROLLOUT_BAKE",),
        "Seconds each step runs before its guards are judged (tag bridge.rollout-bake).",
        _parse_positive_float,
    )
    rollout_grace: float = _setting(
        300.0,
        ("BRIDGE_ROLLOUT_GRACE",),
        "Seconds guards may lack data at a step's end before the rollout aborts.",
        _parse_non_negative_float,
    )
    rollout_interval: float = _setting(
        10.0,
        ("BRIDGE_ROLLOUT_INTERVAL",),
        "Seconds between rollout evaluations (daemon and `bridge rollout --watch`).",
        _parse_positive_float,
    )
    rollout_guards: str = _setting(
        "error-ratio<0.01,latency-p95-ratio<=1.2,min-requests>=100",
        ("BRIDGE_ROLLOUT_GUARDS",),
        "Built-in guards with thresholds: NAME OP NUMBER, comma-separated.",
    )
    rollout_guards_file: str | None = _setting(
        None,
        ("BRIDGE_ROLLOUT_GUARDS_FILE",),
        "YAML file of extra guards (name, query, op, threshold[, kind]).",
    )
    runtime_fit: str = _setting(
        "warn",
        ("BRIDGE_RUNTIME_FIT",),
        "When a model needs packages the runtime image lacks: warn, refuse (skip it) or off.",
    )
    runtime_packages: str | None = _setting(
        None,
        ("BRIDGE_RUNTIME_PACKAGES",),
        "What the runtime image provides: NAME, NAME==VERSION or NAME==SERIES.* entries, "
        "comma-separated (default: a kserve-mlserver profile, see docs/serving.md).",
    )
    runtime_packages_file: str | None = _setting(
        None,
        ("BRIDGE_RUNTIME_PACKAGES_FILE",),
        "File with the same entries, one a line (e.g. `pip freeze` of the runtime image).",
    )
    serving_s3_endpoint_url: str | None = _setting(
        None,
        ("BRIDGE_SERVING_S3_ENDPOINT_URL",),
        "S3 endpoint as predictor pods reach it (s3-endpoint annotation); default: target endpoint.",
    )
    s3_verify_ssl: bool = _setting(
        True, ("BRIDGE_S3_VERIFY_SSL",), "Predictors verify the S3 TLS certificate.", _parse_bool
    )
    serving_irsa_role_arn: str | None = _setting(
        None,
        ("BRIDGE_SERVING_IRSA_ROLE_ARN",),
        "IAM role (EKS IRSA) the predictors assume; set: no key Secret, the ServiceAccount "
        "carries the role and the S3 settings.",
    )
    kserve_s3_access_key_id_name: str = _setting(
        "AWS_ACCESS_KEY_ID",
        ("BRIDGE_KSERVE_S3_ACCESS_KEY_ID_NAME",),
        "Secret key of the access key id, as KServe's credentials.s3.s3AccessKeyIDName says.",
    )
    kserve_s3_secret_access_key_name: str = _setting(
        "AWS_SECRET_ACCESS_KEY",
        ("BRIDGE_KSERVE_S3_SECRET_ACCESS_KEY_NAME",),
        "Secret key of the secret key, as KServe's credentials.s3.s3SecretAccessKeyName says.",
    )
    apply: bool = _setting(
        False, ("BRIDGE_APPLY",), "Apply to the cluster (server-side apply) and prune.", _parse_bool
    )
    dry_run: str = _setting(
        "none",
        ("BRIDGE_DRY_RUN",),
        "With apply, as kubectl: server (the API server checks every change and keeps none), "
        "client (nothing is sent but reads), none.",
        _parse_dry_run,
    )
    apply_force: bool = _setting(
        True,
        ("BRIDGE_APPLY_FORCE",),
        "Take over fields other managers changed on bridge-owned objects (false: report 409).",
        _parse_bool,
    )
    kubeconfig: str | None = _setting(
        None,
        ("BRIDGE_KUBECONFIG", "KUBECONFIG"),
        "Kubeconfig file; default: in-cluster or ~/.kube/config.",
    )
    kube_context: str | None = _setting(
        None, ("BRIDGE_KUBE_CONTEXT",), "Kubeconfig context to use."
    )

    # --- artifact transfer (docs/transfer.md) ---
    source_artifacts_uri: str | None = _setting(
        None,
        ("BRIDGE_SOURCE_ARTIFACTS_URI",),
        "The MLflow server's --artifacts-destination (e.g. s3://mlflow-artifacts/): "
        "mlflow-artifacts:/ URIs are then read straight from S3. Empty: stream through MLflow.",
    )
    source_endpoint_url: str | None = _setting(
        None,
        (
            "BRIDGE_SOURCE_ENDPOINT_URL",
            "MLFLOW_S3_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL",
        ),
        "S3 endpoint of MLflow's artifact store; equal to the target endpoint means server-side copy.",
    )
    source_region: str = _setting(
        "us-east-1",
        ("BRIDGE_SOURCE_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        "Region of MLflow's artifact store.",
    )
    source_profile: str | None = _setting(
        None,
        ("BRIDGE_SOURCE_PROFILE",),
        "AWS named profile for reading MLflow's artifact store; when it differs from the "
        "target's, files are streamed (no server-side copy needs one identity for both).",
    )
    allowed_source_prefixes: tuple[str, ...] = _setting(
        (),
        ("BRIDGE_ALLOWED_SOURCE_PREFIXES",),
        "Comma-separated URIs (e.g. s3://models-archive/) that versions may also be copied "
        "from, besides MLflow's own artifact roots; anything else is refused.",
        _parse_source_prefixes,
    )
    transfer_part_size: int = _setting(
        8 * 1024 * 1024,
        ("BRIDGE_TRANSFER_PART_SIZE",),
        "Bytes per ranged read / multipart part (5MiB..5GiB; suffixes KiB, MiB, GiB).",
        _parse_part_size,
    )
    transfer_concurrency: int = _setting(
        8,
        ("BRIDGE_TRANSFER_CONCURRENCY",),
        "Parallel S3 requests of one copy; memory stays near (this + 1) x part size.",
        _parse_concurrency,
    )
    transfer_copy_threshold: int = _setting(
        5 * 1024**3,
        ("BRIDGE_TRANSFER_COPY_THRESHOLD",),
        "Largest object copied server-side in one CopyObject (S3 allows 5GiB); above: UploadPartCopy.",
        _parse_copy_threshold,
    )
    transfer_put_threshold: int = _setting(
        5 * 1024**3,
        ("BRIDGE_TRANSFER_PUT_THRESHOLD",),
        "Largest file uploaded as one streamed PutObject when it is read as one stream "
        "(S3 allows 5GiB); above: a multipart upload with parts in parallel.",
        _parse_put_threshold,
    )
    transfer_trust_store_checksum: bool = _setting(
        True,
        ("BRIDGE_TRANSFER_TRUST_STORE_CHECKSUM",),
        "Server-side copy: take the SHA-256 the store computes for the copy instead of also "
        "reading the source (false: read and hash the source too).",
        _parse_bool,
    )
    transfer_proxy_ranges: bool = _setting(
        False,
        ("BRIDGE_TRANSFER_PROXY_RANGES",),
        "MLflow proxy: read files larger than one part as parallel byte ranges of the URL "
        "the server presigns (pays where one connection is the limit; slower on stores that "
        "read the whole object for each range, such as moto_server).",
        _parse_bool,
    )
    progress: str = _setting(
        "auto",
        ("BRIDGE_PROGRESS",),
        "Progress line on stderr: auto (when it is a terminal), always, never.",
    )

    def require(self, *names: str) -> None:
        """Fail with a usage error naming the variable if a needed setting is empty."""
        for name in names:
            if not getattr(self, name):
                env = _field(name).metadata["env"][0]
                raise UsageError(
                    f"{name.replace('_', '-')} is not set",
                    hint=f"set {env} or pass --{name.replace('_', '-')}",
                )

    @property
    def target_bucket(self) -> str:
        self.require("target_uri")
        return _split_s3(self.target_uri)[0]

    @property
    def target_prefix(self) -> str:
        self.require("target_uri")
        return _split_s3(self.target_uri)[1]

    def describe(self) -> list[dict[str, str]]:
        """Rows for documentation: name, env vars, default, help."""
        rows = []
        for f in fields(self):
            rows.append(
                {
                    "name": f.name,
                    "env": ", ".join(f.metadata["env"]),
                    "default": "" if f.default in (None, ()) else str(f.default),
                    "help": f.metadata["help"],
                }
            )
        return rows


def _field(name: str) -> dataclasses.Field:
    for f in fields(Settings):
        if f.name == name:
            return f
    raise KeyError(name)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> Settings:
    """Merge the four sources; every value is parsed and validated once, here."""
    return load_settings_with_sources(flags, env, config_file)[0]


def load_settings_with_sources(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> tuple[Settings, dict[str, str]]:
    """The settings, and where each came from: ``--flag``, ``env VAR``, ``file PATH`` or
    ``default`` (what `bridge config` shows)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_path = config_file or env.get("BRIDGE_CONFIG")
    from_file = _read_config(Path(config_path)) if config_path else {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in fields(Settings):
        parse = f.metadata["parse"]
        source, raw = _pick(f, flags, env, from_file)
        sources[f.name] = f"file {config_path}" if source == "the config file" else source
        if raw is None:
            continue
        try:
            values[f.name] = raw if not isinstance(raw, str) else parse(raw)
        except ValueError as exc:
            raise UsageError(f"invalid value for {f.name} from {source}: {exc}") from None
    settings = Settings(**values)
    _validate(settings)
    return settings, sources


def _pick(f, flags, env, from_file) -> tuple[str, Any]:
    if f.name in flags:
        return f"--{f.name.replace('_', '-')}", flags[f.name]
    for var in f.metadata["env"]:
        if env.get(var):
            return f"env {var}", env[var]
    if f.name in from_file:
        return "the config file", from_file[f.name]
    return "default", None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"config file {path} does not exist", hint="fix BRIDGE_CONFIG or --config"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    data = data.get("bridge", data)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"config file {path} has unknown setting(s): {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(known))}",
        )
    return {k: _config_value(v) for k, v in data.items()}


def _config_value(value: Any) -> Any:
    """TOML values as the environment would spell them (lists comma-separated)."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value) if isinstance(value, (int, float, bool)) else value


def _validate(s: Settings) -> None:
    if s.target_uri is not None:
        bucket = (
            s.target_uri[len("s3://") :].partition("/")[0]
            if s.target_uri.startswith("s3://")
            else ""
        )
        if not bucket:
            raise UsageError(
                f"target URI {s.target_uri!r} is not an s3://bucket[/prefix] URI",
                hint="set BRIDGE_TARGET_URI like s3://models/prod",
            )
    for name in ("alias", "canary_alias"):
        value = getattr(s, name)
        if not _ALIAS_RE.match(value) or re.fullmatch(r"[vV]\d+", value):
            raise UsageError(f"{name} {value!r} is not a valid MLflow alias")
    if s.alias == s.canary_alias:
        raise UsageError(f"alias and canary alias are both {s.alias!r}; they must differ")
    if not _DNS1123_LABEL.match(s.namespace) or len(s.namespace) > 63:
        raise UsageError(f"namespace {s.namespace!r} is not a valid Kubernetes namespace name")
    for name in ("service_account", "s3_secret_name"):
        value = getattr(s, name)
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value) or len(value) > 253:
            raise UsageError(f"{name} {value!r} is not a valid Kubernetes object name")
    if s.log_format not in ("human", "json"):
        raise UsageError(f"log format {s.log_format!r} is not one of: human, json")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"log level {s.log_level!r} is not one of: DEBUG, INFO, WARNING, ERROR")
    _validate_serving(s)
    _validate_rollout(s)
    if s.progress not in ("auto", "always", "never"):
        raise UsageError(f"progress {s.progress!r} is not one of: auto, always, never")
    if s.source_artifacts_uri and not s.source_artifacts_uri.startswith("s3://"):
        raise UsageError(
            f"source artifacts URI {s.source_artifacts_uri!r} is not an s3://bucket[/prefix] URI",
            hint="set BRIDGE_SOURCE_ARTIFACTS_URI to the MLflow server's --artifacts-destination",
        )
    for name in ("tracking_uri", "target_endpoint_url"):
        value = getattr(s, name)
        if value and "://" not in value and name == "target_endpoint_url":
            raise UsageError(f"{name} {value!r} is not a URL", hint="use e.g. http://minio:9000")


def _validate_bounds(s: Settings) -> None:
    """The bounds are quantities, and the defaults stay within them."""
    from bridge.overrides import is_quantity, quantity_value

    for name in ("tag_max_cpu", "tag_max_memory"):
        if not is_quantity(getattr(s, name)):
            raise UsageError(f"{name} {getattr(s, name)!r} is not a positive Kubernetes quantity")
    checks = [
        ("max_replicas", s.max_replicas, s.tag_max_replicas, "BRIDGE_TAG_MAX_REPLICAS"),
        ("min_replicas", s.min_replicas, s.tag_max_replicas, "BRIDGE_TAG_MAX_REPLICAS"),
        ("gpu", s.gpu, s.tag_max_gpu, "BRIDGE_TAG_MAX_GPU"),
    ]
    if is_quantity(s.cpu) and is_quantity(s.memory):
        checks += [
            ("cpu", quantity_value(s.cpu), quantity_value(s.tag_max_cpu), "BRIDGE_TAG_MAX_CPU"),
            (
                "memory",
                quantity_value(s.memory),
                quantity_value(s.tag_max_memory),
                "BRIDGE_TAG_MAX_MEMORY",
            ),
        ]
    for name, value, bound, setting in checks:
        if value > bound:
            raise UsageError(
                f"default {name} {getattr(s, name)} is above the bound in {setting}",
                hint=f"lower BRIDGE_{name.upper()} or raise {setting}",
            )


def _validate_rollout(s: Settings) -> None:
    from bridge.guards import parse_guards
    from bridge.rollout import parse_steps

    parse_steps(s.rollout_steps)
    parse_guards(s.rollout_guards)  # the guards file is read when a rollout starts
    if s.prometheus_url and not s.prometheus_url.startswith(("http://", "https://")):
        raise UsageError(
            f"prometheus URL {s.prometheus_url!r} is not an http(s) URL",
            hint="set BRIDGE_PROMETHEUS_URL like http://prometheus:9090",
        )


def _validate_serving(s: Settings) -> None:
    """The serving block: the same checks a model's bridge.* tags get."""
    from bridge.overrides import deployment_mode, is_quantity, is_resource_name, parse_runtimes
    from bridge.runtime_fit import parse_provided

    if s.deployment_mode:
        try:
            deployment_mode(s.deployment_mode)
        except ValueError as exc:
            raise UsageError(f"deployment mode {s.deployment_mode!r}: {exc}") from None
    try:
        runtimes = parse_runtimes(s.runtimes)
        if s.runtime_packages:
            parse_provided(s.runtime_packages)
    except ValueError as exc:
        raise UsageError(f"invalid runtime setting: {exc}") from None
    if s.runtime and s.runtime not in runtimes:
        raise UsageError(
            f"runtime {s.runtime!r} is not a known runtime ({', '.join(sorted(runtimes))})",
            hint="add it to BRIDGE_RUNTIMES as NAME=VERSIONS",
        )
    for name in ("cpu", "memory"):
        if not is_quantity(getattr(s, name)):
            raise UsageError(f"{name} {getattr(s, name)!r} is not a positive Kubernetes quantity")
    if not is_resource_name(s.gpu_resource):
        raise UsageError(
            f"gpu resource {s.gpu_resource!r} is not a resource name like nvidia.com/gpu"
        )
    for ns in s.allowed_namespaces.split(","):
        ns = ns.strip()
        if ns and (not _DNS1123_LABEL.match(ns) or len(ns) > 63):
            raise UsageError(
                f"allowed namespace {ns!r} is not a valid Kubernetes namespace name",
                hint="fix BRIDGE_ALLOWED_NAMESPACES (comma-separated namespace names)",
            )
    _validate_bounds(s)
    if s.max_replicas < max(1, s.min_replicas):
        raise UsageError(
            f"max replicas {s.max_replicas} must be at least 1 and at least min replicas {s.min_replicas}"
        )
    if s.canary_traffic_percent > 100:
        raise UsageError(f"canary traffic percent {s.canary_traffic_percent} is above 100")
    if s.runtime_fit not in ("warn", "refuse", "off"):
        raise UsageError(f"runtime fit {s.runtime_fit!r} is not one of: warn, refuse, off")
    if s.serving_s3_endpoint_url and "://" not in s.serving_s3_endpoint_url:
        raise UsageError(
            f"serving_s3_endpoint_url {s.serving_s3_endpoint_url!r} is not a URL",
            hint="use e.g. http://minio.minio.svc:9000",
        )
    if s.dry_run != "none" and not s.apply:
        raise UsageError("--dry-run only applies to --apply", hint="add --apply, or drop --dry-run")
