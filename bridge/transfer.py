"""The transfer engine: copy a version's files into the store, verified, fast.

Three paths, chosen per version (docs/transfer.md has the full story):

* **server-side** — source and target on the same S3 endpoint: ``CopyObject``
  (up to ``transfer_copy_threshold``, 5 GiB by default) or ``UploadPartCopy``
  in parallel above it. No object bytes go through this process except one
  read of the source, in parallel ranged GETs, to compute its SHA-256 while
  the store copies.
* **streamed** — different endpoints: parallel ranged GETs from the source,
  each range uploaded as one part of a multipart upload (``PutObject`` for
  files up to one part).
* **proxy** — no direct S3 access to the source: each file streams from the
  MLflow server's artifact proxy into a multipart upload, then is read back.

Memory: at most ``transfer_concurrency + 2`` parts are held at any time,
across all files of a copy, whatever the model size (the proxy path streams
through boto3's upload manager with a bounded number of files at once).

Verification: a file counts as copied only when the store itself confirmed
the bytes: the SHA-256 it computed for a ``CopyObject`` equals ours, or the
ETag (MD5) it computed for every part equals the MD5 of the bytes we sent or
read, or, when the store reports neither (encrypted objects, older stores),
a full read-back of the object equals our SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from bridge.errors import BridgeError, TemporaryError
from bridge.progress import Progress
from bridge.retry import retrying
from bridge.settings import Settings
from bridge.store import S3Object, SourceBucket, Store, translate_client_error

log = logging.getLogger(__name__)

SERVER_SIDE, STREAMED, PROXY = "server-side copy", "ranged reads + multipart upload", "MLflow proxy"


@dataclass(frozen=True)
class TransferOptions:
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 8
    copy_threshold: int = 5 * 1024**3
    attempts: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> TransferOptions:
        return cls(
            part_size=settings.transfer_part_size,
            concurrency=settings.transfer_concurrency,
            copy_threshold=settings.transfer_copy_threshold,
            attempts=max(settings.s3_max_attempts, 1) + 1,
        )


@dataclass(frozen=True)
class Copied:
    path: str
    size: int
    sha256: str


def ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges covering ``size``; one empty range for an empty file."""
    if size <= 0:
        return [(0, 0)]
    return [(start, min(start + part_size, size)) for start in range(0, size, part_size)]


def normalize_endpoint(url: str | None) -> str:
    return (url or "").rstrip("/").lower()


def same_endpoint(a: str | None, b: str | None) -> bool:
    return normalize_endpoint(a) == normalize_endpoint(b)


@contextlib.contextmanager
def _copy_errors(what: str, src: SourceBucket, store: Store) -> Iterator[None]:
    """Bridge errors that name the bucket a failed request was about."""
    from botocore.exceptions import ClientError

    with store.errors(what):
        try:
            yield
        except ClientError as exc:
            source_side = exc.operation_name in ("GetObject", "HeadObject", "ListObjectsV2")
            bucket = src.bucket if source_side else store.bucket
            raise translate_client_error(exc, what, bucket) from None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _etag(value: str) -> str:
    return value.strip('"').lower()


class Engine:
    """Copies files into one Store; one engine per process, reusable across versions."""

    def __init__(self, store: Store, options: TransferOptions):
        self.store = store
        self.options = options
        self._parts = ThreadPoolExecutor(options.concurrency, thread_name_prefix="bridge-part")
        # Bytes in flight are bounded by these slots: one part per worker plus
        # two being hashed, so memory stays near (concurrency + 2) x part size.
        self._slots = threading.BoundedSemaphore(options.concurrency + 2)

    def close(self) -> None:
        self._parts.shutdown(wait=True, cancel_futures=True)

    def mode(self, source) -> str:
        direct: SourceBucket | None = getattr(source, "direct", None)
        if direct is None:
            return PROXY
        if same_endpoint(direct.endpoint_url, self.store.endpoint_url):
            return SERVER_SIDE
        return STREAMED

    # --- one version ------------------------------------------------------------

    def copy_files(self, source, paths: list[str], prefix: str, progress: Progress) -> list[Copied]:
        """Copy ``paths`` of ``source`` under ``prefix``, in parallel; fail on the first error."""
        mode = self.mode(source)
        # Proxy streams buffer inside boto3's upload manager (2 parts each).
        limit = self.options.concurrency if mode != PROXY else max(1, self.options.concurrency // 2)
        workers = max(1, min(limit, len(paths)))
        results: dict[str, Copied] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="bridge-file") as files:
            futures = {
                files.submit(self._copy_one, source, mode, path, prefix + path, progress): path
                for path in paths
            }
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in pending:
                fut.cancel()
            wait(pending)
            for fut in done:
                if fut.exception() is not None:
                    raise fut.exception()
            for fut, path in futures.items():
                results[path] = fut.result()
        return [results[p] for p in paths]

    def _copy_one(self, source, mode: str, path: str, key: str, progress: Progress) -> Copied:
        if mode == PROXY:
            copied = self._proxy(source, path, key, progress)
        else:
            obj = source.object(path)
            what = f"copying {source.direct.uri(obj.key)} to {self.store.uri(key)}"
            with _copy_errors(what, source.direct, self.store):
                if mode == SERVER_SIDE:
                    copied = self._server_side(source.direct, obj, path, key, progress)
                else:
                    copied = self._streamed(source.direct, obj, path, key, progress)
        progress.file_done(path, copied.size, mode)
        return copied

    # --- ordered parallel parts -------------------------------------------------

    def _ordered(
        self, work: Callable[[int, int, int], tuple], spans: list[tuple[int, int]]
    ) -> Iterator[tuple]:
        """Run ``work(i, start, end)`` on the part pool, yield results in order.

        A part takes a slot before it is submitted and gives it back once the
        consumer is done with it, so at most 2 x concurrency parts exist at
        once across every file being copied. A producer that already has parts
        in flight never blocks on a slot (it consumes its oldest part instead),
        so files cannot deadlock each other.
        """
        pending: deque[Future] = deque()
        todo = deque(enumerate(spans))
        try:
            while todo or pending:
                if todo and self._slots.acquire(blocking=not pending):
                    i, (start, end) = todo.popleft()
                    try:
                        pending.append(self._parts.submit(work, i, start, end))
                    except BaseException:
                        self._slots.release()
                        raise
                    continue
                fut = pending.popleft()
                try:
                    yield fut.result()
                finally:
                    self._slots.release()  # the consumer is done with this part
        finally:
            for fut in pending:
                fut.cancel()
            for fut in pending:
                if not fut.cancelled():
                    try:
                        fut.result()
                    except BaseException:  # noqa: BLE001 - already failing; the first error wins
                        pass
                self._slots.release()

    def _retry(self, what: str, fn):
        return retrying(what, fn, self.options.attempts)

    # --- server-side ---------------------------------------------------------

    def _server_side(
        self, src: SourceBucket, obj: S3Object, path: str, key: str, progress: Progress
    ) -> Copied:
        spans = ranges(obj.size, self.options.part_size)
        if obj.size <= self.options.copy_threshold:
            copy = self._parts.submit(
                self._retry, f"copy {obj.key}", lambda: self.store.copy_object(obj, key)
            )
            sha = hashlib.sha256()
            try:
                for data in self._ordered(
                    lambda i, a, b: self._retry(
                        f"read {obj.key}", lambda: src.get_range(obj, a, b)
                    ),
                    spans,
                ):
                    sha.update(data)
                    progress.add_bytes(len(data))
            finally:
                server_sha = copy.result()
            digest = sha.hexdigest()
            if server_sha is not None:
                if server_sha != digest:
                    raise TemporaryError(
                        f"{self.store.uri(key)}: the store's SHA-256 of the copy does not match "
                        f"the source {src.uri(obj.key)}; it will be copied again"
                    )
                return Copied(path, obj.size, digest)
            return self._read_back(path, key, obj.size, digest)

        upload_id = self.store.create_multipart(key, checksum=False)

        def part(i: int, a: int, b: int):
            def once():
                data = src.get_range(obj, a, b)
                p = self.store.upload_part_copy(key, upload_id, i + 1, obj, a, b)
                return data, p, _etag(p["ETag"]) == _md5(data)

            return self._retry(f"copy part {i + 1} of {obj.key}", once)

        return self._multipart(path, key, obj.size, upload_id, part, spans, progress)

    # --- streamed --------------------------------------------------------------

    def _streamed(
        self, src: SourceBucket, obj: S3Object, path: str, key: str, progress: Progress
    ) -> Copied:
        spans = ranges(obj.size, self.options.part_size)
        if len(spans) == 1:

            def whole(i: int, a: int, b: int):
                def once():
                    data = src.get_range(obj, a, b)
                    digest = hashlib.sha256(data).hexdigest()
                    etag = self.store.put_object(key, data, digest)
                    return digest, _etag(etag) == _md5(data)

                return self._retry(f"copy {obj.key}", once)

            # one span, but through the part slots: it holds a whole part in memory
            [(digest, confirmed)] = list(self._ordered(whole, spans))
            progress.add_bytes(obj.size)
            if confirmed:
                return Copied(path, obj.size, digest)
            return self._read_back(path, key, obj.size, digest)

        upload_id = self.store.create_multipart(key, checksum=True)

        def part(i: int, a: int, b: int):
            def once():
                data = src.get_range(obj, a, b)
                p = self.store.upload_part(
                    key, upload_id, i + 1, data, hashlib.sha256(data).hexdigest()
                )
                return data, p, _etag(p["ETag"]) == _md5(data)

            return self._retry(f"copy part {i + 1} of {obj.key}", once)

        return self._multipart(path, key, obj.size, upload_id, part, spans, progress)

    def _multipart(self, path, key, size, upload_id, part, spans, progress) -> Copied:
        sha = hashlib.sha256()
        parts, confirmed = [], True
        try:
            for data, p, ok in self._ordered(part, spans):
                sha.update(data)
                parts.append(p)
                confirmed = confirmed and ok
                progress.add_bytes(len(data))
            self._retry(
                f"complete {key}", lambda: self.store.complete_multipart(key, upload_id, parts)
            )
        except BaseException:
            try:
                self.store.abort_multipart(key, upload_id)
            except BridgeError as exc:
                log.warning("could not abort the upload to %s: %s", self.store.uri(key), exc)
            raise
        digest = sha.hexdigest()
        if confirmed:
            return Copied(path, size, digest)
        return self._read_back(path, key, size, digest)

    # --- proxy ----------------------------------------------------------------

    def _proxy(self, source, path: str, key: str, progress: Progress) -> Copied:
        def once():
            with source.open(path) as stream:
                return self.store.upload_stream(
                    key, stream, part_size=self.options.part_size, concurrency=2
                )

        size, digest = retrying(f"copy {path}", once, self.options.attempts)
        progress.add_bytes(size)
        return self._read_back(path, key, size, digest)

    # --- verification -----------------------------------------------------------

    def _read_back(self, path: str, key: str, size: int, digest: str) -> Copied:
        got = self.object_digest(key)
        if got != (size, digest):
            raise TemporaryError(
                f"{self.store.uri(key)} does not match what was read from the source; "
                "it will be copied again"
            )
        return Copied(path, size, digest)

    def object_digest(self, key: str, size: int | None = None) -> tuple[int, str]:
        """(size, sha256) of a stored object, read with parallel ranged GETs."""
        if size is None:
            head = self.store.head(key)
            if head is None:
                return (-1, "")
            size = head["ContentLength"]
        obj = S3Object(self.store.bucket, key, size, "")
        sha, total = hashlib.sha256(), 0
        with self.store.errors(f"verifying {self.store.uri(key)}"):
            for data in self._ordered(
                lambda i, a, b: self._retry(f"read {key}", lambda: self._get(obj, a, b)),
                ranges(size, self.options.part_size),
            ):
                sha.update(data)
                total += len(data)
        return total, sha.hexdigest()

    def _get(self, obj: S3Object, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        resp = self.store.client.get_object(
            Bucket=obj.bucket, Key=obj.key, Range=f"bytes={start}-{end - 1}"
        )
        data = resp["Body"].read()
        if len(data) != end - start:
            from bridge.retry import ShortRead

            raise ShortRead(f"{obj.key}: got {len(data)} of {end - start} bytes")
        return data
