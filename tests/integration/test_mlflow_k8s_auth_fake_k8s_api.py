"""MLflow authentication the Kubeflow way: Kubernetes service-account tokens.

Client side is MLflow's own: MLFLOW_TRACKING_AUTH=kubernetes (mlflow 3.17.2,
mlflow/tracking/request_auth/kubernetes_request_auth_provider.py: the pod's token file,
else the kubeconfig's credentials) and bridge's bearer-token-file provider for a projected
token at any path (bridge/mlflow_auth.py). Server side, the plugin Kubeflow uses
(mlflow-kubernetes-plugins) is not on the package index here, so tests/integration/
mlflow_k8s_auth.py stands in for it in front of the real MLflow server, asking the fake
Kubernetes API (no real one can run here) for a TokenReview and a SubjectAccessReview on
every request. What is checked: every bridge command that talks to MLflow (status, promote,
rollback, history, sync) authenticates this way with nothing else configured, a rotated
token file is picked up, and a refusal is one clear line with the contract's exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fake_k8s_api import TOKEN, FakeKubeAPI

from .conftest import unique
from .mlflow_k8s_auth import KubernetesAuthProxy

pytestmark = [pytest.mark.integration, pytest.mark.fake_k8s_api]

BRIDGE_SA = "system:serviceaccount:mlops:mlflow-bridge"
READER_SA = "system:serviceaccount:mlops:reader"


@pytest.fixture
def authed(scope, tmp_path):
    """(env for bridge against MLflow behind Kubernetes auth, the proxy, the fake API)."""
    api = FakeKubeAPI().start()
    api.state.reviewed_tokens = {TOKEN: BRIDGE_SA, "reader-token": READER_SA}
    api.state.review_verbs = {BRIDGE_SA: {"get", "update"}, READER_SA: {"get"}}
    proxy = KubernetesAuthProxy(scope.env["MLFLOW_TRACKING_URI"], api.url)
    env = {
        **scope.env,
        "MLFLOW_TRACKING_URI": proxy.url,
        "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        "BRIDGE_MLFLOW_MAX_RETRIES": "0",
    }
    for var in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    yield env, proxy, api
    proxy.stop()
    api.stop()


def _bridge(env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bridge_authenticates_with_its_service_account_token(authed, register, scope, tmp_path):
    env, proxy, _ = authed
    env = {**env, "MLFLOW_TRACKING_AUTH": "kubernetes"}
    model = unique("k8s-auth")
    v1, v2 = register(model, 2)  # straight to MLflow: only bridge goes through the auth

    for args in (
        ("promote", model, "--version", v1, "-o", "json"),
        ("promote", model, "--version", v2, "-o", "json"),
        ("rollback", model, "-o", "json"),
        ("history", model, "-o", "json"),
        ("sync", "--once", "--model", model, "--output-dir", str(tmp_path / "out")),
        ("status", "--model", model, "--output-dir", str(tmp_path / "out"), "-o", "json"),
    ):
        res = _bridge(env, *args)
        assert res.returncode == 0, (args, res.stderr)
    assert [e["to"] for e in json.loads(_bridge(env, "history", model, "-o", "json").stdout)] == [
        v1,
        v2,
        v1,
    ]
    assert proxy.users() == {BRIDGE_SA}  # every request reached MLflow authenticated


def test_without_credentials_or_rights_bridge_says_so_in_one_line(authed, register):
    env, proxy, _ = authed
    model = unique("k8s-auth-no")
    [v1] = register(model, 1)

    res = _bridge(env, "history", model)  # no MLFLOW_TRACKING_AUTH: no token sent
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "rejected the credentials (UNAUTHENTICATED)" in line and "MLFLOW_TRACKING_AUTH" in line

    reader = {**env, "MLFLOW_TRACKING_AUTH": "bearer-token-file"}
    token_file = os.path.join(os.path.dirname(env["KUBECONFIG"]), "reader-token")
    with open(token_file, "w") as f:
        f.write("reader-token\n")
    reader["BRIDGE_MLFLOW_TOKEN_FILE"] = token_file
    assert _bridge(reader, "history", model).returncode == 0  # get: allowed
    res = _bridge(reader, "promote", model, "--version", v1)  # update: refused
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "refused it to this identity (PERMISSION_DENIED)" in line, line
    assert TOKEN not in res.stderr and "reader-token" not in res.stderr


def test_a_rotated_token_file_is_read_again(authed, tmp_path):
    """In one long-lived process (as the daemon is): the kubelet rewrites the projected
    token; the next request carries the new one."""
    env, proxy, api = authed
    api.state.reviewed_tokens["rotated-token"] = "system:serviceaccount:mlops:rotated"
    api.state.review_verbs["system:serviceaccount:mlops:rotated"] = {"get"}
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    code = f"""
import os, time
os.environ.update({{"MLFLOW_TRACKING_AUTH": "bearer-token-file",
                   "BRIDGE_MLFLOW_TOKEN_FILE": {str(token_file)!r}}})
from mlflow import MlflowClient
client = MlflowClient(tracking_uri={proxy.url!r})
client.search_registered_models(max_results=1)
time.sleep(0.05)  # a new mtime for the rewrite below
open({str(token_file)!r}, "w").write("rotated-token")
client.search_registered_models(max_results=1)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    users = [user for _, _, user in proxy.seen]
    assert users[0] == BRIDGE_SA and users[-1] == "system:serviceaccount:mlops:rotated", users
