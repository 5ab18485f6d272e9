"""The MLflow-proxy path against the real MLflow server (``--serve-artifacts``) and moto_server.

MLflow's artifact download handler serves byte ranges: ``_create_artifact_file_response``
calls ``response.make_conditional(request.environ, accept_ranges=True, ...)``
(mlflow/server/handlers.py, mlflow 3.17.2 as installed), so a cut read resumes with
``Range: bytes=<offset>-``. Where the server advertises presigned downloads
(``MlflowArtifactsRepository._is_multipart_download_enabled``, mlflow/store/artifact/
mlflow_artifacts_repo.py), MLflow's own downloads read through a URL it presigned for
the file, and so does bridge; both ways are tested. moto_server (5.2.5) neither checks nor echoes
``x-amz-checksum-sha256`` (a wrong value is stored without complaint, see
``test_moto_server_ignores_a_wrong_sha256_header``), so on it the proxy path is
verified as the streamed path is: the ETag it computed over the bytes it received
equals the MD5 of the bytes bridge hashed.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from bridge import devstack
from bridge.registry import ArtifactSource
from bridge.settings import load_settings

from .conftest import unique
from .faulty_s3 import FaultyS3
from .transfer_support import check_target, create_version, model_files

pytestmark = pytest.mark.integration

NO_DIRECT = {"BRIDGE_SOURCE_ARTIFACTS_URI": ""}


# MLflow's own switch between presigned downloads (the server advertises them when its
# artifact store can sign URLs) and bytes through the proxy itself.
PRESIGNED = pytest.mark.parametrize("presigned", ["true", "false"])


@PRESIGNED
def test_proxy_path_uploads_verified_without_reading_the_copies_back(
    scope, client, s3, stack, presigned
):
    """One multi-part file and many small ones through MLflow's proxy: every byte arrives,
    the marker matches, and no stored file is read back (the store's ETag/SHA-256 of
    what it received is the check, as on the streamed path)."""
    name = unique("xfer-proxy-fast")
    files = model_files(big=11 * 1024 * 1024, small=40, seed=11)
    v = create_version(client, s3, name, files)
    client.set_registered_model_alias(name, scope.alias, v)
    target = FaultyS3(stack.s3_url, every=0)
    try:
        env = {
            **NO_DIRECT,
            "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": presigned,
            "BRIDGE_TARGET_ENDPOINT_URL": target.other_url,
            "BRIDGE_TRANSFER_PART_SIZE": "5MiB",
        }
        res = scope.run("sync", "--once", "--output", "json", env=env)
    finally:
        target.stop()
    assert res.returncode == 0, res.stderr
    assert "MLflow proxy" in res.stderr
    [r] = json.loads(res.stdout)
    assert r["state"] == "synced"
    check_target(s3, r["storage_uri"], files)
    prefix = r["storage_uri"].split("/", 3)[3]
    read_back = [p for p in target.gets if prefix in p and not p.endswith(".bridge-manifest.json")]
    assert read_back == []


@PRESIGNED
def test_proxy_reads_resume_at_an_offset(scope, client, s3, monkeypatch, presigned):
    """ArtifactSource.open_at asks for the rest of a file from an offset, through MLflow's
    proxy or a URL it presigned."""
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", presigned)
    name = unique("xfer-proxy-range")
    files = {"MLmodel": b"flavors: {}\n", "blob.bin": bytes(range(256)) * 4096}
    v = create_version(client, s3, name, files)
    uri = client.get_model_version_download_uri(name, v)
    source = ArtifactSource(uri, scope.env["MLFLOW_TRACKING_URI"], load_settings({}, env=NO_DIRECT))
    assert source.resumable
    assert source._presigned == (presigned == "true")
    assert {f.path: f.size for f in source.list_files()}["blob.bin"] == len(files["blob.bin"])
    body = source.open_at("blob.bin", 1000)
    try:
        assert body.read(len(files["blob.bin"])) == files["blob.bin"][1000:]
    finally:
        body.close()


def test_moto_server_ignores_a_wrong_sha256_header(s3):
    """Pins what the proxy path may rely on with moto_server: not the checksum header
    (accepted even when wrong, and not echoed), but the ETag (MD5 of what it stored)."""
    data = b"bridge" * 1000
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    key = f"checksum-probe/{unique('k')}"
    resp = s3.put_object(Bucket=devstack.TARGET_BUCKET, Key=key, Body=data, ChecksumSHA256=wrong)
    assert resp.get("ChecksumSHA256") is None
    assert resp["ETag"].strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest()
