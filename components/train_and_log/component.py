"""KFP component `train-and-log`: train an example model and log the run to MLflow."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from bridge.kfp_ops import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train_and_log(
    metrics: Output[Metrics],
    dataset: str = "iris",
    C: float = 1.0,
    max_iter: int = 500,
    experiment: str = "",
    timeout_seconds: int = 1800,
    kfp_pipeline_name: str = "",
    kfp_run_id: str = "",
    kfp_run_name: str = "",
    kfp_task_name: str = "",
) -> NamedTuple("Outputs", [("run_id", str), ("model_uri", str), ("accuracy", float)]):
    """Train a logistic regression on a scikit-learn dataset and log everything to MLflow.

    Starts an MLflow run tagged with the KFP lineage (kfp.pipeline_name, kfp.run_id,
    kfp.run_name, kfp.task_name, kfp.pod_name, kfp.component, kfp.component_version),
    logs params, accuracy and f1_macro, and the model (flavor sklearn, name "model").
    The run ends FAILED if the task raises, is cancelled (SIGTERM) or passes its
    deadline. MLflow is reached through MLFLOW_TRACKING_URI and MLflow's own
    credential variables (MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD).

    Args:
        dataset: A dataset shipped with scikit-learn: iris, wine or breast_cancer.
        C: Inverse regularization strength of the logistic regression (> 0).
        max_iter: Maximum solver iterations.
        experiment: MLflow experiment; empty means the pipeline name.
        timeout_seconds: Deadline for the whole task; 0 means none.
        kfp_pipeline_name: Pipeline name for the lineage tags (pass a constant).
        kfp_run_id: Bind to dsl.PIPELINE_JOB_ID_PLACEHOLDER (fallback: env KFP_RUN_ID).
        kfp_run_name: Bind to dsl.PIPELINE_JOB_NAME_PLACEHOLDER (fallback: env KFP_RUN_NAME).
        kfp_task_name: Bind to dsl.PIPELINE_TASK_NAME_PLACEHOLDER (fallback: env KFP_TASK_NAME).

    Returns:
        run_id: The MLflow run id.
        model_uri: The logged model's URI (models:/m-...).
        accuracy: Accuracy on the held-out split.
    """
    from bridge import kfp_ops
    from bridge.kfp_run import KfpLineage

    result = kfp_ops.train_and_log(
        dataset=dataset,
        C=C,
        max_iter=max_iter,
        experiment=experiment,
        timeout_seconds=timeout_seconds,
        lineage=KfpLineage.resolve(
            pipeline_name=kfp_pipeline_name,
            run_id=kfp_run_id,
            run_name=kfp_run_name,
            task_name=kfp_task_name,
            component="train-and-log",
        ),
    )
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    return (result.run_id, result.model_uri, result.accuracy)
