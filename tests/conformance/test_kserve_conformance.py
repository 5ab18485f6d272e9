"""KServe conformance: from bridge's output to a served prediction, the way KServe does it.

Ported from kserve/kserve at commit aaac4e294dae2c7b1aa1886447793f3aa1c30912 (see
tests/conformance/kserve_controller.py for each Go file and function):
pkg/apis/serving/v1beta1/predictor_model.go (runtime selection),
pkg/apis/serving/v1beta1/inference_service_defaults.go (deployment mode, MLServer
defaults), pkg/apis/serving/v1beta1/inference_service_validation.go,
pkg/credentials/service_account_credentials.go, pkg/credentials/s3/{s3_secret,utils}.go,
pkg/webhook/admission/pod/storage_initializer_injector.go, pkg/constants/constants.go,
config/runtimes/kserve-mlserver.yaml (vendored next to this file) and
python/storage-initializer/scripts/initializer-entrypoint.

The flow, per credential style: ``bridge sync --output-dir`` publishes a real sklearn
model (real `mlflow server`, moto_server as the S3 emulator) and writes the
InferenceService and ServiceAccount; ``bridge credentials`` renders the Secret; the
ported controller selects the ClusterServingRuntime and computes the storage
initializer's args and env; KServe's own downloader (``kserve_storage``) runs in a fresh
process with only that env; MLServer (its own venv) starts as the runtime says and
answers a v2 inference request. No Kubernetes runs here: Secret references are resolved
by :func:`kserve_controller.resolve_env`, standing in for the kubelet, and
``/mnt/models`` is a temporary directory standing in for the shared volume.

What each credential case proves:
- MinIO-style keys: everything above, including the served prediction.
- AWS S3 without an endpoint: the env KServe computes has no endpoint and the keys; to
  run the download, the harness adds ``AWS_ENDPOINT_URL`` pointing at moto_server as the
  network stand-in for s3.amazonaws.com (the only variable not computed by KServe).
- IRSA: the env KServe computes comes from the ServiceAccount (endpoint, region; no
  keys). EKS's pod-identity webhook (not KServe, not here) would add ``AWS_ROLE_ARN`` and
  ``AWS_WEB_IDENTITY_TOKEN_FILE``; the harness adds them with a dummy token, and boto3
  inside kserve_storage exchanges it through moto_server's STS
  (AssumeRoleWithWebIdentity, which moto does not verify) for temporary keys. So the
  web-identity credential path is exercised; the token's verification by AWS is not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fake_k8s_api import controller_status
from tests.integration.conftest import unique

from . import kserve_controller as kc

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
RUNTIMES = [yaml.safe_load((HERE / "kserve-mlserver.yaml").read_text())]
MOUNT = kc.DEFAULT_MODEL_LOCAL_MOUNT_PATH
# python/storage-initializer/scripts/initializer-entrypoint, the part that runs here
# (logging set up as there; the confidential-model branch is off by default).
INITIALIZER = """
import os, sys
from kserve_storage import Storage
from kserve_storage.logging import configure_logging, logger
configure_logging()
if len(sys.argv) < 3 or len(sys.argv) % 2 != 1:
    sys.exit(1)
src_uris, dest_paths = sys.argv[1::2], sys.argv[2::2]
for dest in dest_paths:
    os.makedirs(dest, exist_ok=True)
try:
    Storage.download_files(src_uris, dest_paths)
except Exception as e:
    logger.error("Storage initialization failed: %s", e)
    sys.exit(1)
"""
IRSA_ROLE = "arn:aws:iam::123456789012:role/kserve-models"


@dataclass
class Emitted:
    isvc: dict
    service_account: dict
    secrets: dict[str, dict]


def emit(scope, model: str, env: dict[str, str], credentials_env: dict | None) -> Emitted:
    """bridge's output directory plus, unless ``credentials_env`` is None, the Secret
    ``bridge credentials --from-env`` prints (run with that environment)."""
    out = scope.output_dir / unique("o")
    res = scope.run("sync", "--once", "--model", model, "--output-dir", str(out), env=env)
    assert res.returncode == 0, res.stderr
    docs = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))]
    [isvc] = [d for d in docs if d.get("kind") == "InferenceService"]
    [sa] = [d for d in docs if d.get("kind") == "ServiceAccount"]
    secrets = {}
    if credentials_env is not None:
        ns = isvc["metadata"]["namespace"]
        res = scope.run(
            "credentials", "-n", ns, "-o", "json", "--from-env", env={**env, **credentials_env}
        )
        assert res.returncode == 0, res.stderr
        secret = json.loads(res.stdout)
        secrets[secret["metadata"]["name"]] = secret
    return Emitted(isvc, sa, secrets)


def admit(emitted: Emitted) -> tuple[dict, dict, kc.InitContainer]:
    """What KServe makes of it: defaulted InferenceService, selected runtime, init container."""
    isvc = kc.default_deployment_mode(emitted.isvc, kc.DeployConfig())
    runtime = kc.select_runtime(isvc, RUNTIMES)
    isvc = kc.set_runtime_defaults(isvc, runtime)
    init = kc.storage_initializer(isvc, emitted.service_account, emitted.secrets, kc.S3Config())
    return isvc, runtime, init


def download(init: kc.InitContainer, env: dict[str, str], dest: Path) -> Path:
    args = [dest.as_posix() if a == MOUNT else a for a in init.args]
    res = subprocess.run(
        [sys.executable, "-c", INITIALIZER, *args],
        env=env,  # only this: a fresh container has nothing else
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (dest / "MLmodel").exists(), sorted(p.name for p in dest.iterdir())
    return dest


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    name: str
    url: str
    isvc: dict
    runtime: dict
    init_env: dict[str, str]
    model_dir: Path
    stack_s3_url: str
    scope: object
    model: str


@pytest.fixture(scope="module")
def minio_served(stack, stack_env, mlserver_bin, tmp_path_factory, iris, trained_models):
    """MinIO-style keys, end to end: publish, render, admit, download, start MLServer once."""
    import mlflow
    import sklearn

    from bridge import devstack

    tmp = tmp_path_factory.mktemp("conformance")
    mlflow.set_tracking_uri(stack_env["MLFLOW_TRACKING_URI"])
    old_env = {k: os.environ.get(k) for k in stack_env}
    os.environ.update(stack_env)
    try:
        model = unique("kserve-conf")
        mlflow.set_experiment("bridge-conformance")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                trained_models[0],
                name="model",
                registered_model_name=model,
                input_example=iris[0].head(3),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "mlflow"],
            )
        alias = unique("champ")
        mlflow.MlflowClient().set_registered_model_alias(
            model, alias, str(info.registered_model_version)
        )
    finally:
        for k, v in old_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    from tests.integration.conftest import Scope

    scope = Scope(
        env={
            **stack_env,
            "BRIDGE_ALIAS": alias,
            "BRIDGE_TARGET_URI": f"s3://{devstack.TARGET_BUCKET}/{unique('t')}",
        },
        alias=alias,
        target_uri="",
        output_dir=tmp / "out",
    )
    emitted = emit(scope, model, {}, credentials_env={})
    isvc, runtime, init = admit(emitted)
    init_env = kc.resolve_env(init.env, emitted.secrets)
    model_dir = download(init, init_env, tmp / "mnt-models")

    env = kc.predictor_container_env(isvc, runtime)
    env[kc.MLSERVER_MODEL_URI_ENV] = model_dir.as_posix()  # the /mnt/models volume
    http, grpc, metrics = free_port(), free_port(), free_port()
    env.update(  # free ports instead of 8080/9000: tests share the machine
        MLSERVER_HTTP_PORT=str(http),
        MLSERVER_GRPC_PORT=str(grpc),
        MLSERVER_METRICS_PORT=str(metrics),
        MLSERVER_HOST="127.0.0.1",  # a pod listens on all addresses; here only locally
        HOME=str(tmp),
    )
    log = (tmp / "mlserver.log").open("w")
    # The image's command: `mlserver start $MLSERVER_MODELS_DIR` (/mnt/models).
    proc = subprocess.Popen(
        [str(mlserver_bin), "start", model_dir.as_posix()],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    name = env[kc.MLSERVER_MODEL_NAME_ENV]
    url = f"http://127.0.0.1:{http}"
    try:
        _wait_ready(f"{url}/v2/models/{name}/ready", proc, tmp / "mlserver.log")
        yield Served(
            name,
            url,
            isvc,
            runtime,
            init_env,
            model_dir,
            stack_env["BRIDGE_TARGET_ENDPOINT_URL"],
            scope,
            model,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240  # a start-up wait, not an assertion on speed
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"MLServer exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"MLServer not ready:\n{log.read_text()[-4000:]}")


def test_minio_keys_reach_the_storage_initializer_and_mlserver_serves(minio_served):
    s = minio_served
    env = s.init_env
    # The endpoint comes from the Secret's annotations (on today's main it never did).
    assert env["AWS_ENDPOINT_URL"] == s.stack_s3_url
    assert env["S3_USE_HTTPS"] == "0" and env["S3_ENDPOINT"] == s.stack_s3_url.split("://")[1]
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    # Runtime selection and MLServer defaults as KServe applies them.
    assert s.runtime["metadata"]["name"] == "kserve-mlserver"
    assert s.isvc["metadata"]["labels"]["modelClass"] == "mlserver_mlflow.MLflowRuntime"

    import mlflow
    import numpy as np
    from mlflow.models import Model

    example = Model.load(str(s.model_dir)).load_input_example(str(s.model_dir))
    expected = mlflow.pyfunc.load_model(str(s.model_dir)).predict(example)
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": c, "shape": [len(example)], "datatype": "FP64", "data": example[c].tolist()}
            for c in example.columns
        ],
    }
    req = urllib.request.Request(
        f"{s.url}/v2/models/{s.name}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.load(r)
    assert answer["model_name"] == s.name
    [output] = answer["outputs"]
    assert np.array_equal(np.asarray(output["data"]), np.asarray(expected).ravel())


def test_aws_keys_without_endpoint(minio_served, stack_env, tmp_path):
    """No endpoint configured (AWS S3): KServe computes no endpoint, https, the keys."""
    s = minio_served
    no_endpoint = {
        k: v
        for k, v in stack_env.items()
        if k not in ("BRIDGE_TARGET_ENDPOINT_URL", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
    }
    res = subprocess.run(
        [sys.executable, "-m", "bridge", "credentials", "-n", "ns", "-o", "json", "--from-env"],
        env={"PATH": os.environ["PATH"], **no_endpoint, "BRIDGE_TARGET_REGION": "eu-west-1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    secret = json.loads(res.stdout)
    sa = {
        "metadata": {"name": "sa", "namespace": "ns"},
        "secrets": [{"name": secret["metadata"]["name"]}],
    }
    isvc = {"metadata": {"name": "m"}, "spec": {"predictor": s.isvc["spec"]["predictor"]}}
    secrets = {secret["metadata"]["name"]: secret}
    init = kc.storage_initializer(isvc, sa, secrets, kc.S3Config())
    env = kc.resolve_env(init.env, secrets)
    assert "AWS_ENDPOINT_URL" not in env and "S3_ENDPOINT" not in env
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1" and env["S3_VERIFY_SSL"] == "1"
    assert env["AWS_ACCESS_KEY_ID"] == stack_env["AWS_ACCESS_KEY_ID"]
    # Network stand-in for s3.amazonaws.com; everything else as KServe computed it.
    dest = download(init, {**env, "AWS_ENDPOINT_URL": s.stack_s3_url}, tmp_path / "models")
    assert files(dest) == files(s.model_dir)


def test_irsa_service_account_carries_what_kserve_reads(minio_served, stack_env, tmp_path):
    """IRSA: bridge's ServiceAccount (from its output directory) carries the role and the
    S3 settings, lists no Secret; KServe computes the env from it alone."""
    s = minio_served
    emitted = emit(s.scope, s.model, {"BRIDGE_SERVING_IRSA_ROLE_ARN": IRSA_ROLE}, None)
    sa = emitted.service_account
    assert "secrets" not in sa
    assert sa["metadata"]["annotations"][kc.IRSA_ANNOTATION] == IRSA_ROLE
    res = s.scope.run("credentials", "-n", "ns", env={"BRIDGE_SERVING_IRSA_ROLE_ARN": IRSA_ROLE})
    assert res.returncode == 2 and "IRSA" in res.stderr
    init = kc.storage_initializer(emitted.isvc, sa, {}, kc.S3Config())
    env = kc.resolve_env(init.env, {})
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["AWS_ENDPOINT_URL"] == s.stack_s3_url
    assert env["AWS_DEFAULT_REGION"] == stack_env["AWS_DEFAULT_REGION"]
    token = tmp_path / "token"
    token.write_text("header.payload.signature")
    pod_identity = kc.irsa_pod_identity_env(IRSA_ROLE, token.as_posix())
    dest = download(init, {**env, **pod_identity}, tmp_path / "models")
    assert files(dest) == files(s.model_dir)


@pytest.mark.parametrize(
    ("setting", "annotation"),
    [
        (None, None),
        ("RawDeployment", "Standard"),
        ("Standard", "Standard"),
        ("Serverless", "Knative"),
        ("Knative", "Knative"),
    ],
)
def test_deployment_mode_is_what_kserve_stores(setting, annotation, stack_env):
    """The defaulter rewrites legacy names; what bridge emits must already be what the API
    server stores (else GitOps tools see a permanent diff), and survive the validator on an
    object created before the rename (status deploymentMode in the legacy name)."""
    env = {"PATH": os.environ["PATH"], **stack_env}
    if setting:
        env["BRIDGE_DEPLOYMENT_MODE"] = setting
    code = (
        "import json; from bridge.settings import load_settings; "
        "from bridge.sync import serving_defaults, serving_options; "
        "from bridge.serving import DesiredService, ServedVersion, inference_service; "
        "s = load_settings(); v = ServedVersion('1', 's3://b/m/1/', 'sha256:0', None, 'x'); "
        "d = DesiredService('m', 'm', 'champion', v, spec=serving_defaults(s)); "
        "print(json.dumps(inference_service(d, serving_options(s))))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    emitted = json.loads(res.stdout)
    stored = kc.default_deployment_mode(emitted, kc.DeployConfig())
    got = emitted["metadata"]["annotations"].get(kc.DEPLOYMENT_MODE_ANNOTATION)
    assert got == annotation
    assert stored["metadata"]["annotations"] == emitted["metadata"]["annotations"]
    # No mode: the shipped defaultDeploymentMode (Serverless, i.e. Knative) applies.
    effective = kc.effective_deployment_mode(stored, kc.DeployConfig())
    assert kc.parse_deployment_mode(effective) == (annotation or "Knative")
    if annotation:
        legacy = {"Standard": "RawDeployment", "Knative": "Serverless"}[annotation]
        kc.validate_deployment_mode_update(stored, old_status_mode=legacy)


def test_port_can_fail():
    """The ported pieces refuse what KServe refuses."""
    isvc = {
        "metadata": {"name": "m", "annotations": {}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow", "version": "3"}}}},
    }
    with pytest.raises(LookupError, match="no runtime"):
        kc.select_runtime(isvc, RUNTIMES)
    isvc["spec"]["predictor"]["model"]["modelFormat"]["version"] = "2"
    isvc["spec"]["predictor"]["model"]["protocolVersion"] = "v1"
    with pytest.raises(LookupError):
        kc.select_runtime(isvc, RUNTIMES)
    # An old main-style setup: annotations on the ServiceAccount, a plain key Secret.
    sa = {
        "metadata": {"name": "sa", "annotations": {"serving.kserve.io/s3-endpoint": "minio:9000"}},
        "secrets": [{"name": "s3"}],
    }
    secret = {
        "metadata": {"name": "s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
    }
    env = kc.resolve_env(kc.credential_envs(sa, {"s3": secret}, kc.S3Config()), {"s3": secret})
    assert "AWS_ENDPOINT_URL" not in env and env["AWS_ACCESS_KEY_ID"] == "a"
    with pytest.raises(ValueError, match="cannot be changed"):
        kc.validate_deployment_mode_update(
            {"metadata": {"annotations": {kc.DEPLOYMENT_MODE_ANNOTATION: "Standard"}}},
            old_status_mode="Serverless",
        )


@pytest.mark.fake_k8s_api
def test_fake_api_serves_the_status_a_controller_would_write(minio_served, k8s_api):
    """FAKE status (no KServe controller runs here): the URL is the MLServer started above."""
    isvc = {**minio_served.isvc, "metadata": {**minio_served.isvc["metadata"], "namespace": "ns"}}
    k8s_api.seed(controller_status(isvc, ready=True, url=minio_served.url))
    [stored] = [o for o in k8s_api.objects("InferenceService").values()]
    assert stored["status"]["url"] == minio_served.url
    ready = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert ready["Ready"] == "True"
    with urllib.request.urlopen(f"{stored['status']['url']}/v2/health/ready", timeout=30) as r:
        assert r.status == 200
