"""The completion marker: what it records and how it reads back (pure)."""

from __future__ import annotations

import json

from bridge.publish import FileRecord, PublishedVersion, content_digest, marker_bytes, parse_marker
from bridge.registry import ModelVersionInfo
from bridge.runtime_fit import ModelNeeds
from bridge.sync import same_registry_version

FILES = (FileRecord("MLmodel", 3, "a" * 64), FileRecord("model.pkl", 5, "b" * 64))


def published(**kw) -> PublishedVersion:
    base = dict(
        model="m",
        version="1",
        storage_uri="s3://t/m/1/",
        digest=content_digest(FILES),
        run_id=None,
        source_uri="s3://a/x",
        files=FILES,
        registry_source="s3://a/x",
        needs=ModelNeeds("3.17.2", "numpy==2.1.0\n", None),
    )
    return PublishedVersion(**{**base, **kw})


def info(**kw) -> ModelVersionInfo:
    base = dict(
        name="m", version="1", run_id=None, source="s3://a/x", status="READY", download_uri=""
    )
    return ModelVersionInfo(**{**base, **kw})


def test_marker_round_trip_keeps_source_and_needs():
    pv = published()
    back = parse_marker(marker_bytes(pv), pv.storage_uri)
    assert back == pv


def test_marker_written_before_needs_were_recorded_still_reads():
    body = json.loads(marker_bytes(published()))
    del body["needs"], body["registry_source"]
    back = parse_marker(json.dumps(body).encode(), "s3://t/m/1/")
    assert back is not None and back.needs is None and back.registry_source is None


def test_needs_recorded_by_a_later_version_still_read():
    body = json.loads(marker_bytes(published()))
    body["needs"]["gpu_driver"] = "550"  # a field this version does not know
    back = parse_marker(json.dumps(body).encode(), "s3://t/m/1/")
    assert back is not None and back.needs == published().needs
    body["needs"] = {"requirements": 3}  # not what this version wrote: check the files instead
    back = parse_marker(json.dumps(body).encode(), "s3://t/m/1/")
    assert back is not None and back.needs is None


def test_tampered_file_list_is_not_a_marker():
    body = json.loads(marker_bytes(published()))
    body["files"][0]["size"] = 4
    assert parse_marker(json.dumps(body).encode(), "s3://t/m/1/") is None


def test_same_registry_version_without_a_request():
    assert same_registry_version(published(), info())
    assert same_registry_version(published(run_id="r1", registry_source=None), info(run_id="r1"))
    # unknown (needs the registry's download URI): old marker, other source, other model
    assert not same_registry_version(published(registry_source=None), info())
    assert not same_registry_version(published(), info(source="s3://a/y"))
    assert not same_registry_version(published(), info(name="other"))
