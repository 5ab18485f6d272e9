"""An empty or wrong registry never wipes serving (issue 13, item 6).

Real `mlflow server` (sqlite) and moto_server as the S3 emulator, through the session
fixtures; a *fresh* MLflow registry is a new sqlite database the MLflow client creates
on first use (``sqlite:///…`` tracking URI: it answers, and lists nothing approved).
The cluster case talks to the local HTTP fake of the Kubernetes API (``fake_k8s_api``).

A pass that would remove more than BRIDGE_MAX_REMOVAL_FRACTION (default 0.5) of the
served models, or every one of them, removes nothing, exits 1 with one line, and
`bridge status` / the daemon's /status say why; ``--allow-mass-removal`` (or
BRIDGE_ALLOW_MASS_REMOVAL) lets it through.
"""

from __future__ import annotations

import json

import pytest

from bridge.names import k8s_name

from .conftest import unique
from .daemon_helpers import start_daemon, wait_until

pytestmark = pytest.mark.integration


def _serve(scope, register, client, n: int) -> list[str]:
    """n approved models (one logged model, registered n times), synced to the output dir."""
    names = [unique("served") for _ in range(n)]
    [v] = register(names[0], 1)
    mv = client.get_model_version(names[0], v)
    for name in names[1:]:
        client.create_registered_model(name)
        client.create_model_version(
            name, mv.source, run_id=mv.run_id, model_id=mv.model_id or mv.source.rsplit("/")[-1]
        )
    for name in names:
        client.set_registered_model_alias(name, scope.alias, "1")
    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    assert res.returncode == 0, res.stderr
    assert _served_files(scope) == {f"{k8s_name(n)}.yaml" for n in names}
    return names


def _served_files(scope) -> set[str]:
    return {p.name for p in scope.output_dir.glob("*.yaml") if p.name.count(".") == 1} - {
        "kustomization.yaml"
    }


def _snapshot(scope) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(scope.output_dir.iterdir())}


def _errors(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def _held_reasons(rows: list[dict], names: list[str]) -> dict[str, list[str]]:
    by_name = {r["name"]: r for r in rows}
    return {n: [x for x in by_name[n]["reasons"] if "holds back its removal" in x] for n in names}


def test_fresh_empty_registry_never_wipes_the_output_dir(scope, register, client, tmp_path):
    """A wrong MLFLOW_TRACKING_URI pointing at a fresh, empty registry: `bridge sync`
    keeps every manifest and exits 1 with one line; `bridge status` and a running
    daemon (its log and /status) say why; --allow-mass-removal then removes them."""
    names = _serve(scope, register, client, 2)
    before = _snapshot(scope)
    fresh = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'fresh-mlflow.db'}"}

    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir), env=fresh)
    assert _snapshot(scope) == before, res.stderr  # nothing removed, nothing rewritten
    assert res.returncode == 1, res.stderr
    [line] = _errors(res)
    assert "refusing to remove 2 served InferenceService(s) from the output directory" in line
    assert "every served model (2 of 2); nothing was removed" in line
    assert "--allow-mass-removal" in line and "MLFLOW_TRACKING_URI" in line
    assert "Traceback" not in res.stderr

    status = scope.run(
        "status", "--output", "json", env={**fresh, "BRIDGE_OUTPUT_DIR": str(scope.output_dir)}
    )
    rows = json.loads(status.stdout)
    assert {r["name"]: r["state"] for r in rows} == {n: "orphaned" for n in names}
    held = _held_reasons(rows, names)
    assert all(len(v) == 1 and "every served model (2 of 2)" in v[0] for v in held.values()), held

    daemon = start_daemon(
        {
            **scope.env,
            **fresh,
            "BRIDGE_LEADER_ELECTION": "false",
            "BRIDGE_POLL_INTERVAL": "600",
            "BRIDGE_MLFLOW_MAX_RETRIES": "0",
        },
        tmp_path,
        "--output-dir",
        str(scope.output_dir),
    )
    try:
        wait_until(
            lambda: "refusing to remove 2 served" in daemon.log(), 120, "no refused pass", daemon
        )
        assert _snapshot(scope) == before
        code, body = daemon.get("/status")
        assert code == 200, body
        assert all(len(v) == 1 for v in _held_reasons(json.loads(body), names).values()), body
    finally:
        daemon.terminate()

    res = scope.run(
        "sync", "--once", "--output-dir", str(scope.output_dir), "--allow-mass-removal", env=fresh
    )
    assert res.returncode == 0, res.stderr
    assert _served_files(scope) == set()


def test_one_pass_removes_at_most_the_configured_share(scope, register, client):
    """Removing 2 of 3 served models is more than the default 0.5: refused, all kept.
    With BRIDGE_MAX_REMOVAL_FRACTION=0.7 they go. Removing the last one is removing
    every served model: refused even at a fraction of 1, allowed by the setting."""
    a, b, c = _serve(scope, register, client, 3)
    before = _snapshot(scope)
    for name in (b, c):
        client.delete_registered_model_alias(name, scope.alias)

    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    assert res.returncode == 1, res.stderr
    [line] = _errors(res)
    assert "that is 2 of 3, more than BRIDGE_MAX_REMOVAL_FRACTION=0.5" in line
    assert _snapshot(scope) == before
    status = scope.run(
        "status", "--output", "json", env={"BRIDGE_OUTPUT_DIR": str(scope.output_dir)}
    )
    rows = json.loads(status.stdout)
    held = _held_reasons(rows, [a, b, c])
    assert held[a] == [] and len(held[b]) == 1 and len(held[c]) == 1, held

    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"BRIDGE_MAX_REMOVAL_FRACTION": "0.7"},
    )
    assert res.returncode == 0, res.stderr
    assert _served_files(scope) == {f"{k8s_name(a)}.yaml"}

    client.delete_registered_model_alias(a, scope.alias)
    last = _snapshot(scope)
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"BRIDGE_MAX_REMOVAL_FRACTION": "1"},
    )
    assert res.returncode == 1 and "every served model (1 of 1)" in res.stderr, res.stderr
    assert _snapshot(scope) == last
    res = scope.run(
        "sync",
        "--once",
        "--output-dir",
        str(scope.output_dir),
        env={"BRIDGE_ALLOW_MASS_REMOVAL": "true"},
    )
    assert res.returncode == 0, res.stderr
    assert _served_files(scope) == set()


@pytest.mark.fake_k8s_api
def test_cluster_prune_is_guarded_too_fake_k8s_api(scope, k8s_api):
    """--apply against the fake API: nothing approved (this test's alias is set on no
    model) must not delete the live InferenceServices bridge owns, dry run or not."""
    owned = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "namespace": "models",
            "labels": {"app.kubernetes.io/managed-by": "mlflow-kubeflow-bridge"},
        },
    }
    live = [{**owned, "metadata": {**owned["metadata"], "name": n}} for n in ("fraud", "churn")]
    k8s_api.seed(*live)
    env = {"BRIDGE_KUBECONFIG": str(k8s_api.kubeconfig), "BRIDGE_NAMESPACE": "models"}

    for extra in (["--dry-run"], []):
        res = scope.run("sync", "--once", "--apply", *extra, env=env)
        assert res.returncode == 1, res.stderr
        [line] = _errors(res)
        assert "refusing to remove 2 served InferenceService(s) from the cluster" in line
        assert "2 kept (removal refused)" in res.stdout
    assert not k8s_api.requests("DELETE")
    assert len(k8s_api.objects("InferenceService")) == 2

    res = scope.run("sync", "--once", "--apply", "--allow-mass-removal", env=env)
    assert res.returncode == 0, res.stderr
    assert not k8s_api.objects("InferenceService")
