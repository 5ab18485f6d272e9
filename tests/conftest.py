import os

# Tests must never pick up a developer's real MLflow or cloud settings.
for _var in list(os.environ):
    if _var.startswith(("MLFLOW_", "AWS_", "BRIDGE_")):
        del os.environ[_var]
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# The local HTTP fake of the Kubernetes API server (fixtures `fake_k8s_api`, `k8s_api`).
pytest_plugins = ["tests.fake_k8s_api"]
