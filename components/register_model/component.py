"""KFP component `register-model`: register a run's model with lineage tags."""

from typing import NamedTuple

from kfp import dsl

from bridge.kfp_ops import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def register_model(
    model_name: str,
    run_id: str,
    artifact_path: str = "model",
    model_uri: str = "",
    timeout_seconds: int = 600,
) -> NamedTuple("Outputs", [("version", str), ("model_uri", str)]):
    """Register the model an MLflow run logged as a new version in the Model Registry.

    The run must have ended FINISHED (a FAILED run is refused). The new version is
    tagged with the run's KFP lineage (every kfp.* tag of the run, such as
    kfp.pipeline_name, kfp.run_id and kfp.task_name) and bridge.source_run_id.
    The registered model is created if it does not exist. MLflow is reached
    through MLFLOW_TRACKING_URI and MLflow's own credential variables.

    Args:
        model_name: Registered model name in MLflow.
        run_id: MLflow run that logged the model (e.g. train-and-log's run_id).
        artifact_path: Name the model was logged under in that run.
        model_uri: The logged model's URI (e.g. train-and-log's model_uri); wins over artifact_path.
        timeout_seconds: Deadline, including waiting for the version to be READY.

    Returns:
        version: The new model version number.
        model_uri: models:/<model_name>/<version>.
    """
    from bridge import kfp_ops

    result = kfp_ops.register_model(
        model_name=model_name,
        run_id=run_id,
        artifact_path=artifact_path,
        model_uri=model_uri,
        timeout_seconds=timeout_seconds,
    )
    return (result.version, result.model_uri)
