import json
import logging
import subprocess
import sys

import pytest

from bridge.errors import CheckFailed, PermanentError, TemporaryError, UsageError, worst_exit_code
from bridge.log import redact, setup_logging
from bridge.publish import FileRecord, check_pyfunc, check_relative_path, content_digest, plan_files
from bridge.registry import ArtifactFile


def test_exit_codes_follow_the_contract():
    assert CheckFailed("x").exit_code == 1
    assert UsageError("x").exit_code == 2
    assert PermanentError("x").exit_code == 2
    assert TemporaryError("x").exit_code == 3
    assert worst_exit_code([]) == 0
    assert worst_exit_code([CheckFailed("a"), TemporaryError("b")]) == 3
    assert worst_exit_code([TemporaryError("b"), UsageError("c")]) == 2


def test_messages_are_one_line():
    err = TemporaryError("cannot reach\n  MLflow", hint="check\nthe URI")
    assert str(err) == "cannot reach MLflow (check the URI)"


def test_redaction_of_secrets_and_url_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-abcdef")
    text = "key s3cr3t-value-123 token tok-abcdef url http://alice:pw@mlflow:5000/x"
    assert redact(text) == "key *** token *** url http://***@mlflow:5000/x"


def test_json_logs_are_redacted(monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret-9")
    setup_logging("json", "INFO")
    logging.getLogger("bridge.test").info("using another-secret-9", extra={"model": "m"})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "using ***" and record["model"] == "m" and record["level"] == "info"


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "/abs", "a//b", "a\\b", "./x", ""])
def test_unsafe_artifact_paths_are_refused(path):
    with pytest.raises(CheckFailed, match="not a plain relative path"):
        check_relative_path(path, "m", "1")


def test_plan_requires_files_and_mlmodel():
    with pytest.raises(CheckFailed, match="has no artifacts"):
        plan_files([], "m", "1", "s3://x")
    with pytest.raises(CheckFailed, match="no MLmodel"):
        plan_files([ArtifactFile("model.pkl", 3)], "m", "1", "s3://x")
    with pytest.raises(CheckFailed, match="not a plain relative path"):
        plan_files([ArtifactFile("MLmodel", 3), ArtifactFile("x/../../y", 1)], "m", "1", "s3://x")


def test_pyfunc_flavor_required():
    assert check_pyfunc(b"flavors:\n  python_function: {}\n  sklearn: {}\n", "m", "1")
    with pytest.raises(CheckFailed, match="no python_function.*flavors: onnx"):
        check_pyfunc(b"flavors:\n  onnx: {}\n", "m", "1")


def test_content_digest_ignores_order():
    a, b = FileRecord("a", 1, "x"), FileRecord("b", 2, "y")
    assert content_digest([a, b]) == content_digest([b, a]) != content_digest([a])


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from bridge.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('mlflow', 'kfp', 'kubernetes', 'lightkube', 'httpx2', 'boto3') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY=\n" in out, out
