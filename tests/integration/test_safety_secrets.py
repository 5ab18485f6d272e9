"""No secret in any output (issue 13.7): the real command line, hostile values.

Secrets with quotes, backslashes and non-ASCII, secrets of 1 to 5 characters,
token-only and percent-encoded URL userinfo, given through the environment as a
user would; stdout, stderr and written files must never hold them. The MLflow
and S3 servers are the session's real local ones (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from bridge import devstack

from .conftest import unique

pytestmark = pytest.mark.integration

PASSWORD = 'pa"ss\\wörd-9'  # quote, backslash, non-ASCII
TOKEN = "Qz7"  # short: never masked before
KEY_ID = "AKIAHOSTILE0"
ONE = "ж"  # one character


def _dead_port() -> int:
    return devstack.free_port()  # nothing listens there


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, quote(PASSWORD, safe=""), json.dumps(PASSWORD)[1:-1], TOKEN):
            assert secret not in text, (secret, text)


@pytest.mark.parametrize("output", ["text", "json"])
def test_config_masks_credentials_in_every_url(scope, output):
    env = {
        "MLFLOW_TRACKING_URI": f"http://alice:{quote(PASSWORD, safe='')}@mlflow.example:5000",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "BRIDGE_TARGET_ENDPOINT_URL": f"http://{TOKEN}@minio.example:9000",
        "BRIDGE_SERVING_S3_ENDPOINT_URL": f"https://{KEY_ID}:{ONE}@s3.example",
    }
    res = scope.run("config", "--output", output, env=env)
    assert res.returncode == 0, res.stderr
    _assert_clean(res.stdout, res.stderr)
    assert KEY_ID not in res.stdout and ONE not in res.stdout
    assert "mlflow.example:5000" in res.stdout and "***@minio.example:9000" in res.stdout
    if output == "json":
        values = json.loads(res.stdout)
        assert values["target_endpoint_url"] == {
            "value": "http://***@minio.example:9000",
            "source": "env BRIDGE_TARGET_ENDPOINT_URL",
        }


@pytest.mark.parametrize("debug", [False, True])
def test_sync_failure_with_json_logs_shows_no_secret(scope, debug):
    """MLflow unreachable at a token-only URL: one error line (and, with --debug, a
    traceback), JSON logs on stderr; none of them may hold the token or password."""
    env = {
        "MLFLOW_TRACKING_URI": f"http://{TOKEN}@127.0.0.1:{_dead_port()}",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "BRIDGE_MLFLOW_MAX_RETRIES": "0",
    }
    args = (["--debug"] if debug else []) + ["--log-format", "json", "sync", "--once"]
    res = scope.run(*args, env=env)
    assert res.returncode == 3, res.stderr
    assert ("Traceback" in res.stderr) is debug
    _assert_clean(res.stdout, res.stderr)
    for line in res.stderr.splitlines():
        if line.startswith("{"):
            _assert_clean(json.dumps(json.loads(line), ensure_ascii=False))
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")


def test_serving_account_never_carries_endpoint_userinfo(scope, register, client, tmp_path):
    """The s3-endpoint annotation is read by anyone who can read the ServiceAccount."""
    model = unique("secret-sa")
    [v1] = register(model, 1)
    client.set_registered_model_alias(model, scope.alias, v1)
    out = tmp_path / "gitops"
    endpoint = f"http://{KEY_ID}:{quote(PASSWORD, safe='')}@minio.minio.svc:9000"
    env = {"BRIDGE_SERVING_S3_ENDPOINT_URL": endpoint, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    res = scope.run(
        "--log-format",
        "json",
        "sync",
        "--once",
        "--model",
        model,
        "--output-dir",
        str(out),
        env=env,
    )
    assert res.returncode == 0, res.stderr
    _assert_clean(res.stdout, res.stderr)
    files = {p.name: p.read_text() for p in out.rglob("*.yaml")}
    accounts = [text for text in files.values() if "kind: ServiceAccount" in text]
    assert accounts, files
    for text in files.values():
        _assert_clean(text)
        assert KEY_ID not in text
    assert "s3-endpoint" not in accounts[0]  # KServe reads it from the Secret
    # ... which `bridge credentials` prints: the endpoint without its userinfo.
    secret = scope.run("credentials", "--namespace", "default", env=env)
    assert secret.returncode == 0, secret.stderr
    _assert_clean(secret.stdout, secret.stderr)
    assert KEY_ID not in secret.stdout
    assert "serving.kserve.io/s3-endpoint: minio.minio.svc:9000" in secret.stdout
