"""The sync path does not import what it does not use, even with full MLflow installed.

In the dev environment pandas, SciPy, pyarrow and NumPy are installed (full ``mlflow``),
and ``import mlflow`` pulls them in through optional imports: ``mlflow/data/dataset_registry.py``
(mlflow 3.17.2 as installed) does ``with suppress(ImportError): from
mlflow.data.pandas_dataset import from_pandas`` (and ``numpy_dataset``), which import pandas
and NumPy; mlflow-skinny, the slim image's MLflow, depends on none of them. The daemon image
does not install them and syncs without them. This checks which modules a real
``bridge sync --once`` / ``bridge status`` process ends with; it is not a timing test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import unique
from .transfer_support import create_version, model_files

pytestmark = pytest.mark.integration

HEAVY = ("pandas", "scipy", "pyarrow", "numpy")

# Runs the real command line and reports, at exit, which of HEAVY were imported.
PROBE = f"""
import atexit, json, runpy, sys
atexit.register(lambda: print("LOADED=" + json.dumps(
    sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr))
sys.argv = ["bridge", *sys.argv[1:]]
runpy.run_module("bridge", run_name="__main__")
"""


def _loaded(scope, *args: str, env: dict | None = None) -> tuple[list[str], str]:
    """(which of HEAVY the finished process had imported, its stderr)."""
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**os.environ, **scope.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    line = [x for x in res.stderr.splitlines() if x.startswith("LOADED=")][-1]
    return json.loads(line.removeprefix("LOADED=")), res.stderr


def test_the_full_install_has_the_heavy_modules():
    """The premise: in this environment they are installed (else the tests below prove nothing)."""
    import importlib.util

    assert all(importlib.util.find_spec(m) is not None for m in HEAVY)


@pytest.mark.parametrize("source", ["direct S3", "MLflow proxy"])
def test_sync_process_does_not_import_numpy_pandas_scipy_pyarrow(scope, client, s3, source):
    name = unique("lean")
    v = create_version(client, s3, name, model_files(big=1024, small=2, seed=3))
    client.set_registered_model_alias(name, scope.alias, v)
    env = {"BRIDGE_SOURCE_ARTIFACTS_URI": ""} if source == "MLflow proxy" else None
    loaded, stderr = _loaded(scope, "sync", "--once", env=env)
    assert source.replace("direct S3", "server-side copy") in stderr  # the path was taken
    assert loaded == []


def test_status_process_does_not_import_numpy_pandas_scipy_pyarrow(scope):
    loaded, _ = _loaded(scope, "status", "--output", "json")
    assert loaded == []
