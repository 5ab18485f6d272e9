"""Registry safety (issue 13, items 3 and 5), against the real MLflow server and moto_server.

What the tests (and the fix) rely on, read in the installed mlflow 3.17.2:

* mlflow/utils/search_utils.py -- ``SearchModelVersionUtils.parse_search_filter``
  tokenizes the filter with sqlparse (a string token is ``'(''|\\'|[^'])*'``,
  sqlparse/keywords.py) and reads an ``IN (...)`` list with ``ast.literal_eval``
  (``_parse_list_from_sql_token``): a raw newline or a trailing backslash in a
  quoted name makes the whole search fail with INVALID_PARAMETER_VALUE.
* mlflow/store/model_registry/sqlalchemy_store.py -- ``IN`` becomes
  ``column.in_(values)`` (bound values, exact: ``%`` and ``_`` are no wildcards);
  ``get_model_version_download_uri`` is ``storage_location or source``.
* mlflow/server/handlers.py -- ``_create_model_version`` / ``_validate_source_run``
  accept an ``s3://`` source in any bucket (only local paths, ``runs:``,
  ``models:`` and ``mlflow-artifacts:`` sources are checked), so a registry user
  can point a version at another bucket.
* moto_server (moto 5.2.5, moto/core/responses.py) records, for an IAM access key,
  the last service it was used with (``mark_account_as_visited``); the
  credentials test reads that back to see which keys reached the S3 API.
"""

from __future__ import annotations

import json
import uuid

import pytest

from bridge import devstack
from tests.integration.conftest import unique
from tests.integration.daemon_helpers import start_daemon, wait_until


def hostile_names(base: str) -> list[str]:
    return [
        f"{base}\nnewline",
        f"{base} it's",
        f'{base} say "hi"',
        f"{base} both ' and \" and \\ mixed",
        f"{base} trailing\\",
        f"{base} 100%_like",
        f"{base}\r\ttabs",
        f"{base} ünïcödé ☃ 模型 \U0001f600",
    ]


def same_source_versions(client, register, names: list[str], alias: str) -> str:
    """One real logged model; every name gets a version of it (the same legit source)."""
    base = unique("hostile-src")
    [v] = register(base, 1)
    mv = client.get_model_version(base, v)
    for name in names:
        client.create_registered_model(name)
        made = client.create_model_version(
            name, mv.source, run_id=mv.run_id, model_id=mv.source.removeprefix("models:/")
        )
        client.set_registered_model_alias(name, alias, made.version)
    return base


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


def test_hostile_names_sync_and_status_and_one_bad_model_does_not_stop_the_rest(
    scope, register, client
):
    """Newlines, quotes, backslashes, LIKE wildcards and unicode in model names all sync
    and show in_sync; a model with a refused bridge.* tag fails on its own, with its
    reason in `bridge sync` and a `broken` row in `bridge status`. Before the fix every
    pass and every status failed with exit 2 ("ill-formed list")."""
    base = unique("hostile")
    names = hostile_names(base)
    bad_tag = f"{base}-bad-tag"
    source_model = same_source_versions(client, register, [*names, bad_tag], scope.alias)
    client.set_registered_model_tag(bad_tag, "bridge.min_replicas", "lots")
    out = scope.output_dir

    res = scope.run("sync", "--once", "--output-dir", str(out), "--output", "json")
    assert res.returncode == 1, res.stderr  # a check said no (the bad tag), nothing else
    results = by_name(json.loads(res.stdout))
    for name in names:
        assert results[name]["state"] == "synced", (name, results[name])
    assert results[bad_tag]["state"] == "failed"
    assert "bridge.min_replicas" in results[bad_tag]["error"]
    error_lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "bridge.min_replicas" in error_lines[0], res.stderr
    assert source_model not in results  # not approved under this test's alias

    res = scope.run("status", "--output-dir", str(out), "--output", "json")
    assert res.returncode == 1, res.stderr  # one broken model
    rows = by_name(json.loads(res.stdout))
    for name in names:
        assert rows[name]["state"] == "in_sync", (name, rows[name])
    assert rows[bad_tag]["state"] == "broken"
    assert any("bridge.min_replicas" in reason for reason in rows[bad_tag]["reasons"])

    # The people's table keeps one line per model whatever the name holds.
    res = scope.run("status", "--output-dir", str(out))
    assert repr(names[0]) in res.stdout, res.stdout


def test_daemon_poll_syncs_the_others_and_logs_the_failed_model(scope, register, client, tmp_path):
    """A full (poll) pass of the real `bridge serve` with a newline-named model and a model
    with a refused tag: the pass is partial, the good models are emitted, the failed one
    is logged with its reason. Before the fix the pass failed as a whole, every time."""
    base = unique("poll")
    good, bad_tag = f"{base}\nnewline", f"{base}-bad-tag"
    same_source_versions(client, register, [good, bad_tag], scope.alias)
    client.set_registered_model_tag(bad_tag, "bridge.min_replicas", "lots")
    out = tmp_path / "daemon-out"
    env = {
        **scope.env,
        "BRIDGE_WEBHOOK_SECRET": uuid.uuid4().hex,
        "BRIDGE_POLL_INTERVAL": "600",  # the first pass at start-up is the one checked
        "BRIDGE_LEADER_ELECTION": "false",
        "BRIDGE_MLFLOW_MAX_RETRIES": "0",
    }
    daemon = start_daemon(env, tmp_path, "--output-dir", str(out))
    try:
        wait_until(lambda: daemon.metric("bridge_syncs_total") >= 1, 120, "no pass", daemon)
        assert daemon.metric("bridge_syncs_total", result="partial") >= 1, daemon.log()
        from bridge.names import k8s_name

        assert (out / f"{k8s_name(good)}.yaml").exists(), daemon.log()
        assert not (out / f"{k8s_name(bad_tag)}.yaml").exists()
        failed = [line for line in daemon.log().splitlines() if "failed:" in line]
        assert any(repr(bad_tag) in line and "bridge.min_replicas" in line for line in failed), (
            daemon.log()
        )
    finally:
        daemon.terminate()


def test_a_batch_the_server_refuses_is_read_one_version_at_a_time(scope, register, client):
    """When the server refuses a batched filter (an older server, a name its parser
    cannot take), the versions are read one by one instead of failing the pass.
    The refusal is real: the filter is written the old way, which this server refuses."""
    from bridge import registry as registry_module
    from bridge.settings import load_settings

    base = unique("refused")
    names = [f"{base}\nnewline", f"{base}-plain"]
    same_source_versions(client, register, names, scope.alias)
    reg = registry_module.Registry(load_settings())
    old_style = lambda value: f"'{value}'"  # noqa: E731 - the quoting before the fix
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_filter_literal", old_style)
        reads = reg.model_versions([(n, "1") for n in names])
    assert sorted(k[0] for k in reads.found) == sorted(names)
    assert reads.failed == {}


@pytest.fixture
def other_bucket(s3):
    """A bucket bridge's credentials can read that is not MLflow's: the exfiltration target."""
    bucket = unique("not-mlflow")
    s3.create_bucket(Bucket=bucket)
    return bucket


def copy_model_files(s3, client, model: str, version: str, bucket: str, prefix: str) -> None:
    """Put a real model's files (from MLflow's artifact bucket) under s3://bucket/prefix/."""
    uri = client.get_model_version_download_uri(model, version)
    assert uri.startswith("mlflow-artifacts:/"), uri
    src_prefix = uri[len("mlflow-artifacts:") :].lstrip("/").rstrip("/") + "/"
    listing = s3.list_objects_v2(Bucket=devstack.ARTIFACT_BUCKET, Prefix=src_prefix)
    for obj in listing["Contents"]:
        rel = obj["Key"][len(src_prefix) :]
        s3.copy_object(
            Bucket=bucket,
            Key=f"{prefix}/{rel}",
            CopySource={"Bucket": devstack.ARTIFACT_BUCKET, "Key": obj["Key"]},
        )


def test_a_source_outside_mlflows_artifact_roots_is_refused(
    scope, register, client, s3, other_bucket
):
    """A registry user registers a version whose source is another bucket: bridge refuses
    it (exit 1, one line naming the source and BRIDGE_ALLOWED_SOURCE_PREFIXES), nothing of
    it lands in the target bucket, the other models sync and `bridge status` marks it
    broken. Listing the location in BRIDGE_ALLOWED_SOURCE_PREFIXES lets it through.
    Before the fix the secret files were copied into the serving bucket."""
    from bridge.names import k8s_name

    good = unique("legit")
    [v] = register(good, 1)
    client.set_registered_model_alias(good, scope.alias, v)
    copy_model_files(s3, client, good, v, other_bucket, "secret")
    s3.put_object(Bucket=other_bucket, Key="secret/payroll.csv", Body=b"alice,100000\n")
    # Near-miss prefixes an allow-list must not confuse with the real one.
    lookalike = f"{other_bucket}-evil"
    s3.create_bucket(Bucket=lookalike)

    exfil = unique("exfil")
    client.create_registered_model(exfil)
    made = client.create_model_version(exfil, f"s3://{other_bucket}/secret/")
    client.set_registered_model_alias(exfil, scope.alias, made.version)

    out = scope.output_dir
    res = scope.run("sync", "--once", "--output-dir", str(out), "--output", "json")
    assert res.returncode == 1, res.stderr
    results = by_name(json.loads(res.stdout))
    assert results[good]["state"] == "synced"
    assert results[exfil]["state"] == "failed"
    error = results[exfil]["error"]
    assert f"s3://{other_bucket}/secret/" in error and "BRIDGE_ALLOWED_SOURCE_PREFIXES" in error
    target_bucket, _, target_prefix = scope.target_uri[len("s3://") :].partition("/")
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=target_bucket, Prefix=target_prefix + "/").get(
            "Contents", []
        )
    ]
    assert keys and not [k for k in keys if f"/{k8s_name(exfil)}/" in k], keys
    assert not [k for k in keys if k.endswith("payroll.csv")], keys
    assert not (out / f"{k8s_name(exfil)}.yaml").exists()

    res = scope.run("status", "--output-dir", str(out), "--output", "json")
    rows = by_name(json.loads(res.stdout))
    assert rows[exfil]["state"] == "broken", rows[exfil]
    assert any(f"s3://{other_bucket}/secret/" in r for r in rows[exfil]["reasons"])
    assert rows[good]["state"] == "in_sync"

    # An allow-list entry for a look-alike bucket or a sibling prefix does not open it ...
    near_misses = f"s3://{lookalike}/secret/,s3://{other_bucket}/secret-archive/"
    res = scope.run(
        "sync", "--once", "--model", exfil, env={"BRIDGE_ALLOWED_SOURCE_PREFIXES": near_misses}
    )
    assert res.returncode == 1 and "BRIDGE_ALLOWED_SOURCE_PREFIXES" in res.stderr, res.stderr
    # ... the operator listing that very location does.
    res = scope.run(
        "sync",
        "--once",
        "--model",
        exfil,
        env={"BRIDGE_ALLOWED_SOURCE_PREFIXES": f"s3://{other_bucket}/secret"},
    )
    assert res.returncode == 0, res.stderr


def test_separate_source_and_target_profiles_are_used_and_stream(scope, register, client, tmp_path):
    """BRIDGE_SOURCE_PROFILE / BRIDGE_TARGET_PROFILE name standard AWS profiles; each
    client signs with its own profile's keys (not the AWS_* keys in the environment),
    and since the identities differ no server-side copy is attempted: files stream.

    What it proves: moto_server records the last service each IAM access key was used
    with, so the profiles' keys reaching its S3 API, and the environment's key not, is
    seen from the server side. moto_server does not enforce cross-identity access, so
    that a CopyObject would have been refused is not shown here; the transfer mode is
    read from bridge's own per-version log line."""
    import boto3

    endpoint = scope.env["BRIDGE_TARGET_ENDPOINT_URL"]
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=scope.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=scope.env["AWS_SECRET_ACCESS_KEY"],
    )
    keys = {}
    for role in ("source", "target", "env"):
        user = unique(f"bridge-{role}")
        iam.create_user(UserName=user)
        keys[role] = iam.create_access_key(UserName=user)["AccessKey"]
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "".join(
            f"[bridge-{role}]\naws_access_key_id = {keys[role]['AccessKeyId']}\n"
            f"aws_secret_access_key = {keys[role]['SecretAccessKey']}\n"
            for role in ("source", "target")
        )
    )
    config = tmp_path / "config"
    config.write_text("[profile bridge-source]\nregion = us-east-1\n")

    model = unique("profiles")
    [v] = register(model, 1)
    client.set_registered_model_alias(model, scope.alias, v)

    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
        "AWS_ACCESS_KEY_ID": keys["env"]["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": keys["env"]["SecretAccessKey"],
        "BRIDGE_SOURCE_PROFILE": "bridge-source",
        "BRIDGE_TARGET_PROFILE": "bridge-target",
    }
    res = scope.run("sync", "--once", "--model", model, env=env)
    assert res.returncode == 0, res.stderr
    assert "streaming read + multipart upload" in res.stderr, res.stderr
    assert "server-side copy" not in res.stderr

    def last_service(role: str) -> str | None:
        used = iam.get_access_key_last_used(AccessKeyId=keys[role]["AccessKeyId"])
        return used.get("AccessKeyLastUsed", {}).get("ServiceName")

    assert last_service("source") == "s3"
    assert last_service("target") == "s3"
    assert last_service("env") != "s3"

    # A profile that does not exist is a configuration error: one line, exit 2
    # (a fresh target, so the version must be read again).
    fresh = {**env, "BRIDGE_SOURCE_PROFILE": "nope", "BRIDGE_TARGET_URI": scope.target_uri + "-2"}
    res = scope.run("sync", "--once", "--model", model, env=fresh)
    assert res.returncode == 2, res.stderr
    assert "'nope'" in res.stderr and "BRIDGE_SOURCE_PROFILE" in res.stderr


def test_a_source_under_its_runs_experiment_artifact_location_is_copied(
    scope, register, client, s3, other_bucket
):
    """An MLflow server without --serve-artifacts hands out s3:// locations under each
    experiment's artifact_location: a version under the location of its run's experiment
    is copied with no setting; the same run cannot vouch for a location outside it."""
    legit = unique("legit-src")
    [v] = register(legit, 1)
    experiment = client.create_experiment(
        unique("s3-rooted"), artifact_location=f"s3://{other_bucket}/experiments/1"
    )
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id)
    inside = f"experiments/1/{run.info.run_id}/artifacts/model"
    copy_model_files(s3, client, legit, v, other_bucket, inside)
    copy_model_files(s3, client, legit, v, other_bucket, "experiments/10/model")

    ok, outside = unique("exp-root"), unique("exp-sibling")
    for name, prefix in ((ok, inside), (outside, "experiments/10/model")):
        client.create_registered_model(name)
        made = client.create_model_version(
            name, f"s3://{other_bucket}/{prefix}", run_id=run.info.run_id
        )
        client.set_registered_model_alias(name, scope.alias, made.version)

    res = scope.run("sync", "--once", "--output", "json")
    results = by_name(json.loads(res.stdout))
    assert results[ok]["state"] == "synced", res.stderr
    assert results[outside]["state"] == "failed"
    assert f"s3://{other_bucket}/experiments/1" in results[outside]["error"]  # names the root
    assert res.returncode == 1
