"""mlflow-kubeflow-bridge: MLflow Model Registry -> S3 store -> KServe."""

__version__ = "0.1.0"
