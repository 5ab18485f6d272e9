"""Choosing the cluster as kubectl does, checked against the local HTTP fake of the
Kubernetes API (no real cluster here): the fake answers 401 to any request without its
token, so a request that lists fine proves the credentials were found and sent.

Merging follows client-go (kubernetes/kubernetes
staging/src/k8s.io/client-go/tools/clientcmd/loader.go at commit
f183e4a1ede3f59d1c6b172c3dedd8cca7577332: ``ClientConfigLoadingRules.Load``, missing files
of KUBECONFIG skipped, the first file to set a name wins; ``ResolveLocalPaths``, relative
paths against the file's directory, the exec command only when it holds a separator).
Credentials are what lightkube 1.0.1 sends (lightkube/config/client_adapter.py:
``user_auth``: tokenFile, token, exec, basic; ``auth-provider`` refused).
"""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from bridge.errors import PermanentError, UsageError
from bridge.kube import INFERENCE_SERVICE, KubeClient, load_api_client
from tests.fake_k8s_api import TOKEN

pytestmark = pytest.mark.fake_k8s_api


def _kubeconfig(k8s_api, *, user: dict | None, context: str = "fake", **extra) -> dict:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": k8s_api.url}}],
        "contexts": [
            {"name": context, "context": {"cluster": "fake", **({"user": "u"} if user else {})}}
        ],
        "users": [{"name": "u", "user": user}] if user else [],
        "current-context": context,
    }
    return {**doc, **extra}


def _write(path, doc: dict) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _lists(kubeconfig: str, context: str | None = None) -> bool:
    KubeClient(load_api_client(kubeconfig, context)).list(INFERENCE_SERVICE, "models", "a=b")
    return True


def test_kubeconfig_list_is_merged_first_file_wins_fake_k8s_api(k8s_api, tmp_path):
    good = _kubeconfig(k8s_api, user={"token": TOKEN})
    # A second file that names the same user (a wrong token) and a context of its own.
    other = _kubeconfig(k8s_api, user={"token": "wrong"}, context="other")
    other["clusters"] = [{"name": "fake", "cluster": {"server": "http://127.0.0.1:9"}}]
    first, second = _write(tmp_path / "a", good), _write(tmp_path / "b", other)
    listing = os.pathsep.join([str(tmp_path / "missing"), first, second])
    assert _lists(listing)  # current-context of the first file, its user and cluster
    assert _lists(listing, "other")  # a context only the second file has, first file's user
    assert {r.authorization for r in k8s_api.requests()} == {f"Bearer {TOKEN}"}


def test_relative_token_file_is_read_beside_the_kubeconfig_fake_k8s_api(
    k8s_api, tmp_path, monkeypatch
):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text(TOKEN + "\n")
    path = _write(tmp_path / "conf" / "config", _kubeconfig(k8s_api, user={"tokenFile": "token"}))
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's directory
    assert _lists(path)


def test_exec_credential_plugin_gives_the_token_fake_k8s_api(k8s_api, tmp_path, monkeypatch):
    """client.authentication.k8s.io/v1beta1 ExecCredential, as kubelogin or
    gke-gcloud-auth-plugin print it; a command with a separator is relative to the file."""
    plugin = tmp_path / "bin" / "plugin"
    plugin.parent.mkdir()
    plugin.write_text(
        "#!/bin/sh\n"
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1beta1",'
        '"kind":"ExecCredential","status":{"token":"%s"}}\' "$FAKE_TOKEN"\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "./bin/plugin",
            "env": [{"name": "FAKE_TOKEN", "value": TOKEN}],
        }
    }
    path = _write(tmp_path / "config", _kubeconfig(k8s_api, user=user))
    monkeypatch.chdir("/")
    assert _lists(path)


def test_exec_plugin_that_is_missing_is_a_usage_error_fake_k8s_api(k8s_api, tmp_path):
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "nope-x"}}
    path = _write(tmp_path / "config", _kubeconfig(k8s_api, user=user))
    with pytest.raises(UsageError) as err:
        _lists(path)
    assert err.value.exit_code == 2 and "no usable Kubernetes credentials" in err.value.message


def test_context_without_user_sends_no_credentials_fake_k8s_api(k8s_api, tmp_path):
    path = _write(tmp_path / "config", _kubeconfig(k8s_api, user=None))
    with pytest.raises(PermanentError, match="401 Unauthorized"):
        _lists(path)
    assert [r.authorization for r in k8s_api.requests()] == [""]


def test_auth_provider_is_refused_in_one_line(k8s_api, tmp_path):
    user = {"auth-provider": {"name": "oidc", "config": {"id-token": "secret-id-token-123"}}}
    path = _write(tmp_path / "config", _kubeconfig(k8s_api, user=user))
    with pytest.raises(UsageError) as err:
        load_api_client(path, None)
    line = err.value.one_line()
    assert "auth-provider" in line and "exec" in line
    assert "secret-id-token-123" not in line


def test_missing_kubeconfig_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no usable Kubernetes configuration"):
        load_api_client(str(tmp_path / "nowhere"), None)
