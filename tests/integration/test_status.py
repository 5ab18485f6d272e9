"""`bridge status` against the real local MLflow server and S3 endpoint.

Each state is produced on purpose and read back through the real command line
(table and JSON, exit codes) and through the HTML page.
"""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser

import pytest
import yaml

from bridge.kfp_run import KfpLineage
from bridge.names import k8s_name

from .conftest import unique

pytestmark = pytest.mark.integration


def status(scope, *args):
    return scope.run("status", "--output-dir", str(scope.output_dir), *args)


def status_json(scope, *args, expect: int = 0) -> dict[str, dict]:
    res = status(scope, "--output", "json", *args)
    assert res.returncode == expect, res.stdout + res.stderr
    return {row["name"]: row for row in json.loads(res.stdout)}


def sync(scope):
    res = scope.run("sync", "--once", "--output-dir", str(scope.output_dir))
    assert res.returncode == 0, res.stderr


def test_pending_in_sync_drifted_orphaned_with_lineage(scope, register, client):
    model = unique("st-life")
    v1, v2 = register(model, 2)
    run_id = client.get_model_version(model, v1).run_id
    # The lineage tags exactly as the KFP components write them (bridge.kfp_run's writer).
    lineage = KfpLineage.resolve(pipeline_name="train-churn", run_id="pr-1234", task_name="train")
    for key, value in lineage.tags().items():
        client.set_tag(run_id, key, value)

    # Promoted, not synced: pending.
    client.set_registered_model_alias(model, scope.alias, v1)
    row = status_json(scope, "--model", model)[model]
    assert row["state"] == "pending"
    assert row["version"] == v1 and row["store"]["published"] is False
    assert any("not published" in r for r in row["reasons"])

    # Synced: in sync, with the store, the manifest and the lineage side by side.
    sync(scope)
    row = status_json(scope, "--model", model, "--verify")[model]
    assert row["state"] == "in_sync", row["reasons"]
    isvc = yaml.safe_load((scope.output_dir / f"{k8s_name(model)}.yaml").read_text())
    store = row["store"]
    assert store["published"] and store["verified"] and store["check"] == "sha256"
    assert (
        store["digest"]
        == isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/content-digest"]
    )
    assert store["storage_uri"] == isvc["spec"]["predictor"]["model"]["storageUri"]
    [served] = row["served"]
    assert served["source"] == "output-dir" and served["version"] == v1
    assert row["run_id"] == run_id
    assert row["lineage"]["kfp_pipeline_run_id"] == "pr-1234"
    assert row["lineage"]["kfp_pipeline_name"] == "train-churn"
    assert row["lineage"]["kfp_task_name"] == "train"
    assert row["lineage"]["run_status"] == "FINISHED"
    table = status(scope, "--model", model)
    assert table.returncode == 0
    assert "in_sync" in table.stdout and "pr-1234" in table.stdout

    # Alias moved without a sync: the emitted manifest serves the old version.
    client.set_registered_model_alias(model, scope.alias, v2)
    row = status_json(scope, "--model", model, expect=1)[model]
    assert row["state"] == "drifted"
    assert any(f"serves version {v1}" in r for r in row["reasons"]), row["reasons"]
    table = status(scope, "--model", model)
    assert table.returncode == 1 and "drifted" in table.stdout
    assert "\x1b[" not in table.stdout  # no colour when stdout is not a terminal

    # Synced again, then the alias is deleted: served but no longer approved.
    sync(scope)
    client.delete_registered_model_alias(model, scope.alias)
    row = status_json(scope, "--model", model)[model]
    assert row["state"] == "orphaned" and row["version"] is None
    assert row["served"][0]["version"] == v2
    table = status(scope, "--model", model)
    assert table.returncode == 0 and "orphaned" in table.stdout


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: dict[str, str] = {}
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-model" in a:
            self.rows[a["data-model"]] = a["data-state"]
        if tag == "script":
            self.scripts += 1


def test_broken_and_hand_edited_drift_in_one_view(scope, register, client, s3, monkeypatch):
    ok, tampered, edited = unique("st-ok"), unique("st-bad"), unique("st-edit")
    for name in (ok, tampered, edited):
        [v] = register(name, 1)
        client.set_registered_model_alias(name, scope.alias, v)
    sync(scope)
    rows = status_json(scope)
    assert {n: rows[n]["state"] for n in (ok, tampered, edited)} == dict.fromkeys(
        (ok, tampered, edited), "in_sync"
    )

    # Same-size tampering with a published file: only --verify (re-hash) sees it.
    bucket, _, prefix = rows[tampered]["store"]["storage_uri"][len("s3://") :].partition("/")
    key = prefix + "MLmodel"
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=data.replace(b"python_function", b"PYTHON_FUNCTION"))
    assert status_json(scope, "--model", tampered)[tampered]["state"] == "in_sync"
    row = status_json(scope, "--model", tampered, "--verify", expect=1)[tampered]
    assert row["state"] == "broken" and row["store"]["verified"] is False
    assert any("MLmodel does not match its SHA-256" in r for r in row["reasons"]), row["reasons"]
    # A file that went missing is seen without --verify.
    s3.delete_object(Bucket=bucket, Key=prefix + "conda.yaml")
    row = status_json(scope, "--model", tampered, expect=1)[tampered]
    assert row["state"] == "broken" and any("conda.yaml is missing" in r for r in row["reasons"])

    # A hand-edited storageUri in the emitted YAML: drifted.
    path = scope.output_dir / f"{k8s_name(edited)}.yaml"
    path.write_text(path.read_text().replace(f"/{k8s_name(edited)}/", "/elsewhere/"))
    res = status(scope, "--output", "json")
    assert res.returncode == 1, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows[ok]["state"] == "in_sync"
    assert rows[tampered]["state"] == "broken"
    assert rows[edited]["state"] == "drifted"
    assert any("storageUri" in r for r in rows[edited]["reasons"])

    table = status(scope)
    assert table.returncode == 1
    lines = {
        ln.split()[0]: ln.split()[1] for ln in table.stdout.splitlines() if ln.startswith("st-")
    }
    assert lines[ok] == "in_sync" and lines[tampered] == "broken" and lines[edited] == "drifted"

    # The same view as the daemon's HTML page.
    from bridge.settings import load_settings
    from bridge.status import status_report
    from bridge.status_html import render_html

    settings = load_settings(
        {"output_dir": str(scope.output_dir), "target_uri": scope.target_uri},
        env={**os.environ, **scope.env},
    )
    report = status_report(settings)
    # One listing of the whole target (used for large registries) sees the same.
    monkeypatch.setattr("bridge.status.BULK_LISTING_FROM", 1)
    assert status_report(settings) == report
    parser = _Rows()
    parser.feed(render_html(report))
    assert parser.scripts == 0
    assert {n: parser.rows[n] for n in (ok, tampered, edited)} == {
        ok: "in_sync",
        tampered: "broken",
        edited: "drifted",
    }, [r["reasons"] for r in report if r["name"] in (ok, edited)]


def test_unknown_model_and_bad_configuration(scope):
    assert status_json(scope, "--model", unique("never-registered")) == {}
    res = scope.run("status", env={"BRIDGE_TARGET_URI": ""})
    assert res.returncode == 2
    assert "target-uri is not set" in res.stderr and "Traceback" not in res.stderr
