"""An MLflow run for a Kubeflow Pipelines task, with KFP lineage and honest end states.

Use it inside any lightweight or container component::

    from bridge.kfp_run import KfpLineage, mlflow_run

    with mlflow_run(experiment="churn", lineage=KfpLineage.resolve(...)) as run:
        run.log_params({"C": 1.0})
        ...
        run.log_metrics({"accuracy": acc})
        run.log_model(model, input_example=X[:3])

or as a decorator (``@mlflow_run(experiment="churn")``). The run is tagged with
the KFP lineage (see :class:`KfpLineage`) and ends

- ``FINISHED`` when the block returns,
- ``FAILED`` when it raises, when the task is terminated (SIGTERM: a cancelled
  run, a deleted pod, an evicted node) or when its deadline passes,

so a task that fails in Kubeflow never shows as "running" or "finished" in MLflow.

Where the lineage comes from (first non-empty wins):

==========================  =================================  ==========================
tag                         component input (KFP placeholder)  environment fallback
==========================  =================================  ==========================
``kfp.pipeline_name``       ``kfp_pipeline_name`` (a constant   ``KFP_PIPELINE_NAME``
                            the pipeline passes)
``kfp.run_id``              ``{{$.pipeline_job_uuid}}``         ``KFP_RUN_ID``
``kfp.run_name``            ``{{$.pipeline_job_name}}``         ``KFP_RUN_NAME``
``kfp.task_name``           ``{{$.pipeline_task_name}}``        ``KFP_TASK_NAME``
``kfp.pod_name``            --                                  ``KFP_POD_NAME`` (set by KFP
                                                                on every task pod)
``kfp.component``           the component's name                --
``kfp.component_version``   ``bridge.__version__`` (= the       --
                            component image tag)
==========================  =================================  ==========================

KFP resolves placeholders only when they are passed as task *arguments*, so a
pipeline passes them with ``**lineage_inputs("my-pipeline")``. A placeholder
that reaches the task unresolved (``{{$...}}``) counts as empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bridge import __version__, keys
from bridge.errors import TemporaryError
from bridge.log import redact
from bridge.settings import Settings, load_settings

log = logging.getLogger(__name__)

# KFP v2 placeholders (the same strings as kfp.dsl.PIPELINE_*_PLACEHOLDER; kept
# here so that building task arguments does not import kfp).
PIPELINE_JOB_NAME_PLACEHOLDER = "{{$.pipeline_job_name}}"
PIPELINE_JOB_ID_PLACEHOLDER = "{{$.pipeline_job_uuid}}"
PIPELINE_TASK_NAME_PLACEHOLDER = "{{$.pipeline_task_name}}"

DEFAULT_EXPERIMENT = "kubeflow-pipelines"


def lineage_inputs(pipeline_name: str) -> dict[str, str]:
    """Task arguments that bind a component's lineage inputs to KFP placeholders.

    ``train_and_log(dataset="iris", **lineage_inputs("iris-pipeline"))``
    """
    return {
        "kfp_pipeline_name": pipeline_name,
        "kfp_run_id": PIPELINE_JOB_ID_PLACEHOLDER,
        "kfp_run_name": PIPELINE_JOB_NAME_PLACEHOLDER,
        "kfp_task_name": PIPELINE_TASK_NAME_PLACEHOLDER,
    }


def _resolved(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value or (value.startswith("{{$") and value.endswith("}}")):
        return None
    return value


@dataclass(frozen=True)
class KfpLineage:
    """Where an MLflow run came from in Kubeflow Pipelines."""

    pipeline_name: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    task_name: str | None = None
    pod_name: str | None = None
    component: str | None = None
    component_version: str = __version__

    @classmethod
    def resolve(
        cls,
        *,
        pipeline_name: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        task_name: str | None = None,
        component: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> KfpLineage:
        """Explicit values (component inputs bound to placeholders) first, then the environment."""
        env = os.environ if env is None else env
        return cls(
            pipeline_name=_resolved(pipeline_name) or _resolved(env.get("KFP_PIPELINE_NAME")),
            run_id=_resolved(run_id) or _resolved(env.get("KFP_RUN_ID")),
            run_name=_resolved(run_name) or _resolved(env.get("KFP_RUN_NAME")),
            task_name=_resolved(task_name) or _resolved(env.get("KFP_TASK_NAME")),
            pod_name=_resolved(env.get("KFP_POD_NAME")),
            component=_resolved(component),
        )

    def tags(self) -> dict[str, str]:
        pairs = {
            keys.KFP_PIPELINE_NAME_TAG: self.pipeline_name,
            keys.KFP_RUN_ID_TAG: self.run_id,
            keys.KFP_RUN_NAME_TAG: self.run_name,
            keys.KFP_TASK_NAME_TAG: self.task_name,
            keys.KFP_POD_NAME_TAG: self.pod_name,
            keys.KFP_COMPONENT_TAG: self.component,
            keys.KFP_COMPONENT_VERSION_TAG: self.component_version,
        }
        return {k: v for k, v in pairs.items() if v}


class TaskTerminated(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an Exception
    """The task received SIGTERM (run cancelled, pod deleted or evicted).

    A BaseException so that ``except Exception`` in user code cannot swallow it.
    """


class DeadlineExceeded(TemporaryError):
    """The task ran longer than its deadline."""


@contextlib.contextmanager
def task_guard(deadline_seconds: float | None = None, what: str = "task") -> Iterator[None]:
    """Turn SIGTERM into :class:`TaskTerminated` and a passed deadline into
    :class:`DeadlineExceeded`, raised in the main thread; restore the old handlers after.

    Off the main thread signals cannot be handled: the block then runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        log.warning("%s runs outside the main thread: no SIGTERM handler, no deadline", what)
        yield
        return

    def on_term(signum, frame):
        raise TaskTerminated(f"{what} received SIGTERM (cancelled or evicted)")

    def on_alarm(signum, frame):
        raise DeadlineExceeded(
            f"{what} did not finish within its deadline of {deadline_seconds:g}s",
            hint="raise timeout_seconds, or look for a stuck quota or an unreachable server",
        )

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_alarm = old_timer = None
    started = time.monotonic()
    if deadline_seconds and deadline_seconds > 0:
        old_alarm = signal.signal(signal.SIGALRM, on_alarm)
        old_timer = signal.setitimer(signal.ITIMER_REAL, float(deadline_seconds))
    try:
        yield
    finally:
        if old_alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
            if old_timer and old_timer[0] > 0:  # give back what remains of an outer timer
                remaining = old_timer[0] - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001), old_timer[1])
        signal.signal(signal.SIGTERM, old_term)


class KfpRun:
    """The active MLflow run of a task; thin conveniences over the MLflow fluent API."""

    def __init__(self, run, lineage: KfpLineage):
        self._run = run
        self.lineage = lineage

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    @property
    def experiment_id(self) -> str:
        return self._run.info.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_model(self, model, *, flavor: str = "sklearn", name: str = "model", **kwargs):
        """``mlflow.<flavor>.log_model(model, name=name, **kwargs)``; returns its ModelInfo."""
        import importlib

        module = importlib.import_module(f"mlflow.{flavor}")
        return module.log_model(model, name=name, **kwargs)


def configure_tracking(settings: Settings | None = None) -> Settings:
    """Point the MLflow client at the tracking server from the standard variables.

    Credentials are read by MLflow itself (MLFLOW_TRACKING_TOKEN or
    MLFLOW_TRACKING_USERNAME/PASSWORD), typically from a Kubernetes Secret.
    """
    import mlflow

    from bridge.registry import configure_mlflow_client

    settings = settings or load_settings()
    settings.require("tracking_uri")
    configure_mlflow_client(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    if settings.registry_uri:
        mlflow.set_registry_uri(settings.registry_uri)
    return settings


@contextlib.contextmanager
def mlflow_run(
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    lineage: KfpLineage | None = None,
    tags: Mapping[str, str] | None = None,
    deadline_seconds: float | None = None,
    settings: Settings | None = None,
) -> Iterator[KfpRun]:
    """Start an MLflow run tagged with KFP lineage; end it FINISHED or FAILED (see module doc).

    ``experiment`` defaults to the pipeline name, else ``kubeflow-pipelines``;
    ``run_name`` to the KFP task name. ``deadline_seconds`` bounds the whole block.

    Under Kubeflow Pipelines' own MLflow integration (KEP-12862) the KFP driver has already
    created this task's run, nested under the pipeline run's parent run, and put its id in
    MLFLOW_RUN_ID (with MLFLOW_EXPERIMENT_ID and MLFLOW_TRACKING_URI): the task then logs
    into that run, in its experiment and under its name, and only adds bridge's lineage
    tags, so there is no second top-level run.
    """
    import mlflow

    from bridge.registry import mlflow_errors

    settings = configure_tracking(settings)
    lineage = lineage or KfpLineage.resolve()
    what = f"KFP task {lineage.task_name or lineage.component or ''}".strip()
    run = None
    try:
        # The guard covers starting the run and the task's own work; ending the
        # run happens after it, so a late signal cannot leave the run RUNNING.
        with task_guard(deadline_seconds, what):
            with mlflow_errors("starting the MLflow run", settings.tracking_uri):
                run_tags = {**lineage.tags(), **dict(tags or {})}
                kfp_run = kfp_managed_run_id()
                if kfp_run:
                    if experiment:
                        log.info(
                            "KFP made this task's MLflow run: experiment %r unused", experiment
                        )
                    run = mlflow.start_run(run_id=kfp_run, tags=run_tags)
                else:
                    mlflow.set_experiment(experiment or lineage.pipeline_name or DEFAULT_EXPERIMENT)
                    run = mlflow.start_run(
                        run_name=run_name or lineage.task_name or lineage.component,
                        tags=run_tags,
                    )
            log.info("MLflow run %s started (%s)", run.info.run_id, settings.tracking_uri)
            yield KfpRun(run, lineage)
    except BaseException as exc:
        if run is not None:
            _end_failed(run.info.run_id, exc)
        raise
    with mlflow_errors("ending the MLflow run", settings.tracking_uri):
        mlflow.end_run("FINISHED")


def kfp_managed_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """The task's run that Kubeflow Pipelines' MLflow integration created (MLFLOW_RUN_ID)."""
    env = os.environ if env is None else env
    return (env.get("MLFLOW_RUN_ID") or "").strip() or None


def _end_failed(run_id: str, exc: BaseException) -> None:
    """Best effort: the original error must surface even if MLflow is down too."""
    import mlflow
    from mlflow.exceptions import MlflowException

    reason = " ".join(str(exc).split()) or type(exc).__name__
    reason = redact(f"{type(exc).__name__}: {reason}")[:500]
    try:
        mlflow.set_tag(keys.KFP_FAILURE_TAG, reason)
    except (MlflowException, OSError) as tag_exc:
        log.warning("could not tag the failed run %s: %s", run_id, redact(str(tag_exc)))
    try:
        mlflow.end_run("FAILED")
        log.error("MLflow run %s marked FAILED: %s", run_id, reason)
    except (MlflowException, OSError) as end_exc:
        log.error("could not mark MLflow run %s FAILED: %s", run_id, redact(str(end_exc)))


# Standard variable -> key in the MLflow Secret (same names, so `kubectl create
# secret generic mlflow-credentials --from-literal=MLFLOW_TRACKING_URI=...` works).
MLFLOW_SECRET_REQUIRED = ("MLFLOW_TRACKING_URI",)
MLFLOW_SECRET_OPTIONAL = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
BRIDGE_CONFIG_KEYS = ("BRIDGE_TARGET_URI", "BRIDGE_TARGET_ENDPOINT_URL", "BRIDGE_NAMESPACE")


def use_mlflow_credentials(
    task,
    *,
    mlflow_secret: str = "mlflow-credentials",
    s3_secret: str | None = None,
    bridge_config_map: str | None = None,
):
    """Wire a pipeline task's MLflow (and optionally S3 and bridge) settings from the cluster.

    - ``mlflow_secret``: MLFLOW_TRACKING_URI (required key) and MLFLOW_TRACKING_TOKEN
      or MLFLOW_TRACKING_USERNAME/PASSWORD (optional keys) become env vars.
    - ``s3_secret``: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the serving store.
    - ``bridge_config_map``: BRIDGE_TARGET_URI, BRIDGE_TARGET_ENDPOINT_URL,
      BRIDGE_NAMESPACE (optional keys).

    Uses kfp-kubernetes (``use_secret_as_env`` / ``use_config_map_as_env``); values
    never appear in the compiled pipeline. Returns the task.
    """
    from kfp import kubernetes

    kubernetes.use_secret_as_env(task, mlflow_secret, {k: k for k in MLFLOW_SECRET_REQUIRED})
    kubernetes.use_secret_as_env(
        task, mlflow_secret, {k: k for k in MLFLOW_SECRET_OPTIONAL}, optional=True
    )
    if s3_secret:
        kubernetes.use_secret_as_env(task, s3_secret, {k: k for k in S3_SECRET_KEYS})
    if bridge_config_map:
        kubernetes.use_config_map_as_env(
            task, bridge_config_map, {k: k for k in BRIDGE_CONFIG_KEYS}, optional=True
        )
    return task
