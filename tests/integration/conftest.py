"""Real local servers, started once per test session.

`stack` runs `bridge dev up` (a real `mlflow server` with a sqlite backend and
artifacts proxied to a real S3 endpoint served by moto_server) in a temporary
state directory, and `bridge dev down` at the end. Tests isolate themselves by
unique model names, their own approval alias and their own target prefix, so
they share the servers without seeing each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge import devstack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("bridge-dev")
    stack, _ = devstack.up(state_dir)
    yield stack
    devstack.down(state_dir)


@pytest.fixture(scope="session")
def stack_env(stack) -> dict[str, str]:
    return stack.env()


def kserve_download(storage_uri: str, dest: Path, env: dict[str, str]) -> None:
    """Download as KServe's storage initializer does: its own code, in a fresh process
    (as in the init container) with only the given environment and a bare PATH."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])",
            storage_uri,
            str(dest),
        ],
        env={**env, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Scope:
    """One test's slice of the shared stack: env vars, alias, target, output dir."""

    env: dict[str, str]
    alias: str
    target_uri: str
    output_dir: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Run the real `bridge` command line in a subprocess."""
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def scope(stack_env, tmp_path, monkeypatch) -> Scope:
    alias = unique("champ")
    target = f"s3://{devstack.TARGET_BUCKET}/{unique('t')}"
    env = {
        **stack_env,
        "BRIDGE_ALIAS": alias,
        "BRIDGE_CANARY_ALIAS": alias + "-canary",
        "BRIDGE_TARGET_URI": target,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Scope(env=env, alias=alias, target_uri=target, output_dir=tmp_path / "out")


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def trained_models(iris):
    """Two small fitted classifiers, trained once per session."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    return [LogisticRegression(C=c, max_iter=300).fit(X, y) for c in (0.05, 1.0)]


@pytest.fixture
def register(stack_env, iris, trained_models, monkeypatch):
    """register(name, n=2) -> list of versions; logs real sklearn models to the real server."""
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    import mlflow

    mlflow.set_tracking_uri(stack_env["MLFLOW_TRACKING_URI"])
    X, _ = iris

    def _register(name: str, n: int = 2) -> list[str]:
        import sklearn

        mlflow.set_experiment("bridge-tests")
        versions = []
        for i in range(n):
            with mlflow.start_run():
                mlflow.log_metric("accuracy", 0.9 + i / 100)
                info = mlflow.sklearn.log_model(
                    trained_models[i % len(trained_models)],
                    name="model",
                    registered_model_name=name,
                    input_example=X.head(3),
                    # Skip requirement inference (it loads the model in a subprocess).
                    pip_requirements=[f"scikit-learn=={sklearn.__version__}", "mlflow"],
                )
            versions.append(str(info.registered_model_version))
        return versions

    return _register


@pytest.fixture
def client(stack_env):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack_env["MLFLOW_TRACKING_URI"])


@pytest.fixture
def s3(stack_env):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=stack_env["BRIDGE_TARGET_ENDPOINT_URL"],
        aws_access_key_id=stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_env["AWS_SECRET_ACCESS_KEY"],
        region_name=stack_env["AWS_DEFAULT_REGION"],
    )
