"""Retries proven at the HTTP level: a fault-injecting proxy in front of the real S3 server."""

from __future__ import annotations

import json

import pytest

from .conftest import unique
from .faulty_s3 import FaultyS3
from .transfer_support import check_target, create_version, model_files

pytestmark = pytest.mark.integration


@pytest.fixture
def faulty(stack):
    proxy = FaultyS3(stack.s3_url, every=3)
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("path", ["server-side copy", "streaming read + multipart upload"])
def test_slowdown_and_resets_are_retried(scope, client, s3, faulty, path):
    name = unique("xfer-faults")
    files = model_files(big=11 * 1024 * 1024, small=8, seed=4)
    v = create_version(client, s3, name, files)
    client.set_registered_model_alias(name, scope.alias, v)
    env = {
        "BRIDGE_SOURCE_ENDPOINT_URL": faulty.url,
        # another spelling of the same proxy makes it a "different endpoint"
        "BRIDGE_TARGET_ENDPOINT_URL": faulty.url
        if path == "server-side copy"
        else faulty.other_url,
        "BRIDGE_TRANSFER_PART_SIZE": "5MiB",
        "BRIDGE_S3_MAX_ATTEMPTS": "3",
    }
    res = scope.run("sync", "--once", "--output", "json", env=env)
    assert res.returncode == 0, res.stderr
    assert path in res.stderr
    [r] = json.loads(res.stdout)
    assert r["state"] == "synced"
    check_target(s3, r["storage_uri"], files)
    assert faulty.faults["slowdown"] >= 3 and faulty.faults["reset"] >= 3
    assert faulty.faults["partial"] >= 1  # a body cut halfway was read again


def test_store_without_checksums_gets_the_source_hashed_and_the_copy_read_back(
    scope, client, s3, stack
):
    """Server-side copy on a store that reports no SHA-256 for a CopyObject: bridge
    hashes the source and reads the copy back before it writes the marker."""
    name = unique("xfer-nosum")
    files = model_files(big=3 * 1024 * 1024, small=2, seed=6)
    v = create_version(client, s3, name, files)
    client.set_registered_model_alias(name, scope.alias, v)
    proxy = FaultyS3(stack.s3_url, every=0, no_checksums=True)
    try:
        env = {"BRIDGE_SOURCE_ENDPOINT_URL": proxy.url, "BRIDGE_TARGET_ENDPOINT_URL": proxy.url}
        res = scope.run("sync", "--once", "--output", "json", env=env)
    finally:
        proxy.stop()
    assert res.returncode == 0, res.stderr
    assert "server-side copy" in res.stderr
    [r] = json.loads(res.stdout)
    check_target(s3, r["storage_uri"], files)
    model_gets = [p for p in proxy.gets if p.endswith("/model.pkl")]
    target = r["storage_uri"].split("/", 3)[3]
    assert any(target in p for p in model_gets), model_gets  # the copy read back
    assert any(target not in p for p in model_gets), model_gets  # the source hashed


def test_access_denied_fails_fast_without_retrying(scope, client, s3, stack):
    name = unique("xfer-denied")
    v = create_version(client, s3, name, model_files(big=10, small=1))
    client.set_registered_model_alias(name, scope.alias, v)
    proxy = FaultyS3(stack.s3_url, deny=True)
    try:
        res = scope.run("sync", "--once", env={"BRIDGE_TARGET_ENDPOINT_URL": proxy.url})
    finally:
        proxy.stop()
    assert res.returncode == 2, res.stderr
    assert "S3 refused the credentials or access (403)" in res.stderr
    assert proxy.requests == 1  # no retry of a permanent error
