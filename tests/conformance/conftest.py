"""Fixtures for the KServe conformance harness: the integration stack (real `mlflow server`
and moto_server), and MLServer in its own virtual environment (`make mlserver-venv`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures)
    client,
    iris,
    register,
    scope,
    stack,
    stack_env,
    trained_models,
)

ROOT = Path(__file__).resolve().parents[2]
MLSERVER_VENV = Path(os.environ.get("BRIDGE_MLSERVER_VENV", ROOT / ".venv-mlserver"))


@pytest.fixture(scope="session")
def mlserver_bin() -> Path:
    """The `mlserver` of the separate venv: KServe's runtime image carries its own MLflow,
    so MLServer must not share bridge's environment. A missing venv is an error, not a skip."""
    path = MLSERVER_VENV / "bin" / "mlserver"
    if not path.exists():
        pytest.fail(f"{path} missing: run `make mlserver-venv` (make test builds it)")
    return path
