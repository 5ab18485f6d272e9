"""Logging: human lines by default, JSON lines with ``--log-format json``.

Every record and every error line passes through :func:`redact`, which removes
the values of the secret variables the MLflow and AWS clients read, and any
``user:password@`` in URLs, so secrets cannot reach logs or stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "BRIDGE_WEBHOOK_SECRET",
    "BRIDGE_TARGET_SECRET_ACCESS_KEY",
    "BRIDGE_TARGET_ACCESS_KEY_ID",
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_MASK = "***"


def _secret_values() -> list[str]:
    # Short values would mask ordinary words; real keys are long.
    values = {os.environ.get(v, "") for v in SECRET_ENV_VARS}
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)


def redact(text: str) -> str:
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + _MASK + "@", text)
    for value in _secret_values():
        text = text.replace(value, _MASK)
    return text


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    _SKIP = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._SKIP and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str, sort_keys=True))


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
