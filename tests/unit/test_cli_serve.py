"""`bridge serve` / `bridge webhook register`: bad configuration is one clear line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BASE_ENV = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "BRIDGE_TARGET_URI": "s3://bucket/prefix",
}


def bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**os.environ, **BASE_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_secret_file_is_a_usage_error(tmp_path):
    res = bridge("serve", "--port", "0", "--webhook-secret-file", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "webhook secret file" in res.stderr


def test_bad_leader_election_value_is_a_usage_error():
    res = bridge("serve", "--port", "0", env={"BRIDGE_LEADER_ELECTION": "maybe"})
    assert res.returncode == 2
    assert "BRIDGE_LEADER_ELECTION" in res.stderr and res.stderr.count("\n") == 1


def test_leader_election_without_a_cluster_says_how_to_turn_it_off(tmp_path):
    res = bridge(
        "serve",
        "--port",
        "0",
        "--leader-election",
        "true",
        env={"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)},
    )
    assert res.returncode == 2
    assert "BRIDGE_LEADER_ELECTION=false" in res.stderr


def test_register_needs_a_secret_and_never_prints_it(tmp_path):
    res = bridge("webhook", "register", "--url", "http://x:8080/webhooks/mlflow")
    assert res.returncode == 2 and "BRIDGE_WEBHOOK_SECRET" in res.stderr
    secret = tmp_path / "secret"
    secret.write_text("very-secret-value\n")
    res = bridge("webhook", "register", "--url", "ftp://x", "--webhook-secret-file", str(secret))
    assert res.returncode == 2 and "very-secret-value" not in res.stderr + res.stdout


@pytest.mark.parametrize("cmd", [["serve", "--help"], ["webhook", "register", "--help"]])
def test_help_has_an_example(cmd):
    res = bridge(*cmd)
    assert res.returncode == 0 and "Example" in res.stdout


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from bridge.cli import cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlflow', 'kubernetes', 'lightkube', 'httpx2', 'prometheus_client', 'boto3')))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "[]"


def test_port_in_use_is_a_usage_error():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = bridge(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env={"BRIDGE_LEADER_ELECTION": "false", "BRIDGE_WEBHOOK_SECRET": "x"},
        )
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr and res.stderr.count("\n") == 1
