"""The transfer engine: copy a version's files into the store, verified, fast.

Three paths, chosen per version (docs/transfer.md has the full story):

* **server-side** — source and target on the same S3 endpoint: ``CopyObject``
  (up to ``transfer_copy_threshold``, 5 GiB by default) or ``UploadPartCopy``
  in parallel above it. No object bytes go through this process when the store
  reports the SHA-256 it computed over the copy; otherwise (or when told not
  to trust it) one streaming read of the source is hashed while the store copies.
* **streamed** — different endpoints: the source is read in part-size
  chunks and uploaded as one streamed ``PutObject`` as it is read (up to
  ``put_threshold``, 5 GiB by default), above that as the parts of a multipart
  upload, in parallel.
* **proxy** — no direct S3 access to the source: each file streams from the
  MLflow server's artifact proxy (resumed with ``Range`` after a failure) and is
  uploaded exactly as on the streamed path. Other artifact stores without a
  ranged reader go through boto3's upload manager and a read-back.

Reads: one streaming GET per object, read front to back in part-size chunks
and re-opened at the current offset after a failure (several files are read
at once). On the S3 servers measured, this beat parallel ranged GETs of one
object; see docs/transfer.md.

Memory: at most ``transfer_concurrency + 1`` parts' worth of bytes are held at
any time, across all files of a copy, whatever the model size or file count;
small files are copied more at a time within that budget.

Verification: a file counts as copied only when the store itself confirmed
the bytes: it computed the SHA-256 of a ``CopyObject`` it made from the exact
source object listed (pinned by its ETag), or that SHA-256 equals ours (sent in a
header, or for a streamed ``PutObject`` over TLS in a trailer), or the
ETag (MD5) it computed for every part equals the MD5 of the bytes we sent or
read, or, when the store reports neither (encrypted objects, older stores),
a full read-back of the object equals our SHA-256.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from bridge.errors import BridgeError, TemporaryError
from bridge.progress import Progress
from bridge.retry import ShortRead, backoff_delay, is_transient, retrying
from bridge.settings import Settings
from bridge.store import S3Object, SourceBucket, Store, translate_client_error

log = logging.getLogger(__name__)

SERVER_SIDE, STREAMED, PROXY = (
    "server-side copy",
    "streaming read + multipart upload",
    "MLflow proxy",
)


@dataclass(frozen=True)
class TransferOptions:
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 8
    copy_threshold: int = 5 * 1024**3
    put_threshold: int = 5 * 1024**3
    attempts: int = 5
    trust_store_checksum: bool = True
    proxy_ranges: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TransferOptions:
        return cls(
            part_size=settings.transfer_part_size,
            concurrency=settings.transfer_concurrency,
            copy_threshold=settings.transfer_copy_threshold,
            put_threshold=settings.transfer_put_threshold,
            attempts=max(settings.s3_max_attempts, 1) + 1,
            trust_store_checksum=settings.transfer_trust_store_checksum,
            proxy_ranges=settings.transfer_proxy_ranges,
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
        # Bytes in flight are bounded by this budget: one part per worker plus
        # one being read, so memory stays near (concurrency + 1) x part size
        # however many (small) files are read at once.
        self._budget = ByteBudget((options.concurrency + 1) * options.part_size)
        self._fence: Callable[[], None] | None = None  # of the copy_files call under way
        _return_large_buffers_to_the_os()

    def close(self) -> None:
        self._parts.shutdown(wait=True, cancel_futures=True)

    def mode(self, source) -> str:
        direct: SourceBucket | None = getattr(source, "direct", None)
        if direct is None:
            return PROXY
        # A server-side copy is made by the target's identity, which must also read the
        # source: with separate source/target profiles, stream instead.
        same_identity = direct.profile == self.store.profile
        if same_identity and same_endpoint(direct.endpoint_url, self.store.endpoint_url):
            return SERVER_SIDE
        return STREAMED

    # --- one version ------------------------------------------------------------

    def copy_files(
        self,
        source,
        paths: list[str],
        prefix: str,
        progress: Progress,
        fence: Callable[[], None] | None = None,
    ) -> list[Copied]:
        """Copy ``paths`` of ``source`` under ``prefix``, in parallel; fail on the first error.

        ``fence`` is called before each file and each chunk read; whatever it raises
        stops the copy (each file's own multipart upload is aborted on the way out).
        """
        self._fence = fence
        try:
            return self._copy_files(source, paths, prefix, progress)
        finally:
            self._fence = None

    def _copy_files(
        self, source, paths: list[str], prefix: str, progress: Progress
    ) -> list[Copied]:
        mode = self.mode(source)
        workers = max(1, min(self._file_workers(source, mode, paths), len(paths)))
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

    def _file_workers(self, source, mode: str, paths: list[str]) -> int:
        """Files copied at once. Small files are bound by request latency, not bytes:
        more of them at once, while the byte budget still bounds memory."""
        c = self.options.concurrency
        if mode == SERVER_SIDE:
            return c
        if mode == PROXY and not getattr(source, "resumable", False):
            return max(1, c // 2)  # each streams through boto3's upload manager (2 parts)
        sizes = [source.listed_size(p) for p in paths]
        if sizes and all(s is not None for s in sizes):
            if sum(sizes) / len(sizes) <= self.options.part_size // 4:
                return SMALL_FILE_FACTOR * c
        return c

    def _copy_one(self, source, mode: str, path: str, key: str, progress: Progress) -> Copied:
        if self._fence is not None:
            self._fence()
        if mode == PROXY:
            size = source.listed_size(path) if getattr(source, "resumable", False) else None
            if size is None:
                copied = self._proxy(source, path, key, progress)
            elif (
                self.options.proxy_ranges
                and size > self.options.part_size
                and getattr(source, "ranged", False)
            ):
                with self.store.errors(f"copying {path} to {self.store.uri(key)}"):
                    copied = self._ranged(source, path, key, size, progress)
            else:

                def chunks() -> Iterator[bytes]:
                    return self._chunks(
                        lambda off: source.open_at(path, off), size, f"read {path}", exact=True
                    )

                with self.store.errors(f"copying {path} to {self.store.uri(key)}"):
                    copied = self._upload(chunks, size, path, key, progress)
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

    # --- reading ------------------------------------------------------------

    def _chunks(
        self, open_at: Callable[[int], object], size: int, what: str, exact: bool = False
    ) -> Iterator[bytes]:
        """Read an object front to back in part-size chunks, resuming after failures.

        One streaming GET per object (re-opened at the current offset after a
        reset, a timeout or a cut body, with backoff). Before each chunk is read
        its bytes are taken from the budget; the caller gives them back
        (``self._budget.release(len(chunk))``) once it is done with the chunk,
        which bounds memory across all files. ``exact``: the body must end at
        ``size`` (a source not pinned to a version, such as MLflow's proxy, may
        have changed since it was listed).
        """
        offset, failures, body = 0, 0, None
        try:
            while offset < size:
                if self._fence is not None:
                    self._fence()
                want = min(self.options.part_size, size - offset)
                self._budget.acquire(want)
                try:
                    if body is None:
                        body = open_at(offset)
                    data = _read_exact(body, want)
                    if exact and offset + want == size and body.read(1):
                        raise TemporaryError(
                            f"{what}: larger than listed (it changed); it will be copied again"
                        )
                except BaseException as exc:
                    self._budget.release(want)
                    _close(body)
                    body = None
                    if not isinstance(exc, Exception) or not is_transient(exc):
                        raise
                    failures += 1
                    if failures >= self.options.attempts:
                        raise
                    delay = backoff_delay(failures)
                    log.debug("%s: %s at byte %d; resuming in %.2fs", what, exc, offset, delay)
                    time.sleep(delay)
                    continue
                failures = 0
                offset += len(data)
                yield data
        finally:
            _close(body)

    def _retry(self, what: str, fn):
        return retrying(what, fn, self.options.attempts)

    def _source_chunks(self, src: SourceBucket, obj: S3Object) -> Iterator[bytes]:
        return self._chunks(lambda off: src.open_at(obj, off), obj.size, f"read {obj.key}")

    # --- server-side ---------------------------------------------------------

    def _server_side(
        self, src: SourceBucket, obj: S3Object, path: str, key: str, progress: Progress
    ) -> Copied:
        spans = ranges(obj.size, self.options.part_size)
        if obj.size <= self.options.copy_threshold:
            if self.options.trust_store_checksum:
                server_sha = self._retry(
                    f"copy {obj.key}", lambda: self.store.copy_object(obj, key)
                )
                if server_sha is not None:
                    progress.add_bytes(obj.size)
                    return Copied(path, obj.size, server_sha)
                # The store does not report checksums: hash the source, read back the copy.
                digest = self._source_digest(src, obj, progress)
                return self._read_back(path, key, obj.size, digest)
            # the store copies while this thread hashes one streaming read of the source
            copy = self._parts.submit(
                self._retry, f"copy {obj.key}", lambda: self.store.copy_object(obj, key)
            )
            try:
                digest = self._source_digest(src, obj, progress)
            finally:
                server_sha = copy.result()
            if server_sha is not None:
                if server_sha != digest:
                    raise TemporaryError(
                        f"{self.store.uri(key)}: the store's SHA-256 of the copy does not match "
                        f"the source {src.uri(obj.key)}; it will be copied again"
                    )
                return Copied(path, obj.size, digest)
            return self._read_back(path, key, obj.size, digest)

        upload_id = self.store.create_multipart(key, checksum=False)
        sha, md5s = hashlib.sha256(), []
        try:
            futures = [
                self._parts.submit(
                    self._retry,
                    f"copy part {i + 1} of {obj.key}",
                    lambda i=i, a=a, b=b: self.store.upload_part_copy(
                        key, upload_id, i + 1, obj, a, b
                    ),
                )
                for i, (a, b) in enumerate(spans)
            ]
            try:
                for data in self._source_chunks(src, obj):
                    sha.update(data)
                    md5s.append(_md5(data))
                    self._budget.release(len(data))
                    progress.add_bytes(len(data))
            finally:
                parts = [f.result() for f in futures]
            self._retry(
                f"complete {key}", lambda: self.store.complete_multipart(key, upload_id, parts)
            )
        except BaseException:
            self._abort(key, upload_id)
            raise
        digest = sha.hexdigest()
        if [_etag(p["ETag"]) for p in parts] == md5s:
            return Copied(path, obj.size, digest)
        return self._read_back(path, key, obj.size, digest)

    def _source_digest(self, src: SourceBucket, obj: S3Object, progress: Progress) -> str:
        sha = hashlib.sha256()
        for data in self._source_chunks(src, obj):
            sha.update(data)
            self._budget.release(len(data))
            progress.add_bytes(len(data))
        return sha.hexdigest()

    # --- streamed --------------------------------------------------------------

    def _streamed(
        self, src: SourceBucket, obj: S3Object, path: str, key: str, progress: Progress
    ) -> Copied:
        return self._upload(lambda: self._source_chunks(src, obj), obj.size, path, key, progress)

    def _upload(
        self,
        open_chunks: Callable[[], Iterator[bytes]],
        size: int,
        path: str,
        key: str,
        progress: Progress,
    ) -> Copied:
        """Upload the chunks of one file as they are read; verify as the store allows.

        A file of one part is one ``PutObject`` made by this (file) thread; larger
        files up to ``put_threshold`` are one streamed ``PutObject`` too (see
        :meth:`_put_streamed`); above it, parts are uploaded on the part workers
        while the next part is read.
        """
        single = size <= self.options.part_size
        if not single and size <= self.options.put_threshold:
            return self._put_streamed(open_chunks, size, path, key, progress)
        chunks = open_chunks()
        upload_id = None if single else self.store.create_multipart(key, checksum=True)
        sha = hashlib.sha256()
        futures: list[Future] = []
        sizes: dict[Future, int] = {}

        def upload(i: int, data: bytes):
            # Runs in a part worker: hashing here overlaps with the next read.
            try:
                part_sha = hashlib.sha256(data).hexdigest()
                if upload_id is None:
                    etag, checked = self._retry(
                        f"upload {key}", lambda: self.store.put_object(key, data, part_sha)
                    )
                    return None, checked or _etag(etag) == _md5(data)
                p, checked = self._retry(
                    f"upload part {i + 1} of {key}",
                    lambda: self.store.upload_part(key, upload_id, i + 1, data, part_sha),
                )
                # A store that confirmed our SHA-256 checked the bytes; else compare MD5s.
                return p, checked or _etag(p["ETag"]) == _md5(data)
            finally:
                self._budget.release(len(data))

        try:
            if not size:
                chunks = iter([b""])
            results = []
            for i, data in enumerate(chunks):
                sha.update(data)
                progress.add_bytes(len(data))
                if single:
                    results.append(upload(i, data))
                    continue
                fut = self._parts.submit(upload, i, data)
                futures.append(fut)
                sizes[fut] = len(data)
                _raise_first_failure(futures)
            results += [f.result() for f in futures]
            if upload_id is not None:
                self._complete(key, upload_id, results)
        except BaseException:
            self._withdraw(futures, sizes)
            if upload_id is not None:
                self._abort(key, upload_id)
            raise
        return self._checked(path, key, size, sha.hexdigest(), results)

    def _put_streamed(
        self,
        open_chunks: Callable[[], Iterator[bytes]],
        size: int,
        path: str,
        key: str,
        progress: Progress,
    ) -> Copied:
        """One ``PutObject`` whose body is the file as it is read, hashed on the way.

        The file is read as one stream anyway, so one upload stream keeps pace with it,
        and the store has no parts to assemble (on the S3 server measured, assembling a
        1 GiB multipart upload cost more than receiving it). Memory: one chunk from the
        byte budget at a time. A failed upload (botocore's retries and ours) starts the
        read over (``seek(0)``); a failed read (after its own resumes) ends the copy.
        Verified by the SHA-256 the store checked over the whole body where it reports
        one (TLS endpoints: a checksum trailer), else by its ETag equal to our MD5, else
        by a read-back.
        """
        body = _StreamBody(open_chunks, self._budget, progress, md5=not self.store.streams_sha256)

        def put() -> tuple[str, str | None]:
            body.seek(0)
            try:
                return self.store.put_stream(key, body, size)
            except Exception:
                if body.failed is not None:
                    raise _ReadFailed() from None
                raise

        try:
            etag, store_sha = self._retry(f"upload {key}", put)
        except _ReadFailed:
            raise body.failed from None
        finally:
            body.close()
        if body.size != size:
            raise TemporaryError(
                f"upload {key}: sent {body.size} of {size} bytes; it will be copied again"
            )
        digest = body.sha256
        if store_sha == digest or (body.md5 is not None and _etag(etag) == body.md5):
            return Copied(path, size, digest)
        return self._read_back(path, key, size, digest)

    # --- ranged: parts of one file read in parallel --------------------------------

    def _ranged(self, source, path: str, key: str, size: int, progress: Progress) -> Copied:
        """Read a file as byte ranges in parallel, each range uploaded as one part.

        Ranges are taken from the byte budget in file order and hashed in file order
        (``_InOrder``), so the file's SHA-256 is over its bytes as they are and memory
        stays within the budget. Each range is read, resumed and retried on its own;
        all must come from one object (same ETag, same size as listed).
        """
        upload_id = self.store.create_multipart(key, checksum=True)
        whole = _InOrder(self._budget)
        seen = _SameObject(path, size)
        futures: list[Future] = []
        sizes: dict[Future, int] = {}
        try:
            for i, (a, b) in enumerate(ranges(size, self.options.part_size)):
                if self._fence is not None:
                    self._fence()
                self._budget.acquire(b - a)
                fut = self._parts.submit(
                    self._range_part,
                    source,
                    path,
                    key,
                    upload_id,
                    (i, a, b),
                    whole,
                    seen,
                    progress,
                )
                futures.append(fut)
                sizes[fut] = b - a
                _raise_first_failure(futures)
            results = [f.result() for f in futures]
            self._complete(key, upload_id, results)
        except BaseException:
            self._withdraw(futures, sizes)
            whole.drop()
            self._abort(key, upload_id)
            raise
        return self._checked(path, key, size, whole.hexdigest(), results)

    # --- shared by the streamed and the ranged multipart copies -----------------------

    def _complete(self, key: str, upload_id: str, results: list) -> None:
        parts = [p for p, _ in results]
        self._retry(f"complete {key}", lambda: self.store.complete_multipart(key, upload_id, parts))

    def _withdraw(self, futures: list[Future], sizes: dict[Future, int]) -> None:
        """After a failure: parts that never started give their bytes back to the budget
        (their worker would have); the ones running are waited for."""
        for f in futures:
            if f.cancel():
                self._budget.release(sizes[f])
        wait(futures)

    def _checked(self, path: str, key: str, size: int, digest: str, results: list) -> Copied:
        """Done when the store checked every part; else one read-back verifies the file."""
        if all(ok for _, ok in results):
            return Copied(path, size, digest)
        return self._read_back(path, key, size, digest)

    def _range_part(
        self, source, path, key, upload_id, span, whole, seen, progress
    ) -> tuple[dict, bool]:
        """Read bytes [a, b) of ``path`` and upload them as part ``i + 1``; its bytes go
        back to the budget once hashed in file order (or here, if this fails)."""
        i, a, b = span
        try:
            data = self._read_range(source, path, a, b, seen)
            progress.add_bytes(len(data))
            part_sha = hashlib.sha256(data).hexdigest()
            p, checked = self._retry(
                f"upload part {i + 1} of {key}",
                lambda: self.store.upload_part(key, upload_id, i + 1, data, part_sha),
            )
        except BaseException:
            self._budget.release(b - a)
            whole.drop()  # the parts after this one will never be hashed
            raise
        ok = checked or _etag(p["ETag"]) == _md5(data)
        whole.add(i, data)
        return p, ok

    def _read_range(self, source, path: str, a: int, b: int, seen: _SameObject) -> bytearray:
        """Bytes [a, b) of ``path``, resumed where a failed read stopped, with backoff."""
        buf = bytearray(b - a)
        view = memoryview(buf)
        got, failures = 0, 0
        while got < b - a:
            body = None
            try:
                body = source.read_range(path, a + got, b, fresh_url=failures > 0)
                seen.check(body.etag, body.total)
                while got < b - a:
                    data = body.read(min(b - a - got, _READ_PIECE))
                    if not data:
                        raise ShortRead(f"the body ended after {got} of {b - a} bytes")
                    view[got : got + len(data)] = data
                    got += len(data)
            except SourceChanged:
                raise
            except Exception as exc:
                # TemporaryError: the request failed (MLflow or the store); a new URL may do
                if not (isinstance(exc, TemporaryError) or is_transient(exc)):
                    raise
                failures += 1
                if failures >= self.options.attempts:
                    raise
                delay = backoff_delay(failures)
                log.debug("read %s: %s at byte %d; resuming in %.2fs", path, exc, a + got, delay)
                time.sleep(delay)
            finally:
                _close(body)
        return buf

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.store.abort_multipart(key, upload_id)
        except BridgeError as exc:
            log.warning("could not abort the upload to %s: %s", self.store.uri(key), exc)

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
        """(size, sha256) of a stored object, read as one resumable stream."""
        if size is None:
            head = self.store.head(key)
            if head is None:
                return (-1, "")
            size = head["ContentLength"]
        sha, total = hashlib.sha256(), 0
        with self.store.errors(f"verifying {self.store.uri(key)}"):
            for data in self._chunks(lambda off: self.store.open_at(key, off), size, key):
                sha.update(data)
                total += len(data)
                self._budget.release(len(data))
        return total, sha.hexdigest()


# Files copied at once, per unit of concurrency, when they are small (see _file_workers).
SMALL_FILE_FACTOR = 4


class ByteBudget:
    """A counting semaphore over bytes: ``acquire(n)`` waits until ``n`` bytes are free.

    Requests are capped at the total (a chunk never exceeds it anyway) and a
    request of 0 bytes takes nothing.
    """

    def __init__(self, total: int):
        self.total = max(1, total)
        self._free = self.total
        self._cond = threading.Condition()

    @property
    def free(self) -> int:
        return self._free

    def acquire(self, n: int) -> None:
        n = min(n, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self._free >= n)
            self._free -= n

    def release(self, n: int) -> None:
        n = min(n, self.total)
        with self._cond:
            self._free += n
            if self._free > self.total:
                raise RuntimeError("ByteBudget released more than was acquired")
            self._cond.notify_all()


class _ReadFailed(Exception):
    """The body of a streamed upload could not be read (not retried: the reader already
    resumed what it could); the cause is kept on the body."""


class _StreamBody:
    """The body of a streamed ``PutObject``: a file-like reader over the source's chunks.

    A read-ahead thread takes the next chunk from the source and hashes it (SHA-256,
    and MD5 when the store's ETag must confirm the upload) while the HTTP layer sends
    the current one, so reading and hashing overlap with sending. Each chunk holds its
    bytes from the byte budget until it has been sent (at most two chunks per body).
    ``seek(0)`` (a retry of the upload) stops the read and starts it over with fresh
    hashes. Whatever the read raises is kept in ``failed``: the HTTP layer would
    otherwise report it as a failed request and retry it.
    """

    def __init__(
        self,
        open_chunks: Callable[[], Iterator[bytes]],
        budget: ByteBudget,
        progress: Progress,
        md5: bool,
    ):
        self._open = open_chunks
        self._budget = budget
        self._progress = progress
        self._want_md5 = md5
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="bridge-readahead")
        self.failed: BaseException | None = None
        self._reset()

    def _reset(self) -> None:
        self._chunks: Iterator[bytes] | None = None
        self._ahead: Future | None = None  # the next chunk, being read and hashed
        self._view = memoryview(b"")
        self._at = 0  # within the current chunk
        self._held = 0  # budget held by the current chunk
        self.size = 0  # bytes taken from the source so far
        self._pos = 0  # bytes handed to the HTTP layer
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if self._want_md5 else None

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def md5(self) -> str | None:
        return self._md5.hexdigest() if self._md5 is not None else None

    def _take(self) -> bytes | None:
        """The next chunk, hashed in file order (runs in the read-ahead thread)."""
        if self._chunks is None:
            self._chunks = self._open()
        try:
            data = next(self._chunks)
        except StopIteration:
            return None
        self._sha.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        self.size += len(data)
        self._progress.add_bytes(len(data))
        return data

    def _next(self) -> bool:
        self._release()
        ahead, self._ahead = self._ahead, None
        try:
            data = (ahead or self._reader.submit(self._take)).result()
        except BaseException as exc:
            self.failed = exc
            raise
        if data is None:
            return False
        self._held = len(data)
        self._view, self._at = memoryview(data), 0
        self._ahead = self._reader.submit(self._take)
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_READ_PIECE), b""))
        while self._at >= len(self._view):
            if not self._next():
                return b""
        piece = bytes(self._view[self._at : self._at + n])
        self._at += len(piece)
        self._pos += len(piece)
        return piece

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.failed is not None:
            raise self.failed
        if (offset, whence) != (0, 0):
            raise OSError("a streamed upload body can only start over (seek(0))")
        if self._chunks is not None or self._ahead is not None:
            self._stop()
            self._reset()
        return 0

    def _release(self) -> None:
        if self._held:
            self._budget.release(self._held)
            self._held = 0
        self._view = memoryview(b"")

    def _stop(self) -> None:
        """Give back every byte held and close the source read."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            with contextlib.suppress(BaseException):
                data = ahead.result()
                if data is not None:
                    self._budget.release(len(data))
        self._release()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        self._stop()
        self._reader.shutdown(wait=True)


class SourceChanged(TemporaryError):
    """The source file changed while it was being read; the next sync copies it again."""


class _SameObject:
    """All ranges of one file must come from one object: one ETag, the listed size."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size
        self._etag: str | None = None
        self._lock = threading.Lock()

    def check(self, etag: str, total: int) -> None:
        with self._lock:
            if self._etag is None:
                self._etag = etag
            same = etag == self._etag and total == self.size
        if not same:
            raise SourceChanged(
                f"read {self.path}: it changed while it was read (ETag or size differ "
                "between byte ranges); it will be copied again"
            )


class _InOrder:
    """SHA-256 of a file whose parts arrive in any order: each is hashed once all
    before it are, then its bytes go back to the budget."""

    def __init__(self, budget: ByteBudget):
        self._budget = budget
        self._sha = hashlib.sha256()
        self._next = 0
        self._waiting: dict[int, bytes] = {}
        self._dropped = False
        self._lock = threading.Lock()

    def add(self, i: int, data: bytes) -> None:
        with self._lock:
            if self._dropped:
                self._budget.release(len(data))
                return
            self._waiting[i] = data
            while self._next in self._waiting:
                ready = self._waiting.pop(self._next)
                self._sha.update(ready)
                self._next += 1
                self._budget.release(len(ready))

    def drop(self) -> None:
        """Give back the bytes of parts that will never be hashed (the copy failed), now
        and as they arrive, so that they do not hold the budget other files wait for."""
        with self._lock:
            self._dropped = True
            for data in self._waiting.values():
                self._budget.release(len(data))
            self._waiting.clear()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


_MMAP_THRESHOLD = 1024 * 1024


@functools.cache
def _return_large_buffers_to_the_os() -> None:
    """Have glibc give part-size buffers back to the OS as soon as they are freed.

    glibc raises its mmap threshold after the first large free, after which the
    many part-size buffers of a copy come from per-thread heaps that do not
    shrink: the process then peaks ~60 MB above what is in flight. A fixed
    threshold keeps it at what is in flight. (A no-op on other C libraries.)
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_READ_PIECE = 1024 * 1024


def _read_exact(body, n: int) -> bytearray:
    """Exactly ``n`` bytes from a response body, or ShortRead if it ends early.

    Filled in 1 MiB pieces into one buffer that is handed on as it is: a single
    ``read(n)`` would hold the chunk twice while the HTTP layer copies it.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        data = body.read(min(n - got, _READ_PIECE))
        if not data:
            raise ShortRead(f"the body ended after {got} of {n} bytes")
        view[got : got + len(data)] = data
        got += len(data)
    return buf


def _close(body) -> None:
    if body is not None:
        with contextlib.suppress(Exception):
            body.close()


def _raise_first_failure(futures: list[Future]) -> None:
    """Stop submitting parts as soon as one has failed."""
    for f in futures:
        if f.done() and f.exception() is not None:
            raise f.exception()
