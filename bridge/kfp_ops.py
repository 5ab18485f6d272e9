"""What the Kubeflow Pipelines components do; the files in components/ only call these.

Every function reads its MLflow and S3 settings from the standard environment
variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN`` ...,
``BRIDGE_TARGET_URI`` ...), which a pipeline fills from a Kubernetes Secret
(see docs/kfp.md), and returns a small result object whose attribute names are
the component's outputs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge import __version__
from bridge.errors import CheckFailed, InternalError, PermanentError, TemporaryError, UsageError
from bridge.keys import KFP_TAG_PREFIX, REGISTERED_VERSION_TAG, SOURCE_RUN_TAG
from bridge.kfp_run import (
    KfpLineage,
    configure_tracking,
    kfp_managed_run_id,
    mlflow_run,
    task_guard,
)
from bridge.log import redact
from bridge.settings import Settings, load_settings

log = logging.getLogger(__name__)

# The image every component runs in. Its tag is the package version, so a
# compiled component.yaml always names the exact code it was compiled from.
IMAGE_REPOSITORY = "ghcr.io/mlflow-kubeflow-bridge/bridge-kfp"

# Example datasets shipped inside scikit-learn (no download at run time).
DATASETS = ("iris", "wine", "breast_cancer")


# Set by `make components COMPONENTS_IMAGE=...` (components/compile.py --image) before the
# components are imported: the image the compiled YAML names.
IMAGE_VARIABLE = "BRIDGE_COMPONENTS_IMAGE"


def component_image(version: str = __version__) -> str:
    """``$BRIDGE_COMPONENTS_IMAGE``, else ``<repository>:<package version>``; never ``latest``."""
    image = os.environ.get(IMAGE_VARIABLE) or f"{IMAGE_REPOSITORY}:{version}"
    check_image_reference(image)
    return image


def check_image_reference(image: str) -> None:
    """A pinned reference: a tag other than ``latest``, or a digest."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if not (digest.startswith("sha256:") or (tag and tag != "latest")):
        raise UsageError(
            f"component image {image!r} is not pinned",
            hint="name a release tag (repo/bridge-kfp:0.1.0) or a digest (@sha256:...)",
        )


# --------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    accuracy: float
    metrics: dict[str, float] = field(default_factory=dict)


def train_and_log(
    *,
    dataset: str = "iris",
    C: float = 1.0,
    max_iter: int = 500,
    test_size: float = 0.25,
    random_state: int = 42,
    experiment: str = "",
    lineage: KfpLineage | None = None,
    timeout_seconds: float = 0,
) -> TrainResult:
    """Fit a scaled logistic regression on a scikit-learn dataset; log it all to MLflow."""
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}", hint=f"use one of: {', '.join(DATASETS)}")
    import mlflow
    import sklearn
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lineage = lineage or KfpLineage.resolve(component="train-and-log")
    with mlflow_run(
        experiment=experiment or None, lineage=lineage, deadline_seconds=timeout_seconds
    ) as run:
        params = {
            "dataset": dataset,
            "C": C,
            "max_iter": max_iter,
            "test_size": test_size,
            "random_state": random_state,
        }
        run.log_params(params)
        X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True, as_frame=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, random_state=random_state, stratify=y
        )
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        model.fit(X_train, y_train)
        predicted = model.predict(X_test)
        metrics = {
            "accuracy": float(accuracy_score(y_test, predicted)),
            "f1_macro": float(f1_score(y_test, predicted, average="macro")),
        }
        run.log_metrics(metrics)
        info = run.log_model(
            model,
            input_example=X_test.head(3),
            # Explicit requirements: inference would load the model in a subprocess.
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
        )
        return TrainResult(run.run_id, info.model_uri, metrics["accuracy"], metrics)


# ------------------------------------------------------------------ register


@dataclass(frozen=True)
class RegisterResult:
    version: str
    model_uri: str  # models:/<name>/<version>


def register_model(
    *,
    model_name: str,
    run_id: str,
    artifact_path: str = "model",
    model_uri: str = "",
    timeout_seconds: float = 600,
    settings: Settings | None = None,
) -> RegisterResult:
    """Register the model a run logged; tag the version with the run's KFP lineage.

    ``model_uri`` (such as ``models:/m-<id>`` from train-and-log) wins over
    ``runs:/<run_id>/<artifact_path>``.
    """
    import mlflow
    from mlflow import MlflowClient

    from bridge.registry import mlflow_errors

    if not model_name.strip() or not run_id.strip():
        raise UsageError("model_name and run_id are required")
    settings = configure_tracking(settings)
    with task_guard(timeout_seconds, "register-model"):
        with mlflow_errors(f"run {run_id}", settings.tracking_uri):
            run = MlflowClient().get_run(run_id)
        if run.info.status != "FINISHED":
            raise CheckFailed(
                f"run {run_id} is {run.info.status}, not FINISHED; refusing to register its model"
            )
        # the run's KFP lineage tags, copied onto the registered model version
        tags = {k: v for k, v in run.data.tags.items() if k.startswith(KFP_TAG_PREFIX)}
        tags[SOURCE_RUN_TAG] = run_id
        with mlflow_errors(f"registering {model_name!r} from run {run_id}", settings.tracking_uri):
            mv = mlflow.register_model(
                model_uri.strip() or f"runs:/{run_id}/{artifact_path}",
                model_name,
                tags=tags,
                await_registration_for=max(int(timeout_seconds), 1),
            )
    log.info("registered %s version %s from run %s", model_name, mv.version, run_id)
    registered = f"models:/{model_name}/{mv.version}"
    task_run = kfp_managed_run_id()
    if task_run and task_run != run_id:
        # KFP's MLflow integration gave this task a run of its own: link it to the registry.
        with mlflow_errors(f"tagging run {task_run}", settings.tracking_uri):
            MlflowClient().set_tag(task_run, REGISTERED_VERSION_TAG, registered)
    return RegisterResult(str(mv.version), registered)


# --------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    model_name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    source: str
    run_id: str

    @property
    def metadata(self) -> dict[str, str]:
        """Metadata for the KFP Model artifact."""
        return {
            "registered_model": self.model_name,
            "version": self.version,
            "model_uri": self.model_uri,
            "source": self.source,
            "run_id": self.run_id,
        }


def parse_model_ref(model: str, alias: str = "", version: str = "") -> tuple[str, str, str]:
    """``name@alias`` or ``name`` plus exactly one of ``alias``/``version`` -> (name, alias, version)."""
    name, at, ref_alias = model.strip().partition("@")
    alias, version = alias.strip(), str(version).strip()
    if at:
        if alias and alias != ref_alias:
            raise UsageError(f"{model!r} names alias {ref_alias!r} but alias={alias!r} was given")
        alias = ref_alias
    if not name or (at and not alias):
        raise UsageError(f"model {model!r} is not NAME or NAME@ALIAS")
    if bool(alias) == bool(version):
        raise UsageError(
            f"give exactly one of an alias or a version for model {name!r}",
            hint="e.g. model_name='churn@champion' or model_name='churn', version='3'",
        )
    if version and not version.isdigit():
        raise UsageError(f"version {version!r} is not a version number")
    return name, alias, version


def fetch_model(
    *,
    model_name: str,
    alias: str = "",
    version: str = "",
    download_to: str | None = None,
    timeout_seconds: float = 600,
    settings: Settings | None = None,
) -> FetchResult:
    """Resolve ``name@alias`` or a version; optionally download its files to ``download_to``."""
    from mlflow import MlflowClient

    from bridge.registry import mlflow_errors

    name, alias, version = parse_model_ref(model_name, alias, version)
    settings = configure_tracking(settings)
    what = f"model {name!r} " + (f"alias {alias!r}" if alias else f"version {version}")
    with task_guard(timeout_seconds, "fetch-model"):
        client = MlflowClient()
        with mlflow_errors(what, settings.tracking_uri):
            if alias:
                mv = client.get_model_version_by_alias(name, alias)
            else:
                mv = client.get_model_version(name, version)
        result = FetchResult(
            name, str(mv.version), f"models:/{name}/{mv.version}", mv.source, mv.run_id or ""
        )
        if download_to:
            _download(result.model_uri, Path(download_to), settings)
    log.info("resolved %s to version %s", what, result.version)
    return result


def _download(model_uri: str, dest: Path, settings: Settings) -> None:
    """Download the model's files so that ``dest`` holds MLmodel at its root."""
    import mlflow

    from bridge.registry import mlflow_errors

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bridge-fetch-") as tmp:
        with mlflow_errors(f"downloading {model_uri}", settings.tracking_uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        found = (
            [local / "MLmodel"] if (local / "MLmodel").exists() else sorted(local.rglob("MLmodel"))
        )
        if not found:
            raise CheckFailed(f"{model_uri} has no MLmodel file; it is not an MLflow model")
        root = found[0].parent
        for item in root.iterdir():
            shutil.move(str(item), dest / item.name)


# ------------------------------------------------------------------- promote


@dataclass(frozen=True)
class PromoteResult:
    promoted: bool
    version: str
    alias: str
    report: str  # the JSON `bridge promote --output json` printed


def promote_command(
    model_name: str,
    *,
    version: str = "",
    from_alias: str = "",
    alias: str = "champion",
    require: Sequence[str] = (),
    no_regression: Sequence[str] = (),
    dry_run: bool = False,
) -> list[str]:
    """The `bridge promote` command line (the contract in DESIGN.md)."""
    version, from_alias = str(version).strip(), from_alias.strip()
    if not model_name.strip():
        raise UsageError("model_name is required")
    if bool(version) == bool(from_alias):
        raise UsageError("give exactly one of version or from_alias")
    cmd = [sys.executable, "-m", "bridge", "promote", model_name]
    cmd += ["--version", version] if version else ["--from-alias", from_alias]
    if alias:
        cmd += ["--alias", alias]
    for rule in require:
        cmd += ["--require", rule]
    for metric in no_regression:
        cmd += ["--no-regression", metric]
    if dry_run:
        cmd.append("--dry-run")
    return cmd + ["--output", "json"]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return redact(lines[-1]) if lines else ""


def parse_promote_result(returncode: int, stdout: str, stderr: str) -> PromoteResult:
    """Exit 0: the result; 1: CheckFailed naming each failed gate; 2: UsageError;
    3: TemporaryError; 4: InternalError."""
    if returncode == 0:
        data = _json_object(stdout)
        if data is None or "promoted" not in data:
            raise PermanentError(
                f"bridge promote succeeded but printed no JSON result: {_last_line(stdout)!r}"
            )
        return PromoteResult(
            bool(data["promoted"]), str(data.get("version", "")), str(data.get("alias", "")), stdout
        )
    if returncode == 1:
        data = _json_object(stdout) or {}
        failed = [g for g in data.get("gates", []) if not g.get("passed")]
        reasons = "; ".join(f"{g.get('name')}: {g.get('message')}" for g in failed)
        target = f"version {data.get('version', '?')} to @{data.get('alias', '?')}"
        raise CheckFailed(
            f"promotion of {target} refused: {reasons or _last_line(stderr) or 'a gate said no'}"
        )
    line = _last_line(stderr) or _last_line(stdout) or "no output"
    if returncode == 2:
        hint = None
        if "No such command" in line:
            hint = "the component image has no `bridge promote`; use a newer image"
        raise UsageError(f"bridge promote rejected its input: {line}", hint=hint)
    if returncode == 3:
        raise TemporaryError(f"bridge promote could not reach an outside system: {line}")
    if returncode == 4:
        raise InternalError(f"bridge promote failed with an internal error (a bug): {line}")
    raise PermanentError(f"bridge promote exited with {returncode}: {line}")


def _json_object(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def promote_model(
    model_name: str,
    *,
    version: str = "",
    from_alias: str = "",
    alias: str = "champion",
    require: Sequence[str] = (),
    no_regression: Sequence[str] = (),
    dry_run: bool = False,
    timeout_seconds: float = 600,
) -> PromoteResult:
    """Run the same gate as `bridge promote` (it is that command) and return its verdict."""
    cmd = promote_command(
        model_name,
        version=version,
        from_alias=from_alias,
        alias=alias,
        require=require,
        no_regression=no_regression,
        dry_run=dry_run,
    )
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_seconds if timeout_seconds and timeout_seconds > 0 else None,
            env=os.environ.copy(),
        )
    except subprocess.TimeoutExpired:
        raise TemporaryError(
            f"bridge promote for {model_name!r} did not finish within {timeout_seconds:g}s"
        ) from None
    if proc.stderr:
        sys.stderr.write(redact(proc.stderr))
    result = parse_promote_result(proc.returncode, proc.stdout, proc.stderr)
    log.info(
        "promote %s: promoted=%s version=%s alias=%s",
        model_name,
        result.promoted,
        result.version,
        result.alias,
    )
    return result


# -------------------------------------------------------------------- deploy


@dataclass(frozen=True)
class DeployResult:
    isvc_name: str
    manifest: str  # InferenceService YAML
    applied: bool


def deploy_model(
    *,
    model_name: str,
    version: str,
    apply: bool = False,
    timeout_seconds: float = 900,
    settings: Settings | None = None,
) -> DeployResult:
    """Render the InferenceService for one version (`bridge render`); with ``apply``,
    run one `bridge sync --once --apply --model NAME` pass, which publishes and applies
    what the approval alias points at (so the alias must point at ``version``)."""
    import yaml

    from bridge.runner import render_version

    settings = settings or load_settings()
    version = str(version).strip()
    if not model_name.strip() or not version.isdigit():
        raise UsageError("model_name and a numeric version are required")
    with task_guard(timeout_seconds, "deploy-model"):
        manifest = render_version(settings, model_name, version)
        name = (yaml.safe_load(manifest) or {}).get("metadata", {}).get("name", "")
        if apply:
            _check_alias(settings, model_name, version)
            _sync_apply(model_name, timeout_seconds)
    return DeployResult(name, manifest, apply)


def _check_alias(settings: Settings, model_name: str, version: str) -> None:
    from bridge.registry import Registry

    [info] = Registry(settings).registered_models([model_name])
    current = info.aliases.get(settings.alias)
    if current != version:
        raise CheckFailed(
            f"cannot apply {model_name} version {version}: @{settings.alias} points at "
            f"{current or 'nothing'}",
            hint="promote the version first (promote-model), or apply=False to only render",
        )


def _sync_apply(model_name: str, timeout_seconds: float) -> None:
    cmd = [sys.executable, "-m", "bridge", "sync", "--once", "--apply", "--model", model_name]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_seconds if timeout_seconds and timeout_seconds > 0 else None,
        )
    except subprocess.TimeoutExpired:
        raise TemporaryError(
            f"bridge sync --apply did not finish within {timeout_seconds:g}s"
        ) from None
    sys.stderr.write(redact(proc.stderr))
    if proc.returncode != 0:
        line = _last_line(proc.stderr) or _last_line(proc.stdout)
        error = {1: CheckFailed, 3: TemporaryError}.get(proc.returncode, PermanentError)
        raise error(f"bridge sync --apply --model {model_name} failed: {line}")
