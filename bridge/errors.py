"""Errors as data: each kind maps to one exit code of the command-line contract.

0 ok; 1 a gate or check said no; 2 bad usage or configuration; 3 an outside
system failed (retryable); 4 an internal error (a bug: an exception bridge did
not expect, never a verdict about the model).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base error. ``str(err)`` is a single line meant for a person."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = " ".join(message.split())
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckFailed(BridgeError):
    """A gate or check said no (a model that cannot be served, a failed gate)."""

    exit_code = 1
    kind = "check"


class PermanentError(BridgeError):
    """Retrying will not help: wrong credentials, a missing bucket, bad configuration."""

    exit_code = 2
    kind = "permanent"


class UsageError(PermanentError):
    """Bad flags, settings or arguments."""

    kind = "usage"


class TemporaryError(BridgeError):
    """An outside system failed in a way that may go away (down, slow, throttled)."""

    exit_code = 3
    kind = "temporary"


class InternalError(BridgeError):
    """A bug: an exception bridge did not expect. CI must not read it as a gate's "no"."""

    exit_code = 4
    kind = "internal"


# When several models fail in one pass, the exit code reports the one a person
# must act on first: a bug, then configuration, then outages, then model checks.
_PRECEDENCE = {4: 4, 2: 3, 3: 2, 1: 1, 0: 0}


def worst_exit_code(errors: list[BridgeError]) -> int:
    codes = [e.exit_code for e in errors] or [0]
    return max(codes, key=lambda c: _PRECEDENCE.get(c, 0))
