"""Remove secrets from text before it is formatted, encoded or printed. Pure logic.

What counts as a secret, and where it is masked:

- **URL userinfo**, always: ``scheme://user:pass@host`` and ``scheme://token@host``
  become ``scheme://***@host``, whatever the value and its length (percent-encoded
  or not), in every URL found in the text.
- **Credential positions**, always: the value after ``password=``, ``token:``,
  ``secret=``, ``access_key=`` ... and after ``Authorization:`` or ``Bearer``.
- **The values of the secret variables** (:data:`SECRET_ENV_VARS`):

  * a value of :data:`MIN_ANYWHERE` characters or more is masked wherever it appears,
    also in the spellings formatting gives it (``repr``, JSON escapes, percent-encoding);
  * a shorter value (1 to MIN_ANYWHERE-1 characters) is masked only where it *is*
    the whole value (a log argument, a setting) or sits in a credential position above:
    masking every "ab" or "1" inside ordinary words and version numbers would make logs
    unreadable while protecting nothing a real key needs.

Callers redact *values* (log arguments, exception text, settings) before they
are put into a format; :func:`redact` on the finished text is a second net.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from urllib.parse import quote, quote_plus

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "BRIDGE_WEBHOOK_SECRET",
    "BRIDGE_TARGET_SECRET_ACCESS_KEY",
    "BRIDGE_TARGET_ACCESS_KEY_ID",
    "BRIDGE_SOURCE_SECRET_ACCESS_KEY",
    "BRIDGE_SOURCE_ACCESS_KEY_ID",
)
MASK = "***"
MIN_ANYWHERE = 6

# Userinfo runs from "//" to the last "@" before the path, query or fragment.
# Quotes and backslashes are not legal there unencoded but a hostile value may
# hold them, so they are part of the match rather than an end to it.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")
_CREDENTIAL_VALUE = re.compile(
    r"(?i)(?P<key>\b[\w.-]*(?:password|passwd|secret|token|access[_-]?key|api[_-]?key)"
    r"[\w.-]*[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s\"',;&}]+)"
)
_AUTH_HEADER = re.compile(
    r"(?i)(?P<key>\b(?:authorization\s*[=:]\s*[\"']?\s*(?:bearer|basic|token)?\s*|bearer\s+))"
    r"(?P<value>[A-Za-z0-9._~+/=-]+)"
)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The non-empty values of the secret variables, longest first."""
    env = os.environ if env is None else env
    return sorted({env.get(v, "") for v in SECRET_ENV_VARS} - {""}, key=len, reverse=True)


def _spellings(value: str) -> set[str]:
    """The ways formatting may write ``value``: as is, repr, JSON, percent-encoded."""
    return {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }


def redact(text: str, env=None) -> str:
    """``text`` with URL userinfo, credential positions and known secret values masked."""
    if not text:
        return text
    secrets = secret_values(env)
    if text in secrets:
        return MASK
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _CREDENTIAL_VALUE.sub(lambda m: m.group("key") + MASK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group("key") + MASK, text)
    for value in secrets:
        if len(value) < MIN_ANYWHERE:
            continue
        for spelling in sorted(_spellings(value), key=len, reverse=True):
            text = text.replace(spelling, MASK)
    return text


def redact_value(value, env=None):
    """A value with every string in it redacted (dicts, lists and tuples walked);
    any other object becomes its redacted ``str`` (numbers, booleans and None stay)."""
    if isinstance(value, str):
        return redact(value, env)
    if isinstance(value, dict):
        return {redact_value(k, env): redact_value(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, env) for v in value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value), env)


def strip_userinfo(netloc: str) -> str:
    """``host[:port]`` of a URL's netloc, without any ``user:pass@`` in front."""
    return netloc.rpartition("@")[2]
