"""Redaction with hostile values (issue 13.7): quotes, backslashes, non-ASCII, short secrets,
percent-encoded userinfo; the log formatters redact values before they format or encode."""

from __future__ import annotations

import json
import logging

import pytest

from bridge.log import setup_logging
from bridge.redact import MASK, redact, redact_value, strip_userinfo

HOSTILE = ['pa"ss\\wörd-9', "\\\"'\\-quoted", "ключ-секрет-42", "tab\tand\nnewline-x"]


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:pw@mlflow:5000/x",
        "http://TOKEN@mlflow:5000/x",
        "https://t@mlflow",
        "http://a%40b:p%22%5C%C3%B6@mlflow:5000",
        'http://u:p"w@mlflow:5000',
        "s3+https://k:s@minio:9000/bucket",
        "http://user:p@ss@mlflow:5000",
    ],
)
def test_userinfo_of_every_url_is_masked(url):
    out = redact(f"cannot reach MLflow at {url} (retried)", env={})
    assert out.startswith("cannot reach MLflow at ") and f"://{MASK}@" in out
    assert out.split(f"{MASK}@", 1)[1].startswith("mlflow") or "minio" in out
    assert "(retried)" in out


def test_urls_without_userinfo_and_emails_in_paths_are_left_alone():
    text = "see http://host:5000/a/b?x=1 and http://h/p/me@example.org"
    assert redact(text, env={}) == text


@pytest.mark.parametrize("secret", HOSTILE)
def test_long_hostile_secrets_are_masked_in_every_spelling(secret):
    env = {"MLFLOW_TRACKING_PASSWORD": secret}
    for spelled in (
        secret,
        repr(secret),
        json.dumps(secret),
        json.dumps(secret, ensure_ascii=False),
    ):
        out = redact(f"value {spelled} end", env)
        assert secret not in out and spelled not in out and MASK in out, (spelled, out)


@pytest.mark.parametrize("secret", ["x", "ab", "Qz7", "1234", "ж5"])
def test_short_secrets_are_masked_where_they_are_the_value(secret):
    env = {"AWS_SECRET_ACCESS_KEY": secret}
    assert redact(secret, env) == MASK
    assert redact_value({"k": secret, "n": [secret]}, env) == {"k": MASK, "n": [MASK]}
    assert redact(f"password={secret} next", env) == f"password={MASK} next"
    assert redact(f'{{"secret": "{secret}"}}', env) == f'{{"secret": "{MASK}"}}'
    assert redact(f"http://{secret}@h/ and http://u:{secret}@h/", env) == (
        f"http://{MASK}@h/ and http://{MASK}@h/"
    )
    # ... but not inside ordinary words and numbers: that would mask half a log line.
    assert redact("version 1 of model ab-x", {"AWS_SECRET_ACCESS_KEY": "1"}) == (
        "version 1 of model ab-x"
    )


def test_authorization_headers_are_masked():
    out = redact("headers {'Authorization': 'Bearer abc.def'} and Authorization: Basic dTpw", {})
    assert "abc.def" not in out and "dTpw" not in out


def test_strip_userinfo():
    assert strip_userinfo("k:s%40@minio:9000") == "minio:9000"
    assert strip_userinfo("tok@minio") == "minio"
    assert strip_userinfo("minio:9000") == "minio:9000"


@pytest.mark.parametrize("secret", HOSTILE)
def test_json_logs_never_carry_a_hostile_secret(monkeypatch, capsys, secret):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secret)
    setup_logging("json", "INFO")
    log = logging.getLogger("bridge.test")
    log.info("token %s and %r", secret, secret, extra={"token_value": secret, "n": [secret]})
    log.warning("at http://%s@host/", secret)
    try:
        raise RuntimeError(f"boom {secret}")
    except RuntimeError:
        log.exception("failed with %s", secret)
    err = capsys.readouterr().err
    for line in err.strip().splitlines():
        record = json.loads(line)
        assert secret not in json.dumps(record, ensure_ascii=False), record
    assert secret not in err


@pytest.mark.parametrize("secret", HOSTILE)
def test_human_logs_never_carry_a_hostile_secret(monkeypatch, capsys, secret):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    setup_logging("human", "INFO")
    log = logging.getLogger("bridge.test")
    log.info("key %r", secret)
    log.info("key %s", {"secret": secret})
    try:
        raise ValueError(repr(secret))
    except ValueError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert secret not in err and repr(secret) not in err


@pytest.mark.parametrize("fmt", ["json", "human"])
def test_short_secrets_given_as_log_arguments_are_masked(monkeypatch, capsys, fmt):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "Qz7")
    setup_logging(fmt, "INFO")
    log = logging.getLogger("bridge.test")
    log.info("token %s / %r", "Qz7", "Qz7", extra={"token_value": "Qz7"})
    log.info("url http://Qz7@host/")
    assert "Qz7" not in capsys.readouterr().err
