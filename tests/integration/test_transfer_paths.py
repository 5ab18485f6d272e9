"""The transfer engine's paths against the real MLflow server and real S3 servers."""

from __future__ import annotations

import json

import pytest

from bridge.names import k8s_name
from bridge.runner import build_reconciler
from bridge.settings import load_settings

from .conftest import unique
from .transfer_support import (
    MLMODEL,
    SecondS3,
    check_target,
    create_version,
    model_files,
    split,
    stored,
)

pytestmark = pytest.mark.integration


def _sync(scope, *extra, env=None):
    res = scope.run("sync", "--once", "--output", "json", *extra, env=env)
    assert res.returncode == 0, res.stderr
    return {r["name"]: r for r in json.loads(res.stdout)}


def _approve(client, scope, name, version):
    client.set_registered_model_alias(name, scope.alias, version)


def test_server_side_copy_then_resync_moves_nothing(scope, client, s3):
    name = unique("xfer-same")
    files = model_files()
    v = create_version(client, s3, name, files)
    _approve(client, scope, name, v)

    res = scope.run("sync", "--once", "--output", "json")
    assert res.returncode == 0, res.stderr
    [r] = json.loads(res.stdout)
    assert r["state"] == "synced" and r["bytes_copied"] == sum(map(len, files.values()))
    assert "server-side copy" in res.stderr  # the fast path was taken
    assert r["storage_uri"] == f"{scope.target_uri}/{k8s_name(name)}/{v}/"
    check_target(s3, r["storage_uri"], files)

    again = _sync(scope)[name]
    assert again["state"] == "unchanged" and again["bytes_copied"] == 0
    assert again["digest"] == r["digest"]


def test_server_side_copy_takes_the_stores_checksum_or_reads_the_source(
    scope, client, s3, monkeypatch
):
    """Same endpoint: by default no object byte is read (the store's SHA-256 of the copy
    is recorded); with BRIDGE_TRANSFER_TRUST_STORE_CHECKSUM=false the source is hashed
    too and must agree. Both record the true SHA-256 of every file."""
    from bridge.store import SourceBucket

    name = unique("xfer-trust")
    files = model_files(big=2 * 1024 * 1024, small=3, seed=4)
    v = create_version(client, s3, name, files)
    _approve(client, scope, name, v)
    reads: list[str] = []
    real_open_at = SourceBucket.open_at

    def counting_open_at(self, obj, offset):
        reads.append(obj.key)
        return real_open_at(self, obj, offset)

    monkeypatch.setattr(SourceBucket, "open_at", counting_open_at)
    digests = {}
    for trust, target in (("true", scope.target_uri), ("false", scope.target_uri + "-read")):
        reads.clear()
        settings = load_settings(
            env={
                **scope.env,
                "BRIDGE_TARGET_URI": target,
                "BRIDGE_TRANSFER_TRUST_STORE_CHECKSUM": trust,
            }
        )
        [r] = build_reconciler(settings).run_once([name]).results
        assert r.state == "synced", r.error
        check_target(s3, r.storage_uri, files)  # recomputes every SHA-256 from the bytes
        digests[trust] = r.digest
        sources_read = {k.rsplit("/", 1)[1] for k in reads}
        if trust == "true":
            assert sources_read == set(), reads
        else:
            assert sources_read >= {"model.pkl", "MLmodel"}, reads
    assert digests["true"] == digests["false"]


def test_resync_in_a_fresh_process_reads_only_the_markers(scope, client, s3):
    """A cron-style `bridge sync --once` over unchanged versions: one marker GET per
    version, no per-version MLflow request and no re-read of the model's files, even
    for a version registered without a run (identified by its registry source)."""
    name = unique("xfer-resync")
    files = {
        **model_files(big=1024, small=1),
        "MLmodel": b"mlflow_version: 2.16.2\n" + MLMODEL,
        "requirements.txt": b"mlflow==3.17.2\nnot-in-the-image==1.0\n",
        "python_env.yaml": b"python: 3.11.7\n",
    }
    v = create_version(client, s3, name, files, scheme="s3", with_run=False)
    _approve(client, scope, name, v)
    first = _sync(scope)[name]
    marker = check_target(s3, first["storage_uri"], files)
    assert marker["registry_source"].startswith("s3://")
    assert marker["needs"]["requirements"] == files["requirements.txt"].decode()
    assert marker["needs"]["mlflow_version"] == "2.16.2"

    reconciler = build_reconciler(load_settings())  # a fresh process' caches: empty
    seen: dict[str, list] = {"model_version": [], "get_bytes": []}
    for obj, method in ((reconciler.registry, "model_version"), (reconciler.store, "get_bytes")):
        real = getattr(obj, method)

        def spy(*args, _real=real, _calls=seen[method], **kwargs):
            _calls.append(args)
            return _real(*args, **kwargs)

        setattr(obj, method, spy)
    report = reconciler.run_once([name])
    [again] = report.results
    assert again.state == "unchanged" and again.digest == first["digest"]
    assert seen["model_version"] == []
    assert [key for (key,) in seen["get_bytes"]] == [
        split(first["storage_uri"])[1] + ".bridge-manifest.json"
    ]
    # the runtime-fit check still ran, from the marker
    assert any("not-in-the-image" in w for w in again.warnings), again.warnings
    assert any("Python 3.11.7" in w for w in again.warnings), again.warnings
    assert reconciler._fit_cache[first["digest"]].mlflow_major == "2"


def test_resync_takes_the_latest_version_from_the_model_listing(scope, client, s3):
    """MLflow sends each registered model with its latest version per stage
    (``latest_versions``): whole ModelVersion entities, built by the same
    ``SqlModelVersion.to_mlflow_entity`` that answers get_model_version and
    search_model_versions (MLflow 3.17.2, mlflow/store/model_registry/sqlalchemy_store.py
    ``search_registered_models`` -> ``_get_latest_versions_for_models``, and
    dbmodels/models.py ``SqlRegisteredModel.to_mlflow_entity``; already so at mlflow/mlflow
    commit 02b23fd9086846842a68edeb490a41f06acf5142). An alias on the latest version
    needs no version read; one on an older version is still read, and still checked."""
    name = unique("xfer-listed")
    v1 = create_version(client, s3, name, model_files(big=1024, small=1))
    v2 = create_version(client, s3, name, model_files(big=1024, small=1, seed=2))
    for v in (v1, v2):
        _approve(client, scope, name, v)
        assert _sync(scope)[name]["state"] == "synced"

    def fresh_pass():
        reconciler = build_reconciler(load_settings())
        calls = []
        for method in ("search_model_versions", "get_model_version"):
            real = getattr(reconciler.registry.client, method)

            def spy(*args, _real=real, _method=method, **kwargs):
                calls.append(_method)
                return _real(*args, **kwargs)

            setattr(reconciler.registry.client, method, spy)
        [result] = reconciler.run_once([name]).results
        return result, calls

    result, calls = fresh_pass()  # the alias is on the latest version
    assert (result.state, result.version, calls) == ("unchanged", v2, [])
    _approve(client, scope, name, v1)
    result, calls = fresh_pass()  # an older version: read with one batched search
    assert (result.state, result.version, calls) == ("unchanged", v1, ["search_model_versions"])


def test_direct_s3_source_and_upload_part_copy_above_threshold(scope, client, s3):
    name = unique("xfer-big")
    files = model_files(big=12 * 1024 * 1024, small=2, seed=1)
    v = create_version(client, s3, name, files, scheme="s3")
    _approve(client, scope, name, v)
    env = {"BRIDGE_TRANSFER_COPY_THRESHOLD": "5MiB", "BRIDGE_TRANSFER_PART_SIZE": "5MiB"}
    r = _sync(scope, env=env)[name]
    assert r["state"] == "synced"
    check_target(s3, r["storage_uri"], files)
    bucket, prefix = split(r["storage_uri"])
    # UploadPartCopy made a multipart object: its ETag has a part count.
    assert s3.head_object(Bucket=bucket, Key=prefix + "model.pkl")["ETag"].endswith('-3"')


def test_proxy_fallback_without_source_settings(scope, register, client, s3):
    name = unique("xfer-proxy")
    [v] = register(name, 1)
    _approve(client, scope, name, v)
    no_direct = {"BRIDGE_SOURCE_ARTIFACTS_URI": ""}
    res = scope.run("sync", "--once", "--output", "json", env=no_direct)
    assert res.returncode == 0, res.stderr
    assert "MLflow proxy" in res.stderr
    [r] = json.loads(res.stdout)
    assert r["state"] == "synced"
    marker = check_target(s3, r["storage_uri"])
    assert "MLmodel" in {f["path"] for f in marker["files"]}

    # the direct path over the same version agrees on the content digest
    other = scope.target_uri + "-direct"
    direct = _sync(scope, env={"BRIDGE_TARGET_URI": other})[name]
    assert direct["digest"] == r["digest"]


@pytest.fixture
def second_s3(request, tmp_path_factory):
    return SecondS3.get(request, tmp_path_factory)


def test_cross_endpoint_ranged_reads_and_multipart(scope, client, s3, second_s3):
    name = unique("xfer-cross")
    files = model_files(big=11 * 1024 * 1024, small=5, seed=2)
    v = create_version(client, s3, name, files)
    _approve(client, scope, name, v)
    target = f"s3://remote-models/{unique('t')}"
    env = {
        "BRIDGE_TARGET_URI": target,
        "BRIDGE_TARGET_ENDPOINT_URL": second_s3.url,
        "BRIDGE_TRANSFER_PART_SIZE": "5MiB",
        "BRIDGE_TRANSFER_CONCURRENCY": "3",
    }
    res = scope.run("sync", "--once", "--output", "json", env=env)
    assert res.returncode == 0, res.stderr
    assert "streaming read + multipart upload" in res.stderr
    [r] = json.loads(res.stdout)
    assert r["storage_uri"].startswith(target)
    check_target(second_s3.client, r["storage_uri"], files)
    assert _sync(scope, env=env)[name]["bytes_copied"] == 0


def test_verify_detects_and_repairs_tampering(scope, client, s3):
    name = unique("xfer-tamper")
    files = model_files(big=1024 * 1024, small=4, seed=3)
    v = create_version(client, s3, name, files)
    _approve(client, scope, name, v)
    r = _sync(scope)[name]
    bucket, prefix = split(r["storage_uri"])

    clean = _sync(scope, "--verify")[name]
    assert clean["state"] == "unchanged" and clean["bytes_copied"] == 0

    # bit rot in one file, a deleted file, and an object nobody published
    rotten = bytearray(files["model.pkl"])
    rotten[1000] ^= 0x01
    s3.put_object(Bucket=bucket, Key=prefix + "model.pkl", Body=bytes(rotten))
    s3.delete_object(Bucket=bucket, Key=prefix + "data/part-001.bin")
    s3.put_object(Bucket=bucket, Key=prefix + "intruder.sh", Body=b"echo hi")

    # a plain sync trusts the marker; --verify re-hashes and repairs
    assert _sync(scope)[name]["state"] == "unchanged"
    fixed = _sync(scope, "--verify")[name]
    assert fixed["state"] == "repaired"
    assert fixed["bytes_copied"] == len(files["model.pkl"]) + len(files["data/part-001.bin"])
    assert fixed["digest"] == r["digest"]
    check_target(s3, r["storage_uri"], files)
    assert _sync(scope, "--verify")[name]["state"] == "unchanged"


def test_missing_target_bucket_fails_fast_with_a_clear_message(scope, client, s3):
    name = unique("xfer-nobucket")
    v = create_version(client, s3, name, model_files(big=10, small=1))
    _approve(client, scope, name, v)
    res = scope.run("sync", "--once", env={"BRIDGE_TARGET_URI": "s3://no-such-bucket-xyz/p"})
    assert res.returncode == 2, res.stderr
    assert "bucket 'no-such-bucket-xyz' does not exist" in res.stderr
    assert stored(s3, f"s3://bridge-models/{name}") == {}
