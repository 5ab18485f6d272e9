"""The S3 edge: the shared store KServe reads from.

Only this module talks to the target store. It knows keys, objects and
streams; what a "published version" is lives in :mod:`bridge.publish`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import BinaryIO

from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.log import redact
from bridge.settings import Settings

log = logging.getLogger(__name__)

_READ_CHUNK = 1024 * 1024
# Multipart threshold/part size for streamed uploads: memory stays near
# max_concurrency * part size, whatever the file size.
_PART_SIZE = 16 * 1024 * 1024
_CONCURRENCY = 4


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


def s3_client(endpoint_url: str | None, region: str, max_attempts: int):
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"max_attempts": max(1, max_attempts), "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


class Store:
    def __init__(self, settings: Settings):
        settings.require("target_uri")
        self.bucket = settings.target_bucket
        self.prefix = settings.target_prefix
        self.endpoint_url = settings.target_endpoint_url
        self._client = s3_client(
            settings.target_endpoint_url, settings.target_region, settings.s3_max_attempts
        )

    @property
    def client(self):
        return self._client

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate botocore failures into bridge errors that say what to fix."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = redact(self.endpoint_url or "AWS S3")
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
            raise translate_client_error(exc, what, self.bucket) from None
        except BotoCoreError as exc:
            raise TemporaryError(
                f"{what}: cannot reach S3 at {where}: {redact(str(exc))}"
            ) from None

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
        with self.errors(f"reading {self.uri(key)}"):
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                return None
            with contextlib.closing(resp["Body"]) as body:
                data = body.read(limit + 1)
        if len(data) > limit:
            raise PermanentError(f"{self.uri(key)} is larger than {limit} bytes")
        return data

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self.errors(f"writing {self.uri(key)}"):
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )

    def upload_stream(self, key: str, stream: BinaryIO) -> tuple[int, str]:
        """Stream ``stream`` to ``key`` (multipart when large); return (size, sha256) read."""
        from boto3.s3.transfer import TransferConfig

        reader = HashingReader(stream)
        config = TransferConfig(
            multipart_threshold=_PART_SIZE,
            multipart_chunksize=_PART_SIZE,
            max_concurrency=_CONCURRENCY,
            use_threads=True,
        )
        with self.errors(f"uploading {self.uri(key)}"):
            self._client.upload_fileobj(reader, self.bucket, key, Config=config)
        return reader.size, reader.hexdigest()

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
    if status >= 500 or code in (
        "SlowDown",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
    ):
        return TemporaryError(f"{what}: S3 error {code or status}, retried and still failing")
    return PermanentError(f"{what}: S3 error {code or status}: {redact(err.get('Message', ''))}")
