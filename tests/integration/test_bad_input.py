"""Every bad input of the foundation issue, against the real local servers.

Each case checks: a clear one-line error, the contract's exit code, no partial
copy in the store, no manifest, and no credential in any output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from bridge import devstack
from bridge.names import k8s_name

from .conftest import unique

pytestmark = pytest.mark.integration


def _assert_clean_failure(res, code, fragment, scope):
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    error_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], res.stderr
    assert "Traceback" not in res.stderr
    for secret in (devstack.DEV_SECRET_KEY, devstack.DEV_ACCESS_KEY):
        assert secret not in res.stdout + res.stderr
    assert (
        not list(scope.output_dir.glob("*.yaml"))
        or "kustomization.yaml" in [p.name for p in scope.output_dir.glob("*.yaml")]
        and len(list(scope.output_dir.glob("*.yaml"))) == 1
    )


def _objects(s3, target_uri):
    bucket, _, prefix = target_uri[len("s3://") :].partition("/")
    return s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])


def test_unreachable_mlflow_fails_fast_with_exit_3(scope):
    dead = f"http://127.0.0.1:{devstack.free_port()}"
    started = time.monotonic()
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"MLFLOW_TRACKING_URI": dead},
        timeout=90,
    )
    _assert_clean_failure(res, 3, "cannot reach MLflow", scope)
    assert dead in res.stderr
    # Bounded retries: well inside the subprocess timeout above, not minutes.
    assert time.monotonic() - started < 90


def test_unreachable_s3_fails_with_exit_3(scope, register, client, s3):
    model = unique("nos3")
    [v] = register(model, 1)
    client.set_registered_model_alias(model, scope.alias, v)
    dead = f"http://127.0.0.1:{devstack.free_port()}"
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"BRIDGE_TARGET_ENDPOINT_URL": dead},
        timeout=90,
    )
    _assert_clean_failure(res, 3, "cannot reach S3", scope)
    assert _objects(s3, scope.target_uri) == []


def test_missing_bucket_is_a_configuration_error(scope):
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"BRIDGE_TARGET_URI": "s3://no-such-bucket-xyz/p"},
    )
    _assert_clean_failure(res, 2, "bucket 'no-such-bucket-xyz' does not exist", scope)


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory):
    """A second real S3 endpoint that enforces credentials (moto's IAM auth mode)."""
    port = devstack.free_port()
    log = tmp_path_factory.mktemp("auth-s3") / "s3.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    devstack._wait_http(f"{url}/moto-api/", 60, "auth S3", log, proc.pid)
    yield url
    proc.terminate()
    proc.wait(10)


def test_wrong_credentials_are_a_configuration_error(scope, auth_s3):
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"BRIDGE_TARGET_ENDPOINT_URL": auth_s3, "BRIDGE_TARGET_URI": "s3://bridge-models/x"},
    )
    _assert_clean_failure(res, 2, "S3 refused the credentials", scope)


def test_version_without_artifacts(scope, client, s3):
    import mlflow

    model = unique("empty")
    mlflow.set_tracking_uri(scope.env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bridge-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("nothing", "logged")
    client.create_registered_model(model)
    mv = client.create_model_version(
        model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(model, scope.alias, mv.version)
    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    _assert_clean_failure(res, 1, "has no artifacts", scope)
    assert _objects(s3, scope.target_uri) == []


def test_model_without_pyfunc_flavor(scope, client, s3, tmp_path):
    import mlflow

    model = unique("nopyfunc")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(
        yaml.safe_dump({"flavors": {"onnx": {"onnx_version": "1.16"}}})
    )
    (model_dir / "model.onnx").write_bytes(b"\0" * 1024)
    mlflow.set_tracking_uri(scope.env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bridge-tests")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    client.create_registered_model(model)
    mv = client.create_model_version(
        model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(model, scope.alias, mv.version)
    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    _assert_clean_failure(res, 1, "no python_function (pyfunc) flavor", scope)
    assert _objects(s3, scope.target_uri) == []


def test_names_that_are_not_kubernetes_names(scope, register, client):
    odd = [
        f"Fraud Model_v2.0 {unique('x')}",
        "U" * 60 + unique("_long"),
        unique("churn") + "_model",
    ]
    twin = odd[2].replace("_", ".")  # cleans to the same base as odd[2]
    for name in [*odd, twin]:
        [v] = register(name, 1)
        client.set_registered_model_alias(name, scope.alias, v)
    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir), "--output", "json")
    assert res.returncode == 0, res.stderr
    results = {r["name"]: r for r in json.loads(res.stdout)}
    knames = {results[n]["k8s_name"] for n in [*odd, twin]}
    assert len(knames) == 4  # distinct, deterministic
    for name in [*odd, twin]:
        isvc = yaml.safe_load((scope.output_dir / f"{k8s_name(name)}.yaml").read_text())
        assert isvc["metadata"]["name"] == k8s_name(name)
        assert isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/registered-model"] == name


def test_names_that_truly_collide_fail_both_and_emit_nothing(scope, register, client):
    a = unique("Clash") + "_Model"
    b = k8s_name(a)  # a valid name equal to a's sanitized name
    for name in (a, b):
        [v] = register(name, 1)
        client.set_registered_model_alias(name, scope.alias, v)
    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    assert res.returncode == 1
    assert "maps to Kubernetes name" in res.stderr and "rename one" in res.stderr
    assert not (scope.output_dir / f"{b}.yaml").exists()


def test_artifact_path_with_dot_dot_is_refused_before_copying(scope, s3):
    """MLflow's own server refuses to store such a path, so the registry side is a
    stand-in here; the store is the real S3 endpoint."""
    from bridge.errors import CheckFailed
    from bridge.publish import Publisher
    from bridge.registry import ArtifactFile, ModelVersionInfo
    from bridge.settings import load_settings
    from bridge.store import Store

    class EscapingSource:
        uri = "s3://elsewhere/model"

        def list_files(self):
            return [ArtifactFile("MLmodel", 10), ArtifactFile("../../other-model/MLmodel", 10)]

        def read_bytes(self, path):
            raise AssertionError("nothing may be read before the paths are checked")

    settings = load_settings({}, env=scope.env)
    info = ModelVersionInfo("evil", "1", None, "models:/m-1", "READY", "s3://elsewhere/model")
    with pytest.raises(CheckFailed, match="not a plain relative path"):
        Publisher(Store(settings)).publish(info, EscapingSource(), "evil")
    assert _objects(s3, scope.target_uri) == []


def test_unknown_model_filter_is_a_usage_error(scope):
    res = scope.run("sync", "--once", "--model", unique("missing"))
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory, stack):
    """A real MLflow server with MLflow's own basic-auth app, sharing nothing with `stack`."""
    state = tmp_path_factory.mktemp("auth-mlflow")
    (state / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{state / 'auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = devstack.free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(state / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "the-right-admin-password",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    log = state / "mlflow.log"
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"sqlite:///{state / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    devstack._wait_http(f"{url}/health", 180, "auth MLflow", log, proc.pid)
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(20)


def test_wrong_mlflow_credentials_are_a_configuration_error(scope, auth_mlflow):
    wrong = "not-the-admin-password-42"
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={
            "MLFLOW_TRACKING_URI": auth_mlflow,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": wrong,
        },
    )
    _assert_clean_failure(res, 2, "rejected the credentials", scope)
    assert wrong not in res.stdout + res.stderr
