"""mlflow-kubeflow-bridge: MLflow Model Registry -> S3 store -> KServe."""

__version__ = "0.1.0"

# Label value that marks every resource and file bridge owns; pruning keys on it.
from bridge.keys import MANAGED_BY  # noqa: F401 - re-exported
