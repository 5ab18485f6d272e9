"""Where versions may be copied from (bridge.sources) and exact search-filter literals.

The filter-literal tests run MLflow's own filter parser (installed mlflow 3.17.2,
mlflow/utils/search_utils.py ``SearchModelVersionUtils.parse_search_filter``: sqlparse
tokens, then ``ast.literal_eval`` of an ``IN`` list), the code the server runs.
"""

from __future__ import annotations

import pytest

from bridge.errors import UsageError
from bridge.registry import _filter_literal
from bridge.settings import load_settings
from bridge.sources import (
    UnsafeLocation,
    first_root_over,
    parse_location,
    parse_prefixes,
    served_by_tracking_server,
)

NAMES = [
    "plain",
    "new\nline",
    "cr\rlf\n",
    "it's",
    'say "hi"',
    "both ' and \" and \\",
    "trailing\\",
    "\\x41 not an escape",
    "100%_like",
    "paren) , 'x'",
    "a -- comment",
    "ünïcödé ☃ 模型 \U0001f600",
    "nul\x00byte",
]


@pytest.mark.parametrize("name", NAMES)
def test_mlflow_reads_the_literal_back_exactly(name):
    from mlflow.utils.search_utils import SearchModelVersionUtils

    parsed = SearchModelVersionUtils.parse_search_filter(
        f"name IN ({_filter_literal(name)}, {_filter_literal('other')})"
    )
    assert parsed[0]["value"] == (name, "other")


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("s3://bucket/models/m1/", "s3://bucket/models"),
        ("s3://bucket/models/m1", "s3://bucket/models/"),
        ("s3://bucket/models", "s3://bucket/models/"),
        ("s3://bucket/any/thing", "s3://bucket"),
        ("S3://Bucket/models/m1", "s3://bucket/models"),
        ("https://Files.Example.com:443/a/b", "https://files.example.com/a"),
        ("file:///srv/models/m1", "file:///srv/models"),
    ],
)
def test_under(uri, root):
    assert first_root_over(uri, [root]) == root


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("s3://bucket-evil/models/m1", "s3://bucket"),
        ("s3://bucket/models-evil/m1", "s3://bucket/models"),
        ("s3://bucket/other/models/m1", "s3://bucket/models"),
        ("s3://bucket/models", "s3://bucket/models/m1"),
        ("gs://bucket/models/m1", "s3://bucket/models"),
        ("https://files.example.com:8443/a/b", "https://files.example.com/a"),
        ("http://files.example.com/a/b", "https://files.example.com/a"),
    ],
)
def test_not_under(uri, root):
    assert first_root_over(uri, [root]) is None


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/models/../secret/",
        "s3://bucket/models/./m1",
        "mlflow-artifacts:/1/../../secret",
        "s3://bucket/models/%2e%2e/secret",
        "s3://bucket/models%2Fm1",
        "https://files.example.com@evil.example.com/a",
        "s3://bucket/models\\..\\secret",
        "s3://bucket/models/m1\n",
        "/local/path/without/scheme",
        "s3://bucket/models?versionId=1",
    ],
)
def test_unsafe_locations_are_refused(uri):
    with pytest.raises(UnsafeLocation):
        parse_location(uri)


def test_mlflow_artifacts_only_from_this_tracking_server():
    tracking = "http://mlflow.example:5000"
    assert served_by_tracking_server("mlflow-artifacts:/1/models/m-1/artifacts", tracking)
    assert served_by_tracking_server("mlflow-artifacts://mlflow.example:5000/1/x", tracking)
    assert not served_by_tracking_server("mlflow-artifacts://evil.example:5000/1/x", tracking)
    assert not served_by_tracking_server("mlflow-artifacts://mlflow.example/1/x", tracking)
    assert not served_by_tracking_server("s3://mlflow-artifacts/1/x", tracking)


def test_allowed_prefixes_setting():
    s = load_settings(env={"BRIDGE_ALLOWED_SOURCE_PREFIXES": "s3://a/models/, s3://b"})
    assert s.allowed_source_prefixes == ("s3://a/models/", "s3://b")
    assert load_settings(env={}).allowed_source_prefixes == ()
    with pytest.raises(UsageError, match="BRIDGE_ALLOWED_SOURCE_PREFIXES"):
        load_settings(env={"BRIDGE_ALLOWED_SOURCE_PREFIXES": "s3://a/../b"})
    with pytest.raises(ValueError, match="names no bucket"):
        parse_prefixes("s3:///models")
