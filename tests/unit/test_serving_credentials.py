"""Credentials and deployment-mode names as KServe reads them.

Checked against kserve/kserve at commit aaac4e294dae2c7b1aa1886447793f3aa1c30912:
pkg/credentials/service_account_credentials.go (the s3-* annotations come from the Secret
the ServiceAccount lists; from the ServiceAccount only with eks.amazonaws.com/role-arn),
pkg/credentials/s3/utils.go (BuildS3EnvVars), config/configmap/inferenceservice.yaml
(credentials.s3.s3AccessKeyIDName: AWS_ACCESS_KEY_ID) and pkg/constants/constants.go
(DeploymentModeType: Standard, Knative; RawDeployment, Serverless deprecated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from bridge.keys import DEPLOYMENT_MODE_ANNOTATION
from bridge.overrides import ServingSpec, resolve
from bridge.serving import ServingOptions, s3_annotations

RUNTIMES = {"kserve-mlserver": ("1", "2")}
ENV = {
    "BRIDGE_TARGET_URI": "s3://models/prod",
    "BRIDGE_TARGET_ENDPOINT_URL": "http://minio.minio.svc:9000",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY",
    "AWS_SECRET_ACCESS_KEY": "example-secret-value",
}


def run(*args: str, env: dict | None = None):
    """The real command line (exit codes come from bridge.cli.main)."""
    res = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={"PATH": os.environ["PATH"], **ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return SimpleNamespace(exit_code=res.returncode, output=res.stdout + res.stderr)


def test_credentials_prints_the_annotated_secret_with_placeholders_by_default():
    res = run("credentials", "--namespace", "models")
    assert res.exit_code == 0, res.output
    secret = yaml.safe_load(res.output)
    assert list(secret["stringData"].values()) == ["<replace-me>", "<replace-me>"]
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "models"
    assert secret["metadata"]["name"] == "mlflow-bridge-s3"
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == (
        "minio.minio.svc:9000"
    )
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "0"
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert ENV["AWS_SECRET_ACCESS_KEY"] not in res.output


def test_credentials_from_env_and_json_and_key_names_from_kserve_config():
    res = run(
        "credentials",
        "-n",
        "models",
        "-o",
        "json",
        "--from-env",
        env={
            "BRIDGE_KSERVE_S3_ACCESS_KEY_ID_NAME": "awsAccessKeyID",
            "BRIDGE_KSERVE_S3_SECRET_ACCESS_KEY_NAME": "awsSecretAccessKey",
        },
    )
    assert res.exit_code == 0, res.output
    secret = json.loads(res.output)
    assert secret["stringData"] == {
        "awsAccessKeyID": ENV["AWS_ACCESS_KEY_ID"],
        "awsSecretAccessKey": ENV["AWS_SECRET_ACCESS_KEY"],
    }


def test_credentials_bad_input_is_one_line_and_exit_2():
    missing = run("credentials", "-n", "models", "--from-env", env={"AWS_SECRET_ACCESS_KEY": ""})
    assert missing.exit_code == 2 and "AWS_SECRET_ACCESS_KEY not set" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    irsa = run(
        "credentials",
        "-n",
        "models",
        env={"BRIDGE_SERVING_IRSA_ROLE_ARN": "arn:aws:iam::1:role/r"},
    )
    assert irsa.exit_code == 2 and "IRSA" in irsa.output
    assert run("credentials").exit_code == 2  # --namespace is required


def test_endpoint_annotation_never_carries_userinfo():
    opts = ServingOptions(
        namespace="m", service_account="sa", s3_endpoint_url="https://user:pw@minio.example:9443/"
    )
    ann = s3_annotations(opts)
    assert ann["serving.kserve.io/s3-endpoint"] == "minio.example:9443"
    assert ann["serving.kserve.io/s3-usehttps"] == "1"
    assert "pw" not in json.dumps(ann)


@pytest.mark.parametrize(
    ("given", "emitted"),
    [
        ("RawDeployment", "Standard"),
        ("rawdeployment", "Standard"),
        ("Standard", "Standard"),
        ("Serverless", "Knative"),
        ("Knative", "Knative"),
        ("knative", "Knative"),
    ],
)
def test_mode_tag_accepts_both_names_and_emits_the_current_one(given, emitted):
    spec = resolve("m", {"bridge.deployment-mode": given}, ServingSpec(namespace="ns"), RUNTIMES)
    assert spec.deployment_mode == emitted


def test_unknown_mode_is_refused_with_the_names():
    from bridge.errors import CheckFailed

    with pytest.raises(CheckFailed, match="Standard, Knative, RawDeployment, Serverless"):
        resolve("m", {"bridge.deployment-mode": "Raw"}, ServingSpec(namespace="ns"), RUNTIMES)


def test_mode_setting_accepts_legacy_names_and_render_emits_annotation_only_when_set():
    from bridge.serving import DesiredService, ServedVersion, inference_service
    from bridge.settings import load_settings
    from bridge.sync import serving_defaults, serving_options

    v = ServedVersion("1", "s3://b/m/1/", "sha256:0", None, "mlflow-artifacts:/1")

    def annotations(env):
        s = load_settings(env={"BRIDGE_TARGET_URI": "s3://b/p", **env})
        d = DesiredService("m", "m", "champion", v, spec=serving_defaults(s))
        return inference_service(d, serving_options(s))["metadata"]["annotations"]

    assert DEPLOYMENT_MODE_ANNOTATION not in annotations({})
    assert annotations({"BRIDGE_DEPLOYMENT_MODE": "Serverless"})[DEPLOYMENT_MODE_ANNOTATION] == (
        "Knative"
    )
    assert annotations({"BRIDGE_DEPLOYMENT_MODE": "RawDeployment"})[DEPLOYMENT_MODE_ANNOTATION] == (
        "Standard"
    )
    res = run("render", "m", "--version", "1", env={"BRIDGE_DEPLOYMENT_MODE": "Raw"})
    assert res.exit_code == 2 and "deployment mode 'Raw'" in res.output
