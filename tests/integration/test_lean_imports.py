"""The sync path does not import what it does not use, even with full MLflow installed.

In the dev environment pandas, SciPy, pyarrow and NumPy are installed (full ``mlflow``),
and ``import mlflow`` pulls them in through optional imports: ``mlflow/data/dataset_registry.py``
(mlflow 3.17.2 as installed) does ``with suppress(ImportError): from
mlflow.data.pandas_dataset import from_pandas`` (and ``numpy_dataset``), which import pandas
and NumPy; mlflow-skinny, the slim image's MLflow, depends on none of them. The daemon image
does not install them and syncs without them. This checks which modules a real
``bridge sync --once`` / ``bridge status`` process ends with; it is not a timing test.

Against an http(s) MLflow server, bridge makes its MLflow requests itself
(bridge/mlflow_http.py): ``import mlflow`` alone runs MLflow's whole package init
(mlflow/__init__.py imports tracing, GenAI with FastAPI and pydantic, OpenTelemetry),
about 50 MB and 0.6 s. Such a process must not import MLflow at all; with
BRIDGE_MLFLOW_CLIENT=mlflow it goes through MLflow's client, still without the four.

Bridge reaches the Kubernetes API through lightkube; the ``kubernetes`` package stays
installed (the KServe SDK here, MLflow's MLFLOW_TRACKING_AUTH=kubernetes provider in the
daemon image), so a process that imported it would hold its 37 MB for nothing: a real
``bridge sync --once --apply`` and a real ``bridge serve`` electing its leader through a
Lease, both on the local HTTP fake of the Kubernetes API, must not import it.
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
KUBE_CLIENTS = ("kubernetes", "lightkube", "mlflow")


def _probe(modules: tuple[str, ...]) -> str:
    """Runs the real command line and reports, at exit, which of ``modules`` were imported."""
    return f"""
import atexit, json, runpy, sys
atexit.register(lambda: print("LOADED=" + json.dumps(
    sorted(m for m in {modules!r} if m in sys.modules)), file=sys.stderr))
sys.argv = ["bridge", *sys.argv[1:]]
runpy.run_module("bridge", run_name="__main__")
"""


PROBE = _probe((*HEAVY, "mlflow"))


def _last_loaded(text: str) -> list[str]:
    line = [x for x in text.splitlines() if x.startswith("LOADED=")][-1]
    return json.loads(line.removeprefix("LOADED="))


def _loaded(scope, *args: str, env: dict | None = None, probe: str = PROBE):
    """(which of HEAVY the finished process had imported, its stderr)."""
    res = subprocess.run(
        [sys.executable, "-c", probe, *args],
        env={**os.environ, **scope.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return _last_loaded(res.stderr), res.stderr


def test_the_full_install_has_the_heavy_modules():
    """The premise: in this environment they are installed (else the tests below prove nothing)."""
    import importlib.util

    assert all(importlib.util.find_spec(m) is not None for m in HEAVY)


@pytest.mark.parametrize("mode", ["auto", "mlflow"])
@pytest.mark.parametrize("source", ["direct S3", "MLflow proxy"])
def test_sync_process_does_not_import_numpy_pandas_scipy_pyarrow(scope, client, s3, source, mode):
    name = unique("lean")
    v = create_version(client, s3, name, model_files(big=1024, small=2, seed=3))
    client.set_registered_model_alias(name, scope.alias, v)
    env = {"BRIDGE_MLFLOW_CLIENT": mode}
    if source == "MLflow proxy":
        env["BRIDGE_SOURCE_ARTIFACTS_URI"] = ""
    loaded, stderr = _loaded(scope, "sync", "--once", "--model", name, env=env)
    assert source.replace("direct S3", "server-side copy") in stderr  # the path was taken
    assert loaded == ([] if mode == "auto" else ["mlflow"])


@pytest.mark.parametrize("mode", ["auto", "mlflow"])
def test_status_process_does_not_import_numpy_pandas_scipy_pyarrow(scope, mode):
    loaded, _ = _loaded(scope, "status", "--output", "json", env={"BRIDGE_MLFLOW_CLIENT": mode})
    assert loaded == ([] if mode == "auto" else ["mlflow"])


@pytest.mark.fake_k8s_api
def test_sync_apply_reaches_the_cluster_without_the_kubernetes_package_fake_k8s_api(
    scope, client, s3, k8s_api
):
    name = unique("lean-apply")
    v = create_version(client, s3, name, model_files(big=1024, small=2, seed=4))
    client.set_registered_model_alias(name, scope.alias, v)
    env = {"KUBECONFIG": str(k8s_api.kubeconfig), "BRIDGE_NAMESPACE": "models"}
    loaded, _ = _loaded(
        scope, "sync", "--once", "--apply", "--model", name, env=env, probe=_probe(KUBE_CLIENTS)
    )
    assert k8s_api.objects("InferenceService"), "nothing was applied"
    assert loaded == ["lightkube"]


@pytest.mark.fake_k8s_api
def test_serve_elects_its_leader_without_the_kubernetes_package_fake_k8s_api(
    scope, client, s3, k8s_api, tmp_path
):
    """The daemon as a pod runs it: leader election on, first pass done, then SIGTERM."""
    import signal

    from bridge import devstack

    from .daemon_helpers import DaemonProc, wait_until

    name = unique("lean-serve")
    v = create_version(client, s3, name, model_files(big=1024, small=2, seed=5))
    client.set_registered_model_alias(name, scope.alias, v)
    port = devstack.free_port()
    env = {
        **os.environ,
        **scope.env,
        "KUBECONFIG": str(k8s_api.kubeconfig),
        "BRIDGE_LEADER_ELECTION": "true",
        "BRIDGE_LEASE_NAMESPACE": "mlops",
        "BRIDGE_LEASE_NAME": "lean-serve",
        "BRIDGE_POLL_INTERVAL": "600",
        "BRIDGE_OUTPUT_DIR": str(tmp_path / "out"),
    }
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _probe(KUBE_CLIENTS), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    d = DaemonProc(proc, port, log_path)
    try:
        wait_until(lambda: _first_pass_done(d), 120, "no first pass as leader", d)
        assert k8s_api.holder("mlops", "lean-serve") is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, d.log()
    assert _last_loaded(d.log()) == ["lightkube"]


def _first_pass_done(d) -> bool:
    try:
        return d.get("/readyz")[1].strip() == "leader" and (
            d.metric("bridge_sync_duration_seconds_count") >= 1
        )
    except OSError:
        return False
