"""Large files on the MLflow-proxy path: parallel byte ranges through presigned URLs.

Against the real MLflow server (``--serve-artifacts``, sqlite) and moto_server. MLflow's
own download of a large file does the same: ``HttpArtifactRepository._multipart_download``
(mlflow/store/artifact/http_artifact_repo.py, mlflow 3.17.2 as installed) reads
``bytes=<start>-<end>`` ranges of the URL ``GET /mlflow-artifacts/presigned/<path>``
returns, in parallel, and asks for a new URL before retrying failed ranges. Through
the proxy itself a range would cost the server a whole download of the file
(``_download_artifact`` in mlflow/server/handlers.py), so bridge only splits files
where the server presigns, and only with BRIDGE_TRANSFER_PROXY_RANGES=true: moto_server
builds the whole object's answer for every ranged GET and then cuts the range out
(``S3Response._handle_range_header``, moto/s3/responses.py, moto 5.2.5), which makes
ranges slower than one stream there. Faults are injected into the bodies the real servers send
(a cut body, the source object replaced between two ranges).
"""

from __future__ import annotations

import hashlib
import random
import threading

import pytest

from bridge import devstack
from bridge.errors import TemporaryError
from bridge.transfer import SourceChanged

from .conftest import unique
from .transfer_support import CutBody, copy_model_bin, proxy_copy_setup, split, stored_model_bin

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
PART = 5 * MIB


@pytest.fixture
def presigned(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "true")


def _setup(scope, client, s3, big: bytes):
    return proxy_copy_setup(
        scope, client, s3, big, "xfer-ranged", {"BRIDGE_TRANSFER_PROXY_RANGES": "true"}
    )


def _copy(engine, source, prefix: str):
    return copy_model_bin(engine, source, prefix, "ranged")


def _record_ranges(monkeypatch, source, wrap=None, before=None) -> list[tuple[int, int, bool]]:
    calls: list[tuple[int, int, bool]] = []
    real = source.read_range

    def read_range(path, start, end, fresh_url=False):
        calls.append((start, end, fresh_url))
        if before:
            before(start)
        body = real(path, start, end, fresh_url=fresh_url)
        return wrap(body, start, len(calls)) if wrap else body

    monkeypatch.setattr(source, "read_range", read_range)
    return calls


def test_a_large_file_arrives_byte_identical_from_parallel_ranges(
    scope, client, s3, presigned, monkeypatch
):
    """A 23 MiB file with 5 MiB parts is read as 5 ranges (one per part) and stored
    byte for byte; the SHA-256 recorded is that of the whole file, hashed in order."""
    big = random.Random(1).randbytes(23 * MIB)
    source, engine, _ = _setup(scope, client, s3, big)
    assert source.ranged
    calls = _record_ranges(monkeypatch, source)
    try:
        [copied] = _copy(engine, source, unique("p") + "/")
    finally:
        engine.close()
    assert sorted((a, b) for a, b, _ in calls) == [
        (a, min(a + PART, len(big))) for a in range(0, len(big), PART)
    ]
    assert copied.sha256 == hashlib.sha256(big).hexdigest()
    assert copied.size == len(big)
    assert engine._budget.free == engine._budget.total  # every byte given back


def test_stored_bytes_of_a_ranged_copy(scope, client, s3, presigned):
    """What the store holds after a ranged copy equals the source file."""
    big = random.Random(2).randbytes(12 * MIB + 7)
    source, engine, _ = _setup(scope, client, s3, big)
    prefix = unique("p") + "/"
    try:
        _copy(engine, source, prefix)
    finally:
        engine.close()
    assert stored_model_bin(s3, scope, prefix) == big


def test_a_range_cut_midway_resumes_where_it_stopped(scope, client, s3, presigned, monkeypatch):
    """The second range's body ends after 1 MiB: that range alone is asked for again from
    where it stopped, with a new presigned URL, and the file arrives intact."""
    big = random.Random(3).randbytes(17 * MIB)
    source, engine, _ = _setup(scope, client, s3, big)

    state = {"cut": False}

    def wrap(body, start, n):
        if start == PART and not state["cut"]:
            state["cut"] = True
            return CutBody(body, MIB)
        return body

    calls = _record_ranges(monkeypatch, source, wrap)
    prefix = unique("p") + "/"
    try:
        [copied] = _copy(engine, source, prefix)
    finally:
        engine.close()
    assert (PART + MIB, 2 * PART, True) in calls
    assert copied.sha256 == hashlib.sha256(big).hexdigest()
    assert stored_model_bin(s3, scope, prefix) == big
    assert engine._budget.free == engine._budget.total


def test_a_file_replaced_between_ranges_is_detected_and_nothing_stored(
    scope, client, s3, presigned, monkeypatch
):
    """The source object is replaced (same size, other bytes) after its first range was
    opened and before its last: the last range carry another ETag, so the copy fails as temporary (the next
    sync copies the file again) instead of storing a mix of two files; the upload is aborted."""
    big = random.Random(4).randbytes(16 * MIB)
    source, engine, uri = _setup(scope, client, s3, big)
    key = uri.split(":", 1)[1].lstrip("/") + "/model.bin"
    first_open = threading.Event()

    def before(start):
        # the last range is asked for only after the first one was served from the old object
        if start == 3 * PART:
            assert first_open.wait(60)
            other = random.Random(5).randbytes(len(big))
            s3.put_object(Bucket=devstack.ARTIFACT_BUCKET, Key=key, Body=other)

    def wrap(body, start, n):
        if start == 0:
            first_open.set()
        return body

    _record_ranges(monkeypatch, source, wrap, before)
    prefix = unique("p") + "/"
    try:
        with pytest.raises(TemporaryError) as err:
            _copy(engine, source, prefix)
    finally:
        engine.close()
    assert isinstance(err.value, SourceChanged)
    bucket, _ = split(scope.target_uri)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    assert uploads.get("Uploads", []) == []
    assert engine._budget.free == engine._budget.total
