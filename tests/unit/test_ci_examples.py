"""The CI examples are valid YAML and call the promotion gate the way docs/promote.md says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_example(name):
    text = (EXAMPLES / name).read_text()
    assert isinstance(yaml.safe_load(text), dict)
    for needle in ("bridge promote", "--junit", "--output json", "bridge rollback", "[promote]"):
        assert needle in text, needle
