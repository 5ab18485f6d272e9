"""Logging: human lines by default, JSON lines with ``--log-format json``.

Secrets are removed from the *values* of every record before they are put into
a line (see :mod:`bridge.redact`): the message and its arguments, the exception
and its traceback, and each JSON field before it is encoded -- so a secret
holding quotes, backslashes or non-ASCII cannot slip through an escape.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from bridge.redact import SECRET_ENV_VARS, redact, redact_value

__all__ = ["SECRET_ENV_VARS", "redact", "setup_logging"]


def _redact_arg(value):
    # Strings and containers are redacted in place; other objects keep their type
    # (so %d and %r still work) and are caught by the pass over the finished message.
    if isinstance(value, (str, dict, list, tuple)):
        return redact_value(value)
    return value


def _message(record: logging.LogRecord) -> str:
    """The record's message from redacted arguments, then redacted as a whole."""
    msg = str(record.msg)
    args = record.args
    if isinstance(args, dict):
        args = {k: _redact_arg(v) for k, v in args.items()}
    elif args:
        args = tuple(_redact_arg(a) for a in args)
    try:
        text = msg % args if args else msg
    except (TypeError, ValueError, KeyError):  # a bad format string: show it, do not crash
        text = f"{msg} {args!r}"
    return redact(text)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = self.formatMessage(_with_message(record, _message(record), self))
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + redact(self.formatStack(record.stack_info))
        return line


def _with_message(record, message: str, formatter: logging.Formatter) -> logging.LogRecord:
    copy = logging.makeLogRecord(vars(record))
    copy.message = message
    if formatter.usesTime():
        copy.asctime = formatter.formatTime(copy, formatter.datefmt)
    return copy


class _JsonFormatter(logging.Formatter):
    _SKIP = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in vars(record).items():
            if key not in self._SKIP and not key.startswith("_"):
                payload[key] = redact_value(value)
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, sort_keys=True)


def setup_logging(fmt: str = "human", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _RedactingFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("bridge").setLevel(level.upper())
    # urllib3 (under requests, MLflow's client and the Kubernetes client) warns at every
    # retry; bridge reports the failure itself once it gives up, so those stay for --debug.
    logging.getLogger("urllib3").setLevel(
        logging.DEBUG if level.upper() == "DEBUG" else logging.ERROR
    )
