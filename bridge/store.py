"""The S3 edge: the shared store KServe reads from.

Only this module talks to the target store. It knows keys, objects and
streams; what a "published version" is lives in :mod:`bridge.publish`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bridge.errors import BridgeError, PermanentError, TemporaryError, UsageError
from bridge.log import redact
from bridge.settings import Settings

log = logging.getLogger(__name__)

_READ_CHUNK = 1024 * 1024
# Multipart threshold/part size for streamed uploads: memory stays near
# max_concurrency * part size, whatever the file size.
_PART_SIZE = 16 * 1024 * 1024
_CONCURRENCY = 4


@dataclass(frozen=True)
class S3Object:
    """One object of a source bucket, pinned to the ETag it had when listed."""

    bucket: str
    key: str
    size: int
    etag: str


def b64_to_hex(value: str | None) -> str | None:
    """S3 reports checksums base64-encoded; the marker keeps hex. Composite
    (multipart, ``...-N``) checksums are not whole-object digests: None."""
    if not value or "-" in value:
        return None
    try:
        return base64.b64decode(value).hex()
    except ValueError:
        return None


def hex_to_b64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode()


class HashingReader:
    """Wraps a readable stream; counts and hashes exactly the bytes read through it."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n if n and n > 0 else _READ_CHUNK)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session(profile: str | None):
    """One boto3 session per process and profile: each session loads its own copy of
    botocore's endpoint and S3 service data (~12 MB), while clients of one session share it."""
    import boto3

    return boto3.session.Session(profile_name=profile)


def s3_client(
    endpoint_url: str | None,
    region: str,
    max_attempts: int,
    pool: int = 10,
    profile: str | None = None,
    profile_setting: str = "BRIDGE_TARGET_PROFILE",
    streaming_bodies: bool = False,
):
    """An S3 client; ``profile`` picks a named AWS profile (its keys win over AWS_* keys).

    ``streaming_bodies``: for uploads whose body is read as it is sent (see
    :meth:`Store.put_stream`): botocore must not read the body ahead to sign it or to
    add a checksum of its own, which it otherwise does on plain-HTTP endpoints."""
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    config = Config(
        region_name=region,
        retries={"max_attempts": max(1, max_attempts), "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max(10, pool),
        s3={
            **({"addressing_style": "path"} if endpoint_url else {}),
            **({"payload_signing_enabled": False} if streaming_bodies else {}),
        },
        **({"request_checksum_calculation": "when_required"} if streaming_bodies else {}),
    )
    # Creating clients from one session is not thread-safe; using them is.
    with _SESSION_LOCK:
        try:
            session = _session(profile or None)
        except ProfileNotFound:
            raise UsageError(
                f"AWS profile {profile!r} is not in the AWS config or credentials files",
                hint=f"fix {profile_setting}, AWS_CONFIG_FILE or AWS_SHARED_CREDENTIALS_FILE",
            ) from None
        return session.client("s3", endpoint_url=endpoint_url or None, config=config)


@contextlib.contextmanager
def s3_errors(what: str, bucket: str, endpoint_url: str | None) -> Iterator[None]:
    """Translate botocore failures into bridge errors that say what to fix."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = redact(endpoint_url or "AWS S3")
    try:
        yield
    except BridgeError:
        raise
    except NoCredentialsError:
        raise PermanentError(
            f"{what}: no S3 credentials found",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile / IRSA)",
        ) from None
    except ClientError as exc:
        raise translate_client_error(exc, what, bucket) from None
    except BotoCoreError as exc:
        raise TemporaryError(f"{what}: cannot reach S3 at {where}: {redact(str(exc))}") from None


class SourceBucket:
    """A model's artifact root read straight from S3 (no MLflow proxy in the way)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        region: str,
        max_attempts: int,
        pool: int = 10,
        profile: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.profile = profile or None  # the identity it reads with (None: default chain)
        self.client = s3_client(
            endpoint_url, region, max_attempts, pool, self.profile, "BRIDGE_SOURCE_PROFILE"
        )

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}"

    def errors(self, what: str):
        return s3_errors(what, self.bucket, self.endpoint_url)

    def list_objects(self) -> dict[str, S3Object]:
        """Relative path -> object, for every object under the artifact root."""
        found: dict[str, S3Object] = {}
        with self.errors(f"listing {self.uri()}"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    if rel and not rel.endswith("/"):
                        found[rel] = S3Object(self.bucket, obj["Key"], obj["Size"], obj["ETag"])
        return found

    @contextlib.contextmanager
    def open(self, obj: S3Object) -> Iterator[BinaryIO]:
        resp = self.client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag)
        with contextlib.closing(resp["Body"]) as body:
            yield body

    def open_at(self, obj: S3Object, offset: int):
        """The body of ``obj`` from ``offset`` on, pinned to its listed ETag."""
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag, **extra)
        return resp["Body"]


class Store:
    def __init__(self, settings: Settings):
        settings.require("target_uri")
        self.settings = settings
        self.bucket = settings.target_bucket
        self.prefix = settings.target_prefix
        self.endpoint_url = settings.target_endpoint_url
        self.profile = settings.target_profile or None  # the identity it writes with
        self._client = s3_client(
            settings.target_endpoint_url,
            settings.target_region,
            settings.s3_max_attempts,
            pool=4 * settings.transfer_concurrency,
            profile=self.profile,
        )

    @property
    def client(self):
        return self._client

    @functools.cached_property
    def _stream_client(self):
        return s3_client(
            self.settings.target_endpoint_url,
            self.settings.target_region,
            self.settings.s3_max_attempts,
            pool=self.settings.transfer_concurrency,
            profile=self.profile,
            streaming_bodies=True,
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def errors(self, what: str):
        """Translate botocore failures into bridge errors that say what to fix."""
        return s3_errors(what, self.bucket, self.endpoint_url)

    def check_access(self) -> None:
        with self.errors(f"target bucket {self.bucket!r}"):
            self._client.head_bucket(Bucket=self.bucket)

    def list_keys(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its size."""
        keys: dict[str, int] = {}
        with self.errors(f"listing {self.uri(prefix)}"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    keys[obj["Key"]] = obj["Size"]
        return keys

    def get_bytes(self, key: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        """A small object whole, or None when it does not exist."""
        from bridge.retry import retrying

        def fetch() -> bytes | None:
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                return None
            with contextlib.closing(resp["Body"]) as body:
                return body.read(limit + 1)

        # botocore retries the request, not a reset while the body is read: a whole
        # small read is simply repeated.
        with self.errors(f"reading {self.uri(key)}"):
            data = retrying(f"reading {self.uri(key)}", fetch)
        if data is None:
            return None
        if len(data) > limit:
            raise PermanentError(f"{self.uri(key)} is larger than {limit} bytes")
        return data

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self.errors(f"writing {self.uri(key)}"):
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/json") -> bool:
        """Write ``key`` only if nothing is there yet (``If-None-Match: *``); False if it is.

        A store that ignores the condition simply writes; callers must be safe either way.
        """
        from botocore.exceptions import ClientError

        with self.errors(f"writing {self.uri(key)}"):
            try:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType=content_type,
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = exc.response.get("Error", {}).get("Code")
                # 409: another conditional write to the same key is in flight (AWS S3)
                if status in (409, 412) or code in (
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                ):
                    return False
                raise
        return True

    def upload_stream(
        self,
        key: str,
        stream: BinaryIO,
        part_size: int = _PART_SIZE,
        concurrency: int = _CONCURRENCY,
    ) -> tuple[int, str]:
        """Stream ``stream`` to ``key`` (multipart when large); return (size, sha256) read."""
        from boto3.s3.transfer import TransferConfig

        reader = HashingReader(stream)
        config = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=concurrency,
            use_threads=True,
        )
        # Parts read ahead of the uploads: bounded, so memory stays near
        # (concurrency + 1) x part size however large the file is.
        config.max_in_memory_upload_chunks = concurrency + 1
        with self.errors(f"uploading {self.uri(key)}"):
            self._client.upload_fileobj(reader, self.bucket, key, Config=config)
        return reader.size, reader.hexdigest()

    def open_at(self, key: str, offset: int):
        """The body of the stored object ``key`` from ``offset`` on."""
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        return self._client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]

    def object_digest(self, key: str) -> tuple[int, str]:
        """(size, sha256) of an object, read as a stream."""
        digest = hashlib.sha256()
        size = 0
        with self.errors(f"verifying {self.uri(key)}"):
            resp = self._client.get_object(Bucket=self.bucket, Key=key)
            with contextlib.closing(resp["Body"]) as body:
                for chunk in iter(lambda: body.read(_READ_CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
        return size, digest.hexdigest()

    # --- transfer primitives (used by bridge.transfer) ---------------------

    def head(self, key: str) -> dict | None:
        """HEAD of an object (with its stored checksum, if any), or None if missing."""
        from botocore.exceptions import ClientError

        with self.errors(f"reading {self.uri(key)}"):
            try:
                return self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    def copy_object(self, src: S3Object, key: str) -> str | None:
        """Server-side copy of a whole object; returns the SHA-256 (hex) the store computed
        over the copy, if it reports one."""
        resp = self._client.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": src.bucket, "Key": src.key},
            CopySourceIfMatch=src.etag,
            ChecksumAlgorithm="SHA256",
            MetadataDirective="REPLACE",
            ContentType="application/octet-stream",
        )
        return b64_to_hex(resp.get("CopyObjectResult", {}).get("ChecksumSHA256"))

    def put_object(self, key: str, data: bytes, sha256_hex: str) -> tuple[str, bool]:
        """Upload a small object whole, with our SHA-256 for the store to check on arrival.

        Returns the ETag the store computed (the MD5 of what it received, for
        unencrypted objects) and whether the store confirmed our SHA-256 (stores
        that check it echo it back; others ignore it)."""
        resp = self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ChecksumSHA256=hex_to_b64(sha256_hex),
            ContentType="application/octet-stream",
        )
        return resp["ETag"].strip('"'), resp.get("ChecksumSHA256") == hex_to_b64(sha256_hex)

    @property
    def streams_sha256(self) -> bool:
        """Whether :meth:`put_stream` has the store check a SHA-256 of the whole body.

        botocore sends the checksum of a body it reads as it goes in a trailer
        (``x-amz-trailer``, aws-chunked), and does so only over TLS
        (``resolve_request_checksum_algorithm`` in botocore/httpchecksum.py); AWS S3 is
        always TLS. Over plain HTTP the body goes without one."""
        return (self.endpoint_url or "https://").strip().lower().startswith("https://")

    def put_stream(self, key: str, body: BinaryIO, size: int) -> tuple[str, str | None]:
        """One ``PutObject`` of ``size`` bytes whose ``body`` is read as it is sent.

        Returns the ETag the store computed (the MD5 of what it received, for objects
        without SSE-KMS/SSE-C) and, where :attr:`streams_sha256`, the SHA-256 (hex) the
        store checked over the whole body (None when it reported none). The payload is
        not part of the request signature (botocore's default over TLS; on plain HTTP
        signing it would mean reading the body twice); the checksum trailer, or the
        ETag compared by the caller, is what checks the bytes. A retry calls
        ``body.seek(0)``."""
        extra = {"ChecksumAlgorithm": "SHA256"} if self.streams_sha256 else {}
        resp = self._stream_client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentLength=size,
            ContentType="application/octet-stream",
            **extra,
        )
        sha = b64_to_hex(resp.get("ChecksumSHA256")) if extra else None
        return resp["ETag"].strip('"'), sha

    def create_multipart(self, key: str, checksum: bool) -> str:
        extra = {"ChecksumAlgorithm": "SHA256"} if checksum else {}
        resp = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType="application/octet-stream", **extra
        )
        return resp["UploadId"]

    def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, sha256_hex: str
    ) -> tuple[dict, bool]:
        """One part, with its SHA-256: (the part for the completion, whether the store
        confirmed our SHA-256)."""
        resp = self._client.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=hex_to_b64(sha256_hex),
        )
        ours = hex_to_b64(sha256_hex)
        part = {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": ours}
        return part, resp.get("ChecksumSHA256") == ours

    def upload_part_copy(
        self, key: str, upload_id: str, number: int, src: S3Object, start: int, end: int
    ) -> dict:
        """Server-side copy of bytes [start, end) of ``src`` as one part."""
        resp = self._client.upload_part_copy(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": src.bucket, "Key": src.key},
            CopySourceIfMatch=src.etag,
            CopySourceRange=f"bytes={start}-{end - 1}",
        )
        result = resp.get("CopyPartResult", {})
        part = {"PartNumber": number, "ETag": result["ETag"]}
        if result.get("ChecksumSHA256"):
            part["ChecksumSHA256"] = result["ChecksumSHA256"]
        return part

    def complete_multipart(self, key: str, upload_id: str, parts: list[dict]) -> None:
        self._client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])},
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload; one that was completed or aborted meanwhile is already gone."""
        from botocore.exceptions import ClientError

        with self.errors(f"aborting an upload to {self.uri(key)}"):
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise

    def incomplete_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every unfinished multipart upload under ``prefix``."""
        found: list[tuple[str, str]] = []
        with self.errors(f"listing unfinished uploads under {self.uri(prefix)}"):
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for up in page.get("Uploads", []):
                    found.append((up["Key"], up["UploadId"]))
        return found

    def delete_keys(self, keys: list[str]) -> None:
        with self.errors(f"deleting under {self.uri(self.prefix)}"):
            for start in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                if batch:
                    self._client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )


def translate_client_error(exc, what: str, bucket: str) -> BridgeError:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in ("NoSuchBucket",) or (code == "404" and "bucket" in what):
        return PermanentError(
            f"{what}: bucket {bucket!r} does not exist",
            hint="create it or fix BRIDGE_TARGET_URI",
        )
    if (
        code
        in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403",
            "InvalidToken",
            "ExpiredToken",
        )
        or status == 403
    ):
        return PermanentError(
            f"{what}: S3 refused the credentials or access ({code or status})",
            hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy",
        )
    if code in ("PreconditionFailed", "412") or status == 412:
        return TemporaryError(
            f"{what}: the source object changed while it was copied; the next pass copies it again"
        )
    if status >= 500 or code in (
        "SlowDown",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
    ):
        return TemporaryError(f"{what}: S3 error {code or status}, retried and still failing")
    return PermanentError(f"{what}: S3 error {code or status}: {redact(err.get('Message', ''))}")
