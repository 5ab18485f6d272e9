"""Pure parts of the transfer engine: ranges, URI mapping, retries, bounded memory, progress."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bridge.errors import UsageError
from bridge.progress import Progress, human_bytes, is_live
from bridge.registry import source_s3_uri
from bridge.retry import ShortRead, is_transient, retrying
from bridge.settings import load_settings, parse_size
from bridge.store import b64_to_hex, hex_to_b64
from bridge.transfer import Engine, TransferOptions, ranges, same_endpoint


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def test_ranges_cover_every_byte_once():
    assert ranges(0, 5) == [(0, 0)]
    assert ranges(5, 5) == [(0, 5)]
    assert ranges(11, 5) == [(0, 5), (5, 10), (10, 11)]
    spans = ranges(10**9 + 7, 16 * 1024 * 1024)
    assert spans[0][0] == 0 and spans[-1][1] == 10**9 + 7
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_same_endpoint_ignores_case_and_trailing_slash():
    assert same_endpoint("http://S3:9000/", "http://s3:9000")
    assert same_endpoint(None, None)  # both AWS
    assert not same_endpoint("http://127.0.0.1:9000", "http://localhost:9000")


@pytest.mark.parametrize(
    ("uri", "dest", "expected"),
    [
        (
            "mlflow-artifacts:/1/models/m-x/artifacts",
            "s3://art/",
            "s3://art/1/models/m-x/artifacts",
        ),
        (
            "mlflow-artifacts://mlflow:5000/1/r/artifacts/model",
            "s3://art/root",
            "s3://art/root/1/r/artifacts/model",
        ),
        ("s3://other/path/model", None, "s3://other/path/model"),
        ("mlflow-artifacts:/1/models/m-x/artifacts", None, None),
        ("gs://bucket/model", "s3://art/", None),
    ],
)
def test_source_uri_mapping(uri, dest, expected):
    env = {"BRIDGE_SOURCE_ARTIFACTS_URI": dest} if dest else {}
    assert source_s3_uri(uri, load_settings(env=env)) == expected


def test_transfer_settings_parse_and_validate():
    s = load_settings(
        env={
            "BRIDGE_TRANSFER_PART_SIZE": "8MiB",
            "BRIDGE_TRANSFER_CONCURRENCY": "4",
            "BRIDGE_TRANSFER_COPY_THRESHOLD": "1GiB",
            "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        }
    )
    assert (s.transfer_part_size, s.transfer_concurrency) == (8 * 1024**2, 4)
    assert s.transfer_copy_threshold == 1024**3
    assert s.transfer_put_threshold == 5 * 1024**3  # default: S3's limit for one PutObject
    assert load_settings(env={"BRIDGE_TRANSFER_PUT_THRESHOLD": "0"}).transfer_put_threshold == 0
    assert s.source_endpoint_url == "http://minio:9000"  # MLflow's own variable is honoured
    assert parse_size("16777216") == parse_size("16M") == 16 * 1024**2
    for bad in (
        {"BRIDGE_TRANSFER_PART_SIZE": "1MiB"},
        {"BRIDGE_TRANSFER_COPY_THRESHOLD": "6GiB"},
        {"BRIDGE_TRANSFER_PUT_THRESHOLD": "6GiB"},
        {"BRIDGE_TRANSFER_CONCURRENCY": "0"},
        {"BRIDGE_SOURCE_ARTIFACTS_URI": "/local/dir"},
        {"BRIDGE_PROGRESS": "sometimes"},
    ):
        with pytest.raises(UsageError):
            load_settings(env=bad)


def test_transient_and_permanent_errors():
    assert is_transient(_client_error("SlowDown", 503))
    assert is_transient(_client_error("InternalError", 500))
    assert is_transient(EndpointConnectionError(endpoint_url="http://s3"))
    assert is_transient(ConnectionResetError())
    assert is_transient(ShortRead("cut"))
    assert not is_transient(_client_error("AccessDenied", 403))
    assert not is_transient(_client_error("NoSuchBucket", 404))


def test_retrying_backs_off_then_succeeds_and_fails_fast_on_permanent():
    sleeps: list[float] = []
    calls = iter([_client_error("SlowDown", 503), ConnectionResetError(), "ok"])

    def flaky():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retrying("x", flaky, 5, sleep=sleeps.append, base=1.0) == "ok"
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0

    denied = []

    def forbidden():
        denied.append(1)
        raise _client_error("AccessDenied", 403)

    with pytest.raises(ClientError):
        retrying("x", forbidden, 5, sleep=sleeps.append)
    assert denied == [1]

    with pytest.raises(ConnectionResetError):
        retrying(
            "x", lambda: (_ for _ in ()).throw(ConnectionResetError()), 3, sleep=lambda _: None
        )


class _Body:
    """A response body that can be cut short once, like a reset connection."""

    def __init__(self, data: bytes, cut_at: int | None):
        self.data, self.pos, self.cut_at = data, 0, cut_at

    def read(self, n: int) -> bytes:
        if self.cut_at is not None and self.pos >= self.cut_at:
            raise ConnectionResetError("reset by peer")
        end = self.pos + n if self.cut_at is None else min(self.pos + n, self.cut_at)
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


def test_chunks_resume_after_a_reset_and_bound_memory(monkeypatch):
    monkeypatch.setattr("bridge.transfer.time.sleep", lambda _s: None)
    part = 5 * 1024 * 1024
    engine = Engine(store=None, options=TransferOptions(part_size=part, concurrency=1))
    data = bytes(range(256)) * (3 * part // 256 + 7)
    opened = []

    def open_at(offset):
        opened.append(offset)
        cut = part + 123 if len(opened) == 1 else None  # first stream dies mid-part 2
        body = _Body(data, cut)
        body.pos = offset
        return body

    out = []
    for chunk in engine._chunks(open_at, len(data), "obj"):
        out.append(chunk)
        # the budget is (concurrency + 1) parts; only the held chunk is taken
        assert engine._budget.free == 2 * part - len(chunk)
        engine._budget.release(len(chunk))
    assert b"".join(out) == data
    assert [len(c) for c in out[:-1]] == [part] * (len(out) - 1)
    assert opened == [0, part]  # resumed at the start of the cut part
    assert engine._budget.free == 2 * part
    engine.close()


def test_checksum_encoding():
    digest = "ab" * 32
    assert b64_to_hex(hex_to_b64(digest)) == digest
    assert b64_to_hex("abc=-3") is None  # composite multipart checksum
    assert b64_to_hex(None) is None


def test_progress_line_and_liveness():
    now = [0.0]
    out = io.StringIO()
    p = Progress("m v1", 4 * 1024**2, 2, live=True, stream=out, interval=0, clock=lambda: now[0])
    now[0] = 1.0
    p.add_bytes(1024**2)
    line = p.line()
    assert "1.0 MiB / 4.0 MiB" in line and "0/2 files" in line and "1.0 MiB/s" in line
    assert "ETA 3s" in line
    p.file_done("a", 1024**2, "server-side copy")
    p.finish("server-side copy")
    assert out.getvalue().endswith("\n") and "\r" in out.getvalue()
    assert human_bytes(1536) == "1.5 KiB"
    assert is_live("always") and not is_live("never")
    assert not is_live("auto", io.StringIO())


def test_source_changed_mid_copy_is_temporary():
    from bridge.errors import PermanentError, TemporaryError
    from bridge.store import translate_client_error

    err = translate_client_error(_client_error("PreconditionFailed", 412), "copying a", "b")
    assert isinstance(err, TemporaryError) and "changed while it was copied" in str(err)
    denied = translate_client_error(_client_error("AccessDenied", 403), "copying a", "b")
    assert isinstance(denied, PermanentError) and denied.exit_code == 2


def test_s3_clients_share_one_session_and_its_service_data():
    """Each boto3 session loads botocore's endpoint and S3 service data (~12 MB in the
    daemon image); the store's and every source's clients come from one session."""
    from bridge.store import s3_client

    a = s3_client("http://127.0.0.1:1", "us-east-1", 1)
    b = s3_client("http://127.0.0.1:2", "eu-west-1", 3, pool=40)
    assert a._loader is b._loader
    assert a.meta.endpoint_url != b.meta.endpoint_url


def test_byte_budget_lets_small_chunks_share_what_one_part_would_hold():
    """Memory is bounded by bytes in flight, not by chunk count: 16 chunks of a quarter
    part fit in a budget of 4 parts, a 17th waits until one is given back."""
    import threading

    from bridge.transfer import ByteBudget

    part = 8 * 1024 * 1024
    budget = ByteBudget(4 * part)
    for _ in range(16):
        budget.acquire(part // 4)
    assert budget.free == 0
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (budget.acquire(part // 4), got.set()))
    waiter.start()
    assert not got.wait(0.2)  # blocked while the budget is spent
    budget.release(part // 4)
    waiter.join(5)
    assert got.is_set() and budget.free == 0
    with pytest.raises(RuntimeError):
        ByteBudget(10).release(1)


def test_small_files_are_copied_more_at_a_time():
    from bridge.transfer import PROXY, SERVER_SIDE, SMALL_FILE_FACTOR

    class Source:
        resumable = True

        def __init__(self, size):
            self.size = size

        def listed_size(self, _path):
            return self.size

    engine = Engine(store=None, options=TransferOptions(part_size=8 << 20, concurrency=8))
    paths = [f"f{i}" for i in range(100)]
    assert engine._file_workers(Source(32 << 10), PROXY, paths) == SMALL_FILE_FACTOR * 8
    assert engine._file_workers(Source(64 << 20), PROXY, paths) == 8
    assert engine._file_workers(Source(32 << 10), SERVER_SIDE, paths) == 8
    engine.close()


def test_parts_hashed_in_file_order_whatever_order_they_arrive():
    """Ranged proxy reads: the file's SHA-256 is over its bytes in order, and each part's
    bytes go back to the budget once it is hashed."""
    import hashlib

    from bridge.transfer import ByteBudget, _InOrder

    parts = [bytes([i]) * 1000 for i in range(5)]
    budget = ByteBudget(5000)
    for p in parts:
        budget.acquire(len(p))
    whole = _InOrder(budget)
    for i in (3, 1, 4, 0, 2):
        whole.add(i, parts[i])
    assert whole.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()
    assert budget.free == budget.total


def test_parts_arriving_after_a_failed_part_give_their_bytes_back_at_once():
    """Part 0 failed: the parts after it will never be hashed, so neither those waiting
    nor those still arriving may hold the byte budget other files wait for."""
    from bridge.transfer import ByteBudget, _InOrder

    budget = ByteBudget(3000)
    budget.acquire(3000)
    whole = _InOrder(budget)
    whole.add(1, b"x" * 1000)  # waits for part 0
    budget.release(1000)  # part 0 failed and gave back its own bytes
    whole.drop()
    whole.add(2, b"y" * 1000)  # was in flight
    assert budget.free == budget.total


def _budgeted_chunks(budget, chunks: list[bytes], opened: list[int], fail_at: int | None = None):
    """What Engine._chunks hands out: chunks whose bytes were taken from the budget."""
    opened.append(1)
    for i, data in enumerate(chunks):
        if i == fail_at:
            raise ValueError("the source read failed")
        budget.acquire(len(data))
        yield data


def test_stream_body_hashes_restarts_on_seek0_and_gives_every_byte_back():
    """The streamed PutObject's body: read in small pieces it yields the file in order,
    hashed; seek(0) (a retried upload) starts the read over with fresh hashes; at the end
    no byte of the budget is held."""
    import hashlib

    from bridge.progress import Progress
    from bridge.transfer import ByteBudget, _StreamBody

    chunks = [bytes([i]) * 1000 for i in range(5)]
    budget, opened = ByteBudget(3000), []
    body = _StreamBody(
        lambda: _budgeted_chunks(budget, chunks, opened),
        budget,
        Progress("t", 0, 1, live=False),
        md5=True,
    )
    assert body.read(1500) == chunks[0]  # at most one chunk per read
    body.seek(0)
    got = b"".join(iter(lambda: body.read(333), b""))
    body.close()
    whole = b"".join(chunks)
    assert got == whole and body.size == len(whole) and body.tell() == len(whole)
    assert body.sha256 == hashlib.sha256(whole).hexdigest()
    assert body.md5 == hashlib.md5(whole, usedforsecurity=False).hexdigest()
    assert len(opened) == 2
    assert budget.free == budget.total


def test_stream_body_keeps_a_read_failure_and_refuses_to_start_over():
    """A failed source read is kept on the body (the HTTP layer would report it as a
    failed request) and a retry's seek(0) raises it again instead of reading anew."""
    from bridge.progress import Progress
    from bridge.transfer import ByteBudget, _StreamBody

    budget, opened = ByteBudget(3000), []
    body = _StreamBody(
        lambda: _budgeted_chunks(budget, [b"a" * 100] * 3, opened, fail_at=1),
        budget,
        Progress("t", 0, 1, live=False),
        md5=False,
    )
    assert body.read(100) == b"a" * 100
    with pytest.raises(ValueError):
        body.read(100)
    assert isinstance(body.failed, ValueError)
    with pytest.raises(ValueError):
        body.seek(0)
    body.close()
    assert len(opened) == 1 and body.md5 is None
    assert budget.free == budget.total
