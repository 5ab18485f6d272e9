"""Files larger than one part, read as one stream, uploaded as one streamed PutObject.

Against the real MLflow server (``--serve-artifacts``, sqlite) and moto_server, on the
MLflow-proxy path (through URLs the server presigns, and through the proxy itself).
Why one PutObject: on moto_server (5.2.5) completing a multipart upload builds the
whole object again from its parts (``FakeMultipart.complete`` in moto/s3/models.py
joins every part and computes a full-object checksum, then ``put_object`` stores the
result), which cost more than receiving the parts; S3 accepts up to 5 GiB in one
PutObject. The body is read as it is sent: botocore signs it as ``UNSIGNED-PAYLOAD``
(``payload_signing_enabled=False``) and adds no checksum of its own
(``request_checksum_calculation="when_required"``), since over plain HTTP both would
read the body first (``resolve_request_checksum_algorithm`` in botocore/httpchecksum.py
puts a streamed body's checksum in a trailer only over TLS). moto_server reports the
MD5 of the bytes it stored as the ETag, which bridge compares with its own MD5.
Faults are injected into the bodies the real servers send, or into the upload
request (a connection closed after part of the body).
"""

from __future__ import annotations

import hashlib
import random

import pytest
from botocore.exceptions import ConnectionClosedError

from bridge import devstack
from bridge.errors import TemporaryError

from .conftest import unique
from .transfer_support import CutBody, copy_model_bin, proxy_copy_setup, split, stored_model_bin

pytestmark = pytest.mark.integration

MIB = 1024 * 1024

PRESIGNED = pytest.mark.parametrize("presigned", ["true", "false"])


def _setup(scope, client, s3, big: bytes, monkeypatch, presigned: str):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", presigned)
    return proxy_copy_setup(scope, client, s3, big, "xfer-put", {})


def _copy(engine, source, prefix: str):
    return copy_model_bin(engine, source, prefix, "put")


def _record(monkeypatch, obj, name: str, wrap=None) -> list:
    calls: list = []
    real = getattr(obj, name)

    def recorded(*args, **kwargs):
        calls.append(args)
        return wrap(real, *args, **kwargs) if wrap else real(*args, **kwargs)

    monkeypatch.setattr(obj, name, recorded)
    return calls


@PRESIGNED
def test_a_large_file_is_one_streamed_put_verified_without_a_read_back(
    scope, client, s3, monkeypatch, presigned
):
    """A 23 MiB file (5 MiB parts) is uploaded with one PutObject, no multipart upload,
    read once and never read back; the store holds it byte for byte and the SHA-256
    recorded is that of the whole file."""
    big = random.Random(21).randbytes(23 * MIB + 5)
    source, engine, _ = _setup(scope, client, s3, big, monkeypatch, presigned)
    multipart = _record(monkeypatch, engine.store, "create_multipart")
    puts = _record(monkeypatch, engine.store, "put_stream")
    read_back = _record(monkeypatch, engine.store, "open_at")
    opened = _record(monkeypatch, source, "open_at")
    prefix = unique("p") + "/"
    try:
        [copied] = _copy(engine, source, prefix)
    finally:
        engine.close()
    assert (multipart, len(puts), read_back) == ([], 1, [])
    assert [offset for _, offset in opened] == [0]
    assert copied.sha256 == hashlib.sha256(big).hexdigest()
    assert copied.size == len(big)
    assert stored_model_bin(s3, scope, prefix) == big
    assert engine._budget.free == engine._budget.total  # every byte given back


@PRESIGNED
def test_a_source_body_cut_midway_resumes_inside_the_same_upload(
    scope, client, s3, monkeypatch, presigned
):
    """The source's body ends after 7 MiB, inside its second 5 MiB chunk: the source is
    opened again where that chunk starts and the bytes go on into the same PutObject
    (nothing of the cut chunk had been sent); the file arrives intact."""
    big = random.Random(22).randbytes(17 * MIB)
    source, engine, _ = _setup(scope, client, s3, big, monkeypatch, presigned)

    def cut_first(real, path, offset):
        body = real(path, offset)
        return CutBody(body, 7 * MIB) if offset == 0 else body

    opened = _record(monkeypatch, source, "open_at", cut_first)
    puts = _record(monkeypatch, engine.store, "put_stream")
    prefix = unique("p") + "/"
    try:
        [copied] = _copy(engine, source, prefix)
    finally:
        engine.close()
    assert [offset for _, offset in opened] == [0, 5 * MIB]
    assert len(puts) == 1
    assert copied.sha256 == hashlib.sha256(big).hexdigest()
    assert stored_model_bin(s3, scope, prefix) == big
    assert engine._budget.free == engine._budget.total


def test_an_upload_cut_midway_starts_the_read_over(scope, client, s3, monkeypatch):
    """The first PutObject's connection closes after 9 MiB of its body were sent: the
    upload is retried with the body started over (``seek(0)``: the source is read again
    from byte 0, hashed afresh), and the stored file and its SHA-256 are right."""
    big = random.Random(23).randbytes(16 * MIB)
    source, engine, _ = _setup(scope, client, s3, big, monkeypatch, "true")
    stream_client = engine.store._stream_client
    state = {"cut": False}

    def put_object(real, **kwargs):
        if not state["cut"]:
            state["cut"] = True
            kwargs["Body"].read(9 * MIB)
            raise ConnectionClosedError(endpoint_url=stream_client.meta.endpoint_url)
        return real(**kwargs)

    _record(monkeypatch, stream_client, "put_object", put_object)
    opened = _record(monkeypatch, source, "open_at")
    prefix = unique("p") + "/"
    try:
        [copied] = _copy(engine, source, prefix)
    finally:
        engine.close()
    assert state["cut"]
    assert [offset for _, offset in opened] == [0, 0]
    assert copied.sha256 == hashlib.sha256(big).hexdigest()
    assert stored_model_bin(s3, scope, prefix) == big
    assert engine._budget.free == engine._budget.total


@PRESIGNED
def test_a_source_larger_than_listed_fails_as_temporary_and_stores_nothing(
    scope, client, s3, monkeypatch, presigned
):
    """The file grew after it was listed: the read fails as temporary (the next sync copies
    it again), the upload is not retried, nothing is stored, the budget is whole."""
    big = random.Random(24).randbytes(12 * MIB)
    source, engine, uri = _setup(scope, client, s3, big, monkeypatch, presigned)
    key = uri.split(":", 1)[1].lstrip("/") + "/model.bin"
    s3.put_object(Bucket=devstack.ARTIFACT_BUCKET, Key=key, Body=big + b"more")
    opened = _record(monkeypatch, source, "open_at")
    prefix = unique("p") + "/"
    try:
        with pytest.raises(TemporaryError, match="larger than listed"):
            _copy(engine, source, prefix)
    finally:
        engine.close()
    assert [offset for _, offset in opened] == [0]
    bucket, _ = split(scope.target_uri)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0
    assert engine._budget.free == engine._budget.total


def test_a_file_replaced_before_a_resumed_read_fails_and_stores_nothing(
    scope, client, s3, monkeypatch
):
    """Through a presigned URL: the body is cut after 6 MiB (inside the second chunk, so
    the read resumes at 5 MiB) and the source object is
    replaced (same size, other bytes) before the read resumes. The resumed GET is pinned
    to the first answer's ETag (``If-Match``; S3 and moto_server answer 412, see
    ``S3Response._key_response_get`` in moto/s3/responses.py), so the copy fails as
    temporary instead of storing a mix of two files; nothing is stored."""
    big = random.Random(25).randbytes(14 * MIB)
    source, engine, uri = _setup(scope, client, s3, big, monkeypatch, "true")
    key = uri.split(":", 1)[1].lstrip("/") + "/model.bin"

    def cut_then_replace(real, path, offset):
        if offset:
            other = random.Random(26).randbytes(len(big))
            s3.put_object(Bucket=devstack.ARTIFACT_BUCKET, Key=key, Body=other)
            return real(path, offset)
        return CutBody(real(path, offset), 6 * MIB)

    opened = _record(monkeypatch, source, "open_at", cut_then_replace)
    prefix = unique("p") + "/"
    try:
        with pytest.raises(TemporaryError, match="changed while it was read"):
            _copy(engine, source, prefix)
    finally:
        engine.close()
    assert [offset for _, offset in opened] == [0, 5 * MIB]
    bucket, _ = split(scope.target_uri)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0
    assert engine._budget.free == engine._budget.total
