"""Retrying S3 work that botocore's own retries cannot cover.

botocore (standard mode) already retries a *request* that fails with 503
SlowDown, a 5xx, a timeout or a reset before the response arrived. It cannot
retry what happens after: a connection reset while a ranged GET body is being
read, or a multi-request step (GET a range, then upload it as a part). The
transfer engine wraps such steps in :func:`retrying`: exponential backoff with
full jitter on transient failures, immediate failure on permanent ones (403,
missing bucket, missing key), so a wrong credential never waits for minutes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# S3 error codes worth another try (throttling and server-side hiccups).
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "InternalError",
        "503",
        "500",
        "502",
        "504",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later attempt may not see."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        return code in TRANSIENT_CODES or status >= 500
    return isinstance(
        exc,
        ConnectionError
        | HTTPClientError
        | IncompleteReadError
        | ResponseStreamingError
        | Urllib3Error
        | ConnectionResetError
        | TimeoutError
        | ShortRead,
    )


class ShortRead(Exception):
    """A body ended before the promised number of bytes (a reset mid-transfer)."""


def backoff_delay(
    attempt: int, base: float = 0.2, cap: float = 20.0, *, least: float = 0.0
) -> float:
    """Every wait before a retry in bridge: exponential with jitter, uniform in
    [least × d, d] where d = min(cap, base × 2**attempt). ``least=0`` ("full jitter") for
    retries of one request; 0.5 for a loop that must not come back too soon."""
    d = min(cap, base * (2 ** min(attempt, 32)))
    return random.uniform(least * d, d)


def retrying(
    what: str,
    fn: Callable[[], T],
    attempts: int = 5,
    *,
    sleep: Callable[[float], None] = time.sleep,
    base: float = 0.2,
) -> T:
    """Call ``fn`` until it succeeds, a permanent error occurs, or attempts run out."""
    attempts = max(1, attempts)
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt + 1 >= attempts or not is_transient(exc):
                raise
            delay = backoff_delay(attempt, base)
            log.debug("%s: %s; retry %d/%d in %.2fs", what, exc, attempt + 1, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")
